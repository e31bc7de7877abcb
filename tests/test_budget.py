"""The training budget is a step count whatever the folder or the machine, what fit says about it, the
benchmark trains through the same rule, and too small calibration sets are refused instead of saved silently."""

from __future__ import annotations

import dataclasses
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest

import discopatch.detector as detector_module
from discopatch import budget as budget_module
from discopatch.benchmark.sets import FULL, FULL_PHOTOS
from discopatch.benchmark.stages import train_main
from discopatch.budget import (
    LONG_TRAINING_STEPS,
    MIN_FOLDER_IMAGES,
    effective_train_config,
    long_training_warning,
    planned_steps,
)
from discopatch.calibration import Calibration, min_calibration_images
from discopatch.cli import main
from discopatch.detector import Detector
from discopatch.errors import TooFewCalibrationImagesError
from discopatch.presets import SMALL_STEPS, get_preset
from discopatch.training import trainer as training_module
from helpers.presets import tiny_preset

_REAL_BAR = training_module.progress_bar


class _Stop(Exception):
    """Raised from a step callback: the test has seen what it needs, no need to train on."""


def _stop(*_: object) -> None:
    raise _Stop


def _small_schedule(**train: object):
    """The tiny model with the ``small`` preset's schedule (its budget rule, at test size)."""
    return tiny_preset().replace(train=dataclasses.replace(get_preset("small", channels=1).train, **train))


def _planned(preset, images, monkeypatch, **fit_kw) -> tuple[int | None, list]:
    """Start fit, stop it after its first step; the planned steps and the progress bar's totals."""
    totals: list = []

    def bar(*a, **kw):
        totals.append(kw.get("total"))
        return _REAL_BAR(*a, **kw)

    monkeypatch.setattr(training_module, "progress_bar", bar)
    det = Detector(preset, device="cpu", seed=0)
    with pytest.raises(_Stop):
        det.fit(images, progress=True, callback=_stop, **fit_kw)
    assert det.trainer is not None
    return det.trainer.state.planned_steps, totals


# ------------------------------------------------------------------ the budget in steps


def test_small_preset_budget_is_its_steps_for_any_folder_size(fmnist, monkeypatch) -> None:
    """The regression: 10 epochs used to cut 1,380 steps to 10 x (folder / 64) below ~8,800 images (280 steps at
    2,000 images), and the progress bar counted to the epoch total."""
    small = get_preset("small", channels=1)
    assert small.train.epochs is None and small.train.max_time is None and small.train.max_steps == SMALL_STEPS
    preset = _small_schedule()
    few, bar_few = _planned(preset, fmnist.train_images[:40], monkeypatch, val_fraction=0.0)
    many, bar_many = _planned(preset, fmnist.train_images[:400], monkeypatch)
    assert few == many == SMALL_STEPS
    assert bar_few == bar_many == [SMALL_STEPS]  # the bar shows the real total
    for n in (500, 2_000, 60_000):  # the rule alone, from a small folder to a full-size one
        assert planned_steps(effective_train_config(small.train), n) == SMALL_STEPS


def test_explicit_epochs_are_honoured_beyond_the_preset_steps(fmnist) -> None:
    preset = _small_schedule(max_steps=2)
    det = Detector(preset, device="cpu", seed=0)
    det.fit(fmnist.train_images[:20], epochs=3, val_fraction=0.0, progress=False)
    # 20 images in batches of 64: one step per epoch; --epochs 3 trains 3 steps although the preset says 2
    assert det.training_info["steps"] == 3 and det.training_info["stop_reason"] == "3 epochs completed"
    det = Detector(preset, device="cpu", seed=0).fit(fmnist.train_images[:20], val_fraction=0.0, progress=False)
    assert det.training_info["steps"] == 2  # without --epochs: the preset's steps


def test_the_paper_preset_keeps_its_official_epoch_budget() -> None:
    paper = effective_train_config(get_preset("paper").train)
    assert paper.epochs == 80 and paper.epoch_rule == "official-truncated" and paper.max_steps is None
    assert planned_steps(paper, 1_281_167) == 80 * 58 == 4640  # ImageNet-1K: as before
    assert planned_steps(effective_train_config(paper, max_steps=100), 1_281_167) == 100
    both = effective_train_config(paper, epochs=2, max_steps=1000)
    assert planned_steps(both, 1_281_167) == 116  # both given: whichever first


