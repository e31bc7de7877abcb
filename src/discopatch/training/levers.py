"""Optional regularisers of the adversarial game, each off by default so the presets train exactly as before.

They stay inside the method's own negatives (reconstructions and prior samples); none adds a hand-made corruption.

* **Geometric views** (``TrainConfig.augment="geometric"``): every patch D sees in training - real, reconstructed
  and generated alike - is shown in one of the eight flips / 90-degree rotations of the square, the same one for
  all patches of one image (a group of ``train_patches`` consecutive patches) and for an image's reconstruction.
  Never photometric, blur, noise or compression transforms: those are the shifts the detector must see, and a D
  trained to ignore them would stop detecting them. Integer shifts are left out: a shifted patch needs padding,
  whose edge is itself a high-frequency artefact D could learn.
* **LeCam** (``TrainConfig.lecam``, Tseng et al., CVPR 2021): pulls D's logits on real patches towards the moving
  average of its logits on generated ones and vice versa, bounding how far D can push the two apart.
* **Learning-rate decay** (``TrainConfig.lr_decay``): both learning rates fall along a half cosine to
  :data:`LR_FLOOR` of their value by that step and stay there, so training past it moves the game little (aimed at
  the late fall, where the VAE keeps improving and D's near-OOD score drifts down). Set from the step, not stored.
* **Negative weights** (``TrainConfig.d_prior_weight`` and ``d_recon_weight``, the paper's 0.5 each): the shares
  of D's loss that call decodes of z ~ N(0, I) and reconstructions fake; 0 takes one kind of negative out of D's
  training (the VAE is still pushed to make it look real). On photos D's near-OOD score falls as training goes on;
  these measure which negative teaches D the cue that costs it (docs/BENCHMARKS.md, "Levers, eighth round").
* ``TrainConfig.lr_d`` (D's own learning rate: two time-scales) and ``TrainConfig.d_steps`` (D updates per VAE
  update) are plain settings of the training loop.

Their measured effect is in docs/BENCHMARKS.md ("Levers"): none wins on every axis, so none is a preset's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError

#: The number of flips / 90-degree rotations of a square (the dihedral group of order 8).
N_VIEWS = 8

#: Decay of LeCam's moving averages of D's mean logits (the paper's value).
LECAM_DECAY = 0.99

#: Where a decaying learning rate ends, as a fraction of its starting value (``TrainConfig.lr_decay``).
LR_FLOOR = 0.1


def lr_factor(step: int, decay_steps: int | None) -> float:
    """The learning rates' multiplier at ``step`` (steps done): 1 without decay, else a half cosine from 1 at step 0
    to :data:`LR_FLOOR` at ``decay_steps``, held there afterwards."""
    if decay_steps is None:
        return 1.0
    t = min(step / decay_steps, 1.0)
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * t))


def draw_views(n_groups: int, generator: torch.Generator) -> torch.Tensor:
    """One view code per group, uniform over the :data:`N_VIEWS` flips / rotations (0 = unchanged)."""
    return torch.randint(0, N_VIEWS, (n_groups,), generator=generator)


def view(patches: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``patches`` (groups of consecutive square patches, one code per group) shown in their group's view.

    Code ``c`` flips left-right when ``c >= 4`` and then rotates by ``c % 4`` quarter turns. Only positions move:
    every pixel value, and so every histogram and spectrum magnitude up to the rotation, is preserved.
    """
    n, side = patches.shape[0], patches.shape[-1]
    if patches.shape[-2] != side:
        raise ConfigError(f"geometric views need square patches, got {tuple(patches.shape[-2:])}")
    if n % len(codes):
        raise ConfigError(f"{n} patches do not split into {len(codes)} equal groups")
    grouped = patches.reshape(len(codes), n // len(codes), *patches.shape[1:])
    out = grouped.clone()
    for code in codes.unique().tolist():
        if code == 0:
            continue
        chosen = (codes == code).nonzero().flatten().to(patches.device)
        part = grouped[chosen]
        if code >= 4:
            part = part.flip(-1)
        out[chosen] = torch.rot90(part, code % 4, dims=(-2, -1))
    return out.reshape(patches.shape)


@dataclass
class LeCamAverages:
    """The moving averages of D's mean logit on real and on generated (reconstructed + prior) patches."""

    real: float | None = None
    fake: float | None = None

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """Fold this step's mean logits in (the first step sets them)."""
        r, f = float(real_logits.detach().float().mean()), float(fake_logits.detach().float().mean())
        self.real = r if self.real is None else LECAM_DECAY * self.real + (1 - LECAM_DECAY) * r
        self.fake = f if self.fake is None else LECAM_DECAY * self.fake + (1 - LECAM_DECAY) * f

    def penalty(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """``mean((D(real) - avg_fake)^2) + mean((D(fake) - avg_real)^2)``; zero before the first update."""
        if self.real is None or self.fake is None:
            return real_logits.float().sum() * 0.0
        return ((real_logits.float() - self.fake) ** 2).mean() + ((fake_logits.float() - self.real) ** 2).mean()
