"""JSON Schema of ``detector.json`` and a small validator for the subset of the standard that it uses.

The checksums and the configuration digest in ``detector.json`` detect changes, but a digest recomputed by hand (or
an artefact from an earlier version, which has none) could still carry a string where a size belongs, or a size that
would exhaust memory. Validating types and bounds before anything is built turns those into one clear
:class:`~discopatch.artifact.checks.ArtifactError`.

:data:`SCHEMA` is standard JSON Schema (draft 2020-12), so other tools can check artefacts too; the package
validates it with :func:`validate` rather than depending on ``jsonschema`` (the test suite checks that both agree).
Unknown keys inside ``model`` and ``preprocess`` are left to :func:`discopatch.config.from_dict`, which knows the
current dataclass fields; ``files`` and ``calibration`` are closed.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from .. import score_modes
from ..config import ABLATIONS, MAX_SEED, RESIZE_MODES

_SEED = {"type": "integer", "minimum": 0, "maximum": MAX_SEED}
#: A count of images or scores: far above any real data set, far below what could overflow anything.
_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**40}
#: Any finite score: the JSON reader already refuses what does not fit a float (``1e400``); the bound makes the
#: schema say so to other validators too.
_SCORE = {"type": ["number", "null"], "minimum": -1e300, "maximum": 1e300}
_SIZE = {"type": "integer", "minimum": 1, "maximum": 8192}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_ISO_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://discopatch.invalid/schemas/detector.json",
    "title": "discopatch detector artefact (detector.json)",
    "type": "object",
    "required": ["format", "format_version", "model", "preprocess", "scoring", "files"],
    "properties": {
        "format": {"const": "discopatch-detector"},
        "format_version": {"type": "integer", "minimum": 1, "maximum": 1000},
        "discopatch_version": {"type": "string", "maxLength": 64},
        "torch_version": {"type": "string", "maxLength": 64},
        "preset": {"type": ["string", "null"], "maxLength": 64},
        "training": {"type": "object"},
        # the resolved 'fit' options (fit --print-config); provenance, outside the digest (artifact.DIGEST_SECTIONS)
        "run_config": {"type": "object"},
        # provenance, outside the digest: when the detector was trained and a fingerprint of its training inputs
        "created": {"type": "string", "maxLength": 40, "pattern": _ISO_UTC},
        "training_data": {
            "type": "object",
            "required": ["sha256", "n", "scheme"],
            "additionalProperties": False,
            "properties": {
                "sha256": _SHA256,
                "n": _COUNT,
                "scheme": {"enum": ["names+sizes", "array-bytes", "mixed"]},
            },
        },
        "model": {
            "type": "object",
            "required": ["channels", "patch_size", "widths", "latent_dim", "norm"],
            "properties": {
                "channels": {"enum": [1, 3]},
                "patch_size": _SIZE,
                "widths": {"type": "array", "minItems": 1, "maxItems": 16, "items": _SIZE},
                "latent_dim": {"type": "integer", "minimum": 1, "maximum": 65536},
                "norm": {"type": "string", "maxLength": 32},
                "norm_first_layer": {"type": "boolean"},
                "eps": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "negative_slope": {"type": "number", "minimum": 0, "maximum": 1},
                "groupnorm_groups": {"type": "integer", "minimum": 1, "maximum": 8192},
                "ablation": {"enum": [None, *ABLATIONS]},
                "d_widths": {"type": ["array", "null"], "minItems": 1, "maxItems": 16, "items": _SIZE},
            },
        },
        "preprocess": {
            "type": "object",
            "required": ["image_size", "channels", "resize"],
            "properties": {
                "image_size": _SIZE,
                "channels": {"enum": [1, 3]},
                "resize": {"enum": list(RESIZE_MODES)},
            },
        },
        "scoring": {
            "type": "object",
            "required": ["test_patches", "seed"],
            "properties": {
                "test_patches": {"type": "integer", "minimum": 1, "maximum": 100_000},
                "seed": _SEED,
                "score": {"type": "string", "maxLength": 200},
                "score_mode": {"enum": score_modes.NAMES},  # the live list of registered modes
                "patch_aggregate": {"enum": list(score_modes.PATCH_AGGREGATES)},
            },
        },
        "calibration": {
            "type": ["object", "null"],
            "required": ["target_fpr", "threshold", "n"],
            "additionalProperties": False,
            "properties": {
                "target_fpr": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "threshold": _SCORE,
                "n": {**_COUNT, "minimum": 1},
            },
        },
        "digest": {
            "type": "object",
            "required": ["algorithm", "sha256", "fields"],
            "additionalProperties": False,
            "properties": {
                "algorithm": {"const": "sha256"},
                "sha256": _SHA256,
                "fields": {"type": "object"},
            },
        },
        "files": {
            "type": "object",
            "required": ["discriminator.safetensors"],
            "additionalProperties": False,
            "properties": {
                "discriminator.safetensors": _SHA256,
                "calibration.safetensors": _SHA256,
                "statistics.safetensors": _SHA256,
            },
        },
    },
}

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


#: The numeric bound keywords: ``ok(instance, bound)``.
BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "minimum": operator.ge,
    "maximum": operator.le,
    "exclusiveMinimum": operator.gt,
    "exclusiveMaximum": operator.lt,
}


def validate(instance: Any, schema: dict[str, Any] = SCHEMA, path: str = "$") -> list[str]:
    """Every violation of ``schema`` as ``"<json path>: <what is wrong>"`` (empty when valid).

    Supports the keywords :data:`SCHEMA` uses: type, enum, const, required, properties, additionalProperties
    (boolean), items, minItems, maxItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength,
    maxLength, pattern.
    """
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](instance) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(instance).__name__}"]
    if "const" in schema and not _same(instance, schema["const"]):
        errors.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and not any(_same(instance, e) for e in schema["enum"]):
        errors.append(f"{path}: must be one of {schema['enum']}, got {instance!r}")
    if _TYPES["number"](instance):
        for key, ok in BOUNDS.items():
            if key in schema and not ok(instance, schema[key]):
                errors.append(f"{path}: {instance!r} violates {key} {schema[key]}")
    if isinstance(instance, str):
        if len(instance) > schema.get("maxLength", len(instance)) or len(instance) < schema.get("minLength", 0):
            errors.append(f"{path}: string length {len(instance)} out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance[:80]!r} does not match {schema['pattern']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0) or len(instance) > schema.get("maxItems", len(instance)):
            errors.append(f"{path}: {len(instance)} items out of bounds")
        if "items" in schema:
            for i, v in enumerate(instance):
                errors += validate(v, schema["items"], f"{path}[{i}]")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        errors += [f"{path}: missing required key {k!r}" for k in schema.get("required", []) if k not in instance]
        for k, v in instance.items():
            if k in props:
                errors += validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected key {k!r}")
    return errors


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b
