"""bench-speed --train: every part of a step is reported, FLOPs add up; the speed changes keep the arithmetic.

No timing assertions: only counts, plumbing and bit-identity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from discopatch.cli import main
from discopatch.model import Discriminator
from discopatch.training.interrupts import PendingInterrupt
from discopatch.training.memory import reuse_freed_memory
from discopatch.training.speed import PARTS, bench_scoring, bench_training, step_flops
from discopatch.training.trainer import Trainer
from helpers.presets import tiny_preset


def _images(n: int = 32, size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(n, size, size, 1), dtype=np.uint8)


def test_bench_training_reports_every_part_and_counts_flops() -> None:
    rep = bench_training(tiny_preset(), threads=1, steps=1, n_images=32, min_time=0.0)
    assert set(rep.part_seconds) == set(PARTS)
    assert all(rep.part_seconds[k] > 0 for k in PARTS if k != "rest")
    # every FLOP of the step falls in a marked part, and convolutions run in the four model parts
    assert sum(rep.part_gflop.values()) == pytest.approx(rep.gflop_per_step)
    for part in ("vae_forward", "d_forward", "vae_backward", "d_backward"):
        assert rep.part_gflop[part] > 0
    assert rep.part_gflop.get("data", 0.0) == 0.0
    assert rep.peaks_gflops["matmul_fp32"] > 0 and rep.peaks_gflops["conv_fp32"] > 0
    assert rep.steps_per_s == pytest.approx(1 / rep.seconds_per_step)
    assert set(rep.part_cpu_seconds) == set(PARTS) and rep.cpu_seconds_per_step > 0
    assert "vae_backward" in rep.table() and "| d_forward |" in rep.markdown() and "CPU-ms/step" in rep.table()


def test_step_flops_match_an_independent_count() -> None:
    """D's forward FLOPs in the D update are three calls on the batch's patches: 2 x MACs x patches x 3."""
    p = tiny_preset()
    tr = Trainer(p.model, p.train)
    total, parts = step_flops(tr, _images())
    macs, size, cin = 0, p.model.patch_size, p.model.channels
    for cout in p.model.widths:
        size = (size + 2 - 3) // 2 + 1
        macs += 9 * cin * cout * size * size
        cin = cout
    macs += cin * size * size
    patches = p.train.batch_images * p.train.train_patches
    assert parts["d_forward"] == 5 * 2 * macs * patches  # two calls in the VAE update, three in D's
    assert total == sum(parts.values())


def test_bench_scoring_reports_the_pipeline() -> None:
    from discopatch.detector import Detector

    p = tiny_preset()
    torch.manual_seed(0)
    det = Detector(p, device="cpu", engine="torch")
    det.discriminator = Discriminator(p.model).eval()
    s = bench_scoring(det, n_images=4, min_time=0.0, max_reps=1)
    for key in ("files", "arrays", "decode", "model", "limit"):
        assert s[f"{key}_images_per_s"] > 0
    assert s["limit_images_per_s"] < min(s["decode_images_per_s"], s["model_images_per_s"])
    assert s["files_share_of_limit"] == pytest.approx(s["files_images_per_s"] / s["limit_images_per_s"])


def test_cli_bench_train_json(tmp_path: Path, capsys) -> None:
    js, md = tmp_path / "t.json", tmp_path / "t.md"
    args = ["bench-speed", "--train", "--threads", "1", "--steps", "1", "--score-images", "4", "--min-time", "0"]
    assert main([*args, "--max-reps", "1", "--json", str(js), "--markdown", str(md)]) == 0
    (data,) = json.loads(js.read_text())
    assert data["preset"] == "small" and data["patches_per_step"] == 512 and data["threads"] == 1
    assert set(data["part_seconds"]) == set(PARTS) and data["scoring"]["images"] == 4
    assert "GFLOP/step" in capsys.readouterr().out and "| optimiser |" in md.read_text()
    assert main(["bench-speed", "--train", "--check-precision"]) == 2


def _train(p, images: np.ndarray, marker: bool, reuse: bool) -> tuple[list[dict[str, float]], list[torch.Tensor]]:
    """Train two steps with or without a phase marker and the kept heap; return losses and all weights."""
    tr = Trainer(p.model, p.train)
    if marker:
        seen: list[str] = []

        @contextmanager
        def mark(name: str) -> Iterator[None]:
            seen.append(name)
            yield

        def phase(name: str) -> AbstractContextManager[None]:
            return mark(name)

        tr.set_phase_marker(phase)
    with reuse_freed_memory(reuse):
        st = tr._fit(images, None, False, 1, None, PendingInterrupt())
    if marker:
        assert set(seen) == set(PARTS) - {"rest"}
    weights = [t.clone() for t in [*tr.D.state_dict().values(), *tr.vae.state_dict().values()]]
    return st.history, weights


def test_speed_changes_keep_losses_and_weights_bit_identical() -> None:
    """The kept heap and the phase markers change no arithmetic: same seed, bit-identical losses and weights."""
    p = tiny_preset(epochs=None, max_steps=3)
    images = _images()
    ref_losses, ref_w = _train(p, images, marker=False, reuse=False)
    for marker, reuse in ((False, True), (True, False)):
        losses, w = _train(p, images, marker, reuse)
        assert [{k: v for k, v in r.items() if k != "time"} for r in losses] == [
            {k: v for k, v in r.items() if k != "time"} for r in ref_losses
        ]
        assert all(torch.equal(a, b) for a, b in zip(ref_w, w))


def test_reuse_freed_memory_switches_on_and_off() -> None:
    import sys

    with reuse_freed_memory() as on:
        assert on == sys.platform.startswith("linux")
    with reuse_freed_memory(enabled=False) as on:
        assert on is False


def test_cli_waits_passively_unless_the_environment_says_otherwise() -> None:
    """The command line sets OMP_WAIT_POLICY before torch starts OpenMP; a user's own setting wins."""
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from discopatch.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["PASSIVE", "False"]  # set before torch was imported
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2] == "ACTIVE"


