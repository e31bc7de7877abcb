"""Saved detectors round-trip exactly, and damaged or mismatched ones are refused with a clear message."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.artifact.files import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    config_digest,
    detector_id,
)
from discopatch.data.sources import fingerprint_inputs
from discopatch.detector import Detector


def _rewrite(saved: Path, meta: dict, reseal: bool) -> None:
    """Write an edited ``detector.json``; ``reseal`` recomputes the digest, as a deliberate forger would, to show that
    the checks behind the digest still hold on their own."""
    if reseal:
        meta["digest"] = config_digest(meta)
    (saved / CONFIG_FILE).write_text(json.dumps(meta))


@pytest.fixture
def saved(trained_detector: Detector, tmp_path: Path) -> Path:
    return trained_detector.save(tmp_path / "model")


def test_round_trip_gives_identical_predictions(trained_detector: Detector, saved: Path, fmnist) -> None:
    imgs = fmnist.test_images[:20]
    before = trained_detector.predict(imgs)
    loaded = Detector.load(saved, device="cpu")
    after = loaded.predict(imgs)
    np.testing.assert_array_equal(after["scores"], before["scores"])
    np.testing.assert_array_equal(after["p_values"], before["p_values"])
    np.testing.assert_array_equal(after["is_ood"], before["is_ood"])
    assert after["threshold"] == before["threshold"]
    assert loaded.n_patches == trained_detector.n_patches
    assert loaded.preprocess_config == trained_detector.preprocess_config
    assert loaded.model_config == trained_detector.model_config


def test_directory_holds_no_pickle(saved: Path) -> None:
    names = sorted(p.name for p in saved.iterdir())
    assert names == sorted([CONFIG_FILE, WEIGHTS_FILE, CALIBRATION_FILE])
    meta = json.loads((saved / CONFIG_FILE).read_text())
    assert meta["format"] == "discopatch-detector"
    assert meta["discopatch_version"]
    assert meta["calibration"]["n"] > 0
    assert set(meta["files"]) == {WEIGHTS_FILE, CALIBRATION_FILE}
    assert meta["digest"] == config_digest(meta)


def test_flipped_weight_byte_is_rejected(saved: Path) -> None:
    w = saved / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Detector.load(saved)


def test_truncated_weights_are_rejected(saved: Path) -> None:
    w = saved / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        Detector.load(saved)


def test_mismatched_configuration_is_rejected(saved: Path) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["model"]["widths"] = [8, 16, 64]
    _rewrite(saved, meta, reseal=True)
    with pytest.raises(ArtifactError, match="shape mismatch"):
        Detector.load(saved)


def test_norm_kind_swap_with_same_shapes_is_rejected(saved: Path) -> None:
    """GroupNorm's weights have BN-compatible names in the official code; ours must not load silently."""
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["model"]["norm"] = "groupnorm"
    _rewrite(saved, meta, reseal=True)
    with pytest.raises(ArtifactError, match="do not match the configured model"):
        Detector.load(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format="something-else"), "not a discopatch detector"),
        (lambda m: m.update(format_version=99), "format version 99"),
        (lambda m: m["model"].update(bogus=1), "unknown ModelConfig fields"),
        (lambda m: m["scoring"].update(test_patches=0), "test_patches"),
        (lambda m: m["calibration"].update(threshold=0.123), "threshold does not match"),
        (
            lambda m: m.pop("model"),
            r"detector\.json: does not match the detector\.json schema \(\$: missing required key 'model'",
        ),
        (lambda m: m.pop("format"), "not a discopatch detector"),
    ],
)
def test_invalid_json_fields_are_rejected(saved: Path, edit, message: str) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    edit(meta)
    _rewrite(saved, meta, reseal=True)
    with pytest.raises(ArtifactError, match=message):
        Detector.load(saved)


