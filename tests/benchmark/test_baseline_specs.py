"""Every baseline spec the benchmark loops over, fitted and scored on a tiny budget; and a baseline added to the list
reaches the benchmark's rows (the CONTRIBUTING.md recipe "Add a baseline")."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from discopatch.benchmark.baselines import specs
from discopatch.benchmark.baselines.specs import BASELINES, BaselineInputs, BaselineSpec, ScoreFn
from discopatch.benchmark.runner import baseline_stage
from discopatch.benchmark.sets import QUICK, Budget
from discopatch.config import ModelConfig
from discopatch.model import VAE, Discriminator

TINY = dataclasses.replace(QUICK, svdd_train=0.5, classifier_train=0.5)


@pytest.fixture(scope="module")
def inputs() -> BaselineInputs:
    """32 px gray images in two classes (dark and bright), an untrained D and VAE: seconds, not minutes."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 24)
    train = np.clip(rng.normal(80 + 80 * labels[:, None, None], 30, (48, 32, 32)), 0, 255).astype(np.uint8)
    cfg = ModelConfig(channels=1, patch_size=16, widths=(8, 16, 32), latent_dim=16)
    torch.manual_seed(0)
    return BaselineInputs(train, labels, Discriminator(cfg).eval(), VAE(cfg), n_patches=4, seed=0)


def _rows(spec: BaselineSpec, inputs: BaselineInputs) -> dict[str, ScoreFn]:
    seconds = None if spec.budget_key is None else getattr(TINY, spec.budget_key)
    return spec.factory(inputs, seconds)


@pytest.mark.parametrize("spec", BASELINES, ids=lambda s: s.name)
def test_every_baseline_spec_fits_and_scores(spec: BaselineSpec, inputs: BaselineInputs) -> None:
    assert spec.group in ("label-free", "label-based")
    assert spec.budget_key is None or spec.budget_key in {f.name for f in dataclasses.fields(Budget)}
    rows = _rows(spec, inputs)
    assert rows, f"{spec.name}: no rows on inputs that have a VAE and labels"
    x = inputs.train[::6]
    for key, score in rows.items():
        s = score(x)
        assert s.dtype == np.float64 and s.shape == (len(x),) and np.all(np.isfinite(s)), spec.row_name(key)


def test_names_are_unique_and_keep_the_recorded_order() -> None:
    names = [s.name for s in BASELINES]
    assert len(set(names)) == len(names)
    assert names[:3] == ["VAE reconstruction error", "VAE negative ELBO", "ELBO with input-complexity correction"]
    assert names[3:] == ["Deep SVDD", "NMD-style statistics (D channel means)", "classifier"]


def test_baselines_that_do_not_apply_add_no_rows(inputs: BaselineInputs) -> None:
    """A loaded D has no VAE and a protocol without labels has no classifier: those rows are left out."""
    bare = dataclasses.replace(inputs, vae=None, labels=None)
    empty = {s.name for s in BASELINES if not s.factory(bare, 0.1)}
    assert empty == {s.name for s in BASELINES[:3]} | {"classifier"}


def _brightness(inputs: BaselineInputs, seconds: float | None) -> dict[str, ScoreFn]:
    """The recipe's throwaway baseline: distance of an image's mean brightness from the training mean."""
    centre = float(inputs.train.mean())
    return {"": lambda x: np.abs(x.reshape(len(x), -1).mean(1) - centre).astype(np.float64)}


def test_a_spec_added_to_the_list_reaches_the_benchmark(inputs: BaselineInputs, monkeypatch) -> None:
    extra = BaselineSpec("brightness distance", "label-free", "svdd_train", _brightness, "a recipe example")
    monkeypatch.setattr(specs, "BASELINES", [extra])
    recorded: list[tuple[Any, ...]] = []
    baseline_stage(inputs, TINY, lambda *row: recorded.append(row))
    ((name, group, score_fn, train_s, notes),) = recorded
    assert (name, group, notes) == ("brightness distance", "label-free", "a recipe example")
    assert train_s >= 0.0 and score_fn(inputs.train[:3]).shape == (3,)
