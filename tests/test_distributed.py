"""DistributedDataParallel on CPU (gloo, 2 processes): ranks stay in sync and only rank 0 writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from discopatch.data.images import stack_images
from discopatch.training.trainer import Trainer
from helpers.presets import tiny_preset


def _worker(rank: int, world: int, init_file: str, out: str, images: np.ndarray) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from discopatch.detector import Detector

        det = Detector(tiny_preset(steps_per_epoch=3), device="cpu", seed=0)
        det.fit(images, epochs=1, progress=False, checkpoint_dir=Path(out) / "checkpoints")
        trainer = det.trainer
        assert trainer is not None and trainer.world_size == world
        # D's whole state and the VAE's parameters. The VAE's BatchNorm running buffers are left out on purpose:
        # DDP broadcasts rank 0's at each forward, then each rank's own batch updates them; they are never read
        # (the VAE always runs in training mode) and only rank 0's are checkpointed.
        weights = {f"D.{k}": v for k, v in trainer.D.state_dict().items()}
        weights.update({f"vae.{k}": v.detach() for k, v in trainer.vae.named_parameters()})
        save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(out, f"rank{rank}.safetensors"))
        if rank == 0:
            det.save(Path(out) / "model")
        assert (det.calibration is not None) == (rank == 0)  # only rank 0 calibrates
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_stay_identical(fmnist, tmp_path: Path) -> None:
    images = stack_images(fmnist.train_images[:160], tiny_preset().preprocess)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), images), nprocs=2, join=True)
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    # Training really happened: the weights moved away from the shared initialisation.
    init = Trainer(tiny_preset().model, tiny_preset().train)
    assert not torch.equal(init.D.head.weight, w0["D.head.weight"])
    assert (tmp_path / "model" / "detector.json").exists()
    assert (tmp_path / "checkpoints" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "model1").exists()


def test_ranks_draw_disjoint_images() -> None:
    p = tiny_preset(batch_images=4)
    tr = Trainer(p.model, p.train)
    order = np.random.default_rng(0).permutation(20)
    single = [tr.batch_indices(order, j, 4) for j in range(3)]
    np.testing.assert_array_equal(single[1], order[4:8])
    np.testing.assert_array_equal(tr.batch_indices(order, 4, 4), order[[16, 17, 18, 19]])
    np.testing.assert_array_equal(tr.batch_indices(order, 5, 4), order[[0, 1, 2, 3]])  # wraps around
    tr.world_size = 2
    for j in range(3):
        tr.rank = 0
        r0 = tr.batch_indices(order, j, 4)
        tr.rank = 1
        r1 = tr.batch_indices(order, j, 4)
        assert not set(r0) & set(r1)
        np.testing.assert_array_equal(np.concatenate([r0, r1]), order[(np.arange(8) + 8 * j) % 20])
    assert tr.steps_per_epoch(20) == 20 // 8


@pytest.mark.slow
def test_torchrun_fit_cli(fmnist, tmp_path: Path) -> None:
    """The documented command: ``torchrun --nproc-per-node 2 discopatch fit``; rank 0 alone saves the detector."""
    import shutil
    import subprocess
    import sys

    from PIL import Image

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    (tmp_path / "train").mkdir()
    for i, a in enumerate(fmnist.train_images[:96]):
        Image.fromarray(a).save(tmp_path / "train" / f"{i}.png")
    tiny = "--widths 8,16,32 --latent-dim 16 --batch-images 8 --train-patches 4 --test-patches 8 --image-size 32"
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "discopatch.cli", "fit", str(tmp_path / "train")]
    cmd += ["--out", str(tmp_path / "m"), "--epochs", "1", "--quiet", "--device", "cpu", *tiny.split()]
    cmd += ["--patch-size", "16", "--resize", "pad", "--target-fpr", "0.1"]  # 10 calibration images: enough at 10 %
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes" in out.stderr
    assert out.stderr.count("saved detector") == 1
    assert "trained 5 steps" in out.stderr  # 86 training images / (2 ranks x 8 images)
    assert (tmp_path / "m" / "detector.json").exists()