def test_bench_pipelines_times_several_engines_and_bench_scoring_is_one_of_them() -> None:
    from discopatch.cli.deploy import _untrained_detector
    from discopatch.training.speed import STAGES, bench_pipelines

    p = tiny_preset()
    dets = {f"torch/{prec}": _untrained_detector(p, "torch", prec) for prec in ("fp32", "bf16")}
    got = bench_pipelines(dets, n_images=3, min_time=0.0, max_reps=1)
    assert set(got) == {"torch/fp32", "torch/bf16"}
    for key, s in got.items():
        assert (s["engine"], s["precision"]) == tuple(key.split("/"))
        assert all(s[f"{k}_images_per_s"] > 0 for k in STAGES) and s["images"] == 3
        assert s["limit_images_per_s"] < min(s["decode_images_per_s"], s["model_images_per_s"])
        assert s["gflop_per_image"] > 0


@pytest.mark.slow
def test_cli_bench_pipeline_paper_preset_fp32_and_bf16(tmp_path: Path, capsys) -> None:
    """``bench-speed --pipeline --preset paper``: an untrained paper-size D, one image, both precisions."""
    js, md = tmp_path / "p.json", tmp_path / "p.md"
    args = ["bench-speed", "--pipeline", "--preset", "paper", "--engines", "torch", "--precision", "fp32,bf16"]
    args += ["--threads", "1", "--score-images", "1", "--min-time", "0", "--max-reps", "1"]
    assert main([*args, "--json", str(js), "--markdown", str(md)]) == 0
    (run,) = json.loads(js.read_text())
    assert run["threads"] == 1 and set(run["peaks"]) == {"fp32", "bf16"} and all(run["peaks"].values())
    assert set(run["rows"]) == {"torch/fp32", "torch/bf16"}
    for s in run["rows"].values():
        assert s["image_size"] == 256 and s["patches"] == 64 and s["images"] == 1
        assert s["gflop_per_image"] == pytest.approx(29.4, abs=0.1)  # the history table's figure for this geometry
        assert s["files_images_per_s"] > 0 and s["limit_images_per_s"] > 0
    assert "| torch | bf16 |" in md.read_text() and "pipeline limit" in capsys.readouterr().out
    assert main(["bench-speed", "--pipeline", "--train"]) == 2


def _compile_script():  # type: ignore[no-untyped-def]
    """``scripts/train_compile_ab.py`` as a module (scripts are not part of the package)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_compile_ab.py"
    spec = importlib.util.spec_from_file_location("train_compile_ab", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_compile_ab_runs_both_trainers_in_turns_with_the_same_losses_under_dynamo() -> None:
    """The eager backend captures the step with TorchDynamo and runs the graphs unchanged: losses bit-identical."""
    m = _compile_script()
    rep = m.compile_ab(tiny_preset(), threads=1, steps=3, backend="eager", n_images=32)
    assert rep.error is None, rep.error
    assert len(rep.eager_seconds) == len(rep.compiled_seconds) == 3
    assert rep.losses_identical and rep.max_abs_loss_diff == 0.0
    assert rep.eager_steady_s > 0 and rep.compiled_steady_s > 0 and "losses identical: True" in rep.summary()


def test_compile_ab_counts_compilation_against_the_steady_gain() -> None:
    m = _compile_script()
    rep = m.CompileAB("x", 1, "inductor", 5, eager_seconds=[3.0, 1.0, 1.0, 1.0, 1.0])
    rep.compiled_seconds = [20.0, 2.0, 0.5, 0.5, 0.5]
    m._finish(rep, [{"loss": 1.0}] * 5, [{"loss": 1.0}] * 4 + [{"loss": 1.5}])
    assert rep.compile_seconds == pytest.approx(22.0 - 2 * 0.5)  # the two warm-up steps above the steady rate
    assert rep.break_even_steps == pytest.approx(21.0 / 0.5)
    assert rep.max_abs_loss_diff == 0.5 and not rep.losses_identical
    rep.compiled_seconds = [20.0, 2.0, 1.5, 1.5, 1.5]
    m._finish(rep, [{"loss": 1.0}], [{"loss": float("nan")}])
    assert rep.break_even_steps is None and rep.max_abs_loss_diff == float("inf") and "never" in rep.summary()