def test_a_time_cap_that_stops_training_early_warns_once_and_is_recorded(fmnist, log) -> None:
    preset = _small_schedule(max_steps=100_000, max_time=0.3)
    det = Detector(preset, device="cpu", seed=0).fit(fmnist.train_images[:300], progress=False)
    info = det.training_info
    assert info["planned_steps"] == 100_000 and info["steps"] < 100_000 and info["budget_complete"] is False
    assert "time budget" in info["stop_reason"]
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"after {info['steps']:,} of 100,000 planned steps" in warnings[0] and "quality will be lower" in warnings[0]


def test_fit_says_images_planned_steps_epochs_and_a_time_estimate(fmnist, log) -> None:
    preset = _small_schedule(max_steps=8)
    det = Detector(preset, device="cpu", seed=0).fit(fmnist.train_images[:300], progress=False)
    lines = [r.getMessage() for r in log.records]
    start = [m for m in lines if m.startswith("fit: ")]
    assert start == ["fit: 270 training / 30 validation images; 8 training steps planned (= 2 epochs of 4 steps at "
                     "64 images per step)"]  # fmt: skip
    assert any("s per step: about" in m and "remaining 2 steps" in m for m in lines), lines
    assert det.training_info["budget_complete"] is True
    assert not any("below 250" in m for m in lines)  # 300 images: no small-folder warning


def test_a_small_folder_warns_on_one_line(fmnist, log) -> None:
    preset = _small_schedule(max_steps=1)
    Detector(preset, device="cpu", seed=0).fit(fmnist.train_images[:200], progress=False)
    warned = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"below {MIN_FOLDER_IMAGES}" in warned[0] and "smallest folder measured" in warned[0]
    log.clear()
    Detector(preset, device="cpu", seed=0).fit(fmnist.train_images[:MIN_FOLDER_IMAGES], progress=False)
    assert not [r for r in log.records if r.levelno == logging.WARNING]


def test_small_trained_long_without_lecam_warns_before_training(fmnist, log) -> None:
    """The late fall was measured on ``small`` without LeCam: a user who asks for more steps hears of it first."""
    long = LONG_TRAINING_STEPS + 1
    preset = _small_schedule(max_steps=long, lecam=0.0).replace(name="small")
    with pytest.raises(_Stop):
        Detector(preset, device="cpu", seed=0).fit(fmnist.train_images[:300], progress=False, callback=_stop)
    warned = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"{long:,} training steps without LeCam" in warned[0] and "--lecam 0.01" in warned[0]


@pytest.mark.parametrize(
    ("name", "steps", "lecam"),
    [("small", LONG_TRAINING_STEPS, 0.0), ("small", 10 * SMALL_STEPS, 0.01), ("paper", 10 * SMALL_STEPS, 0.0)],
    ids=["at-the-limit", "with-lecam", "other-preset"],
)
def test_no_long_training_warning_where_no_fall_was_measured(name: str, steps: int, lecam: float) -> None:
    cfg = dataclasses.replace(get_preset("small", channels=1).train, max_steps=steps, lecam=lecam)
    assert long_training_warning(name, cfg, n_train=54_000) is None
    assert long_training_warning("small", dataclasses.replace(cfg, lecam=0.0, max_steps=steps + 1), 54_000)


def test_the_long_preset_trains_long_without_a_warning_unless_lecam_is_turned_off() -> None:
    long = get_preset("small-long", channels=1).train
    assert planned_steps(long, 54_000) == planned_steps(long, 225) > LONG_TRAINING_STEPS
    assert long_training_warning("small-long", long, n_train=225) is None
    warned = long_training_warning("small-long", dataclasses.replace(long, lecam=0.0), n_train=225)
    assert warned is not None and "--preset small-long" in warned


def test_checkpoints_are_periodic_when_epochs_are_one_step(fmnist, tmp_path, monkeypatch) -> None:
    saved: list[int] = []
    real = training_module.Trainer.save_checkpoint

    def spy(self, directory):
        saved.append(self.state.step)
        return real(self, directory)

    monkeypatch.setattr(training_module.Trainer, "save_checkpoint", spy)
    preset = _small_schedule(max_steps=30)
    Detector(preset, device="cpu", seed=0).fit(
        fmnist.train_images[:20], val_fraction=0.0, checkpoint_dir=tmp_path, progress=False
    )
    assert saved == [training_module.CHECKPOINT_MIN_STEPS, 30]  # not one per one-step epoch


