"""Artefact edges: a missing digest is refused unless asked for, every number in detector.json is
bounded (and a bad one is a bad-artefact exit naming the file), the safetensors files hold only their own tensors, and
statistics without spread are refused so that scores stay finite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from discopatch.artifact.files import CALIBRATION_FILE, CONFIG_FILE, STATS_FILE, ArtifactError, _sha256, config_digest
from discopatch.cli import main
from discopatch.detector import Detector
from helpers.presets import tiny_preset


@pytest.fixture(scope="module")
def fused(fmnist) -> Detector:
    det = Detector(tiny_preset().replace(score_mode="fused"), device="cpu", seed=0, engine="torch")
    return det.fit(fmnist.train_images[:200], epochs=1, progress=False)


@pytest.fixture
def saved(fused: Detector, tmp_path: Path) -> Path:
    return fused.save(tmp_path / "model")


def _meta(saved: Path) -> dict:
    return json.loads((saved / CONFIG_FILE).read_text())


def _write(saved: Path, meta: dict, reseal: bool) -> None:
    if reseal:
        meta["digest"] = config_digest(meta)
    (saved / CONFIG_FILE).write_text(json.dumps(meta))


def _image(tmp_path: Path) -> str:
    (tmp_path / "in").mkdir(exist_ok=True)
    Image.new("L", (28, 28), 128).save(tmp_path / "in" / "x.png")
    return str(tmp_path / "in" / "x.png")


def _score_exit(saved: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["score", str(saved), _image(tmp_path), "--quiet", *extra])
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the digest


def test_a_detector_saved_now_carries_its_digest(saved: Path) -> None:
    meta = _meta(saved)
    assert meta["digest"] == config_digest(meta)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["preprocess"].update(image_size=48),
        lambda m: m["scoring"].update(score_mode="d-only"),
        lambda m: m["scoring"].update(seed=7),
    ],
    ids=["image_size", "score_mode", "seed"],
)
def test_an_edit_with_the_digest_removed_is_refused(saved: Path, tmp_path: Path, capsys, edit) -> None:
    """Used to load with only a UserWarning, and the scores changed."""
    meta = _meta(saved)
    del meta["digest"]
    edit(meta)
    _write(saved, meta, reseal=False)
    with pytest.raises(ArtifactError, match=r"no configuration digest.*--allow-legacy-artifact"):
        Detector.load(saved)
    code, err = _score_exit(saved, tmp_path, capsys)
    assert code == 4
    assert err.startswith("discopatch score: error: ") and str(saved / CONFIG_FILE) in err and err.count("\n") == 1


def test_a_legacy_artefact_loads_when_asked_for_and_says_so_only_without_quiet(
    fused: Detector, saved: Path, tmp_path: Path, capsys, fmnist
) -> None:
    meta = _meta(saved)
    del meta["digest"]
    _write(saved, meta, reseal=False)
    loaded = Detector.load(saved, device="cpu", engine="torch", allow_legacy=True)
    x = fmnist.test_images[:6]
    np.testing.assert_array_equal(loaded.score(x), fused.score(x))
    code, err = _score_exit(saved, tmp_path, capsys, "--allow-legacy-artifact")
    assert code == 0 and "digest" not in err and "Warning" not in err  # --quiet: the summary line only
    capsys.readouterr()
    assert main(["score", str(saved), _image(tmp_path), "--allow-legacy-artifact"]) == 0
    assert "loaded without a configuration digest" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"threshold": ', '"threshold": 1e400, "was": ', "out of the floating-point range"),
        ('"seed": 0', '"seed": ' + "9" * 5000, "integer with 5000 digits"),
        ('"seed": 0', '"seed": -' + "9" * 5000, "integer with 5000 digits"),
    ],
    ids=["threshold-1e400", "seed-5000-digits", "seed-negative-5000-digits"],
)
def test_numbers_out_of_range_are_a_bad_artefact_naming_the_file(
    saved: Path, tmp_path: Path, capsys, old: str, new: str, message: str
) -> None:
    """Used to exit 2 (a ValueError from the JSON reader or the digest) without naming the file."""
    text = (saved / CONFIG_FILE).read_text()
    assert old in text
    (saved / CONFIG_FILE).write_text(text.replace(old, new, 1))
    with pytest.raises(ArtifactError, match=message):
        Detector.load(saved)
    code, err = _score_exit(saved, tmp_path, capsys)
    assert code == 4 and str(saved / CONFIG_FILE) in err and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("scoring", "seed", 2**70, "$.scoring.seed: 1180591620717411303424 violates maximum"),
        ("scoring", "seed", -1, "$.scoring.seed: -1 violates minimum 0"),
        ("calibration", "n", 2**50, "$.calibration.n: 1125899906842624 violates maximum"),
        ("calibration", "threshold", 1e301, "$.calibration.threshold: 1e+301 violates maximum"),
        ("format_version", None, 10**30, "not supported"),
    ],
)
def test_every_number_is_bounded_by_the_schema(saved: Path, section: str, key, value, message: str) -> None:
    """A seed of 2**70 with a recomputed digest passed the schema, then failed with OverflowError (exit 1)."""
    meta = _meta(saved)
    if key is None:
        meta[section] = value
    else:
        meta[section][key] = value
    _write(saved, meta, reseal=True)
    with pytest.raises(ArtifactError) as info:
        Detector.load(saved)
    assert message in str(info.value)
    jsonschema = pytest.importorskip("jsonschema")
    from discopatch.artifact.schema import SCHEMA

    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(meta)  # the standard validator agrees


# ------------------------------------------------------------------------------------------------ tensors


def _replace_tensors(saved: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    save_file(tensors, str(saved / name))
    meta = _meta(saved)
    meta["files"][name] = _sha256(saved / name)
    _write(saved, meta, reseal=True)


@pytest.mark.parametrize("name", [STATS_FILE, CALIBRATION_FILE])
def test_an_unexpected_tensor_is_refused(saved: Path, name: str) -> None:
    tensors = {k: v.clone() for k, v in load_file(str(saved / name)).items()}
    _replace_tensors(saved, name, {**tensors, "payload": torch.zeros(3)})
    with pytest.raises(ArtifactError, match=rf"{name}: unexpected tensors \['payload'\]"):
        Detector.load(saved)


@pytest.mark.parametrize(
    ("key", "index", "named"),
    [("fusion", 1, "D score"), ("fusion", 3, "statistics score"), ("feat_scale", 0, "feature scale")],
)
def test_statistics_without_spread_are_refused(saved: Path, fmnist, key: str, index: int, named: str) -> None:
    """A zero IQR used to load and give infinite scores."""
    tensors = {k: v.clone() for k, v in load_file(str(saved / STATS_FILE)).items()}
    tensors[key][index] = 0.0
    _replace_tensors(saved, STATS_FILE, tensors)
    with pytest.raises(ArtifactError, match=f"{STATS_FILE}: .*{named}"):
        Detector.load(saved)
