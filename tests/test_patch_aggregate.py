"""Every patch aggregate of the registry (``Preset.patch_aggregate``), end to end on a tiny detector: which patches D's
score averages, the same in both engines, the ONNX graph, explanations and a saved detector."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from discopatch import score_modes
from discopatch.artifact.schema import SCHEMA
from discopatch.cli import build_parser
from discopatch.detector import Detector
from discopatch.errors import ConfigError
from discopatch.model import Discriminator
from helpers.presets import tiny_preset

HAS_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
HAS_SERVICE = importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("httpx") is not None


def _detector(aggregate: str, mode: str, D: Discriminator, stack: np.ndarray, engine: str = "torch") -> Detector:
    preset = tiny_preset().replace(score_mode=mode, patch_aggregate=aggregate)
    det = Detector(preset, device="cpu", seed=0, engine=engine)  # type: ignore[arg-type]
    det.discriminator = D
    if det.score_spec.needs_statistics:
        det.fit_statistics(stack[:80], stack[80:120])
    return det.calibrate(stack[80:120])


@pytest.mark.parametrize("aggregate", list(score_modes.PATCH_AGGREGATES))
def test_every_patch_aggregate_end_to_end(aggregate: str, untrained_tiny_d, tiny_id_stack, tmp_path: Path) -> None:
    x = tiny_id_stack[120:]
    det = _detector(aggregate, "d-only", untrained_tiny_d, tiny_id_stack)
    scores = det.score_preprocessed(x)
    kept = score_modes.patches_kept(aggregate, det.n_patches)
    assert det.patches_kept == kept
    # D's score is the mean of the ``kept`` largest per-patch contributions of the same pass
    explained = det._explain_stack(x)
    largest = [np.sort(e.contributions)[::-1][:kept].mean() for e in explained]
    np.testing.assert_allclose(scores, largest, rtol=0, atol=1e-12)
    assert [e.score for e in explained] == pytest.approx(list(scores), abs=1e-12)
    # a saved detector reloads with it; the paper's mean is not written, so older detectors keep their bytes
    saved = det.save(tmp_path / aggregate)
    written = json.loads((saved / "detector.json").read_text())["scoring"]
    assert written.get("patch_aggregate", "mean") == aggregate
    assert ("patch_aggregate" in written) == (kept < det.n_patches)
    loaded = Detector.load(saved, engine="torch")
    assert loaded.preset.patch_aggregate == aggregate
    np.testing.assert_array_equal(loaded.score_preprocessed(x), scores)
    assert aggregate in SCHEMA["properties"]["scoring"]["properties"]["patch_aggregate"]["enum"]
    args = build_parser().parse_args(["fit", "imgs", "--out", "m", "--patch-aggregate", aggregate])
    assert args.patch_aggregate == aggregate
    if HAS_ORT:
        _check_onnx(det, aggregate, tiny_id_stack, scores, tmp_path)
    if HAS_SERVICE:
        _check_served(det, aggregate, kept, tmp_path)


def _check_served(det: Detector, aggregate: str, kept: int, tmp_path: Path) -> None:
    """The service's ``/v1/model`` says which patches the score averages, in its OpenAPI contract's terms."""
    from fastapi.testclient import TestClient

    from discopatch.monitoring.service import create_app

    with TestClient(create_app(det, f"sqlite:///{tmp_path / 'served.db'}")) as client:
        info = client.get("/v1/model").json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]["ModelInfo"]["properties"]
    assert (info["patch_aggregate"], info["n_patches_kept"], info["n_patches"]) == (aggregate, kept, det.n_patches)
    assert aggregate in schema["patch_aggregate"]["enum"]


def _check_onnx(det: Detector, aggregate: str, stack: np.ndarray, scores: np.ndarray, tmp_path: Path) -> None:
    """The ONNX engine and the exported graph's own score output compute the same aggregate (float32 rounding)."""
    from discopatch.inference.engine import OnnxEngine
    from discopatch.inference.export import export_detector, read_metadata

    x = stack[120:]
    onnx_det = _detector(aggregate, "d-only", det.require_model(), stack, engine="onnx")
    np.testing.assert_allclose(onnx_det.score_preprocessed(x), scores, rtol=0, atol=1e-4)
    path = export_detector(det, tmp_path / f"{aggregate}.onnx")
    assert read_metadata(path)["patch_aggregate"].startswith(f"{aggregate}: ")
    graph = OnnxEngine.from_file(path, det.n_patches, det.seed, det.model_config).score(x, in_graph=True)
    np.testing.assert_allclose(graph, scores, rtol=0, atol=1e-4)


@pytest.mark.parametrize("aggregate", ["top25", "max"])
def test_the_pooled_ablation_aggregates_as_the_detector_does(aggregate: str, untrained_tiny_d, tiny_id_stack) -> None:
    """The leaky pooled-statistics ablation (benchmark only) keeps the same share of patches as per-image scoring."""
    import torch

    from discopatch.inference.engine import TorchEngine

    x = tiny_id_stack[120:136]
    det = _detector(aggregate, "d-only", untrained_tiny_d, tiny_id_stack)
    pooled = det.score_preprocessed(x, pool_images=4)
    logits = TorchEngine(untrained_tiny_d, det.n_patches, det.seed, "cpu", pool_images=4).patch_logits(x)
    contributions = 1.0 - torch.sigmoid(logits.double()).numpy()
    largest = np.sort(contributions, axis=1)[:, ::-1][:, : det.patches_kept].mean(axis=1)
    np.testing.assert_allclose(pooled, largest, rtol=0, atol=1e-6)
    assert np.all(pooled > contributions.mean(axis=1))


def test_an_aggregate_keeps_a_local_anomaly_the_mean_dilutes(untrained_tiny_d, tiny_id_stack) -> None:
    """Fused with the statistics too: the score is the fused combiner of the aggregated D score."""
    x = tiny_id_stack[120:]
    det = _detector("top25", "fused", untrained_tiny_d, tiny_id_stack)
    d, f = det.scoring_engine().score_with_statistics(x)
    sm = det.stats_model
    assert sm is not None
    np.testing.assert_array_equal(det.score_preprocessed(x), sm.fuse(d, sm.mahalanobis(f)))
    mean = _detector("mean", "fused", untrained_tiny_d, tiny_id_stack).scoring_engine().score_with_statistics(x)[0]
    assert np.all(d >= mean - 1e-12) and np.any(d > mean + 1e-6)  # the least real quarter scores higher


def test_an_unknown_aggregate_is_refused_where_the_preset_is_made() -> None:
    with pytest.raises(ConfigError, match="top25"):
        tiny_preset().replace(patch_aggregate="median")
    assert score_modes.patches_kept("max", 32) == 1 and score_modes.patches_kept("top12", 32) == 4
    assert score_modes.patches_kept("top25", 2) == 1  # at least one patch
