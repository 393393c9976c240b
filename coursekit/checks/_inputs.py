"""Inputs and reference maths shared by the checks of several lessons (float64 where it matters).

Part of :mod:`coursekit.checks`: randomized inputs whose channels and samples differ (so wrong axes
show), the normalization with switches for the classic mistakes, and BatchNorm layers/models with
non-trivial parameters and running statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from ._core import _F64

__all__ = [
    "_view", "_x", "_affine_params", "_bn_dims", "_norm", "_norm_variants", "_bn_wrong_axes",
    "_AXES_HINT", "_randomize_bn", "_BN_TYPES", "_bns", "_randomized",
]


def _view(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (dim - 2))


def _x(shape, dtype) -> torch.Tensor:
    """Input whose channels and samples have different spreads and offsets, so wrong axes show."""
    c = shape[1]
    x = torch.randn(shape, dtype=_F64)
    x = x * _view(torch.linspace(0.5, 2.5, c, dtype=_F64), len(shape)) + _view(torch.linspace(-1, 2, c, dtype=_F64), len(shape))
    x = x + torch.randn((shape[0],) + (1,) * (len(shape) - 1), dtype=_F64) * 0.7
    return x.to(dtype)


def _affine_params(c: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.rand(c, dtype=dtype) + 0.5), torch.randn(c, dtype=dtype)


def _bn_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _norm(x, dims, weight=None, bias=None, eps=1e-5, unbiased=False, eps_outside=False, wview=None):
    """Normalize over ``dims``: the right answer and, through its switches, the classic wrong ones."""
    dims = list(dims)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=unbiased, keepdim=True)
    y = (x - mean) / (var.sqrt() + eps) if eps_outside else (x - mean) / torch.sqrt(var + eps)
    wview = wview or (lambda t: _view(t, x.dim()))
    if weight is not None:
        y = y * wview(weight)
    if bias is not None:
        y = y + wview(bias)
    return y


def _norm_variants(x, dims, weight, bias, eps, wrong_axes=()) -> list:
    """(hint, lazy value) for the classic mistakes of a normalization over ``dims``."""
    v = [
        ("normalize with the biased variance (divide by n, unbiased=False); the unbiased one is only for running_var",
         lambda: _norm(x, dims, weight, bias, eps, unbiased=True)),
        ("eps goes inside the square root: divide by sqrt(var + eps), not sqrt(var) + eps",
         lambda: _norm(x, dims, weight, bias, eps, eps_outside=True)),
    ]
    for axes, hint in wrong_axes:
        v.append((hint, lambda axes=axes: _norm(x, axes, weight, bias, eps)))
    if weight is not None and bias is not None:
        v.append(("gamma scales and beta shifts: y = x_hat * gamma + beta (they are swapped)",
                  lambda: _norm(x, dims, bias, weight, eps)))
    if weight is not None or bias is not None:
        v.append(("apply the affine parameters: y = x_hat * gamma + beta", lambda: _norm(x, dims, eps=eps)))
    return v


def _bn_wrong_axes(x) -> list:
    d = x.dim()
    axes = []
    if d > 2:
        axes.append(((0,), "statistics over the wrong axes: you reduced over N only; reduce over N and every spatial dim (all dims but the channel dim 1)"))
        axes.append((tuple(range(2, d)), "statistics over the wrong axes: you used per-sample statistics; batch norm shares them across the batch (reduce over N and all spatial dims)"))
    axes.append((tuple(range(1, d)), "statistics over the wrong axes: you normalized each sample over its channels (that is layer norm); reduce over N and all spatial dims, per channel"))
    axes.append((tuple(range(d)), "statistics over the wrong axes: you used one mean/variance for everything; batch norm keeps one per channel"))
    return axes


_AXES_HINT = "reduce over N and every spatial dim (all dims but the channel dim 1): one value per channel, shape (C,)"


def _randomize_bn(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        if getattr(bn, "weight", None) is not None:
            bn.weight.copy_(torch.rand_like(bn.weight) + 0.5)
            bn.bias.copy_(torch.randn_like(bn.bias))
        if getattr(bn, "running_mean", None) is not None:
            bn.running_mean.copy_(torch.randn_like(bn.running_mean))
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
            bn.num_batches_tracked.fill_(5)
    return bn


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _bns(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN_TYPES)]


def _randomized(model: nn.Module, dtype) -> nn.Module:
    for bn in _bns(model):
        _randomize_bn(bn)
    return model.to(dtype)
