"""Adversarial training of the VAE and the patch discriminator (docs/METHOD.md, section 3).

One step, exactly as in the paper:

1. VAE update: ``MSE(x, x_hat) + w_KL * KL + w_adv * BCE(D(x_hat), 1) + w_adv * BCE(D(x_tilde), 1)``, where
   ``x_hat`` is the reconstruction and ``x_tilde`` a decode of z ~ N(0, I), one per real patch.
2. D update on the fakes made *before* the VAE update:
   ``(BCE(D(x), 1) + 0.5 * BCE(D(x_tilde), 0) + 0.5 * BCE(D(x_hat), 0)) / 2``.

Real, reconstructed and generated patches always go through D in separate calls, so each is normalised with its
own statistics (pitfall 3). The normalisation group is the whole single-domain batch (``grouping="domain"``, the
paper) or one image's patches (``grouping="image"``, matching inference).

Every step draws its randomness from a generator seeded by ``(seed, step)``; a run resumed from a checkpoint
therefore continues exactly as an uninterrupted one would.

Speed options: ``channels_last`` (on by default: 1.33-1.40x faster training steps for the small preset on the
2-core CPU, docs/BENCHMARKS.md "Training speed and GPU"), ``amp`` (bf16 autocast, default on CUDA only; D's head,
the VAE's mu/logvar heads and the BCE stay float32) and ``compile`` (``torch.compile``, off). Under ``torchrun``
the two update steps run through DistributedDataParallel (see :mod:`discopatch.training.distributed`): each rank
draws its own images, keeps its own per-domain normalisation statistics and DDP averages the gradients.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..artifact.files import write_new_file
from ..budget import effective_train_config, epoch_steps, estimate_line, planned_steps, time_limit_warning
from ..config import ModelConfig, TrainConfig, from_dict, to_dict
from ..log import LOGGER, progress_bar
from ..model import VAE, Discriminator, kl_divergence
from ..patches import extract_patches, patch_corners, to_tensor
from ..runtime import derive_seed
from .distributed import any_across_ranks, is_main_process, rank_and_world
from .interrupts import PendingInterrupt, interrupt_between_steps
from .levers import LeCamAverages, draw_views, view
from .memory import reuse_freed_memory

CHECKPOINT_WEIGHTS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
#: A checkpoint is written when an epoch ends at least this many steps after the last one (a small folder's epochs
#: are a step or two long), and within an epoch every CHECKPOINT_MAX_STEPS steps (a large folder's are long).
CHECKPOINT_MIN_STEPS, CHECKPOINT_MAX_STEPS = 25, 250
#: The time estimate is logged after this many steps of a call (the first, with its warm-up, not counted).
ESTIMATE_AFTER = 6


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """``nn.BCELoss`` on the sigmoid, computed from logits in float32 (same value, no bf16 saturation)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def no_phase(name: str) -> AbstractContextManager[object]:
    """The default phase marker of a step: nothing (``bench-speed --train`` swaps in a timer)."""
    return nullcontext()


class _GeneratorStep(nn.Module):
    """The VAE step's forward as one module call, so DDP sees exactly one forward per backward.

    D is held outside the module's registered children: its parameters have ``requires_grad`` off during this
    step, and a DDP wrapper that owned them would wait for gradients that never come.
    """

    def __init__(self, vae: VAE, D: Discriminator) -> None:
        super().__init__()
        self.vae = vae
        self.__dict__["D"] = D  # not a submodule: DDP must only synchronise the VAE's gradients here
        self.phase: Callable[[str], AbstractContextManager[object]] = no_phase

    def forward(
        self, real: torch.Tensor, group: int | None, views: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, ...]:
        with self.phase("vae_forward"):
            recon, mu, logvar = self.vae(real)
            gen = self.vae.sample(real.shape[0])
        D: Discriminator = self.__dict__["D"]
        seen_recon, seen_gen = (view(recon, views[0]), view(gen, views[1])) if views is not None else (recon, gen)
        with self.phase("d_forward"):
            return recon, mu, logvar, gen, D(seen_recon, group), D(seen_gen, group)