# ------------------------------------------------------------------ the benchmark follows fit's rule


def test_benchmark_main_row_and_fit_share_the_budget_rule(fmnist, monkeypatch) -> None:
    calls: list[dict] = []
    real = budget_module.effective_train_config

    def spy(train, **kw):
        calls.append(kw)
        return real(train, **kw)

    monkeypatch.setattr(detector_module, "effective_train_config", spy)
    preset = _small_schedule(max_steps=5)
    images = fmnist.train_images[:300]
    fitted = Detector(preset, device="cpu", seed=0).fit(images, progress=False)  # as `discopatch fit` calls it
    bench = train_main(preset, SimpleNamespace(id_train=images), 0, False, max_steps=FULL.main_steps,
                       max_time=FULL.main_train)  # fmt: skip
    assert len(calls) == 2 and calls[0] == calls[1] == {"epochs": None, "max_steps": None, "max_time": None}
    for key in ("steps", "planned_steps", "stop_reason"):
        assert bench.training_info[key] == fitted.training_info[key], key
    assert FULL.main_train is None and FULL_PHOTOS.main_train is None and FULL.main_steps is None  # no time budget


def test_the_learning_curve_ends_where_fit_stops(fmnist, monkeypatch) -> None:
    from discopatch.benchmark.curve import fit_steps

    assert fit_steps(get_preset("small", 1), 48_600) == fit_steps(get_preset("small", 1), 1_800) == SMALL_STEPS
    tiny = tiny_preset()  # an epoch-defined budget: one epoch of 16-image steps
    planned, _ = _planned(tiny, fmnist.train_images[:300], monkeypatch)
    assert fit_steps(tiny, 225) == planned == 225 // 16


# ------------------------------------------------------------------ calibration that cannot silently fail


@pytest.mark.parametrize("fpr", [0.05, 0.01, 0.1, 0.2, 1 / 3])
def test_min_calibration_images_is_where_the_threshold_becomes_finite(fpr) -> None:
    n = min_calibration_images(fpr)
    assert n == math.ceil(1 / fpr - 1e-9) - 1
    with pytest.warns(UserWarning, match="too few"):
        assert math.isinf(Calibration.from_scores(np.arange(n - 1.0), fpr).threshold)
    assert math.isfinite(Calibration.from_scores(np.arange(float(n)), fpr).threshold)


def test_fit_refuses_too_few_calibration_images_before_training(fmnist) -> None:
    det = Detector(tiny_preset(val_fraction=0.1), device="cpu", seed=0)
    with pytest.raises(TooFewCalibrationImagesError, match=r"4 held-out calibration images .* at least 19") as e:
        det.fit(fmnist.train_images[:40], progress=False)
    assert "--val-fraction 0.48" in str(e.value) and "190 images" in str(e.value)
    assert det.trainer is None  # refused before any training
    with pytest.raises(TooFewCalibrationImagesError):
        Detector(tiny_preset(), device="cpu").fit(fmnist.train_images[:300], val_fraction=0.02, progress=False)


def test_calibrate_refuses_too_few_images(trained_detector, fmnist) -> None:
    import copy

    det = copy.copy(trained_detector)
    with pytest.raises(TooFewCalibrationImagesError, match="5 calibration images"):
        det.calibrate(fmnist.test_images[:5], target_fpr=0.05)
    assert det.calibration is trained_detector.calibration


def test_cli_fit_on_40_images_exits_3_and_saves_nothing(fmnist, tmp_path, capsys) -> None:
    from PIL import Image

    folder = tmp_path / "few"
    folder.mkdir()
    for i, a in enumerate(fmnist.train_images[:40]):
        Image.fromarray(a).save(folder / f"{i}.png")
    tiny = ["--widths", "8,16,32", "--latent-dim", "16", "--image-size", "32", "--patch-size", "16", "--quiet"]
    assert main(["fit", str(folder), "--out", str(tmp_path / "m"), "--device", "cpu", *tiny]) == 3
    err = capsys.readouterr().err
    assert "at least 19" in err and "--val-fraction" in err
    assert not (tmp_path / "m" / "detector.json").exists()
