"""Normalisation layers for the discriminator, with the grouping made explicit.

DisCoPatch's discriminator normalises with *batch* statistics and never keeps running statistics. What counts as
"the batch" decides whether evaluation is honest: at inference a group must be exactly one image's N patches,
otherwise statistics of other test images leak into each score (method.md, pitfalls 1-2). PyTorch's BatchNorm
ties that choice to ``train()``/``eval()`` and to how callers batch their data; here it is an argument.

:class:`PatchGroupNorm` takes ``group_size``: consecutive blocks of ``group_size`` samples are normalised with
their own per-channel mean and biased variance over (samples x H x W), then a learned affine is applied. The
other kinds (running-statistics BatchNorm, GroupNorm, InstanceNorm, none) ignore ``group_size`` and exist for
ablations.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchGroupNorm(nn.Module):
    """Per-group batch statistics: the normalisation DisCoPatch relies on.

    For an input of shape ``(G * group_size, C, H, W)`` each of the G groups is standardised with its own
    per-channel mean and biased variance computed over ``group_size * H * W`` values, then scaled by ``weight``
    and shifted by ``bias`` (shared across groups, as BatchNorm's gamma/beta). With ``group_size`` equal to the
    whole batch this is ``BatchNorm2d(track_running_stats=False)`` in either mode.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        g = n if group_size is None else int(group_size)
        if g <= 0 or n % g:
            raise ValueError(f"batch of {n} samples cannot be split into groups of {group_size}")
        xg = x.reshape(n // g, g, c, h, w)
        # Statistics in float32 at least: bf16 sums over tens of thousands of values lose the signal.
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        xs = xg.to(stats_dtype)
        var, mean = torch.var_mean(xs, dim=(1, 3, 4), unbiased=False, keepdim=True)
        # Fold the affine into one scale and shift per (group, channel): a single fused pass over the data.
        scale = self.weight.view(1, 1, c, 1, 1).to(stats_dtype) * torch.rsqrt(var + self.eps)
        shift = self.bias.view(1, 1, c, 1, 1).to(stats_dtype) - mean * scale
        y = torch.addcmul(shift, xs, scale)
        return y.reshape(n, c, h, w).to(x.dtype)

    def group_statistics(self, x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group channel mean and biased variance, shape ``(G, C)`` each: what the forward removes."""
        n, c, h, w = x.shape
        xg = x.reshape(n // group_size, group_size, c, h, w).float()
        var, mean = torch.var_mean(xg, dim=(1, 3, 4), unbiased=False)
        return mean, var

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class _Ignoring(nn.Module):
    """Adapter giving a standard norm layer the ``(x, group_size)`` signature; the grouping is ignored."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        return self.inner(x)


def make_norm(kind: str, num_features: int, eps: float = 1e-5, groupnorm_groups: int = 32) -> nn.Module:
    """Build one normalisation layer of the given kind; all share the signature ``(x, group_size=None)``.

    * ``patch`` - :class:`PatchGroupNorm` (the method);
    * ``batchnorm`` - BatchNorm2d with running statistics (eval mode uses the training averages: ablation);
    * ``groupnorm`` - GroupNorm over channels of each sample (the official code's later variant: ablation);
    * ``instancenorm`` - affine InstanceNorm2d, i.e. per-patch statistics (ablation);
    * ``none`` - identity.
    """
    if kind == "patch":
        return PatchGroupNorm(num_features, eps=eps)
    if kind == "batchnorm":
        return _Ignoring(nn.BatchNorm2d(num_features, eps=eps))
    if kind == "groupnorm":
        groups = _largest_divisor_at_most(num_features, groupnorm_groups)
        return _Ignoring(nn.GroupNorm(groups, num_features, eps=eps))
    if kind == "instancenorm":
        return _Ignoring(nn.InstanceNorm2d(num_features, eps=eps, affine=True))
    if kind == "none":
        return _Ignoring(nn.Identity())
    raise ValueError(f"unknown norm kind {kind!r}")


def _largest_divisor_at_most(n: int, k: int) -> int:
    for d in range(min(n, k), 0, -1):
        if n % d == 0:
            return d
    return 1
