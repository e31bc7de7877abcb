"""Multi-process training helpers (``torchrun --nproc-per-node K discopatch fit ...``).

DisCoPatch's normalisation uses the statistics of the current D call, and the paper computes them over one
single-domain batch. Under DistributedDataParallel each rank therefore keeps its *own* per-domain statistics
(over its ``batch_images x train_patches`` patches); there is deliberately no SyncBatchNorm. Gradients are
averaged by DDP, so one step sees ``K x batch_images`` images, normalised in K independent groups per domain.

Everything here is a no-op in a single process, so the default path is unchanged.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def launched_by_torchrun() -> bool:
    """torchrun (and torch.distributed.launch) export WORLD_SIZE; more than one process means DDP."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto") -> torch.device:
    """Join the process group torchrun describes; returns this rank's device (``cuda:LOCAL_RANK`` or CPU).

    NCCL on CUDA, gloo on CPU. Call once per process before building the trainer.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")


def any_across_ranks(*flags: bool, device: torch.device | str = "cpu") -> list[bool]:
    """Element-wise OR of boolean flags over all ranks, so every rank takes the same stop decision.

    Without this a time budget or a non-finite loss seen by one rank only would leave the others waiting in the
    next all-reduce forever.
    """
    if not is_distributed():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
