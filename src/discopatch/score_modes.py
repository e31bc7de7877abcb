"""The score modes: what a detector's score is, one registry entry per mode.

A detector's score is computed from two per-image numbers of one forward pass: D's score ``1 - mean sigmoid(logit)``
and, for modes that need it, the Mahalanobis distance of the image's layer statistics under the statistics model
(:mod:`discopatch.inference.stats_model`, whose ``fusion`` vector holds the robust location and scale of both scores on
held-out ID images). A :class:`ScoreModeSpec` entry says how the two become the score, once for NumPy (the detector,
explanations) and once for PyTorch (the ONNX graph), whether the statistics model is needed, and how the mode is
described. Everything that names a mode reads it from here: the detector, the ONNX graph and its metadata, the
explanations, the artefact schema's enum (:data:`NAMES`), the ``fit --score`` choices and help, and the service's
API schema. Adding a mode is one :func:`register` call (or one entry in :data:`BUILTIN`) plus its test; see
CONTRIBUTING.md.

This module is a leaf and imports neither NumPy nor PyTorch at import time, so the command line can offer the
choices without loading them: combiners work with operators and array methods only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

#: A score mode's name, as written in presets, artefacts, ONNX metadata and on the command line.
ScoreMode = str
#: ``(d_scores, stats_scores, fusion) -> scores``; ``stats_scores`` and ``fusion`` are ``None`` for a mode that
#: does not need the statistics model.
NumpyCombiner = Callable[["np.ndarray", "np.ndarray | None", "np.ndarray | None"], "np.ndarray"]
TorchCombiner = Callable[["torch.Tensor", "torch.Tensor | None", "torch.Tensor | None"], "torch.Tensor"]


@dataclass(frozen=True)
class ScoreModeSpec:
    """One way of turning D's score and the statistics score of an image into its OOD score (higher = more OOD).

    ``description`` is one short line for ``fit --help`` and the API schema; ``formula`` is the exact definition
    written into an exported ONNX model's metadata. ``uses_discriminator=False`` marks a mode whose score ignores
    D, so explanations name the statistics as the view that set it.
    """

    name: ScoreMode
    description: str
    formula: str
    needs_statistics: bool
    combine_numpy: NumpyCombiner
    combine_torch: TorchCombiner
    uses_discriminator: bool = True


def robust_z(d: Any, s: Any, fusion: Any) -> tuple[Any, Any]:
    """Both scores on the fused robust z-scale, ``fusion = [d_median, d_iqr, s_median, s_iqr]``.

    Written with operators only, so NumPy arrays and PyTorch tensors (the ONNX graph) take the same arithmetic.
    """
    return (d - fusion[0]) / fusion[1], (s - fusion[2]) / fusion[3]


def _given(x: Any, what: str) -> Any:
    """``x``, or a clear error when a statistics-based combiner is called without the statistics."""
    if x is None:
        raise ConfigError(f"this score mode needs the {what}")
    return x


def _d_numpy(d: np.ndarray, s: np.ndarray | None, fusion: np.ndarray | None) -> np.ndarray:
    return d


def _d_torch(d: torch.Tensor, s: torch.Tensor | None, fusion: torch.Tensor | None) -> torch.Tensor:
    return d


def _stats_numpy(d: np.ndarray, s: np.ndarray | None, fusion: np.ndarray | None) -> np.ndarray:
    out: np.ndarray = _given(s, "statistics scores")
    return out


def _stats_torch(d: torch.Tensor, s: torch.Tensor | None, fusion: torch.Tensor | None) -> torch.Tensor:
    out: torch.Tensor = _given(s, "statistics scores")
    return out


def _fused_numpy(d: np.ndarray, s: np.ndarray | None, fusion: np.ndarray | None) -> np.ndarray:
    import numpy as np

    d_z, s_z = robust_z(d, _given(s, "statistics scores"), _given(fusion, "fusion scales"))
    fused: np.ndarray = np.maximum(d_z, s_z)
    return fused


def _fused_torch(d: torch.Tensor, s: torch.Tensor | None, fusion: torch.Tensor | None) -> torch.Tensor:
    d_z, s_z = robust_z(d, _given(s, "statistics scores"), _given(fusion, "fusion scales"))
    fused: torch.Tensor = d_z.maximum(s_z)
    return fused


#: How an image's patches become D's score: the share of its patches, those D finds least real, over which
#: ``1 - sigmoid(logit)`` is averaged. ``mean`` (every patch) is the paper's score; a smaller share keeps a local
#: anomaly (an object pasted into one corner covers few of the random patches) that the mean dilutes, at the price
#: of a noisier score on ID images (docs/BENCHMARKS.md, "Patch aggregation"). ``max`` keeps one patch.
PATCH_AGGREGATES: dict[str, float] = {"mean": 1.0, "top50": 0.5, "top25": 0.25, "top12": 0.125, "max": 0.0}


def patches_kept(aggregate: str, n_patches: int) -> int:
    """How many of an image's ``n_patches`` patches the aggregate averages (at least one, at most all)."""
    try:
        share = PATCH_AGGREGATES[aggregate]
    except KeyError:
        choices = ", ".join(PATCH_AGGREGATES)
        raise ConfigError(f"unknown patch aggregate {aggregate!r}; choose one of {choices}") from None
    return max(1, min(int(n_patches), round(share * n_patches)))


