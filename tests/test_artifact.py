"""Saved detectors round-trip exactly, and damaged or mismatched ones are refused with a clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from discopatch.artifact import CALIBRATION_FILE, CONFIG_FILE, WEIGHTS_FILE, ArtifactError
from discopatch.detector import Detector


@pytest.fixture
def saved(trained_detector: Detector, tmp_path: Path) -> Path:
    return trained_detector.save(tmp_path / "model")


def test_round_trip_gives_identical_predictions(trained_detector: Detector, saved: Path, fmnist) -> None:
    imgs = fmnist.test_images[:20]
    before = trained_detector.predict(imgs)
    loaded = Detector.load(saved, device="cpu")
    after = loaded.predict(imgs)
    np.testing.assert_array_equal(after["scores"], before["scores"])
    np.testing.assert_array_equal(after["p_values"], before["p_values"])
    np.testing.assert_array_equal(after["is_ood"], before["is_ood"])
    assert after["threshold"] == before["threshold"]
    assert loaded.n_patches == trained_detector.n_patches
    assert loaded.preprocess_config == trained_detector.preprocess_config
    assert loaded.model_config == trained_detector.model_config


def test_directory_holds_no_pickle(saved: Path) -> None:
    names = sorted(p.name for p in saved.iterdir())
    assert names == sorted([CONFIG_FILE, WEIGHTS_FILE, CALIBRATION_FILE])
    meta = json.loads((saved / CONFIG_FILE).read_text())
    assert meta["format"] == "discopatch-detector"
    assert meta["discopatch_version"]
    assert meta["calibration"]["n"] > 0
    assert set(meta["files"]) == {WEIGHTS_FILE, CALIBRATION_FILE}


def test_flipped_weight_byte_is_rejected(saved: Path) -> None:
    w = saved / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Detector.load(saved)


def test_truncated_weights_are_rejected(saved: Path) -> None:
    w = saved / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Detector.load(saved)


def test_mismatched_configuration_is_rejected(saved: Path) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["model"]["widths"] = [8, 16, 64]
    (saved / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="shape mismatch"):
        Detector.load(saved)


def test_norm_kind_swap_with_same_shapes_is_rejected(saved: Path) -> None:
    """GroupNorm's weights have BN-compatible names in the official code; ours must not load silently."""
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["model"]["norm"] = "groupnorm"
    (saved / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="do not match the configured model"):
        Detector.load(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format="something-else"), "not a discopatch detector"),
        (lambda m: m.update(format_version=99), "format version 99"),
        (lambda m: m["model"].update(bogus=1), "unknown ModelConfig fields"),
        (lambda m: m["scoring"].update(test_patches=0), "test_patches"),
        (lambda m: m["calibration"].update(threshold=0.123), "threshold does not match"),
        (lambda m: m.pop("model"), "'model' section"),
    ],
)
def test_invalid_json_fields_are_rejected(saved: Path, edit, message: str) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    edit(meta)
    (saved / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        Detector.load(saved)


def test_missing_pieces(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a detector directory"):
        Detector.load(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / CALIBRATION_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"missing {CALIBRATION_FILE}"):
        Detector.load(broken)
    (broken / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Detector.load(broken)