def test_missing_pieces(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a detector directory"):
        Detector.load(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / CALIBRATION_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"missing {CALIBRATION_FILE}"):
        Detector.load(broken)
    (broken / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Detector.load(broken)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["preprocess"].update(image_size=33), "preprocess.image_size changed"),
        (lambda m: m["preprocess"].update(resize="squash"), "preprocess.resize changed"),
        (lambda m: m["scoring"].update(seed=m["scoring"]["seed"] + 1), "scoring.seed changed"),
        (lambda m: m["scoring"].update(test_patches=9), "scoring.test_patches changed"),
        (lambda m: m["scoring"].update(score_mode="stats-only"), "scoring.score_mode changed"),
        (lambda m: m["scoring"].pop("score_mode"), "scoring.score_mode removed"),
        (lambda m: m["model"].update(eps=1e-3), "model.eps changed"),
        (lambda m: m["calibration"].update(target_fpr=0.2), "calibration.target_fpr changed"),
        (lambda m: m["files"].update({WEIGHTS_FILE: "0" * 64}), f"files.{WEIGHTS_FILE} changed"),
    ],
)
def test_any_edit_of_a_score_setting_is_refused_naming_it(saved: Path, edit, named: str) -> None:
    """Each of these loaded silently before the digest and changed every score."""
    meta = json.loads((saved / CONFIG_FILE).read_text())
    edit(meta)
    _rewrite(saved, meta, reseal=False)
    with pytest.raises(ArtifactError, match="configuration digest mismatch") as info:
        Detector.load(saved)
    assert named in str(info.value)


def test_edits_outside_the_score_settings_are_accepted(trained_detector: Detector, saved: Path, fmnist) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["training"]["note"] = "annotated by hand"
    meta["discopatch_version"] = "0.0.0"
    _rewrite(saved, meta, reseal=False)
    x = fmnist.test_images[:6]
    np.testing.assert_array_equal(Detector.load(saved, device="cpu").score(x), trained_detector.score(x))


def test_edited_digest_record_is_refused(saved: Path) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["digest"]["sha256"] = "f" * 64
    _rewrite(saved, meta, reseal=False)
    with pytest.raises(ArtifactError, match="the digest record itself was edited"):
        Detector.load(saved)


def test_artefact_without_a_digest_loads_only_when_allowed(trained_detector: Detector, saved: Path, fmnist) -> None:
    """Artefacts saved before the digest existed load with ``allow_legacy=True``; without it they are refused, since
    removing the digest would otherwise let any setting be edited."""
    meta = json.loads((saved / CONFIG_FILE).read_text())
    del meta["digest"]
    _rewrite(saved, meta, reseal=False)
    with pytest.raises(ArtifactError, match="no configuration digest"):
        Detector.load(saved, device="cpu")
    loaded = Detector.load(saved, device="cpu", allow_legacy=True)
    x = fmnist.test_images[:6]
    np.testing.assert_array_equal(loaded.score(x), trained_detector.score(x))


