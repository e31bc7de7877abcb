"""Inputs that are not plain images get a specific error, never a silent success.

A float image with an infinity or NaN, a folder named like an image, a named pipe, an unaccepted format, a final
``score --resume`` over a file that still holds error rows, an OOD folder that does not exist, an ID set with no
readable image: each is named in its error, with the exit code of its kind (errors.py).
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main
from discopatch.config import PreprocessConfig
from discopatch.data import images as images_mod
from discopatch.data.images import ImageReadError, expand_paths, open_image, preprocess

CFG = PreprocessConfig(image_size=32, channels=1, resize="pad")


@pytest.fixture
def folder(fmnist, tmp_path) -> Path:
    out = tmp_path / "imgs"
    out.mkdir()
    for i, a in enumerate(fmnist.test_images[:6]):
        Image.fromarray(a).save(out / f"{i}.png")
    return out


def _rows(csv_text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(csv_text)))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_float_tiff_with_non_finite_pixels_is_an_error_row(model_dir, tmp_path, capsys, bad: float) -> None:
    """A +inf pixel used to make the whole image black (scored 115, no error); NaN was caught only by luck."""
    a = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)
    a[5, 7] = bad
    path = tmp_path / "f.tif"
    Image.fromarray(a, mode="F").save(path)
    with pytest.raises(ImageReadError, match=r"f\.tif: non-finite pixel values \(NaN or infinity\)"):
        preprocess(path, CFG)
    assert main(["score", str(model_dir), str(path)]) == 1
    (row,) = _rows(capsys.readouterr().out)
    assert row["score"] == "" and "non-finite pixel values" in row["error"]
    a[5, 7] = 0.5  # the same image with a finite value is scored
    Image.fromarray(a, mode="F").save(path)
    assert preprocess(path, CFG).shape == (32, 32)


def test_folder_named_like_an_image_gets_an_error_row(model_dir, folder, tmp_path, capsys) -> None:
    """``score model x.png`` with ``x.png`` a folder (no images in it) said "scored 0 of 0" and exited 0."""
    fake = tmp_path / "x.png"
    fake.mkdir()
    assert expand_paths([fake, folder]) == [fake, *sorted(folder.glob("*.png"))]
    assert main(["score", str(model_dir), str(fake), str(folder)]) == 1
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert len(rows) == 7 and rows[0]["path"] == str(fake)
    assert rows[0]["error"].startswith(f"{fake}: is a folder with no image files in it (looked for .bmp")
    assert all(r["score"] for r in rows[1:])  # the others are scored as before
    assert "scored 6 of 7 files; 1 failed" in captured.err


def test_named_pipe_is_refused_by_name_without_hanging(model_dir, tmp_path, capsys) -> None:
    """A FIFO used to be reported as an "empty file"; opening one for reading blocks until a writer comes, so the
    check is made on a non-blocking descriptor (the test would hang otherwise: it runs in a thread with a limit)."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    errors: list[str] = []

    def attempt() -> None:
        try:
            open_image(fifo)
        except ImageReadError as e:
            errors.append(str(e))

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "open_image blocked on a FIFO"
    assert errors == [f"{fifo}: is a named pipe (FIFO), not a regular file; images are read from regular files only"]
    assert main(["score", str(model_dir), str(fifo)]) == 1
    (row,) = _rows(capsys.readouterr().out)
    assert "is a named pipe (FIFO)" in row["error"]


def test_character_device_is_refused_by_name() -> None:
    with pytest.raises(ImageReadError, match=r"/dev/zero: is a character device, not a regular file"):
        open_image("/dev/zero")  # its size is 0 but reading it never ends


