"""Training checkpoints: where training stands (:class:`TrainState`) and the two files that save it with the
weights and optimiser moments, so that a resumed run continues exactly as an uninterrupted one would.

::

    CHECKPOINT_DIR/
      checkpoint.safetensors   every module's weights and both optimisers' moments, the JSON state in its metadata
      checkpoint.json          the same state, readable (model and training configuration, progress, LeCam)

Both are written fresh and put in place by a rename (:func:`discopatch.artifact.files.write_new_file`); the
:class:`~discopatch.training.trainer.Trainer` decides when, and what goes into them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..artifact.files import write_new_file
from ..config import TrainConfig, to_dict
from ..errors import ConfigError, MissingFileError

CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
CHECKPOINT_FORMAT = "discopatch-checkpoint"


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False
    stop_reason: str = ""
    planned_steps: int | None = None  # the steps the schedule asked for (None: a time limit alone)

    def summary(self, cfg: TrainConfig, this_run_seconds: float, **counts: int) -> dict[str, Any]:
        """What a saved detector records of its training (``training`` in ``detector.json``); ``counts`` are the
        image counts (``n_train_images``, ``n_val_images``, ``n_unreadable``)."""
        return {
            "steps": self.step,
            "planned_steps": self.planned_steps,
            "budget_complete": self.planned_steps is None or self.step >= self.planned_steps,
            "epochs_completed": self.epoch,
            "train_seconds": round(self.elapsed, 2),
            "this_run_seconds": round(this_run_seconds, 2),
            "stop_reason": self.stop_reason,
            **counts,
            "train_config": to_dict(cfg),
            "last_losses": self.history[-1] if self.history else {},
        }


def write_checkpoint(
    directory: Path,
    modules: list[tuple[str, nn.Module]],
    optimizers: Sequence[tuple[str, torch.optim.Optimizer]],
    settings: dict[str, Any],
) -> None:
    """Save ``modules``' weights and ``optimizers``' moments (tensor names prefixed with their names) with the JSON
    ``settings`` (the optimisers' parameter groups added), each file replaced atomically.

    The two replacements are not one atomic step, so the weights file carries the JSON state too, in its metadata:
    a kill between them must not pair new weights with an old step count (:func:`read_checkpoint` reads it there).
    """
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules:
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
    opt_meta = {}
    for name, opt in optimizers:
        sd = opt.state_dict()
        for pid, pstate in sd["state"].items():
            for k, v in pstate.items():
                tensors[f"{name}.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        opt_meta[name] = sd["param_groups"]
    meta = {**settings, "optimizers": opt_meta}
    tmp_w = directory / (CHECKPOINT_WEIGHTS + ".tmp")
    tmp_j = directory / (CHECKPOINT_STATE + ".tmp")
    write_new_file(tmp_w, safetensors_bytes(tensors, metadata={"checkpoint": json.dumps(meta)}))
    write_new_file(tmp_j, json.dumps(meta, indent=1).encode())
    os.replace(tmp_w, directory / CHECKPOINT_WEIGHTS)
    os.replace(tmp_j, directory / CHECKPOINT_STATE)


def read_checkpoint(directory: Path) -> tuple[dict[str, Any], Path]:
    """A checkpoint's JSON state and the path of its weights file; the state is the copy inside the weights file
    when it has one (always, since it was added), which is the one that matches those weights."""
    meta_path, w_path = directory / CHECKPOINT_STATE, directory / CHECKPOINT_WEIGHTS
    if not meta_path.exists() or not w_path.exists():
        raise MissingFileError(f"no checkpoint in {directory} (expected {CHECKPOINT_STATE} and {CHECKPOINT_WEIGHTS})")
    with safe_open(str(w_path), "pt") as f:
        embedded = (f.metadata() or {}).get("checkpoint")
    meta = json.loads(embedded if embedded else meta_path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{meta_path} is not a discopatch checkpoint")
    return meta, w_path


def restore_modules(tensors: dict[str, torch.Tensor], modules: list[tuple[str, nn.Module]]) -> None:
    """Load each module's weights from the tensors under its prefix, strictly (every name and shape must match)."""
    for prefix, module in modules:
        sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        module.load_state_dict(sd, strict=True)


def restore_optimizers(
    tensors: dict[str, torch.Tensor],
    groups_by_name: dict[str, list[dict[str, Any]]],
    optimizers: Sequence[tuple[str, torch.optim.Optimizer, float]],
) -> None:
    """Load each optimiser's moments and parameter groups; its learning rate is the given one (the trainer's own,
    so a resumed run keeps its configuration), and ``step`` stays on the CPU as the optimiser keeps it."""
    for name, opt, lr in optimizers:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(name + "."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v.cpu() if key == "step" else v
        groups = groups_by_name[name]
        for g in groups:
            g["betas"] = tuple(g["betas"])
            g["lr"] = lr
        opt.load_state_dict({"state": state, "param_groups": groups})