def _replace_calibration(saved: Path, content: bytes) -> None:
    """Put ``content`` in place of the calibration file with its checksum and the digest updated to match."""
    from discopatch.artifact.files import _sha256

    (saved / CALIBRATION_FILE).write_bytes(content)
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["files"][CALIBRATION_FILE] = _sha256(saved / CALIBRATION_FILE)
    _rewrite(saved, meta, reseal=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_calibration_scores_are_refused(saved: Path, bad: float) -> None:
    import torch
    from safetensors.torch import load_file, save

    scores = load_file(str(saved / CALIBRATION_FILE))["scores"].clone()
    scores[len(scores) // 2] = bad
    _replace_calibration(saved, save({"scores": scores}))
    with pytest.raises(ArtifactError, match=r"non-finite value \(NaN or infinity\) in scores"):
        Detector.load(saved)
    assert torch.isfinite(scores).sum() == len(scores) - 1


@pytest.mark.parametrize("content", [b"not a safetensors file at all", b"\x80\x04K\x01.", b""])
def test_wrong_format_calibration_file_is_a_clear_artifact_error(saved: Path, content: bytes) -> None:
    _replace_calibration(saved, content)
    with pytest.raises(ArtifactError, match=f"{CALIBRATION_FILE}: unreadable safetensors file"):
        Detector.load(saved)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_the_json_are_refused(saved: Path, constant: str) -> None:
    text = (saved / CONFIG_FILE).read_text()
    meta = json.loads(text)
    stored = json.dumps(meta["calibration"]["threshold"])
    (saved / CONFIG_FILE).write_text(text.replace(f'"threshold": {stored}', f'"threshold": {constant}', 1))
    assert constant in (saved / CONFIG_FILE).read_text()
    with pytest.raises(ArtifactError, match=f"non-finite number {constant}"):
        Detector.load(saved)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_saved_file_gets_the_ordinary_mode(trained_detector: Detector, tmp_path: Path, umask: int) -> None:
    """Weights, calibration, detector.json and checkpoints alike: 0666 minus the umask, as any new file."""
    out = tmp_path / "model"
    out.mkdir()
    (out / WEIGHTS_FILE).write_bytes(b"left by an earlier save")
    os.chmod(out / WEIGHTS_FILE, 0o600)  # a file being replaced does not pass its mode on
    old = os.umask(umask)
    try:
        trained_detector.save(out)
        assert trained_detector.trainer is not None
        trained_detector.trainer.save_checkpoint(out / "checkpoints")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert len(modes) == 5 and not [p for p in modes if p.endswith(".tmp")]
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    Detector.load(out, device="cpu")


def test_provenance_is_saved_outside_the_digest(trained_detector: Detector, saved: Path, fmnist) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", meta["created"])
    created = datetime.strptime(meta["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 24 * 3600
    # the fixture was fitted on these 400 arrays: their bytes are what is fingerprinted
    assert meta["training_data"] == fingerprint_inputs(fmnist.train_images[:400])
    assert meta["training_data"]["scheme"] == "array-bytes" and meta["training_data"]["n"] == 400
    assert not any(k.startswith(("created", "training_data")) for k in meta["digest"]["fields"])


def test_a_re_saved_model_keeps_its_digest_and_id(saved: Path, tmp_path: Path) -> None:
    loaded = Detector.load(saved, device="cpu")
    again = loaded.save(tmp_path / "again")
    first, second = (json.loads((d / CONFIG_FILE).read_text()) for d in (saved, again))
    assert second["digest"] == first["digest"] and second["created"] == first["created"]
    assert detector_id(again) == detector_id(saved) == loaded.detector_id


def test_an_artefact_without_provenance_loads_and_is_not_given_one(saved: Path, tmp_path: Path) -> None:
    meta = json.loads((saved / CONFIG_FILE).read_text())
    del meta["created"], meta["training_data"]  # as saved before provenance existed; the digest still holds
    _rewrite(saved, meta, reseal=False)
    det = Detector.load(saved, device="cpu")
    assert det.provenance == {}
    resaved = json.loads((det.save(tmp_path / "resaved") / CONFIG_FILE).read_text())
    assert "created" not in resaved and resaved["digest"] == meta["digest"]


def test_training_input_fingerprints(tmp_path: Path, fmnist) -> None:
    imgs = fmnist.train_images[:6]
    assert fingerprint_inputs(imgs) == fingerprint_inputs(list(imgs[::-1]))  # stack or list, any order
    assert fingerprint_inputs(imgs)["sha256"] != fingerprint_inputs(imgs[:5])["sha256"]
    folder = tmp_path / "train"
    for i, a in enumerate(imgs):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(folder / f"c{i % 2}" / f"{i}.png")
    fp = fingerprint_inputs(folder)
    assert fp["scheme"] == "names+sizes" and fp["n"] == 6
    assert fingerprint_inputs(str(folder)) == fp  # relative names: the folder's own path does not count
    (folder / "c0" / "0.png").rename(folder / "c0" / "renamed.png")
    assert fingerprint_inputs(folder)["sha256"] != fp["sha256"]
    assert fingerprint_inputs([folder / "c1" / "1.png", imgs[0]])["scheme"] == "mixed"


def test_weight_files_keep_the_bytes_save_file_writes(trained_detector: Detector, saved: Path, tmp_path: Path) -> None:
    """Writing through open() instead of safetensors' save_file changes the mode only: same bytes, same digest."""
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous().float() for k, v in trained_detector.discriminator.state_dict().items()}
    save_file(sd, str(tmp_path / "reference.safetensors"), metadata={"format": "discopatch-detector"})
    assert (saved / WEIGHTS_FILE).read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
