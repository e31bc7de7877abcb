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
from discopatch.interrupts import PendingInterrupt
from discopatch.memory import reuse_freed_memory
from discopatch.model import Discriminator
from discopatch.train_speed import PARTS, bench_scoring, bench_training, step_flops
from discopatch.training import Trainer
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
