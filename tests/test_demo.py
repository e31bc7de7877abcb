"""The demo's whole path (train, calibrate, corrupt, evaluate, save) on a tiny step budget."""

from __future__ import annotations

import json

from discopatch.data.demo_sets import DEMO_CORRUPTIONS, build_demo_sets
from discopatch.detector import Detector
from discopatch.evaluation.demo import demo_budget
from discopatch.presets import DEMO_MAX_TIME, DEMO_STEPS, SMALL_LONG_STEPS


def test_demo_runs_end_to_end_and_trains_the_long_preset_on_request(tmp_path, capsys) -> None:
    """The whole demo through the command line (one run: it corrupts and scores 1,000 images per set), with
    ``--preset small-long``: that preset is trained (LeCam recorded in the detector) for its own budget."""
    from discopatch.cli import main

    assert demo_budget("small") == (DEMO_STEPS, DEMO_MAX_TIME)
    steps, cap = demo_budget("small-long")
    assert steps == SMALL_LONG_STEPS and cap == DEMO_MAX_TIME * SMALL_LONG_STEPS / DEMO_STEPS
    args = ["demo", "--preset", "small-long", "--max-steps", "3", "--out", str(tmp_path), "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "AUROC" in out and "ID control" in out and "Animal-MNIST" in out
    assert "training the 'small-long' preset" in err
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["preset"] == "small-long"
    assert len(result["ood"]) == 2 + len(DEMO_CORRUPTIONS)
    for m in result["ood"].values():
        assert 0.0 <= m["auroc"] <= 1.0 and m["n_ood"] == 1000
    assert result["training"]["steps"] == 3  # a step budget: the printed numbers do not depend on the load
    saved = json.loads((tmp_path / "model" / "detector.json").read_text())
    assert saved["preset"] == "small-long" and saved["training"]["train_config"]["lecam"] == 0.01
    det = Detector.load(tmp_path / "model", device="cpu")
    assert det.calibration is not None and det.calibration.n == 400
    assert main(["demo", "--preset", "paper", "--out", str(tmp_path / "p")]) == 2  # sized for RGB photos: refused
    assert "the demo trains one of small, small-long, not 'paper'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_demo_sets_share_one_pipeline() -> None:
    det = Detector("small", channels=1, device="cpu")
    reference, sets = build_demo_sets(det.preprocess_config)
    control = sets["ID control (clean, held out)"]
    assert reference.images.shape == control.images.shape == (1000, 64, 64)
    for s in sets.values():
        assert s.images.dtype == reference.images.dtype and s.images.shape[1:] == (64, 64)
    # The corrupted sets are the control images with the corruption, nothing else changed.
    blur = sets["defocus_blur (severity 3)"].images
    assert blur.shape == control.images.shape and (blur != control.images).any()
