"""Every named preset goes through the whole user path: ``fit`` from a folder, save, load, score, deterministically.

Parametrised over :data:`discopatch.presets.PRESETS`, so a new preset is one entry and is tested here without a
new test. Only the step count and batch sizes are cut (one step of four images); everything else - geometry, score
mode, the levers of its schedule - is the preset's own, and the saved detector must record it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main
from discopatch.config import to_dict
from discopatch.detector import Detector
from discopatch.presets import PRESETS, get_preset

CUT = [
    "--max-steps",
    "1",
    "--batch-images",
    "4",
    "--train-patches",
    "2",
    "--target-fpr",
    "0.2",
    "--quiet",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fmnist) -> Path:
    out = tmp_path_factory.mktemp("every_preset") / "train"
    out.mkdir()
    for i, image in enumerate(fmnist.train_images[:60]):
        Image.fromarray(image).save(out / f"{i:03d}.png")
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_fits_saves_loads_and_scores_as_itself(name: str, folder: Path, tmp_path: Path, fmnist) -> None:
    model = tmp_path / "model"
    assert main(["fit", str(folder), "--out", str(model), "--preset", name, *CUT]) == 0

    preset = get_preset(name, channels=1)  # the folder is gray: --channels auto picks 1
    saved = json.loads((model / "detector.json").read_text())
    assert saved["preset"] == name
    assert saved["model"] == to_dict(preset.model)
    train = saved["training"]["train_config"]
    cut = {"max_steps": 1, "epochs": None, "batch_images": 4, "train_patches": 2}  # a step count replaces epochs
    expected = {**to_dict(preset.train), **cut}
    assert {k: train[k] for k in expected} == expected

    det = Detector.load(model)
    assert (det.preset.test_patches, det.preset.score_mode) == (preset.test_patches, preset.score_mode)
    images = fmnist.test_images[:3]
    first, again = det.score(images), Detector.load(model).score(images)
    assert np.isfinite(first).all() and np.array_equal(first, again)
