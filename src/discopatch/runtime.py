"""Device selection and seeding shared by training and scoring."""

from __future__ import annotations

import hashlib

import torch

from .errors import ConfigError, UnavailableError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a clear error, not a silent fallback."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UnavailableError(
            "--device cuda was requested but no CUDA device is available (torch.cuda.is_available())"
        )
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from several parts (for per-step RNG that a resumed run reproduces exactly)."""
    h = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)