@pytest.mark.parametrize(("fmt", "suffix"), [("PPM", "png"), ("ICO", "jpg"), ("TGA", "png")])
def test_formats_outside_the_accepted_seven_are_refused_by_name(tmp_path, fmt: str, suffix: str) -> None:
    """Only PNG, JPEG, GIF, BMP, TIFF and WebP are decoded (each has a measured cost); a file of another format
    Pillow could read used to be decoded whatever its cost (and EPS would have run Ghostscript)."""
    path = tmp_path / f"other.{suffix}"
    Image.new("RGB", (40, 40), (9, 9, 9)).save(path, format=fmt)
    with pytest.raises(ImageReadError, match=rf"other\.{suffix}: {fmt} images are not accepted \(accepted: PNG, JPEG"):
        open_image(path)


def test_final_resume_over_an_output_with_error_rows_exits_1(model_dir, folder, tmp_path) -> None:
    """The exit status says whether the output file as a whole holds failed inputs, not only this run's."""
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "s.csv"
    assert main(["score", str(model_dir), str(folder), "--out", str(out)]) == 1
    assert main(["score", str(model_dir), str(folder), "--out", str(out), "--resume"]) == 1  # was 0
    (folder / "broken.png").unlink()
    clean = tmp_path / "clean.jsonl"
    assert main(["score", str(model_dir), str(folder), "--out", str(clean)]) == 0
    assert main(["score", str(model_dir), str(folder), "--out", str(clean), "--resume"]) == 0


def test_evaluate_with_a_missing_ood_folder_exits_3_like_fit(model_dir, folder, tmp_path, capsys) -> None:
    """``--ood blur=missing/`` exited 2 (usage) where ``fit missing/`` exits 3 (bad input)."""
    missing = tmp_path / "missing"
    assert main(["evaluate", str(model_dir), "--id", str(folder), "--ood", f"blur={missing}/"]) == 3
    assert str(missing) in capsys.readouterr().err
    assert main(["fit", f"{missing}/", "--out", str(tmp_path / "m")]) == 3


def test_an_id_set_with_no_readable_image_is_named(model_dir, folder, tmp_path, capsys) -> None:
    """The error used to be "the ID set has no readable images", naming neither the folder nor a file."""
    bad = tmp_path / "bad-id"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not an image")
    assert main(["evaluate", str(model_dir), "--id", str(bad), "--ood", f"o={folder}"]) == 3
    err = capsys.readouterr().err
    assert "the ID set 'bad-id' has no readable images (3 unreadable, first: " in err
    assert f"{bad / '0.png'}: not a recognised image format" in err


def test_an_unreadable_folder_is_named_not_taken_for_empty(folder, monkeypatch) -> None:
    """The folder scan skips what it cannot read, so a folder without read permission looked empty ("no images
    found"). The tests run as root, which reads everything, so the refusal is simulated."""
    real = os.scandir

    def scandir(path=".", *a, **k):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(images_mod.os, "scandir", scandir)
    with pytest.raises(ImageReadError, match=rf"^{folder}: folder cannot be read \(permission denied\)$"):
        images_mod.list_images(folder)
    assert main(["fit", str(folder), "--out", str(folder.parent / "m")]) == 3


def test_pillow_settings_hold_until_the_last_concurrent_decode_ends(monkeypatch) -> None:
    """Each decode used to save and restore Pillow's process-wide limits on its own: when two overlapped, the first
    to finish put back the caller's values under the second (a user's ``LOAD_TRUNCATED_IMAGES = True`` would then
    pad a truncated image with grey, and the default pixel limit refuse a 200 Mpx image mid-decode)."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    first, second = images_mod._pillow_settings(), images_mod._pillow_settings()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first decode ends while the second still runs
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False and Image.MAX_IMAGE_PIXELS == images_mod.MAX_PIXELS
    second.__exit__(None, None, None)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS == 1000  # the caller's, put back
    buf = io.BytesIO()
    Image.new("L", (64, 64), 7).save(buf, format="PNG")
    with pytest.raises(ImageReadError, match="corrupt or truncated"):  # refused even though the caller pads
        open_image(buf.getvalue()[:-40])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
