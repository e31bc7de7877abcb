"""Every score mode of the registry, end to end on a tiny detector; and a mode registered at runtime reaches every
place that names modes (the CONTRIBUTING.md recipe "Add a score mode")."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from discopatch import score_modes
from discopatch.artifact.schema import SCHEMA
from discopatch.cli import build_parser
from discopatch.detector import Detector
from discopatch.model import Discriminator
from discopatch.score_modes import ScoreModeSpec
from helpers.presets import tiny_preset

HAS_ORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


def _detector(mode: str, D: Discriminator, stack: np.ndarray) -> Detector:
    det = Detector(tiny_preset().replace(score_mode=mode), device="cpu", seed=0, engine="torch")
    det.discriminator = D
    if det.score_spec.needs_statistics:
        det.fit_statistics(stack[:80], stack[80:120])
    return det.calibrate(stack[80:120])


def _parts(det: Detector, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """D's scores, the statistics scores and the fusion scales of ``x`` (the last two None without statistics)."""
    d, f = det.scoring_engine().score_with_statistics(x)
    sm = det.stats_model
    return d, (None if sm is None else sm.mahalanobis(f)), (None if sm is None else sm.fusion)


def _torch_or_none(x: np.ndarray | None) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(x)


def check_mode_end_to_end(name: str, D: Discriminator, stack: np.ndarray, tmp_path: Path) -> None:
    """What a mode must do everywhere: the detector's score is the numpy combiner's, the torch combiner agrees,
    explanations report the same score, a saved detector reloads with it, the ONNX graph computes it, and the
    CLI, the artefact schema and the API schema list it."""
    spec, x = score_modes.get(name), stack[120:]
    det = _detector(name, D, stack)
    scores = det.score_preprocessed(x)
    d, s, fusion = _parts(det, x)
    np.testing.assert_array_equal(scores, spec.combine_numpy(d, s, fusion))
    in_torch = spec.combine_torch(torch.from_numpy(d), _torch_or_none(s), _torch_or_none(fusion)).numpy()
    np.testing.assert_allclose(in_torch, scores, rtol=1e-12, atol=1e-12)
    assert [e.score for e in det._explain_stack(x)] == pytest.approx(list(scores), abs=1e-12)
    loaded = Detector.load(det.save(tmp_path / name), engine="torch")
    assert loaded.preset.score_mode == name
    np.testing.assert_array_equal(loaded.score_preprocessed(x), scores)
    if HAS_ORT:
        from discopatch.inference.engine import OnnxEngine
        from discopatch.inference.export import export_detector, read_metadata

        path = export_detector(det, tmp_path / f"{name}.onnx")
        assert read_metadata(path)["score"] == spec.formula
        graph = OnnxEngine.from_file(path, det.n_patches, det.seed, det.model_config).score(x, in_graph=True)
        np.testing.assert_allclose(graph, scores, rtol=1e-4, atol=1e-4)
    _check_listed(name)


def _check_listed(name: str) -> None:
    """The CLI accepts the mode and describes it; the artefact schema and the API schema list it."""
    args = build_parser().parse_args(["fit", "imgs", "--out", "m", "--score", name])
    assert args.score == name
    fit = next(a for a in build_parser()._actions if a.dest == "command").choices["fit"]
    score_help = next(a.help for a in fit._actions if a.dest == "score")
    assert f"{name}: {score_modes.get(name).description}" in score_help
    assert name in SCHEMA["properties"]["scoring"]["properties"]["score_mode"]["enum"]
    from discopatch.monitoring.schemas import HeatMap, ModelInfo

    for model in (ModelInfo, HeatMap):
        field = model.model_json_schema()["properties"]["score_mode"]
        assert name in field["enum"] and name in field["description"]


@pytest.mark.parametrize("name", list(score_modes.NAMES))
def test_every_registered_mode_end_to_end(name: str, untrained_tiny_d, tiny_id_stack, tmp_path: Path) -> None:
    check_mode_end_to_end(name, untrained_tiny_d, tiny_id_stack, tmp_path)


def _mean_z_numpy(d: np.ndarray, s: np.ndarray | None, fusion: np.ndarray | None) -> np.ndarray:
    d_z, s_z = score_modes.robust_z(d, s, fusion)
    out: np.ndarray = (d_z + s_z) / 2
    return out


def _mean_z_torch(d: torch.Tensor, s: torch.Tensor | None, fusion: torch.Tensor | None) -> torch.Tensor:
    d_z, s_z = score_modes.robust_z(d, s, fusion)
    out: torch.Tensor = (d_z + s_z) / 2
    return out


@pytest.fixture
def mean_z() -> Iterator[ScoreModeSpec]:
    """The CONTRIBUTING.md example: a throwaway mode (the mean of both robust z-scores), removed afterwards."""
    spec = ScoreModeSpec(
        "mean-z",
        "the mean of both views' robust z-scores",
        "mean of the robust z-scores of D's score and of the stats' Mahalanobis distance; higher = more OOD",
        True,
        _mean_z_numpy,
        _mean_z_torch,
    )
    yield score_modes.register(spec)
    score_modes.unregister(spec.name)


def test_a_registered_mode_reaches_every_place(
    mean_z: ScoreModeSpec, untrained_tiny_d, tiny_id_stack, tmp_path: Path
) -> None:
    check_mode_end_to_end(mean_z.name, untrained_tiny_d, tiny_id_stack, tmp_path)
    with pytest.raises(ValueError, match="already registered"):
        score_modes.register(mean_z)


def test_an_unregistered_mode_is_gone_everywhere(mean_z: ScoreModeSpec) -> None:
    score_modes.unregister(mean_z.name)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "imgs", "--out", "m", "--score", mean_z.name])
    assert mean_z.name not in SCHEMA["properties"]["scoring"]["properties"]["score_mode"]["enum"]
    with pytest.raises(ValueError, match="unknown score mode 'mean-z'; choose one of d-only, fused, stats-only"):
        score_modes.get(mean_z.name)
    score_modes.register(mean_z)  # for the fixture's clean-up


def test_builtin_modes_stay_and_the_prose_names_them() -> None:
    with pytest.raises(ValueError, match="built in"):
        score_modes.unregister("fused")
    assert score_modes.names_text() == "d-only, fused or stats-only"
    assert score_modes.help_text().startswith("d-only: the paper's 1 - mean D; fused: also score the per-image")


def test_an_unknown_mode_is_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="unknown score mode 'fusde'; choose one of d-only, fused, stats-only"):
        Detector(tiny_preset().replace(score_mode="fusde"), device="cpu")
