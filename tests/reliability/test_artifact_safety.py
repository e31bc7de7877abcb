"""Artefact guarantees: schema-validated JSON, safetensors-only weights, clear refusals, no code ever executed."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import discopatch
from discopatch.artifact.files import CONFIG_FILE, WEIGHTS_FILE, ArtifactError, _sha256, config_digest
from discopatch.artifact.schema import SCHEMA, validate
from discopatch.detector import Detector

SRC = Path(discopatch.__file__).parent


@pytest.fixture
def saved(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _edit(saved: Path, fn) -> None:
    """Edit ``detector.json`` and recompute its digest, as a deliberate forger would: the checks behind the digest
    (schema, safetensors-only, strict weights) must hold on their own."""
    meta = json.loads((saved / CONFIG_FILE).read_text())
    fn(meta)
    meta["digest"] = config_digest(meta)
    (saved / CONFIG_FILE).write_text(json.dumps(meta))


def test_saved_artefact_matches_the_schema_and_jsonschema_agrees(saved: Path) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    assert validate(meta) == []
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(meta, SCHEMA)


BAD_EDITS = {
    "string size": (lambda m: m["preprocess"].update(image_size="32"), "image_size: expected integer"),
    "huge size": (lambda m: m["preprocess"].update(image_size=10**9), "image_size: 1000000000 violates maximum"),
    "bool as int": (lambda m: m["model"].update(latent_dim=True), "latent_dim: expected integer"),
    "widths not list": (lambda m: m["model"].update(widths="8,16"), "widths: expected array"),
    "resize mode": (lambda m: m["preprocess"].update(resize="stretch"), "resize: must be one of"),
    "extra file": (lambda m: m["files"].update({"evil.pkl": "0" * 64}), "unexpected key 'evil.pkl'"),
    "bad digest": (lambda m: m["files"].update({WEIGHTS_FILE: "abc"}), "does not match"),
    "fpr": (lambda m: m["calibration"].update(target_fpr=1.5), "target_fpr: 1.5 violates"),
    "channels": (lambda m: m["model"].update(channels=2), "channels: must be one of"),
    "score mode": (lambda m: m["scoring"].update(score_mode="fused-ish"), "$.scoring.score_mode: must be one of"),
    "seed type": (lambda m: m["scoring"].update(seed=1.5), "$.scoring.seed: expected integer"),
    "no patches": (lambda m: m["scoring"].update(test_patches=0), "$.scoring.test_patches: 0 violates minimum 1"),
    "section type": (lambda m: m.update(preprocess=[]), "$.preprocess: expected object"),
    "no weights": (lambda m: m["files"].pop(WEIGHTS_FILE), f"$.files: missing required key {WEIGHTS_FILE!r}"),
}


@pytest.mark.parametrize("name", list(BAD_EDITS))
def test_schema_violations_are_refused_with_the_json_path(saved: Path, name: str) -> None:
    edit, message = BAD_EDITS[name]
    _edit(saved, edit)
    with pytest.raises(ArtifactError, match=r"does not match the detector\.json schema") as info:
        Detector.load(saved)
    assert message in str(info.value)
    jsonschema = pytest.importorskip("jsonschema")
    meta = json.loads((saved / CONFIG_FILE).read_text())
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(meta)  # the standard validator agrees


def test_truncated_and_empty_json_are_refused(saved: Path) -> None:
    text = (saved / CONFIG_FILE).read_text()
    (saved / CONFIG_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Detector.load(saved)
    (saved / CONFIG_FILE).write_text("[]")
    with pytest.raises(
        ArtifactError, match=r"detector\.json: does not match the detector\.json schema \(\$: expected object"
    ):
        Detector.load(saved)


class _Gadget:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_payloads_are_never_executed(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Gadget(str(marker)))
    # 1. a pickle (a torch.save file) in place of the safetensors weights, checksum updated to match
    (saved / WEIGHTS_FILE).write_bytes(payload)
    _edit(saved, lambda m: m["files"].update({WEIGHTS_FILE: _sha256(saved / WEIGHTS_FILE)}))
    with pytest.raises(ArtifactError, match="unreadable safetensors"):
        Detector.load(saved)
    # 2. a valid safetensors file whose metadata and tensor names carry the pickle bytes
    evil = {"__reduce__": torch.zeros(1)}
    save_file(evil, str(saved / WEIGHTS_FILE), metadata={"format": payload.hex(), "pickle": payload.decode("latin1")})
    _edit(saved, lambda m: m["files"].update({WEIGHTS_FILE: _sha256(saved / WEIGHTS_FILE)}))
    with pytest.raises(ArtifactError, match="do not match the configured model"):
        Detector.load(saved)
    # 3. the JSON itself holding a pickle string and a "__reduce__" key
    _edit(saved, lambda m: m["model"].update(__reduce__=payload.decode("latin1")))
    with pytest.raises(ArtifactError):
        Detector.load(saved)
    assert not marker.exists()


def test_oversized_safetensors_header_is_refused(saved: Path) -> None:
    """A header that claims gigabytes must be refused, not allocated."""
    (saved / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2**40) + b"{}")
    _edit(saved, lambda m: m["files"].update({WEIGHTS_FILE: _sha256(saved / WEIGHTS_FILE)}))
    with pytest.raises(ArtifactError, match="unreadable safetensors"):
        Detector.load(saved)


def test_mismatched_weight_dtype_or_nan_is_refused(saved: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(saved / WEIGHTS_FILE))
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[key] = torch.full_like(sd[key], float("nan"))
    save_file(sd, str(saved / WEIGHTS_FILE), metadata={"format": "discopatch-detector"})
    _edit(saved, lambda m: m["files"].update({WEIGHTS_FILE: _sha256(saved / WEIGHTS_FILE)}))
    with pytest.raises(ArtifactError, match="non-finite"):
        Detector.load(saved)


UNSAFE = re.compile(
    r"\b(pickle\.loads?|torch\.load|cPickle|dill|joblib\.load|np\.load|numpy\.load|marshal\.loads?)\s*\("
)


def test_package_never_unpickles_without_a_guard() -> None:
    """Every deserialising call in the package is safe by construction: torch.load with weights_only=True,
    np.load with allow_pickle=False, and pickle only through the restricted unpickler of data/builtin.py."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for m in UNSAFE.finditer(text):
            call = text[m.start() : text.find(")", m.end()) + 1]
            line = text.count("\n", 0, m.start()) + 1
            name = m.group(1)
            if name == "torch.load" and "weights_only=True" in call:
                continue
            if name in ("np.load", "numpy.load") and "allow_pickle=True" not in call:
                continue  # numpy refuses object arrays by default
            offenders.append(f"{path.relative_to(SRC)}:{line}: {call[:100]}")
    assert offenders == []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if "pickle.Unpickler" in text:
            assert "def find_class" in text, f"{path}: an Unpickler without a restricted find_class"