class _DiscriminatorStep(nn.Module):
    """D's three single-domain calls (real / generated / reconstructed) as one forward, for the same reason."""

    def __init__(self, D: Discriminator) -> None:
        super().__init__()
        self.D = D

    def forward(
        self, real: torch.Tensor, gen: torch.Tensor, recon: torch.Tensor, group: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.D(real, group), self.D(gen, group), self.D(recon, group)


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


#: Training layout when not given. channels_last was 1.33-1.40x faster per step (small preset, gray and RGB,
#: scripts/train_layout_ab.py on the idle dev machine; 1.34x in an earlier loaded run); it changes rounding, not
#: the method.
TRAIN_CHANNELS_LAST_DEFAULT = True


class Trainer:
    """Owns D, the VAE and their optimisers; :meth:`fit` runs the schedule on a uint8 image stack."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        device: torch.device | str = "cpu",
        amp: bool | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
    ) -> None:
        self.model_cfg = model_cfg
        self.cfg = train_cfg
        self.device = torch.device(device)
        torch.manual_seed(derive_seed(train_cfg.seed, "init"))
        self.D = Discriminator(model_cfg).to(self.device)
        self.vae = VAE(model_cfg).to(self.device)
        self.channels_last = TRAIN_CHANNELS_LAST_DEFAULT if channels_last is None else bool(channels_last)
        if self.channels_last:
            # Module.to's overloads leave out memory_format, which it accepts (and documents)
            self.D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.vae.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # Optional exponential moving average of D's weights: the adversarial game oscillates, the average less so.
        self.D_ema = copy.deepcopy(self.D).requires_grad_(False) if train_cfg.ema > 0 else None
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.lr_d, betas=train_cfg.betas)
        self.opt_g = torch.optim.Adam(self.vae.parameters(), lr=train_cfg.lr, betas=train_cfg.betas)
        self.amp = (self.device.type == "cuda") if amp is None else amp
        self.compile = compile
        self.rank, self.world_size = rank_and_world()
        # the step modules, possibly wrapped in DDP and / or compiled: only ever called
        self._g_step: Callable[..., tuple[torch.Tensor, ...]] = _GeneratorStep(self.vae, self.D)
        self._d_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int | None], tuple[torch.Tensor, ...]] = (
            _DiscriminatorStep(self.D)
        )
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Every registered parameter is used in every step, so find_unused_parameters stays off (faster).
            self._g_step = DDP(self._g_step, device_ids=ids)
            self._d_step = DDP(self._d_step, device_ids=ids)
        if compile:
            self._g_step = torch.compile(self._g_step)
            self._d_step = torch.compile(self._d_step)
        self.state = TrainState()
        self.lecam = LeCamAverages()  # D's mean logits over training, for the LeCam regulariser (lecam > 0)
        #: Marks the parts of a step (``data``, ``vae_forward``, ``d_forward``, ``losses``, ``vae_backward``,
        #: ``d_backward``, ``optimiser``): a context manager factory; :mod:`discopatch.training.speed` times them.
        self.phase: Callable[[str], AbstractContextManager[object]] = no_phase

    def set_phase_marker(self, phase: Callable[[str], AbstractContextManager[object]]) -> None:
        """Use ``phase(name)`` around each part of a step (eager steps only: a compiled step is one part)."""
        self.phase = phase
        g_step = self._g_step
        if isinstance(g_step, _GeneratorStep):
            g_step.phase = phase

    @property
    def lr_d(self) -> float:
        """D's learning rate: its own when set (two time-scales), else the shared one."""
        return self.cfg.lr if self.cfg.lr_d is None else self.cfg.lr_d

    @property
    def detector_discriminator(self) -> Discriminator:
        """The D a detector should keep: the weight average when EMA is on, else the last iterate."""
        return self.D_ema if self.D_ema is not None else self.D

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def sample_real(self, images: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """K random patches from each selected image, consecutive per image: ``(len(idx) * K, C, p, p)``."""
        p, k = self.model_cfg.patch_size, self.cfg.train_patches
        with self.phase("data"):
            batch = images[idx]
            h, w = batch.shape[1:3]
            corners = np.stack([patch_corners(h, w, p, k, rng) for _ in range(len(idx))])
            real = extract_patches(to_tensor(batch).to(self.device), corners, p)
            return real.contiguous(memory_format=torch.channels_last) if self.channels_last else real

    def _views(self, n_patches: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This step's geometric view codes per image group (real and its reconstruction share one; the prior
        samples get their own), or ``None`` when augmentation is off."""
        if self.cfg.augment == "none":
            return None
        generator = torch.Generator().manual_seed(self._step_seed("augment", self.state.step))
        n_groups = n_patches // self.cfg.train_patches
        return draw_views(n_groups, generator), draw_views(n_groups, generator)

    def train_step(self, real: torch.Tensor) -> dict[str, float]:
        """One VAE update then ``d_steps`` D updates on ``real`` patches; returns the logged losses."""
        group = self.cfg.train_patches if self.cfg.grouping == "image" else None
        D, vae = self.D, self.vae
        D.train()
        vae.train()
        views = self._views(real.shape[0])

        # VAE step. D's parameters get no gradient here: the paper zeroes them before D's step anyway.
        D.requires_grad_(False)
        with self._autocast():
            recon, mu, logvar, gen, d_recon, d_gen = self._g_step(real, group, views)
        with self.phase("losses"):
            mse = F.mse_loss(recon.float(), real.float())
            kl = kl_divergence(mu.float(), logvar.float())
            adv_recon, adv_gen = bce(d_recon, 1.0), bce(d_gen, 1.0)
            loss_g = mse + self.cfg.w_kl * kl + self.cfg.w_adv * adv_recon + self.cfg.w_adv * adv_gen
        self.opt_g.zero_grad(set_to_none=True)
        with self.phase("vae_backward"):
            loss_g.backward()
        with self.phase("optimiser"):
            self.opt_g.step()
        D.requires_grad_(True)

        # D step(s), three separate forward calls (real / generated / reconstructed).
        recon_d, gen_d = recon.detach(), gen.detach()
        if views is not None:
            real, recon_d, gen_d = view(real, views[0]), view(recon_d, views[0]), view(gen_d, views[1])
        for _ in range(self.cfg.d_steps):
            loss_d, (l_real, l_gen, l_recon) = self._d_update(real, gen_d, recon_d, group)
        self._update_d_average()

        with torch.no_grad():
            return {
                "loss_g": float(loss_g),
                "loss_d": float(loss_d),
                "mse": float(mse),
                "kl": float(kl),
                "d_real": float(torch.sigmoid(l_real.float()).mean()),
                "d_recon": float(torch.sigmoid(l_recon.float()).mean()),
                "d_gen": float(torch.sigmoid(l_gen.float()).mean()),
            }

    def _d_update(
        self, real: torch.Tensor, gen: torch.Tensor, recon: torch.Tensor, group: int | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One D update (the paper's loss, plus LeCam when set); returns the loss and the three logit tensors."""
        with self._autocast(), self.phase("d_forward"):
            l_real, l_gen, l_recon = self._d_step(real, gen, recon, group)
        with self.phase("losses"):
            loss_d = (bce(l_real, 1.0) + 0.5 * bce(l_gen, 0.0) + 0.5 * bce(l_recon, 0.0)) / 2
            if self.cfg.lecam > 0:
                fake = torch.cat([l_gen.flatten(), l_recon.flatten()])
                loss_d = loss_d + self.cfg.lecam * self.lecam.penalty(l_real, fake)
                self.lecam.update(l_real, fake)
        self.opt_d.zero_grad(set_to_none=True)
        with self.phase("d_backward"):
            loss_d.backward()
        with self.phase("optimiser"):
            self.opt_d.step()
        return loss_d, (l_real, l_gen, l_recon)

    def _update_d_average(self) -> None:
        """Fold D's new weights into its moving average (``ema`` > 0 only)."""
        if self.D_ema is None:
            return
        with torch.no_grad():
            for pe, p in zip(self.D_ema.parameters(), self.D.parameters()):
                pe.lerp_(p, 1.0 - self.cfg.ema)
            for be, b in zip(self.D_ema.buffers(), self.D.buffers()):
                be.copy_(b)

    # ------------------------------------------------------------------ schedule
    def steps_per_epoch(self, n_images: int) -> int:
        """Steps of one epoch over ``n_images`` on this run's ranks (:func:`discopatch.budget.epoch_steps`)."""
        return epoch_steps(self.cfg, n_images, self.world_size)

    def planned_steps(self, n_images: int) -> int | None:
        """The steps the schedule trains on ``n_images`` (:func:`discopatch.budget.planned_steps`)."""
        return planned_steps(self.cfg, n_images, self.world_size)

    def batch_indices(self, order: np.ndarray, j: int, b: int) -> np.ndarray:
        """This rank's ``b`` positions of step ``j`` in the epoch's permutation (wrapping around).

        Rank r takes the r-th slice of the step's ``world_size * b`` consecutive entries, so ranks never draw
        the same image in a step; with one process this is the plain ``order[j*b : j*b + b]``.
        """
        start = (j * self.world_size + self.rank) * b
        return order[(start + np.arange(b)) % len(order)]

    def _step_seed(self, kind: str, step: int) -> int:
        # Rank 0 keeps the single-process seeds, so a 1-process run is unchanged; other ranks draw other patches.
        if self.rank == 0:
            return derive_seed(self.cfg.seed, kind, step)
        return derive_seed(self.cfg.seed, kind, step, "rank", self.rank)

    def _epoch_order(self, n_images: int, epoch: int) -> np.ndarray:
        return np.random.default_rng(derive_seed(self.cfg.seed, "epoch", epoch)).permutation(n_images)

    def fit(
        self,
        images: np.ndarray,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        log_every: int = 10,
        callback: Callable[[TrainState, dict[str, float]], None] | None = None,
    ) -> TrainState:
        """Train on a ``(N, S, S[, C])`` uint8 stack until the planned steps (or epochs) or the time limit run out.

        Checkpoints are written to ``checkpoint_dir`` when an epoch ends (at most every
        :data:`CHECKPOINT_MIN_STEPS` steps), every :data:`CHECKPOINT_MAX_STEPS` steps within a long epoch, and when
        training stops, so a killed run loses at most that much and an interrupted one (Ctrl-C) loses nothing.
        A time limit that stops training before the planned steps logs one warning (:func:`time_limit_warning`).
        Freed memory stays in the process meanwhile (:func:`discopatch.training.memory.reuse_freed_memory`: no page
        faults on every step's large activations; the arithmetic is unchanged).
        """
        with reuse_freed_memory(), interrupt_between_steps() as interrupt:
            return self._fit(images, checkpoint_dir, progress, log_every, callback, interrupt)

    def _fit(
        self,
        images: np.ndarray,
        checkpoint_dir: str | os.PathLike[str] | None,
        progress: bool,
        log_every: int,
        callback: Callable[[TrainState, dict[str, float]], None] | None,
        interrupt: PendingInterrupt,
    ) -> TrainState:
        """:meth:`fit`'s schedule loop; a held Ctrl-C (``interrupt``) stops it between two steps."""
        if images.ndim == 3:
            images = images[..., None]
        n = len(images)
        if n < 1:
            raise ValueError("no training images")
        b = min(self.cfg.batch_images, n)
        spe = self.steps_per_epoch(n)
        st = self.state
        st.planned_steps = self.planned_steps(n)
        epochs, max_steps, budget = self.cfg.epochs, self.cfg.max_steps, self.cfg.max_time
        progress = progress and is_main_process()
        bar = progress_bar(total=st.planned_steps, initial=st.step, disable=not progress, unit="step", desc="training")
        # The time limit counts this call only; ``elapsed`` accumulates over resumed runs.
        t_call, elapsed_before, last_ckpt, first_step, t_first = time.monotonic(), st.elapsed, st.step, st.step, 0.0
        try:
            while (epochs is None or st.epoch < epochs) and not st.finished:
                order = self._epoch_order(n, st.epoch)
                while st.batch_in_epoch < spe:
                    interrupt.raise_if_requested()
                    if max_steps is not None and st.step >= max_steps:
                        st.stop_reason = f"{max_steps} steps completed"
                        st.finished = True
                        break
                    over_budget = budget is not None and time.monotonic() - t_call >= budget
                    if self.world_size > 1 and budget is not None:
                        (over_budget,) = any_across_ranks(over_budget, device=self.device)
                    if over_budget:
                        st.stop_reason = f"time budget of {budget:g} s reached"
                        st.finished = True
                        break
                    idx = self.batch_indices(order, st.batch_in_epoch, b)
                    rng = np.random.default_rng(self._step_seed("step", st.step))
                    torch.manual_seed(self._step_seed("torch", st.step))
                    logs = self.train_step(self.sample_real(images, idx, rng))
                    st.step += 1
                    st.batch_in_epoch += 1
                    st.elapsed = elapsed_before + time.monotonic() - t_call
                    bad = not all(math.isfinite(v) for v in logs.values())
                    if self.world_size > 1:
                        (bad,) = any_across_ranks(bad, device=self.device)
                    if bad:
                        raise FloatingPointError(f"non-finite loss at step {st.step} (on some rank): {logs}")
                    if st.step % log_every == 0 or st.step == 1:
                        st.history.append({"step": st.step, "epoch": st.epoch, "time": st.elapsed, **logs})
                        bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("loss_d", "loss_g", "mse", "d_real", "d_recon")})
                    bar.update(1)
                    if st.step - first_step == 1:
                        t_first = time.monotonic()  # the first step's warm-up is not counted in the estimate
                    elif st.step - first_step == ESTIMATE_AFTER and is_main_process():
                        per_step = (time.monotonic() - t_first) / (ESTIMATE_AFTER - 1)
                        LOGGER.info("training: %s", estimate_line(per_step, st.step, st.planned_steps, budget))
                    if checkpoint_dir is not None and st.step - last_ckpt >= CHECKPOINT_MAX_STEPS:
                        self.save_checkpoint(checkpoint_dir)
                        last_ckpt = st.step
                    if callback is not None:
                        callback(st, logs)
                if st.finished:
                    break
                st.epoch += 1
                st.batch_in_epoch = 0
                if checkpoint_dir is not None and st.step - last_ckpt >= CHECKPOINT_MIN_STEPS:
                    self.save_checkpoint(checkpoint_dir)
                    last_ckpt = st.step
            interrupt.raise_if_requested()  # held during the last step: still an interruption
            if not st.stop_reason:
                st.stop_reason = f"{epochs} epochs completed"
            st.finished = True
        except KeyboardInterrupt:
            st.stop_reason = "interrupted"
            # a forced (second) Ctrl-C may have torn a step: keep the last whole checkpoint rather than save it
            if checkpoint_dir is not None and not interrupt.forced:
                self.save_checkpoint(checkpoint_dir)
            raise
        finally:
            bar.close()
        if budget is not None and st.planned_steps is not None and st.step < st.planned_steps and is_main_process():
            LOGGER.warning(time_limit_warning(st.step, st.planned_steps, budget))
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir)
        return st

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: str | os.PathLike[str]) -> Path:
        """Weights and optimiser moments in one safetensors file, the state in JSON; each file replaced atomically.

        The two replacements are not one atomic step, so the safetensors file also carries the JSON state in its
        metadata, and :meth:`from_checkpoint` reads it from there.

        Under DDP only rank 0 writes (all ranks hold identical weights); the others return at once.
        """
        directory = Path(directory)
        if not is_main_process():
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        modules = [("D", self.D), ("vae", self.vae)] + ([("D_ema", self.D_ema)] if self.D_ema is not None else [])
        for prefix, module in modules:
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().cpu().contiguous()
        opt_meta = {}
        for name, opt in (("opt_d", self.opt_d), ("opt_g", self.opt_g)):
            sd = opt.state_dict()
            for pid, pstate in sd["state"].items():
                for k, v in pstate.items():
                    tensors[f"{name}.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
            opt_meta[name] = sd["param_groups"]
        meta = {
            "format": "discopatch-checkpoint",
            "format_version": 1,
            "model": to_dict(self.model_cfg),
            "train": to_dict(self.cfg),
            "state": to_dict(self.state),
            "lecam": {"real": self.lecam.real, "fake": self.lecam.fake},
            "optimizers": opt_meta,
        }
        tmp_w = directory / (CHECKPOINT_WEIGHTS + ".tmp")
        tmp_j = directory / (CHECKPOINT_STATE + ".tmp")
        # The weights file carries its own state too: the two renames are not one atomic step, and a kill between
        # them must not pair new weights with an old step count.
        write_new_file(tmp_w, safetensors_bytes(tensors, metadata={"checkpoint": json.dumps(meta)}))
        write_new_file(tmp_j, json.dumps(meta, indent=1).encode())
        os.replace(tmp_w, directory / CHECKPOINT_WEIGHTS)
        os.replace(tmp_j, directory / CHECKPOINT_STATE)
        return directory

    @classmethod
    def from_checkpoint(
        cls,
        directory: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        train_overrides: dict[str, Any] | None = None,
        budget: dict[str, Any] | None = None,
        **trainer_kwargs: Any,
    ) -> Trainer:
        """Rebuild a trainer, weights, optimiser moments and progress from :meth:`save_checkpoint` output.

        ``train_overrides`` may extend the schedule (``epochs``, ``max_time``) but not change the model; ``budget``
        (``epochs`` / ``max_steps`` / ``max_time`` as the user gave them) goes through the same rule as a new run's
        (:func:`discopatch.budget.effective_train_config`); ``trainer_kwargs`` (``amp``, ``channels_last``,
        ``compile``) are passed to the constructor.
        """
        directory = Path(directory)
        meta_path, w_path = directory / CHECKPOINT_STATE, directory / CHECKPOINT_WEIGHTS
        if not meta_path.exists() or not w_path.exists():
            raise FileNotFoundError(
                f"no checkpoint in {directory} (expected {CHECKPOINT_STATE} and {CHECKPOINT_WEIGHTS})"
            )
        with safe_open(str(w_path), "pt") as f:
            embedded = (f.metadata() or {}).get("checkpoint")
        meta = json.loads(embedded if embedded else meta_path.read_text())
        if meta.get("format") != "discopatch-checkpoint":
            raise ValueError(f"{meta_path} is not a discopatch checkpoint")
        model_cfg = from_dict(ModelConfig, meta["model"])
        train_dict = dict(meta["train"])
        train_dict.update(train_overrides or {})
        cfg = effective_train_config(from_dict(TrainConfig, train_dict), **(budget or {}))
        trainer = cls(model_cfg, cfg, device=device, **trainer_kwargs)
        tensors = load_file(str(w_path), device=str(trainer.device))
        modules = [("D", trainer.D), ("vae", trainer.vae)]
        modules += [("D_ema", trainer.D_ema)] if trainer.D_ema is not None else []
        for prefix, module in modules:
            sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            module.load_state_dict(sd, strict=True)
        for name, opt in (("opt_d", trainer.opt_d), ("opt_g", trainer.opt_g)):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith(name + "."):
                    _, pid, key = k.split(".", 2)
                    state.setdefault(int(pid), {})[key] = v.cpu() if key == "step" else v
            groups = meta["optimizers"][name]
            for g in groups:
                g["betas"] = tuple(g["betas"])
                g["lr"] = trainer.lr_d if name == "opt_d" else trainer.cfg.lr
            opt.load_state_dict({"state": state, "param_groups": groups})
        trainer.lecam = LeCamAverages(**meta.get("lecam", {}))
        s = meta["state"]
        trainer.state = TrainState(
            step=s["step"],
            epoch=s["epoch"],
            batch_in_epoch=s["batch_in_epoch"],
            elapsed=s["elapsed"],
            history=s["history"],
            finished=False,
            stop_reason="",
        )
        return trainer

    @classmethod
    def start_or_resume(
        cls,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        device: torch.device | str,
        checkpoint_dir: str | os.PathLike[str] | None,
        resume: bool,
        given: dict[str, Any],
        **trainer_kwargs: Any,
    ) -> Trainer:
        """A fresh trainer, or with ``resume`` the one saved in ``checkpoint_dir``: its schedule is extended by
        the ``epochs`` / ``max_time`` / ``max_steps`` the user ``given`` (``None``: not given), through the same rule
        as a new run's; other settings stay the checkpoint's, and a different model configuration is refused."""
        if not resume:
            return cls(model_cfg, cfg, device, **trainer_kwargs)
        if checkpoint_dir is None or not (Path(checkpoint_dir) / CHECKPOINT_STATE).exists():
            raise FileNotFoundError(f"--resume given but no checkpoint found in {checkpoint_dir}")
        schedule = {k: v for k, v in given.items() if k in ("epochs", "max_time", "max_steps")}
        trainer = cls.from_checkpoint(checkpoint_dir, device, budget=schedule, **trainer_kwargs)
        if trainer.model_cfg != model_cfg:
            raise ValueError("the checkpoint was trained with another model configuration than requested")
        return trainer
