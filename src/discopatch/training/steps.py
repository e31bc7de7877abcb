"""One step of the adversarial game between the VAE and the patch discriminator (docs/METHOD.md, section 3).

One step, exactly as in the paper:

1. VAE update: ``MSE(x, x_hat) + w_KL * KL + w_adv * BCE(D(x_hat), 1) + w_adv * BCE(D(x_tilde), 1)``, where
   ``x_hat`` is the reconstruction and ``x_tilde`` a decode of z ~ N(0, I), one per real patch.
2. D update on the fakes made *before* the VAE update:
   ``(BCE(D(x), 1) + 0.5 * BCE(D(x_tilde), 0) + 0.5 * BCE(D(x_hat), 0)) / 2``; the two 0.5 are
   ``TrainConfig.d_prior_weight`` and ``d_recon_weight`` (levers: which negatives D learns from).

Real, reconstructed and generated patches always go through D in separate calls, so each is normalised with its
own statistics (pitfall 3). The normalisation group is the whole single-domain batch (``grouping="domain"``, the
paper) or one image's patches (``grouping="image"``, matching inference). Each update's forward is one module call
(:class:`GeneratorStep`, :class:`DiscriminatorStep`), so that DistributedDataParallel sees exactly one forward per
backward (:mod:`discopatch.training.distributed`).

Speed options: ``channels_last`` (on by default: 1.33-1.40x faster training steps for the small preset on the
2-core CPU, docs/BENCHMARKS.md "Training speed and GPU"), ``amp`` (bf16 autocast, default on CUDA only; D's head,
the VAE's mu/logvar heads and the BCE stay float32) and ``compile`` (``torch.compile``, off). The schedule around
the step - seeds, epochs, limits, checkpoints - is :mod:`discopatch.training.trainer`'s.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig, TrainConfig
from ..model import VAE, Discriminator, kl_divergence
from ..patches import extract_patches, patch_corners, to_tensor
from ..runtime import derive_seed
from .checkpoint import TrainState
from .distributed import rank_and_world
from .levers import LeCamAverages, draw_views, lr_factor, view


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """``nn.BCELoss`` on the sigmoid, computed from logits in float32 (same value, no bf16 saturation)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def no_phase(name: str) -> AbstractContextManager[object]:
    """The default phase marker of a step: nothing (``bench-speed --train`` swaps in a timer)."""
    return nullcontext()


class GeneratorStep(nn.Module):
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


class DiscriminatorStep(nn.Module):
    """D's three single-domain calls (real / generated / reconstructed) as one forward, for the same reason."""

    def __init__(self, D: Discriminator) -> None:
        super().__init__()
        self.D = D

    def forward(
        self, real: torch.Tensor, gen: torch.Tensor, recon: torch.Tensor, group: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.D(real, group), self.D(gen, group), self.D(recon, group)


#: Training layout when not given. channels_last was 1.33-1.40x faster per step (small preset, gray and RGB,
#: scripts/train_layout_ab.py on the idle dev machine; 1.34x in an earlier loaded run); it changes rounding, not
#: the method.
TRAIN_CHANNELS_LAST_DEFAULT = True


class AdversarialStep:
    """Owns D, the VAE and their optimisers, and runs one step of the game (:meth:`train_step`); the
    :class:`~discopatch.training.trainer.Trainer` adds the schedule around it.

    ``state`` is the schedule's progress, kept here because a step's random views are seeded by its number.
    """

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
        self._g_step: Callable[..., tuple[torch.Tensor, ...]] = GeneratorStep(self.vae, self.D)
        self._d_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int | None], tuple[torch.Tensor, ...]] = (
            DiscriminatorStep(self.D)
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
        self.last_lecam_penalty = 0.0  # the unweighted penalty of the last D update, logged beside loss_d
        #: Marks the parts of a step (``data``, ``vae_forward``, ``d_forward``, ``losses``, ``vae_backward``,
        #: ``d_backward``, ``optimiser``): a context manager factory; :mod:`discopatch.training.speed` times them.
        self.phase: Callable[[str], AbstractContextManager[object]] = no_phase

    def set_phase_marker(self, phase: Callable[[str], AbstractContextManager[object]]) -> None:
        """Use ``phase(name)`` around each part of a step (eager steps only: a compiled step is one part)."""
        self.phase = phase
        g_step = self._g_step
        if isinstance(g_step, GeneratorStep):
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
        self._set_learning_rates()

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
            logs = {
                "loss_g": float(loss_g),
                "loss_d": float(loss_d),
                "mse": float(mse),
                "kl": float(kl),
                "d_real": float(torch.sigmoid(l_real.float()).mean()),
                "d_recon": float(torch.sigmoid(l_recon.float()).mean()),
                "d_gen": float(torch.sigmoid(l_gen.float()).mean()),
            }
            if self.cfg.lecam > 0:  # loss_d includes lecam * this; the paper's D loss is the difference
                logs["lecam_penalty"] = self.last_lecam_penalty
            return logs

    def _d_update(
        self, real: torch.Tensor, gen: torch.Tensor, recon: torch.Tensor, group: int | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One D update (the paper's loss, plus LeCam when set); returns the loss and the three logit tensors."""
        with self._autocast(), self.phase("d_forward"):
            l_real, l_gen, l_recon = self._d_step(real, gen, recon, group)
        with self.phase("losses"):
            negatives = self.cfg.d_prior_weight * bce(l_gen, 0.0) + self.cfg.d_recon_weight * bce(l_recon, 0.0)
            loss_d = (bce(l_real, 1.0) + negatives) / 2
            if self.cfg.lecam > 0:
                fake = torch.cat([l_gen.flatten(), l_recon.flatten()])
                penalty = self.lecam.penalty(l_real, fake)
                self.last_lecam_penalty = float(penalty)
                loss_d = loss_d + self.cfg.lecam * penalty
                self.lecam.update(l_real, fake)
        self.opt_d.zero_grad(set_to_none=True)
        with self.phase("d_backward"):
            loss_d.backward()
        with self.phase("optimiser"):
            self.opt_d.step()
        return loss_d, (l_real, l_gen, l_recon)

    def _set_learning_rates(self) -> None:
        """Both optimisers' rates for this step: constant unless ``lr_decay`` is set (:func:`lr_factor`)."""
        if self.cfg.lr_decay is None:
            return
        factor = lr_factor(self.state.step, self.cfg.lr_decay)
        for opt, base in ((self.opt_g, self.cfg.lr), (self.opt_d, self.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    def _update_d_average(self) -> None:
        """Fold D's new weights into its moving average (``ema`` > 0 only)."""
        if self.D_ema is None:
            return
        with torch.no_grad():
            for pe, p in zip(self.D_ema.parameters(), self.D.parameters()):
                pe.lerp_(p, 1.0 - self.cfg.ema)
            for be, b in zip(self.D_ema.buffers(), self.D.buffers()):
                be.copy_(b)

    def _step_seed(self, kind: str, step: int) -> int:
        # Rank 0 keeps the single-process seeds, so a 1-process run is unchanged; other ranks draw other patches.
        if self.rank == 0:
            return derive_seed(self.cfg.seed, kind, step)
        return derive_seed(self.cfg.seed, kind, step, "rank", self.rank)
