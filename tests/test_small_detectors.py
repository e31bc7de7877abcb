"""A detector fitted on a handful of images never crashes with a numeric error and never scores absurdly;
the drift set-up and ``serve`` say what is wrong with a too small calibration and what to do."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from discopatch.calibration import Calibration
from discopatch.cli import main
from discopatch.detector import Detector
from discopatch.errors import TooFewCalibrationImagesError
from discopatch.inference.stats_model import StatsModel
from discopatch.monitoring.drift import DriftConfig, DriftMonitor, cusum_threshold
from helpers.presets import tiny_explain_preset


def _too_small(scores: np.ndarray, fpr: float = 0.05) -> Calibration:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "too few": what an old artefact carries
        return Calibration.from_scores(scores, fpr)


def test_a_three_image_fused_detector_scores_finitely_and_sanely(fmnist) -> None:
    """The regression: 2 training + 1 validation image gave fused scores up to 1.6e11 (a feature without spread
    divided by 1e-6, a fusion IQR of 0 floored at 1e-12)."""
    preset = tiny_explain_preset()
    det = Detector(preset, device="cpu", seed=0, engine="torch")
    det.fit(fmnist.train_images[:3], max_steps=2, val_fraction=0.0, progress=False)
    stack = det.read(fmnist.train_images[:3]).images
    det.fit_statistics(stack[:2], stack[2:])  # the old 3-image split: 2 train, 1 validation
    scores = det.score(fmnist.test_images[:64])
    assert np.all(np.isfinite(scores))
    assert np.abs(scores).max() < 1e6, np.abs(scores).max()


def test_statistics_spreads_are_floored_not_divided_by_almost_nothing() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 12))
    feats[:, 3] = 2.0  # no spread over the ID images
    sm = StatsModel.fit(feats)
    assert sm.feat_scale[3] >= 1e-3 * np.median(feats.std(0))
    probe = feats[:5].copy()
    probe[:, 3] = 2.001
    d = np.array([0.3, 0.45, 0.55, 0.6, 0.4])
    sm.set_fusion(np.full(5, 0.5), sm.mahalanobis(feats[:5]))  # a validation set with no D spread at all
    fused = sm.fuse(d, sm.mahalanobis(probe))
    # before the floors: 1e11 (D's IQR of 0 floored at 1e-12) and a statistics z of 1e5 from one feature
    assert np.all(np.isfinite(fused)) and np.abs(fused).max() < 1e3, fused


def test_drift_set_up_refuses_a_calibration_it_cannot_use() -> None:
    """The regression: 'Singular matrix' from the CUSUM set-up for a detector calibrated on 1-3 images."""
    for n in (1, 3, 18):
        with pytest.raises(TooFewCalibrationImagesError, match=f"calibrated on {n} held-out images.*at least 19"):
            DriftMonitor(_too_small(np.arange(float(n))))
    with pytest.raises(ValueError, match="never rises"):
        cusum_threshold(10_000.0, DriftConfig().cusum_k, 3)
    DriftMonitor(_too_small(np.arange(19.0)))  # the minimum works
    # without the CUSUM, a large target FPR needs fewer
    DriftMonitor(_too_small(np.arange(3.0), 0.3), DriftConfig(tests=("binomial", "ks")))


@pytest.mark.filterwarnings("ignore:3 calibration images are too few:UserWarning")
def test_serve_on_a_detector_calibrated_on_three_images_says_what_to_do(trained_detector, tmp_path, capsys) -> None:
    pytest.importorskip("fastapi")
    det = copy.copy(trained_detector)
    det.calibration = _too_small(np.sort(trained_detector.calibration.scores[:3]))
    det.save(tmp_path / "m")
    code = main(["serve", str(tmp_path / "m"), "--db", f"sqlite:///{tmp_path / 'db.sqlite'}"])
    err = capsys.readouterr().err
    assert code == TooFewCalibrationImagesError.exit_code == 3
    assert "calibrated on 3 held-out images" in err and "refit" in err and "Singular" not in err
