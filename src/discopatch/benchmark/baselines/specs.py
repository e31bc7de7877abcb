"""The baselines the benchmark runs, as a list of specs: adding one is one :class:`BaselineSpec` in :data:`BASELINES`.

Each spec names its result row, its report group, the :class:`~discopatch.benchmark.sets.Budget` field holding its
training seconds (``None``: nothing is trained for a time), and a factory that fits it on the shared
:class:`BaselineInputs` and returns its score functions. The runner loops over :data:`BASELINES` in order, so the
rows of ``results.json`` keep this order (see CONTRIBUTING.md, "Add a baseline").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...model import VAE, Discriminator
from .base import Baseline
from .classifier import SmallCNNClassifier
from .feature_stats import NMDStatistics
from .likelihood import InputComplexityElbo, VAEElbo, VAEReconstruction
from .one_class import DeepSVDD

#: One baseline's scores of a preprocessed stack: ``(N,)`` float64, higher = more OOD.
ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BaselineInputs:
    """What every baseline is fitted from: the ID training stack every method shares, its class labels (``None``
    when the protocol has none) and the DisCoPatch models trained on it (``vae`` is ``None`` for a loaded D)."""

    train: np.ndarray
    labels: np.ndarray | None
    D: Discriminator
    vae: VAE | None
    n_patches: int
    seed: int


#: ``(inputs, seconds) -> {row suffix: score function}``; ``""`` is the spec's own row, any other key the row
#: ``"<name> <key>"``; empty when the baseline does not apply (no VAE, no labels). ``seconds`` is the budget's
#: value for the spec's ``budget_key`` (``None`` without one).
Factory = Callable[[BaselineInputs, "float | None"], dict[str, ScoreFn]]


@dataclass(frozen=True)
class BaselineSpec:
    """One baseline: its row ``name``, report ``group`` (``label-free`` or ``label-based``), the ``Budget`` field
    with its training seconds (``budget_key``; ``None``: not trained for a time, recorded as 0 s), its factory and
    the row's notes."""

    name: str
    group: str
    budget_key: str | None
    factory: Factory
    notes: str = ""

    def row_name(self, key: str) -> str:
        """The result row of one of the factory's score functions."""
        return self.name if key == "" else f"{self.name} {key}"


def _vae_factory(cls: Callable[..., Baseline]) -> Factory:
    """A VAE baseline reads the VAE DisCoPatch trained anyway, on the patches D sees: nothing to fit."""

    def make(inputs: BaselineInputs, seconds: float | None) -> dict[str, ScoreFn]:
        if inputs.vae is None:
            return {}
        return {"": cls(inputs.vae.eval(), inputs.n_patches, seed=inputs.seed).score}

    return make


def _deep_svdd(inputs: BaselineInputs, seconds: float | None) -> dict[str, ScoreFn]:
    return {"": DeepSVDD().fit(inputs.train, max_time=seconds, seed=inputs.seed).score}


def _nmd(inputs: BaselineInputs, seconds: float | None) -> dict[str, ScoreFn]:
    nmd = NMDStatistics(inputs.D, inputs.n_patches, seed=inputs.seed).fit(inputs.train, seed=inputs.seed)
    return {"": nmd.score}


def _classifier(inputs: BaselineInputs, seconds: float | None) -> dict[str, ScoreFn]:
    """One small ResNet, trained once, read out by each post-hoc score (MSP, Energy, Mahalanobis, KNN)."""
    if inputs.labels is None:
        return {}
    clf = SmallCNNClassifier()
    clf.fit(inputs.train, inputs.labels, max_time=seconds, seed=inputs.seed)
    rows: dict[str, ScoreFn] = {}
    for scorer in clf.scorers():
        scorer.fit(inputs.train, inputs.labels, seed=inputs.seed)
        rows[scorer.name] = scorer.score
    return rows


_VAE_NOTE = "the DisCoPatch VAE on the same patches"

#: Every baseline, in the order the benchmark records them.
BASELINES: list[BaselineSpec] = [
    BaselineSpec("VAE reconstruction error", "label-free", None, _vae_factory(VAEReconstruction), _VAE_NOTE),
    BaselineSpec("VAE negative ELBO", "label-free", None, _vae_factory(VAEElbo), _VAE_NOTE),
    BaselineSpec(
        "ELBO with input-complexity correction", "label-free", None, _vae_factory(InputComplexityElbo), _VAE_NOTE
    ),
    BaselineSpec("Deep SVDD", "label-free", "svdd_train", _deep_svdd),
    BaselineSpec("NMD-style statistics (D channel means)", "label-free", None, _nmd),
    BaselineSpec("classifier", "label-based", "classifier_train", _classifier),
]

__all__ = ["BASELINES", "BaselineInputs", "BaselineSpec", "Factory", "ScoreFn"]
