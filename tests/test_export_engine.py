"""ONNX export parity and the scoring engines: same scores from PyTorch and ONNX Runtime, per image."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx

from discopatch.cli import main
from discopatch.data.images import stack_images
from discopatch.detector import Detector
from discopatch.inference.engine import OnnxEngine, TorchEngine, make_engine, resolve_engine_name, score_array
from discopatch.inference.export import PARITY_RELATIVE_TOLERANCE, check_export, export_detector, read_metadata
from discopatch.model.norm import PatchGroupNorm
from helpers.presets import tiny_preset


@pytest.fixture(scope="module")
def saved(trained_detector: Detector, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    trained_detector.save(root / "model")
    return root / "model", export_detector(trained_detector, root / "d.onnx")


@pytest.fixture(scope="module")
def real_stack(fmnist) -> np.ndarray:
    cfg = tiny_preset().preprocess
    return stack_images(fmnist.test_images[:40], cfg)


def test_graph_has_explicit_per_image_statistics_and_metadata(saved, trained_detector: Detector) -> None:
    _, path = saved
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"BatchNormalization", "InstanceNormalization", "GroupNormalization"}
    assert {"Conv", "ReduceMean", "Sqrt", "Sigmoid"} <= ops or {"Conv", "ReduceMean", "Sigmoid"} <= ops
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "images" and [d.dim_value for d in dims[1:]] == [8, 1, 16, 16]
    outs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    widths = trained_detector.model_config.widths
    assert outs == {"logits": ["images", 8], "stats": ["images", 2 * sum(widths)], "score": ["images"]}
    meta = read_metadata(path)
    assert meta["format"] == "discopatch-onnx"
    assert int(meta["n_patches"]) == trained_detector.n_patches and int(meta["seed"]) == trained_detector.seed
    assert json.loads(meta["preprocess"]) == {"image_size": 32, "channels": 1, "resize": "pad"}
    assert float(meta["threshold"]) == pytest.approx(trained_detector.threshold)
    assert int(meta["patch_size"]) == 16


def test_onnx_matches_pytorch_on_real_images(saved, trained_detector: Detector, fmnist) -> None:
    _, path = saved
    check = check_export(trained_detector, path, fmnist.test_images[:64])
    assert check.ok and check.scale_source == "calibration" and check.n_images == 64, check.summary()
    # Rounding, not a broken graph: far inside the allowed share of the calibration spread (see docs/RELIABILITY.md)
    assert check.relative_diff < PARITY_RELATIVE_TOLERANCE / 10, check.summary()
    assert check.decisions_compared > 0


def _tinted(images: np.ndarray, seed: int) -> np.ndarray:
    """Fashion-MNIST as RGB: each image in its own colour, so the three channels differ."""
    tint = np.random.default_rng(seed).uniform(0.3, 1.0, (len(images), 1, 1, 3))
    return (images[..., None].astype(np.float64) * tint).astype(np.uint8)


@pytest.fixture(scope="module")
def parity_detectors(trained_detector: Detector, fmnist) -> dict[tuple[int, str], Detector]:
    """Gray and RGB, D-only and fused: the four kinds of graph an export can write."""
    rgb = Detector(tiny_preset(channels=3), device="cpu", seed=0, engine="torch")
    rgb.fit(_tinted(fmnist.train_images[:400], 0), epochs=2, progress=False)
    out: dict[tuple[int, str], Detector] = {}
    for channels, det in ((1, trained_detector), (3, rgb)):
        out[channels, "d-only"] = det
        fused = Detector(tiny_preset(channels).replace(score_mode="fused"), device="cpu", seed=0, engine="torch")
        fused.discriminator = det.discriminator
        train = fmnist.train_images[:300] if channels == 1 else _tinted(fmnist.train_images[:300], 1)
        stack = stack_images(train, fused.preprocess_config)
        fused.fit_statistics(stack[:200], stack[200:])
        out[channels, "fused"] = fused.calibrate(stack[200:])
    return out


def _check_images(fmnist, channels: int) -> np.ndarray:
    return fmnist.test_images[:64] if channels == 1 else _tinted(fmnist.test_images[:64], 2)


@pytest.mark.parametrize("mode", ["d-only", "fused"])
@pytest.mark.parametrize("channels", [1, 3])
def test_export_parity_on_the_scores_own_scale(parity_detectors, fmnist, tmp_path: Path, channels: int, mode: str):
    det = parity_detectors[channels, mode]
    path = export_detector(det, tmp_path / "m.onnx")
    check = check_export(det, path, _check_images(fmnist, channels))
    assert check.ok and check.scale_source == "calibration" and check.decisions_differ == 0, check.summary()
    assert check.relative_diff < PARITY_RELATIVE_TOLERANCE / 10, check.summary()
    assert check.tolerance == pytest.approx(PARITY_RELATIVE_TOLERANCE * check.scale)


def _with_norm_eps(det: Detector, eps: float) -> Detector:
    """A copy of ``det`` whose D normalises with a different epsilon: what a wrong normalisation in a graph does."""
    D = copy.deepcopy(det.require_model())
    for module in D.modules():
        if isinstance(module, PatchGroupNorm):
            module.eps = eps
    broken = copy.copy(det)  # shares everything else (statistics model, calibration, settings)
    broken.discriminator = D
    return broken


@pytest.mark.parametrize("mode", ["d-only", "fused"])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_broken_export_fails_the_check(parity_detectors, fmnist, tmp_path: Path, channels: int, mode: str) -> None:
    det = parity_detectors[channels, mode]
    path = export_detector(_with_norm_eps(det, 0.05), tmp_path / "broken.onnx")
    check = check_export(det, path, _check_images(fmnist, channels))
    assert not check.ok and check.relative_diff > 3 * PARITY_RELATIVE_TOLERANCE, check.summary()
    assert "FAILED" in check.summary()


def test_cli_export_check_fails_on_a_broken_graph(saved, tmp_path: Path, capsys, monkeypatch) -> None:
    """``export --check`` exits 1 when the graph it wrote does not match PyTorch (a wrong normalisation)."""
    import discopatch.inference.export as export_module

    model, _ = saved
    real = export_module.export_detector
    monkeypatch.setattr(export_module, "export_detector", lambda det, out, **kw: real(_with_norm_eps(det, 0.05), out))
    out = tmp_path / "m.onnx"
    assert main(["export", str(model), "--out", str(out), "--check", "--check-limit", "32"]) == 1
    assert "(FAILED)" in capsys.readouterr().out


@pytest.mark.parametrize("count", [1, 5])
def test_dynamic_image_count_and_isolation(saved, trained_detector: Detector, real_stack: np.ndarray, count: int):
    _, path = saved
    det = trained_detector
    eng = OnnxEngine.from_file(path, det.n_patches, det.seed, det.model_config)
    ref = score_array(det.discriminator, real_stack[:count], det.n_patches, det.seed)
    got = eng.score(real_stack[:count], in_graph=True)
    assert got.shape == (count,)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    # Per-image isolation inside the graph: each image alone scores as it does beside the others.
    alone = np.array([eng.score(real_stack[i : i + 1], in_graph=True)[0] for i in range(count)])
    np.testing.assert_allclose(got, alone, rtol=0, atol=1e-6)
    noisy = real_stack[:count].copy()
    noisy[1:] = np.random.default_rng(0).integers(0, 256, noisy[1:].shape, dtype=np.uint8)
    assert eng.score(noisy, in_graph=True)[0] == pytest.approx(got[0], abs=1e-6)


def test_engines_agree(trained_detector: Detector, real_stack: np.ndarray) -> None:
    det = trained_detector
    D = det.discriminator
    strides = [p.stride() for p in D.parameters()]
    ref = score_array(D, real_stack, det.n_patches, det.seed)
    torch_eng = TorchEngine(D, det.n_patches, det.seed)
    np.testing.assert_allclose(torch_eng.score(real_stack), ref, rtol=0, atol=1e-6)  # score_array: the same engine
    assert TorchEngine(D, det.n_patches, det.seed, run_images=3).score(real_stack).shape == (40,)
    layouts = (TorchEngine(D, det.n_patches, det.seed, channels_last=c) for c in (True, False))
    for eng in (
        *layouts,
        TorchEngine(D, det.n_patches, det.seed, precision="bf16"),
        OnnxEngine.from_discriminator(D, 8, 0),
    ):
        s = eng.score(real_stack, batch_size=7)
        assert s.dtype == np.float64
        np.testing.assert_allclose(s, ref, rtol=0, atol=2e-3 if getattr(eng, "precision", "") == "bf16" else 1e-6)
    # Engines convert private copies: the detector's own D keeps its layout and dtype.
    assert [p.stride() for p in D.parameters()] == strides and all(p.dtype == torch.float32 for p in D.parameters())


def test_reduced_precision_engines_run(trained_detector: Detector, real_stack: np.ndarray) -> None:
    det = trained_detector
    ref = score_array(det.discriminator, real_stack, det.n_patches, det.seed)
    for engine, precision in (("torch", "bf16"), ("onnx", "int8")):
        s = make_engine(engine, det.discriminator, det.n_patches, det.seed, precision=precision).score(real_stack)
        assert np.all(np.isfinite(s)) and np.max(np.abs(s - ref)) < 0.05


def test_detector_engine_option(trained_detector: Detector, saved, real_stack: np.ndarray) -> None:
    model, _ = saved
    a = Detector.load(model, device="cpu", engine="torch")
    b = Detector.load(model, device="cpu", engine="onnx")
    assert b.scoring_engine().name == "onnx" and a.scoring_engine().name == "torch"
    np.testing.assert_allclose(b.score_preprocessed(real_stack), a.score_preprocessed(real_stack), atol=1e-6)
    assert Detector.load(model, device="cpu").engine == resolve_engine_name("auto", torch.device("cpu"))
    with pytest.raises(ValueError):
        Detector(tiny_preset(), device="cpu", engine="tensorrt")
    c = Detector.load(model, device="cpu", precision="bf16")
    assert c.engine == "torch" and c.scoring_engine().describe()["precision"] == "bf16"
    assert np.max(np.abs(c.score_preprocessed(real_stack) - a.score_preprocessed(real_stack))) < 0.05


def test_cli_export_check_and_score_engine(saved, tmp_path: Path, capsys) -> None:
    model, _ = saved
    out = tmp_path / "m.onnx"
    assert main(["export", str(model), "--format", "onnx", "--out", str(out), "--check", "--check-limit", "32"]) == 0
    assert out.exists() and "largest |ONNX Runtime - PyTorch|" in capsys.readouterr().out
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(img)
    rows = {}
    for engine in ("torch", "onnx"):
        dst = tmp_path / f"{engine}.jsonl"
        assert main(["score", str(model), str(img), "--engine", engine, "--out", str(dst)]) == 0
        rows[engine] = json.loads(dst.read_text())["score"]
    assert rows["onnx"] == pytest.approx(rows["torch"], abs=1e-6)


@pytest.fixture(scope="module")
def fused_from_trained(trained_detector: Detector, fmnist) -> Detector:
    """The trained D with a statistics model fitted on top (no second training run)."""
    det = Detector(tiny_preset().replace(score_mode="fused"), device="cpu", seed=0, engine="torch")
    det.discriminator = trained_detector.discriminator
    stack = stack_images(fmnist.train_images[:300], det.preprocess_config)
    det.fit_statistics(stack[:200], stack[200:])
    return det.calibrate(stack[200:])


def test_engines_agree_on_statistics(trained_detector: Detector, real_stack: np.ndarray) -> None:
    det = trained_detector
    D = det.discriminator
    d_ref, f_ref = TorchEngine(D, det.n_patches, det.seed).score_with_statistics(real_stack)
    assert f_ref.shape == (40, 2 * sum(D.cfg.widths)) and f_ref.dtype == np.float64
    np.testing.assert_allclose(d_ref, score_array(D, real_stack, det.n_patches, det.seed), rtol=0, atol=1e-6)
    for eng in (
        TorchEngine(D, det.n_patches, det.seed, channels_last=True, run_images=7),
        OnnxEngine.from_discriminator(D, det.n_patches, det.seed),
    ):
        d, f = eng.score_with_statistics(real_stack, batch_size=16)
        np.testing.assert_allclose(d, d_ref, rtol=0, atol=1e-6)
        np.testing.assert_allclose(f, f_ref, rtol=1e-4, atol=1e-4)
    # bf16: statistics of bf16 activations, accumulated in float32 - close, not equal
    _, f16 = TorchEngine(D, det.n_patches, det.seed, precision="bf16").score_with_statistics(real_stack)
    assert np.all(np.isfinite(f16)) and np.max(np.abs(f16 - f_ref)) < 0.1


def test_fused_detector_exports_with_parity(fused_from_trained: Detector, fmnist, tmp_path: Path) -> None:
    det = fused_from_trained
    path = export_detector(det, tmp_path / "fused.onnx")
    meta = read_metadata(path)
    assert meta["score_mode"] == "fused" and "robust z-scores" in meta["score"]
    assert float(meta["threshold"]) == pytest.approx(det.threshold)
    assert check_export(det, path, fmnist.test_images[:64]).ok
    # The graph's score is the detector's fused score, per image, whatever else is in the request.
    stack = stack_images(fmnist.test_images[:6], det.preprocess_config)
    eng = OnnxEngine.from_file(path, det.n_patches, det.seed, det.model_config)
    together = eng.score(stack, in_graph=True)
    np.testing.assert_allclose(together, det.score_preprocessed(stack), rtol=0, atol=1e-4)
    alone = np.array([eng.score(stack[i : i + 1], in_graph=True)[0] for i in range(6)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)
    assert float(np.max(together)) > 1.0 or float(np.min(together)) < 0.0  # robust z-scores, not D's [0, 1] score


def test_fused_scores_on_every_engine(fused_from_trained: Detector, real_stack: np.ndarray) -> None:
    det = fused_from_trained
    ref = det.score_preprocessed(real_stack)  # torch fp32
    onnx_scores = det.score_with_engine(OnnxEngine.from_discriminator(det.discriminator, det.n_patches, 0), real_stack)
    np.testing.assert_allclose(onnx_scores, ref, rtol=0, atol=1e-4)
    bf16 = det.score_with_engine(TorchEngine(det.discriminator, det.n_patches, 0, precision="bf16"), real_stack)
    assert np.all(np.isfinite(bf16)) and np.corrcoef(bf16, ref)[0, 1] > 0.95
