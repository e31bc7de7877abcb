"""The saved detector: a directory with D's weights, the calibration scores and one JSON file.

::

    MODEL/
      detector.json              format, package version, model / preprocessing / scoring config, calibration
      discriminator.safetensors  D's weights (no pickle: loading never executes code)
      calibration.safetensors    the sorted ID calibration scores (float64), for conformal p-values (calibrated
                                 detectors only)
      statistics.safetensors     the statistics model (:mod:`discopatch.inference.stats_model`; ``fused`` and
                                 ``stats-only`` detectors only)

The JSON records the SHA-256 of every safetensors file and a digest over everything in it that decides a score
(the ``model``, ``preprocess``, ``scoring``, ``calibration`` and ``files`` sections, see :func:`config_digest`), so
a truncated file or an edited setting is rejected with a message naming what changed instead of producing
silently different scores; the JSON itself must match :data:`~discopatch.artifact.schema.SCHEMA`. Provenance sits
outside the digest, since it does not decide a score: ``created`` (UTC ISO-8601, when ``fit`` trained the detector)
and ``training_data`` (:func:`~discopatch.data.sources.fingerprint_inputs` of what it was given); artefacts saved
before them load without them. The digest guards
against accidents and hand edits, not against someone who rewrites it too: it is a checksum, not a signature.
Weights are loaded strictly: every tensor name and shape must be exactly what the configuration builds (docs/METHOD.md,
section 5).

Each rule lives in one place: what a single field of ``detector.json`` may hold (types, bounds, required keys, the
closed sets of values, the allowed file names) is the schema's; :func:`load_artifact` checks what the schema cannot
express - JSON without NaN/infinity, a supported format version, the digest, the files' checksums, settings that
must agree with each other (channels, image vs patch size, calibration and statistics files present when the
configuration needs them) and the tensors against the configuration (names, shapes, finite values, the stored
calibration threshold), the last through :mod:`discopatch.artifact.checks`, which also holds the strict JSON reader.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save as safetensors_bytes

from .._version import __version__
from ..calibration import Calibration
from ..config import ModelConfig, PreprocessConfig, Preset, ScoreMode, from_dict, to_dict
from ..log import LOGGER
from ..model import Discriminator
from ..presets import PRESETS, get_preset
from ..score_modes import get as get_score_mode
from .checks import ArtifactError as ArtifactError  # re-exported: the error callers catch is named here too
from .checks import load_calibration, load_statistics, load_weights, read_strict_json, require
from .schema import SCHEMA
from .schema import validate as validate_schema

FORMAT = "discopatch-detector"
FORMAT_VERSION = 1
CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "discriminator.safetensors"
CALIBRATION_FILE = "calibration.safetensors"
STATS_FILE = "statistics.safetensors"
DIGEST_KEY = "digest"
DIGEST_SECTIONS = ("model", "preprocess", "scoring", "calibration", "files")
PROVENANCE_KEYS = ("created", "training_data")


def utc_now() -> str:
    """The current time as UTC ISO-8601 to the second (``created``), e.g. ``2026-12-01T09:30:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Artifact:
    model: ModelConfig
    preprocess: PreprocessConfig
    test_patches: int
    seed: int
    state_dict: dict[str, torch.Tensor]
    calibration: Calibration | None
    meta: dict[str, Any]
    score_mode: ScoreMode = "d-only"
    stats: dict[str, torch.Tensor] | None = None
    patch_aggregate: str = "mean"

    def preset(self) -> Preset:
        """The saved preset's settings with everything the artefact decides (model, preprocessing, patches, target
        FPR, score mode); a preset name this version does not know keeps its name on the ``small`` preset's
        training defaults, so a custom preset's name survives a re-save."""
        name = self.meta.get("preset")
        base = get_preset(name if name in PRESETS else "small")
        return base.replace(
            name=name if isinstance(name, str) else base.name,
            model=self.model,
            preprocess=self.preprocess,
            test_patches=self.test_patches,
            target_fpr=self.calibration.target_fpr if self.calibration else base.target_fpr,
            score_mode=self.score_mode,
            patch_aggregate=self.patch_aggregate,
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """Every setting that decides a score, keyed ``section.key`` (or ``section`` when it is not an object)."""
    fields: dict[str, Any] = {}
    for section in DIGEST_SECTIONS:
        value = meta.get(section)
        if isinstance(value, dict):
            fields.update({f"{section}.{k}": v for k, v in value.items()})
        else:
            fields[section] = value
    return fields


def config_digest(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``digest`` entry of ``detector.json``: a SHA-256 over every score-deciding setting, plus a short hash per
    setting so that a refusal can name the settings that changed (the safetensors files are covered through their
    checksums in ``files``)."""
    fields = _digest_fields(meta)
    return {
        "algorithm": "sha256",
        "sha256": _canonical_sha256(fields),
        "fields": {k: _canonical_sha256(v)[:16] for k, v in sorted(fields.items())},
    }


def _check_digest(meta: dict[str, Any], cfg_path: Path, allow_legacy: bool) -> None:
    """Refuse a ``detector.json`` edited after saving, naming the settings that differ.

    Every detector this version writes carries a digest, so one without it is either from before the digest existed
    or was edited with the digest removed (which would otherwise let any setting change unnoticed): it is refused
    unless the caller says it trusts the file (``allow_legacy``), and then only logged (INFO), since it was asked for.
    """
    stored = meta.get(DIGEST_KEY)
    if stored is None:
        if not allow_legacy:
            raise ArtifactError(
                f"{cfg_path}: no configuration digest, so edits to detector.json cannot be detected (every detector "
                "this version saves has one). If it is a trusted detector saved by an earlier discopatch, load it "
                "with --allow-legacy-artifact (Python: allow_legacy=True) and save it again to add one"
            )
        LOGGER.info("%s: loaded without a configuration digest (--allow-legacy-artifact); save it again to add one",
                    cfg_path)  # fmt: skip
        return
    now = config_digest(meta)
    if stored["sha256"] == now["sha256"]:
        return
    old, new = stored["fields"], now["fields"]
    changed = [f"{k} changed" for k in sorted(set(old) & set(new)) if old[k] != new[k]]
    changed += [f"{k} added" for k in sorted(set(new) - set(old))]
    changed += [f"{k} removed" for k in sorted(set(old) - set(new))]
    what = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8 else "")
    raise ArtifactError(
        f"{cfg_path}: configuration digest mismatch: "
        + (what or "the digest record itself was edited")
        + ". detector.json was edited after the detector was saved and its scores would differ; "
        "restore the saved file or save the detector again"
    )


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file created afresh by ``open``, so it gets the ordinary mode (0666 minus the umask).

    safetensors' ``save_file`` creates 0600 files, which made the weights private while ``detector.json`` next to
    them was not; and ``open`` on an existing file keeps that file's mode, hence the unlink first.
    """
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a reader sees the old file or the new one,
    never half of one; the mode is that of :func:`write_new_file`."""
    tmp = path.with_name(path.name + ".tmp")
    write_new_file(tmp, data)
    os.replace(tmp, path)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file with the same bytes as ``save_file`` writes, through :func:`replace_file`."""
    replace_file(path, safetensors_bytes(tensors, metadata=metadata))


def save_artifact(
    directory: str | os.PathLike[str],
    D: Discriminator,
    preprocess: PreprocessConfig,
    test_patches: int,
    seed: int,
    calibration: Calibration | None,
    extra: dict[str, Any] | None = None,
    score_mode: ScoreMode = "d-only",
    stats: dict[str, torch.Tensor] | None = None,
    patch_aggregate: str = "mean",
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous().float() for k, v in D.state_dict().items()}
    save_tensors(sd, directory / WEIGHTS_FILE, metadata={"format": FORMAT})
    files = {WEIGHTS_FILE: _sha256(directory / WEIGHTS_FILE)}
    if stats is not None:
        save_tensors({k: v.contiguous() for k, v in stats.items()}, directory / STATS_FILE)
        files[STATS_FILE] = _sha256(directory / STATS_FILE)
    elif (directory / STATS_FILE).exists():
        (directory / STATS_FILE).unlink()
    cal_meta = None
    if calibration is not None:
        save_tensors({"scores": torch.from_numpy(calibration.scores.copy())}, directory / CALIBRATION_FILE)
        files[CALIBRATION_FILE] = _sha256(directory / CALIBRATION_FILE)
        thr = calibration.threshold
        cal_meta = {
            "target_fpr": calibration.target_fpr,
            "threshold": None if math.isinf(thr) else thr,
            "n": calibration.n,
        }
    elif (directory / CALIBRATION_FILE).exists():
        (directory / CALIBRATION_FILE).unlink()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "discopatch_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model": to_dict(D.cfg),
        "preprocess": to_dict(preprocess),
        "scoring": {
            "test_patches": int(test_patches),
            "seed": int(seed),
            # Always D's score, also for fused and stats-only detectors: ``score_mode`` says what the detector's
            # score is. The text is part of the format (and of the digest), so it is not changed per mode.
            "score": "1 - mean_patches D(patch)",
            "score_mode": score_mode,
            # written only when not the paper's mean, so detectors saved before the option keep their bytes
            **({} if patch_aggregate == "mean" else {"patch_aggregate": patch_aggregate}),
        },
        "calibration": cal_meta,
        "files": files,
        **(extra or {}),
    }
    meta[DIGEST_KEY] = config_digest(meta)
    replace_file(directory / CONFIG_FILE, json.dumps(meta, indent=2).encode())
    return directory


def detector_id(directory: str | os.PathLike[str]) -> str:
    """A detector's identity: SHA-256 (first 16 hex digits) of its ``detector.json``, which records the checksum of
    every other file, so any change to weights, calibration, statistics or settings gives a new id."""
    return hashlib.sha256((Path(directory) / CONFIG_FILE).read_bytes()).hexdigest()[:16]


def _legacy_model_fields(model: dict[str, Any], cfg_path: Path) -> dict[str, Any]:
    """Artefacts written before the 1x1 guard (discopatch 0.1.0's ``small`` preset) load as that named ablation."""
    if "ablation" in model:
        return model
    candidate = {**model, "ablation": "1x1-last-map"}
    try:
        if not from_dict(ModelConfig, candidate).erases_image:  # the guard's own rule decides
            return model
    except (TypeError, ValueError):
        return model  # from_dict reports what is wrong
    warnings.warn(
        f"{cfg_path}: this detector's D ends at a 1x1 map (the small preset before 0.2); it is loaded as the "
        "named ablation '1x1-last-map'. Retrain with the current preset for a detector whose score improves "
        "with training (docs/BENCHMARKS.md, 'Learning curve').",
        UserWarning,
        stacklevel=3,
    )
    return candidate


def _read_config(cfg_path: Path) -> dict[str, Any]:
    """``detector.json`` parsed strictly and checked against the schema.

    Types, bounds, required keys and enums are the schema's (:data:`~discopatch.artifact.schema.SCHEMA`), checked
    only there. Two questions come first because a newer or foreign file need not match this schema at all: is it a
    detector (the schema's own rule for "format", asked on its own), and is its format version one this reader
    supports.
    """
    meta = read_strict_json(cfg_path)
    problems = validate_schema(meta)
    if isinstance(meta, dict):
        fmt = meta.get("format")
        require(
            not validate_schema(fmt, SCHEMA["properties"]["format"]),
            f"{cfg_path}: not a discopatch detector (format={fmt!r})",
        )
        version = meta.get("format_version")
        require(
            version == FORMAT_VERSION,
            f"{cfg_path}: artefact format version {version} is not supported by discopatch {__version__} "
            f"(expects {FORMAT_VERSION})",
        )
    require(
        not problems,
        f"{cfg_path}: does not match the detector.json schema ({'; '.join(problems[:5])}"
        + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        + ")",
    )
    return cast(dict[str, Any], meta)  # the schema requires an object


def _configs(meta: dict[str, Any], cfg_path: Path) -> tuple[ModelConfig, PreprocessConfig]:
    """The model and preprocessing configurations, which must agree with each other (channels, image size)."""
    try:
        model = from_dict(ModelConfig, _legacy_model_fields(meta["model"], cfg_path))
        pre = from_dict(PreprocessConfig, meta["preprocess"])
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"{cfg_path}: invalid configuration ({e})") from None
    require(pre.channels == model.channels, f"{cfg_path}: preprocess channels != model channels")
    require(pre.image_size >= model.patch_size, f"{cfg_path}: image_size is smaller than patch_size")
    return model, pre


