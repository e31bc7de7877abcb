"""Adversarial training of the VAE and the patch discriminator (docs/METHOD.md, section 3): the schedule around
the game's step (:mod:`discopatch.training.steps`).

Every step draws its randomness from a generator seeded by ``(seed, step)``; a run resumed from a checkpoint
(:mod:`discopatch.training.checkpoint`) therefore continues exactly as an uninterrupted one would. Under
``torchrun`` the two update steps run through DistributedDataParallel (see :mod:`discopatch.training.distributed`):
each rank draws its own images, keeps its own per-domain normalisation statistics and DDP averages the gradients.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..budget import effective_train_config, epoch_steps, estimate_line, planned_steps, time_limit_warning
from ..config import ModelConfig, TrainConfig, from_dict, to_dict
from ..errors import ConfigError, MissingFileError
from ..log import LOGGER, progress_bar
from ..runtime import derive_seed
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_STATE,
    TrainState,
    read_checkpoint,
    restore_modules,
    restore_optimizers,
    write_checkpoint,
)
from .distributed import any_across_ranks, is_main_process
from .interrupts import PendingInterrupt, interrupt_between_steps
from .levers import LeCamAverages
from .memory import reuse_freed_memory
from .steps import AdversarialStep

#: A checkpoint is written when an epoch ends at least this many steps after the last one (a small folder's epochs
#: are a step or two long), and within an epoch every CHECKPOINT_MAX_STEPS steps (a large folder's are long).
CHECKPOINT_MIN_STEPS, CHECKPOINT_MAX_STEPS = 25, 250
#: The time estimate is logged after this many steps of a call (the first, with its warm-up, not counted).
ESTIMATE_AFTER = 6


@dataclass
class _FitCall:
    """One call of :meth:`Trainer.fit`: its inputs and the bookkeeping that lasts as long as the call (its clock,
    the step of the last checkpoint), which :class:`TrainState` does not save."""

    images: np.ndarray
    batch: int
    steps_per_epoch: int
    checkpoint_dir: str | os.PathLike[str] | None
    log_every: int
    callback: Callable[[TrainState, dict[str, float]], None] | None
    interrupt: PendingInterrupt
    bar: Any
    t_call: float
    elapsed_before: float
    last_ckpt: int = 0
    first_step: int = 0
    t_first: float = 0.0


class Trainer(AdversarialStep):
    """D, the VAE and their optimisers (:class:`~discopatch.training.steps.AdversarialStep`: one update of the
    game); :meth:`fit` runs the schedule on a uint8 image stack, with checkpoints and exact resume."""

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
            raise ConfigError("no training images")
        st = self.state
        st.planned_steps = self.planned_steps(n)
        progress = progress and is_main_process()
        bar = progress_bar(total=st.planned_steps, initial=st.step, disable=not progress, unit="step", desc="training")
        b, spe = min(self.cfg.batch_images, n), self.steps_per_epoch(n)
        # The time limit counts this call only; ``elapsed`` accumulates over resumed runs.
        run = _FitCall(
            images, b, spe, checkpoint_dir, log_every, callback, interrupt, bar, time.monotonic(), st.elapsed
        )
        run.last_ckpt = run.first_step = st.step
        try:
            self._run_epochs(run)
        except KeyboardInterrupt:
            st.stop_reason = "interrupted"
            # a forced (second) Ctrl-C may have torn a step: keep the last whole checkpoint rather than save it
            if checkpoint_dir is not None and not interrupt.forced:
                self.save_checkpoint(checkpoint_dir)
            raise
        finally:
            bar.close()
        budget = self.cfg.max_time
        if budget is not None and st.planned_steps is not None and st.step < st.planned_steps and is_main_process():
            LOGGER.warning(time_limit_warning(st.step, st.planned_steps, budget))
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir)
        return st

    def _run_epochs(self, run: _FitCall) -> None:
        """Epochs of steps until the schedule ends or :meth:`_stop_now` says so; a checkpoint after each epoch that
        ended at least :data:`CHECKPOINT_MIN_STEPS` steps after the last one."""
        st, epochs = self.state, self.cfg.epochs
        while (epochs is None or st.epoch < epochs) and not st.finished:
            order = self._epoch_order(len(run.images), st.epoch)
            while st.batch_in_epoch < run.steps_per_epoch:
                run.interrupt.raise_if_requested()
                if self._stop_now(run):
                    break
                self._after_step(run, self._scheduled_step(run, order))
            if st.finished:
                break
            st.epoch += 1
            st.batch_in_epoch = 0
            if run.checkpoint_dir is not None and st.step - run.last_ckpt >= CHECKPOINT_MIN_STEPS:
                self.save_checkpoint(run.checkpoint_dir)
                run.last_ckpt = st.step
        run.interrupt.raise_if_requested()  # held during the last step: still an interruption
        if not st.stop_reason:
            st.stop_reason = f"{epochs} epochs completed"
        st.finished = True

    def _stop_now(self, run: _FitCall) -> bool:
        """Whether the step limit or this call's time limit is reached (then the state records why). Under DDP the
        ranks agree on the time limit, so none of them waits in a step the others have left."""
        st, max_steps, budget = self.state, self.cfg.max_steps, self.cfg.max_time
        if max_steps is not None and st.step >= max_steps:
            st.stop_reason = f"{max_steps} steps completed"
        else:
            over_budget = budget is not None and time.monotonic() - run.t_call >= budget
            if self.world_size > 1 and budget is not None:
                (over_budget,) = any_across_ranks(over_budget, device=self.device)
            if not over_budget:
                return False
            st.stop_reason = f"time budget of {budget:g} s reached"
        st.finished = True
        return True

    def _scheduled_step(self, run: _FitCall, order: np.ndarray) -> dict[str, float]:
        """The schedule's next step, its randomness seeded by ``(seed, step)`` so a resumed run repeats it exactly;
        a non-finite loss on any rank stops training rather than train on from broken weights."""
        st = self.state
        idx = self.batch_indices(order, st.batch_in_epoch, run.batch)
        rng = np.random.default_rng(self._step_seed("step", st.step))
        torch.manual_seed(self._step_seed("torch", st.step))
        logs = self.train_step(self.sample_real(run.images, idx, rng))
        st.step += 1
        st.batch_in_epoch += 1
        st.elapsed = run.elapsed_before + time.monotonic() - run.t_call
        bad = not all(math.isfinite(v) for v in logs.values())
        if self.world_size > 1:
            (bad,) = any_across_ranks(bad, device=self.device)
        if bad:
            raise FloatingPointError(f"non-finite loss at step {st.step} (on some rank): {logs}")
        return logs

    def _after_step(self, run: _FitCall, logs: dict[str, float]) -> None:
        """What follows a step: the history and progress bar, the time estimate once the warm-up is past, a
        checkpoint within a long epoch, the caller's callback."""
        st = self.state
        if st.step % run.log_every == 0 or st.step == 1:
            st.history.append({"step": st.step, "epoch": st.epoch, "time": st.elapsed, **logs})
            run.bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("loss_d", "loss_g", "mse", "d_real", "d_recon")})
        run.bar.update(1)
        if st.step - run.first_step == 1:
            run.t_first = time.monotonic()  # the first step's warm-up is not counted in the estimate
        elif st.step - run.first_step == ESTIMATE_AFTER and is_main_process():
            per_step = (time.monotonic() - run.t_first) / (ESTIMATE_AFTER - 1)
            LOGGER.info("training: %s", estimate_line(per_step, st.step, st.planned_steps, self.cfg.max_time))
        if run.checkpoint_dir is not None and st.step - run.last_ckpt >= CHECKPOINT_MAX_STEPS:
            self.save_checkpoint(run.checkpoint_dir)
            run.last_ckpt = st.step
        if run.callback is not None:
            run.callback(st, logs)

    # ------------------------------------------------------------------ checkpoints
    def _modules(self) -> list[tuple[str, nn.Module]]:
        """The modules a checkpoint holds, by the prefix of their tensors' names (the average only when kept)."""
        return [("D", self.D), ("vae", self.vae)] + ([("D_ema", self.D_ema)] if self.D_ema is not None else [])

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
        settings = {
            "format": CHECKPOINT_FORMAT,
            "format_version": 1,
            "model": to_dict(self.model_cfg),
            "train": to_dict(self.cfg),
            "state": to_dict(self.state),
            "lecam": {"real": self.lecam.real, "fake": self.lecam.fake},
        }
        write_checkpoint(directory, self._modules(), [("opt_d", self.opt_d), ("opt_g", self.opt_g)], settings)
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
        meta, w_path = read_checkpoint(Path(directory))
        model_cfg = from_dict(ModelConfig, meta["model"])
        train_dict = dict(meta["train"])
        train_dict.update(train_overrides or {})
        cfg = effective_train_config(from_dict(TrainConfig, train_dict), **(budget or {}))
        trainer = cls(model_cfg, cfg, device=device, **trainer_kwargs)
        tensors = load_file(str(w_path), device=str(trainer.device))
        restore_modules(tensors, trainer._modules())
        optimizers = [("opt_d", trainer.opt_d, trainer.lr_d), ("opt_g", trainer.opt_g, trainer.cfg.lr)]
        restore_optimizers(tensors, meta["optimizers"], optimizers)
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
            raise MissingFileError(f"--resume given but no checkpoint found in {checkpoint_dir}")
        schedule = {k: v for k, v in given.items() if k in ("epochs", "max_time", "max_steps")}
        trainer = cls.from_checkpoint(checkpoint_dir, device, budget=schedule, **trainer_kwargs)
        if trainer.model_cfg != model_cfg:
            raise ConfigError("the checkpoint was trained with another model configuration than requested")
        return trainer
