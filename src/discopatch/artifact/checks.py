"""The checks on a detector directory that its JSON Schema cannot express (:mod:`discopatch.artifact.files` runs
them in order): strict JSON numbers, and each safetensors file's tensors against the configuration.

Kept apart from the file format so that every reason a detector is refused - and :class:`ArtifactError`, the one
error they raise - is read in one place, while ``files`` keeps what a detector directory holds and how it is saved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..calibration import Calibration
from ..config import ModelConfig
from ..errors import BadArtifactError
from ..inference.stats_model import SAVED_KEYS
from ..model import Discriminator


class ArtifactError(BadArtifactError, ValueError):
    """A saved detector is missing, damaged or does not match its configuration."""


def require(cond: bool, msg: str) -> None:
    """Refuse the detector with ``msg`` unless ``cond`` holds."""
    if not cond:
        raise ArtifactError(msg)


def _reject_constant(name: str) -> Any:
    raise ArtifactError(f"non-finite number {name} (only finite numbers are allowed)")


#: The longest integer literal read from ``detector.json``: more digits than any bound in the schema has, far fewer
#: than Python's int-conversion limit (4300 digits), so a huge literal is one clear ArtifactError.
MAX_INT_DIGITS = 40


def _parse_float(text: str) -> float:
    """A JSON number with a fraction or exponent; ``1e400`` parses to infinity in Python, so it is refused here."""
    value = float(text)
    if not math.isfinite(value):
        raise ArtifactError(f"number {text[:40]} is out of the floating-point range")
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ArtifactError(f"integer with {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS} are allowed)")
    return int(text)


def read_strict_json(path: Path) -> Any:
    """``path`` parsed as JSON with only finite numbers and bounded integers: Python's parser accepts NaN,
    infinity and integers of any length, none of which a detector ever writes."""
    try:
        return json.loads(
            path.read_text(), parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int
        )
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None


def _only_tensors(tensors: dict[str, torch.Tensor], allowed: set[str], path: Path) -> None:
    """A file holds the tensors its format names and nothing else (an extra one would be ignored silently)."""
    extra = sorted(set(tensors) - allowed)
    require(not extra, f"{path}: unexpected tensors {extra[:5]} (expected only {sorted(allowed)})")


def _positive_spread(stats: dict[str, torch.Tensor], path: Path) -> None:
    """The statistics model divides by its feature scales and by the two fusion IQRs: a zero (or negative) one would
    make scores infinite, so such a file is refused (fitting floors them; only a hand-edited or degenerate file has
    one)."""
    fusion, scale = stats.get(SAVED_KEYS["fusion"]), stats.get(SAVED_KEYS["feat_scale"])
    if fusion is not None and fusion.numel() == 4:
        bad = [name for name, v in (("D score", fusion[1]), ("statistics score", fusion[3])) if not float(v) > 0]
        require(not bad, f"{path}: zero spread (IQR <= 0) of the {' and '.join(bad)} on the ID validation images, "
                         "so every score would be infinite; refit the detector")  # fmt: skip
    if scale is not None and scale.is_floating_point():
        require(bool((scale > 0).all()), f"{path}: a feature scale is zero or negative; refit the detector")


def _all_finite(tensors: dict[str, torch.Tensor], path: Path, skip: tuple[str, ...] = ()) -> None:
    for k, v in tensors.items():
        if any(s in k for s in skip) or not v.is_floating_point():
            continue
        require(bool(torch.isfinite(v).all()), f"{path}: non-finite value (NaN or infinity) in {k}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"{path}: unreadable safetensors file ({e})") from None


def load_weights(path: Path, model: ModelConfig) -> dict[str, torch.Tensor]:
    """D's weights, loaded strictly: exactly the tensor names and shapes that ``model`` builds, all finite, so a
    file from another configuration is refused here rather than half-loaded."""
    sd = _load_safetensors(path)
    expected = {k: tuple(v.shape) for k, v in Discriminator(model).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    require(
        not missing and not unexpected,
        f"{path}: weights do not match the configured model (missing {missing[:5]}, unexpected {unexpected[:5]})",
    )
    bad = [k for k in expected if expected[k] != got[k]]
    require(not bad, f"{path}: shape mismatch for {bad[:5]}")
    _all_finite(sd, path, skip=("num_batches",))
    return sd


def load_calibration(path: Path, cal_meta: dict[str, Any], cfg_path: Path) -> Calibration:
    """The calibration from its sorted scores; its count and the threshold recomputed from them must equal what
    ``detector.json`` (``cfg_path``) records, so neither file can be swapped on its own."""
    cal_tensors = _load_safetensors(path)
    _only_tensors(cal_tensors, {"scores"}, path)
    scores = cal_tensors.get("scores")
    if scores is None or scores.ndim != 1 or not scores.is_floating_point():
        raise ArtifactError(f"{path}: no 1-D floating-point 'scores'")
    _all_finite(cal_tensors, path)
    require(scores.numel() == cal_meta["n"], f"{cfg_path}: calibration.n does not match the stored scores")
    calibration = Calibration.from_scores(scores.double().numpy(), float(cal_meta["target_fpr"]))
    stored = cal_meta.get("threshold")
    recomputed = None if math.isinf(calibration.threshold) else calibration.threshold
    require(stored == recomputed, f"{cfg_path}: calibration threshold does not match the stored scores")
    return calibration


def load_statistics(path: Path) -> dict[str, torch.Tensor]:
    """The statistics model's tensors: only the known ones, finite, with positive spreads (a zero one would make
    every score infinite)."""
    stats = _load_safetensors(path)
    _only_tensors(stats, set(SAVED_KEYS.values()), path)
    _all_finite(stats, path)
    _positive_spread(stats, path)
    return stats