def _check_files(directory: Path, files: dict[str, str]) -> None:
    """Every file ``detector.json`` lists exists with its recorded checksum (the schema names the only files
    allowed and requires the weights' checksum), before any of them is parsed."""
    for name, digest in files.items():
        path = directory / name
        require(path.is_file(), f"{directory}: missing {name}")
        require(_sha256(path) == digest, f"{path}: checksum mismatch (file changed or truncated since it was saved)")


def load_artifact(directory: str | os.PathLike[str], allow_legacy: bool = False) -> Artifact:
    """Read and check a detector directory; ``allow_legacy`` accepts one without a configuration digest (see
    :func:`_check_digest`)."""
    directory = Path(directory)
    require(directory.is_dir(), f"{directory}: not a detector directory (expected a folder with {CONFIG_FILE})")
    cfg_path = directory / CONFIG_FILE
    require(cfg_path.is_file(), f"{directory}: missing {CONFIG_FILE}")
    meta = _read_config(cfg_path)
    _check_digest(meta, cfg_path, allow_legacy)
    model, pre = _configs(meta, cfg_path)
    scoring, files = meta["scoring"], meta["files"]
    _check_files(directory, files)
    sd = load_weights(directory / WEIGHTS_FILE, model)
    calibration = None
    cal_meta = meta.get("calibration")
    if cal_meta is not None:
        require(CALIBRATION_FILE in files, f"{cfg_path}: calibration present but {CALIBRATION_FILE} not listed")
        calibration = load_calibration(directory / CALIBRATION_FILE, cal_meta, cfg_path)
    score_mode = scoring.get("score_mode", "d-only")  # absent in artefacts saved before the statistics model
    stats = None
    if get_score_mode(score_mode).needs_statistics:
        require(STATS_FILE in files, f"{cfg_path}: score_mode {score_mode!r} needs {STATS_FILE}")
        stats = load_statistics(directory / STATS_FILE)
    aggregate = scoring.get("patch_aggregate", "mean")  # absent: the paper's mean (and every older artefact)
    return Artifact(
        model, pre, scoring["test_patches"], scoring["seed"], sd, calibration, meta, score_mode, stats, aggregate
    )
