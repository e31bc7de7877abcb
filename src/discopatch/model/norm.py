"""Normalisation layers for the discriminator, with the grouping made explicit.

DisCoPatch's discriminator normalises with *batch* statistics and never keeps running statistics. What counts as
"the batch" decides whether evaluation is honest: at inference a group must be exactly one image's N patches,
otherwise statistics of other test images leak into each score (docs/METHOD.md, section 5). PyTorch's BatchNorm
ties that choice to ``train()``/``eval()`` and to how callers batch their data; here it is an argument.

:class:`PatchGroupNorm` takes ``group_size``: consecutive blocks of ``group_size`` samples are normalised with
their own per-channel mean and biased variance over (samples x H x W), then a learned affine is applied. The
other kinds (running-statistics BatchNorm, GroupNorm, InstanceNorm, none) ignore ``group_size`` and exist for
ablations.
"""

from __future__ import annotations

import torch
from torch import nn

#: Groups of at least this many values go through the batch-norm kernel one group at a time, smaller ones through
#: one vectorised pass over all groups (measured crossover on the dev CPU; docs/BENCHMARKS.md "Scoring speed").
KERNEL_MIN_GROUP_ELEMENTS = 1 << 18


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
        return self.forward_with_statistics(x, group_size)[0]

    def forward_with_statistics(
        self, x: torch.Tensor, group_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The forward's output plus, per group, the removed channel mean and variance, ``(G, C)`` float32 each.

        Two implementations of the same arithmetic (biased variance, float32 statistics even for bf16 input),
        chosen by the size of *one group* - never by how many groups share the call, so an image's score is
        bit-identical whether it is scored alone or beside others:

        * large groups (a paper-size image's 64 patches, a training batch): PyTorch's training-mode batch-norm
          kernel on each group's slice - one vectorised pass, 3-15x faster than ``torch.var_mean``, and bf16 /
          channels_last inputs keep their format;
        * small groups (the small preset's 16 patches): one reduction and one fused affine pass over a view of all
          groups, since a kernel call per group costs more in dispatch than in arithmetic.
        """
        g = self._group_size(x, group_size)
        if g * x[0].numel() < KERNEL_MIN_GROUP_ELEMENTS:
            return self._grouped(x, g)
        outs, means, invstds = [], [], []
        for i in range(0, x.shape[0], g):
            y, mean, invstd = torch.native_batch_norm(
                x[i : i + g], self.weight, self.bias, None, None, True, 0.0, self.eps
            )
            outs.append(y)
            means.append(mean)
            invstds.append(invstd)
        # The kernel returns 1 / sqrt(var + eps); rounding can leave a constant channel's variance at -1e-12.
        var = (torch.stack(invstds).float().pow(-2) - self.eps).clamp_min(0.0)
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), torch.stack(means).float(), var

    def _grouped(self, x: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Many groups at once (many images per scoring run): one reduction and one fused affine pass over a view
        in which each group is contiguous; a batch-norm call per group costs more in dispatch than in arithmetic.
        """
        n, c, h, w = x.shape
        dims: tuple[int, ...]
        pshape: tuple[int, ...]
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            v, dims, pshape = x.permute(0, 2, 3, 1).reshape(n // g, g * h * w, c), (1,), (1, 1, c)
        else:
            v, dims, pshape = x.reshape(n // g, g, c, h * w), (1, 3), (1, 1, c, 1)
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        mean = v.mean(dim=dims, keepdim=True, dtype=stats_dtype)
        d = v.to(stats_dtype) - mean
        var = (d * d).mean(dim=dims, keepdim=True)  # biased, two-pass
        scale = self.weight.to(stats_dtype).view(pshape) * torch.rsqrt(var + self.eps)
        y = torch.addcmul(self.bias.to(stats_dtype).view(pshape), d, scale).to(x.dtype)
        y = y.reshape(n, h, w, c).permute(0, 3, 1, 2) if len(dims) == 1 else y.reshape(n, c, h, w)
        return y, mean.reshape(n // g, c).float(), var.reshape(n // g, c).float()

    def group_statistics(self, x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group channel mean and biased variance, shape ``(G, C)`` each: what the forward removes."""
        _, mean, var = self.forward_with_statistics(x, group_size)
        return mean, var

    def _group_size(self, x: torch.Tensor, group_size: int | None) -> int:
        n = x.shape[0]
        g = n if group_size is None else int(group_size)
        if g <= 0 or n % g:
            raise ValueError(f"batch of {n} samples cannot be split into groups of {group_size}")
        return g

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class _Ignoring(nn.Module):
    """Adapter giving a standard norm layer the ``(x, group_size)`` signature; the grouping is ignored."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out


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
