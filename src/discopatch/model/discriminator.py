"""The patch discriminator D: the whole detector at inference time.

Layout (docs/METHOD.md, section 2.1): ``len(widths)`` blocks of [Conv 3x3 stride 2 (bias) -> norm -> LeakyReLU(0.01)],
then Flatten -> Linear -> one logit per patch. The sigmoid is applied by the caller in float32/float64 so that
mixed precision never rounds confident outputs to exactly 1.0 (pitfall 8 and 12).

The forward takes ``group_size``: how many consecutive patches share normalisation statistics. Training passes the
whole single-domain batch (the paper) or one image's patches; scoring always passes one image's patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from ..config import ModelConfig
from .norm import PatchGroupNorm, make_norm


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cfg: ModelConfig, out_spatial: int = 2, first: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, bias=True)
        # Per-patch statistics of a 1x1 map are undefined (one value per channel): that layer goes unnormalised.
        kind = "none" if cfg.norm == "instancenorm" and out_spatial == 1 else cfg.norm
        if first and not cfg.norm_first_layer:
            kind = "none"  # variant: keep absolute intensity information in the first layer
        self.norm = make_norm(kind, out_ch, eps=cfg.eps, groupnorm_groups=cfg.groupnorm_groups)
        self.act = nn.LeakyReLU(cfg.negative_slope)

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        out: torch.Tensor = self.act(self.norm(self.conv(x), group_size))
        return out


class Discriminator(nn.Module):
    """Patch discriminator returning one logit per patch (real ID patch -> high)."""

    #: an ``nn.ModuleList`` at run time, typed by its items (the ModuleList stubs cannot say what it holds)
    blocks: Sequence[DiscriminatorBlock]

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = (cfg.channels, *cfg.disc_widths)
        self.blocks = cast(
            "Sequence[DiscriminatorBlock]",
            nn.ModuleList(
                DiscriminatorBlock(a, b, cfg, cfg.patch_size // 2 ** (i + 1), first=i == 0)
                for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
            ),
        )
        self.head = nn.Linear(cfg.disc_widths[-1] * cfg.final_spatial**2, 1)

    def features(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, group_size)
        return x

    def forward_with_statistics(self, x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and, per group, each layer's channel mean and log-variance of the conv output.

        Those statistics are exactly what the per-image normalisation removes (global contrast and brightness among
        them); :mod:`discopatch.inference.stats_model` scores them.
        Returns ``(logits (N,), stats (N // group_size, 2 * sum(widths)))``.
        """
        feats = []
        for block in self.blocks:
            h = block.conv(x)
            if isinstance(block.norm, PatchGroupNorm):  # the statistics come out of the normalisation pass itself
                h, mean, var = block.norm.forward_with_statistics(h, group_size)
            else:  # variants without normalisation in a layer: measure what a normalisation would have removed
                n, c, hh, ww = h.shape
                var, mean = torch.var_mean(
                    h.reshape(n // group_size, group_size, c, hh, ww).float(), dim=(1, 3, 4), unbiased=False
                )
                h = block.norm(h, group_size)
            feats += [mean, torch.log(var + self.cfg.eps)]
            x = block.act(h)
        logits = self.head(x.flatten(1).float()).squeeze(1)
        return logits, torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        """Logits of shape ``(num_patches,)``; ``group_size=None`` normalises the whole input as one group."""
        h = self.features(x, group_size).flatten(1)
        # The head runs in float32 even under autocast: a bf16 logit/sigmoid saturates (docs/METHOD.md, section 5).
        with torch.autocast(device_type=h.device.type, enabled=False):
            logits: torch.Tensor = self.head(h.float()).squeeze(1)
            return logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
