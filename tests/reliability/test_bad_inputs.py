"""The bad-input corpus through the library, the CLI and the HTTP API: a specific error or a documented handling
for every file, never a crash, and the good images in the same call score exactly as they do alone."""

from __future__ import annotations

import base64
import csv
import io

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main
from discopatch.config import PreprocessConfig
from discopatch.data.images import ImageReadError, preprocess
from discopatch.detector import Detector

from .corpus import Case, animated_gif, bad_cases, exif_rotated_jpeg, good_images, non_image_files

GRAY32 = PreprocessConfig(image_size=32, channels=1, resize="pad")
RGB64 = PreprocessConfig(image_size=64, channels=3, resize="resize_crop")
CASES = bad_cases() + non_image_files()
#: float32 convolutions may round differently for another batch shape; the project-wide isolation tolerance.
ATOL = 1e-6


def _check(case: Case, got: str | None) -> None:
    """``got`` is the error message (None: scored); it must be what the case demands."""
    if case.error is None:
        assert got is None, f"{case.name} should be scored, got error {got!r}"
    else:
        assert got is not None and case.error in got, f"{case.name}: expected an error with {case.error!r}, got {got!r}"


@pytest.mark.parametrize("cfg", [GRAY32, RGB64], ids=["gray32-pad", "rgb64-crop"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_preprocess_gives_an_image_or_a_specific_error(case: Case, cfg: PreprocessConfig, tmp_path) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.data)
    for source in (case.data, path):
        try:
            out = preprocess(source, cfg)
        except ImageReadError as e:
            _check(case, str(e))
            continue
        _check(case, None)
        shape = (cfg.image_size, cfg.image_size) + ((3,) if cfg.channels == 3 else ())
        assert out.shape == shape and out.dtype == np.uint8 and out.flags.c_contiguous


def test_path_errors_name_the_file(tmp_path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file"):
        preprocess(tmp_path / "empty.png", GRAY32)
    with pytest.raises(ImageReadError, match="file not found"):
        preprocess(tmp_path / "missing.png", GRAY32)
    with pytest.raises(ImageReadError, match="is a folder"):
        preprocess(tmp_path, GRAY32)


def test_oversized_file_is_refused_from_its_size_before_it_is_read(tmp_path, monkeypatch) -> None:
    """The CLI used to read a whole 2 GB file into memory before refusing it."""
    from pathlib import Path

    from discopatch.data.images import MAX_FILE_BYTES

    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:  # sparse: no disk space used
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(MAX_FILE_BYTES + 1)

    def no_whole_read(self: Path) -> bytes:
        raise AssertionError(f"{self} was read whole")

    monkeypatch.setattr(Path, "read_bytes", no_whole_read)
    with pytest.raises(ImageReadError, match=rf"huge\.png: file of {MAX_FILE_BYTES + 1} bytes exceeds the"):
        preprocess(huge, GRAY32)


def test_documented_decoding_rules() -> None:
    """EXIF orientation is applied, 16 bit is rescaled, an animation's first frame is used."""
    data, upright = exif_rotated_jpeg()
    np.testing.assert_array_equal(preprocess(data, RGB64), preprocess(upright, RGB64))
    eight = (np.arange(1600).reshape(40, 40) % 256).astype(np.uint8)
    sixteen = io.BytesIO()
    Image.fromarray(eight.astype(np.uint16) * 257).save(sixteen, format="PNG")
    np.testing.assert_array_equal(preprocess(sixteen.getvalue(), GRAY32), preprocess(eight, GRAY32))
    first = np.asarray(Image.open(io.BytesIO(animated_gif())).convert("RGB"))
    np.testing.assert_array_equal(preprocess(animated_gif(), RGB64), preprocess(first, RGB64))


def test_small_images_are_padded_or_upscaled() -> None:
    tiny = np.full((3, 3), 200, np.uint8)
    padded = preprocess(tiny, GRAY32)  # pad: centred on a black canvas, pixels unchanged
    assert padded.sum() == 9 * 200 and (padded[14:17, 14:17] == 200).all()
    up = preprocess(tiny, PreprocessConfig(image_size=32, channels=1, resize="resize_crop"))
    assert (up == 200).all()  # resize_crop: upscaled (Lanczos) to fill the square


def test_extreme_aspect_ratio_resamples_only_the_centre() -> None:
    """Beyond 16:1 the centre square is resampled directly; the result matches the full-strip path closely."""
    rng = np.random.default_rng(0)
    strip = np.repeat(rng.integers(0, 256, (1, 40), dtype=np.uint8), 2, axis=0)  # 2 x 40 = 20:1
    cfg = PreprocessConfig(image_size=32, channels=1, resize="resize_crop")
    img = Image.fromarray(strip)
    full = img.resize((640, 32), Image.Resampling.LANCZOS).crop((304, 0, 336, 32))  # the legacy path
    diff = np.abs(preprocess(strip, cfg).astype(int) - np.asarray(full, dtype=int))
    assert diff.max() <= 3


# ----------------------------------------------------------------------------------------------------- library
def test_iter_score_files_keeps_every_good_score(trained_detector, corpus_dir) -> None:
    paths = sorted(corpus_dir.iterdir())
    rows = list(trained_detector.iter_score_files(paths, chunk_size=5))
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    by_name = {c.name: c for c in good_images() + CASES}
    for r in rows:
        _check(by_name[r["path"].rsplit("/", 1)[-1]], r["error"])
        assert (r["score"] is None) == (r["error"] is not None)
    for r in rows:
        if r["error"] is None:
            assert r["score"] == pytest.approx(float(trained_detector.score([r["path"]])[0]), abs=ATOL), r["path"]


def test_score_raises_for_a_bad_input_and_names_it(trained_detector, corpus_dir) -> None:
    with pytest.raises(ImageReadError, match=r"truncated\.png"):
        trained_detector.score([corpus_dir / "good_0.png", corpus_dir / "truncated.png"])
    with pytest.raises(ValueError, match="unreadable image"):
        trained_detector.score(corpus_dir)  # a folder: use iter_score_files for per-file rows


# ----------------------------------------------------------------------------------------------------------- CLI
def test_cli_scores_the_folder_and_reports_each_bad_file(model_dir, corpus_dir, tmp_path) -> None:
    alone = Detector.load(model_dir, device="cpu", engine="torch")
    out = tmp_path / "scores.csv"
    assert main(["score", str(model_dir), str(corpus_dir), "--out", str(out), "--engine", "torch"]) == 1
    rows = list(csv.DictReader(out.open()))
    names = [r["path"].rsplit("/", 1)[-1] for r in rows]
    assert "notes.txt" not in names and "data.bin" not in names  # a folder scan takes image extensions only
    expected = {c.name: c for c in good_images() + bad_cases()}
    assert sorted(names) == sorted(expected)
    for r, name in zip(rows, names):
        _check(expected[name], r["error"] or None)
        if not r["error"]:
            assert float(r["score"]) == pytest.approx(float(alone.score([r["path"]])[0]), abs=ATOL)


def test_cli_explicit_non_image_file_is_an_error_row(model_dir, corpus_dir, tmp_path) -> None:
    out = tmp_path / "scores.jsonl"
    files = [str(corpus_dir / "notes.txt"), str(corpus_dir / "good_1.png")]
    assert main(["score", str(model_dir), *files, "--out", str(out), "--engine", "torch"]) == 1
    text = out.read_text()
    assert "not a recognised image format" in text and text.count("\n") == 2


# ---------------------------------------------------------------------------------------------------------- HTTP
@pytest.fixture(scope="module")
def client(trained_detector, tmp_path_factory):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from discopatch.monitoring.service import create_app

    db = tmp_path_factory.mktemp("bad-http") / "monitor.db"
    with TestClient(create_app(trained_detector, f"sqlite:///{db}")) as c:
        yield c


def _check_http(body: dict, cases: list[Case], det) -> None:
    res = body["results"]
    assert [r["source_id"] for r in res] == [c.name for c in cases]
    for r, c in zip(res, cases):
        _check(c, r["error"])
        if c.error is None:
            assert r["score"] == pytest.approx(float(det.score([c.data])[0]), abs=ATOL), c.name


def test_http_multipart_base64_and_stream(client, trained_detector) -> None:
    cases = good_images(2) + CASES + good_images(4)[2:]
    r = client.post("/v1/score", files=[("images", (c.name, c.data, "application/octet-stream")) for c in cases])
    assert r.status_code == 200, r.text
    _check_http(r.json(), cases, trained_detector)
    assert r.json()["n_errors"] == sum(c.error is not None for c in cases)
    payload = {"images": [base64.b64encode(c.data).decode() for c in cases], "source_ids": [c.name for c in cases]}
    r = client.post("/v1/score", json=payload)
    assert r.status_code == 200, r.text
    _check_http(r.json(), cases, trained_detector)
    r = client.post("/v1/streams/corpus/images", json=payload)
    assert r.status_code == 200, r.text
    _check_http(r.json(), cases, trained_detector)
    assert client.get("/v1/streams/corpus/status").json()["n_recorded"] == len(cases)
    assert client.get("/healthz").status_code == 200
