"""The grouped normalisation is the method's heart: check its maths against a direct computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from discopatch.model.norm import PatchGroupNorm, make_norm


def direct(x: torch.Tensor, group: int, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for g0 in range(0, x.shape[0], group):
        xs = x[g0 : g0 + group].double()
        for c in range(x.shape[1]):
            v = xs[:, c]
            mean = v.sum() / v.numel()
            var = ((v - mean) ** 2).sum() / v.numel()  # biased
            out[g0 : g0 + group, c] = ((v - mean) / torch.sqrt(var + eps) * weight[c] + bias[c]).to(x.dtype)
    return out


@pytest.mark.parametrize("group", [1, 3, 4, 12])
def test_group_stats_match_direct_computation(group: int) -> None:
    torch.manual_seed(0)
    norm = PatchGroupNorm(5, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(12, 5, 6, 7) * torch.linspace(0.1, 10, 12).view(12, 1, 1, 1) + 3.0
    got = norm(x, group)
    want = direct(x, group, norm.weight.detach(), norm.bias.detach(), 1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_whole_batch_group_equals_batchnorm_without_running_stats() -> None:
    torch.manual_seed(1)
    x = torch.randn(10, 4, 5, 5) * 2 + 1
    bn = nn.BatchNorm2d(4, track_running_stats=False).eval()
    norm = PatchGroupNorm(4)
    torch.testing.assert_close(norm(x, None), bn(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm(x, 10), bn(x), rtol=1e-5, atol=1e-5)


def test_groups_do_not_see_each_other() -> None:
    torch.manual_seed(2)
    norm = PatchGroupNorm(3)
    a, b = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5) * 50 + 20
    alone = norm(a, 4)
    together = norm(torch.cat([a, b]), 4)[:4]
    torch.testing.assert_close(alone, together)


def test_same_in_train_and_eval_mode() -> None:
    norm = PatchGroupNorm(3)
    x = torch.randn(8, 3, 4, 4)
    y_train = norm.train()(x, 4)
    y_eval = norm.eval()(x, 4)
    torch.testing.assert_close(y_train, y_eval)


def test_group_statistics_are_what_forward_removes() -> None:
    norm = PatchGroupNorm(3)
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    mean, var = norm.group_statistics(x, 4)
    assert mean.shape == (2, 3) and var.shape == (2, 3)
    torch.testing.assert_close(mean[1], x[4:].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(var[0], x[:4].var(dim=(0, 2, 3), unbiased=False))


def test_indivisible_batch_is_an_error() -> None:
    with pytest.raises(ValueError, match="groups of 3"):
        PatchGroupNorm(2)(torch.randn(4, 2, 3, 3), 3)


@pytest.mark.parametrize("kind", ["batchnorm", "groupnorm", "instancenorm", "none"])
def test_ablation_norms_accept_the_group_argument(kind: str) -> None:
    norm = make_norm(kind, 8).eval()
    x = torch.randn(6, 8, 4, 4)
    assert norm(x, 3).shape == x.shape


def test_unknown_norm_kind() -> None:
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("layernorm", 4)


@pytest.mark.parametrize("group", [2, 6])
def test_gradients_match_the_direct_computation(group: int) -> None:
    """The fast kernel path must train exactly like the written-out formula (inputs, gamma and beta)."""
    torch.manual_seed(3)
    x = (torch.randn(6, 3, 4, 4, dtype=torch.float64) * 2 + 1).requires_grad_()
    norm = PatchGroupNorm(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    upstream = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    (norm(x, group) * upstream).sum().backward()
    got = [x.grad.clone(), norm.weight.grad.clone(), norm.bias.grad.clone()]

    x2 = x.detach().clone().requires_grad_()
    w, b = norm.weight.detach().clone().requires_grad_(), norm.bias.detach().clone().requires_grad_()
    xg = x2.reshape(6 // group, group, 3, 4, 4)
    mean = xg.mean(dim=(1, 3, 4), keepdim=True)
    var = ((xg - mean) ** 2).mean(dim=(1, 3, 4), keepdim=True)
    y = ((xg - mean) / torch.sqrt(var + norm.eps) * w.view(1, 1, 3, 1, 1) + b.view(1, 1, 3, 1, 1)).reshape(6, 3, 4, 4)
    (y * upstream).sum().backward()
    for g, want in zip(got, [x2.grad, w.grad, b.grad]):
        torch.testing.assert_close(g, want)


def test_statistics_returned_with_the_output() -> None:
    torch.manual_seed(4)
    norm = PatchGroupNorm(3)
    x = torch.randn(8, 3, 4, 4) * 5 - 2
    y, mean, var = norm.forward_with_statistics(x, 4)
    torch.testing.assert_close(y, norm(x, 4))
    torch.testing.assert_close(mean, x.reshape(2, 4, 3, 4, 4).mean(dim=(1, 3, 4)))
    torch.testing.assert_close(var, x.reshape(2, 4, 3, 4, 4).var(dim=(1, 3, 4), unbiased=False), rtol=1e-4, atol=1e-5)


def test_bf16_channels_last_input_keeps_float32_statistics() -> None:
    """bf16 activations: output stays bf16 (no conversion pass), statistics are accumulated in float32."""
    torch.manual_seed(5)
    norm = PatchGroupNorm(4)
    x = (torch.randn(16, 4, 8, 8) * 2 + 50.0).bfloat16().contiguous(memory_format=torch.channels_last)
    y, mean, var = norm.forward_with_statistics(x, 8)
    assert y.dtype == torch.bfloat16 and mean.dtype == torch.float32
    exact = x.float()  # the bf16 values themselves, statistics in float32
    want = direct(exact, 8, norm.weight.detach(), norm.bias.detach(), norm.eps)
    assert (y.float() - want).abs().max() < 0.05  # bf16 output rounding only
    torch.testing.assert_close(mean, exact.reshape(2, 8, 4, 8, 8).mean(dim=(1, 3, 4)))
    torch.testing.assert_close(
        var, exact.reshape(2, 8, 4, 8, 8).var(dim=(1, 3, 4), unbiased=False), rtol=1e-3, atol=1e-4
    )