#: The modes discopatch ships, in the order the command line lists them.
BUILTIN: tuple[ScoreModeSpec, ...] = (
    ScoreModeSpec(
        "d-only",
        "the paper's 1 - mean D",
        "1 - mean over the image's patches of sigmoid(logit); higher = more OOD",
        False,
        _d_numpy,
        _d_torch,
    ),
    ScoreModeSpec(
        "fused",
        "also score the per-image statistics the normalisation removes",
        "max of the robust z-scores of D's score and of the stats' Mahalanobis distance (medians and IQRs "
        "of held-out ID images); higher = more OOD",
        True,
        _fused_numpy,
        _fused_torch,
    ),
    ScoreModeSpec(
        "stats-only",
        "the per-image statistics' Mahalanobis distance alone",
        "squared Mahalanobis distance of the standardised stats under the ID Gaussian; higher = more OOD",
        True,
        _stats_numpy,
        _stats_torch,
        uses_discriminator=False,
    ),
)

_MODES: dict[str, ScoreModeSpec] = {m.name: m for m in BUILTIN}
#: The registered names in order: a live list (the artefact schema's enum and ``fit --score``'s choices are this
#: very object), kept in step by :func:`register` and :func:`unregister`; never modify it directly.
NAMES: list[str] = list(_MODES)


def get(name: str) -> ScoreModeSpec:
    """The registered mode called ``name``; a ``ValueError`` naming the choices otherwise."""
    try:
        return _MODES[name]
    except KeyError:
        raise ConfigError(f"unknown score mode {name!r}; choose one of {', '.join(NAMES)}") from None


def register(mode: ScoreModeSpec) -> ScoreModeSpec:
    """Add ``mode`` to the registry (a name may be registered once); returns it."""
    if mode.name in _MODES:
        raise ConfigError(f"score mode {mode.name!r} is already registered")
    _MODES[mode.name] = mode
    NAMES.append(mode.name)
    return mode


def unregister(name: str) -> None:
    """Remove a mode added with :func:`register` (the built-in ones stay: saved detectors name them)."""
    if any(m.name == name for m in BUILTIN):
        raise ConfigError(f"score mode {name!r} is built in")
    del _MODES[get(name).name]
    NAMES.remove(name)


def names_text() -> str:
    """The names as prose (``"d-only, fused or stats-only"``), for schema descriptions."""
    return ", ".join(NAMES[:-1]) + " or " + NAMES[-1] if len(NAMES) > 1 else NAMES[0]


def help_text() -> str:
    """``name: description`` for every mode, the ``fit --score`` help."""
    return "; ".join(f"{m.name}: {m.description}" for m in _MODES.values())


__all__ = [
    "BUILTIN",
    "NAMES",
    "NumpyCombiner",
    "ScoreMode",
    "ScoreModeSpec",
    "TorchCombiner",
    "get",
    "help_text",
    "names_text",
    "register",
    "robust_z",
    "unregister",
]
