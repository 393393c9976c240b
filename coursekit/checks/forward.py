"""Checks for lesson 02's exercises (the batch-norm forward): ``channel_stats`` and ``batch_norm_train``.

Part of :mod:`coursekit.checks`; import them from there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import (_F32, _F64, CheckResult, _compare, _desc, _Failure, _forbidden_targets, _require_callable, _run,
                    _Runner, _Unchanged, _unpack)
from ._inputs import _AXES_HINT, _affine_params, _bn_dims, _bn_wrong_axes, _norm_variants, _view, _x

__all__ = ["check_channel_stats", "check_batch_norm_train"]


def check_channel_stats(channel_stats) -> CheckResult:
    """Check ``channel_stats(x) -> (mean, var)``: per-channel mean and biased variance, each (C,).

    Introduced in exercise notebook 02. Cases: 2D to 5D input, float32 and float64; mean and var compared separately.

    Args:
        channel_stats: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``channel_stats`` is not callable.
    """
    _require_callable(channel_stats, "a function channel_stats(x) -> (mean, var)")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype):
        def body():
            x = _x(shape, dtype)
            with _Unchanged(x=x):
                out = run(channel_stats, x)
            mean, var = _unpack(out, 2, "(mean, var)")
            dims = _bn_dims(x)
            _compare(mean, x.mean(dims), "mean", shape_hint=_AXES_HINT)
            per_sample = lambda: x.var(list(range(2, x.dim())), unbiased=False).mean(0)  # noqa: E731
            _compare(var, x.var(dims, unbiased=False), "var", shape_hint=_AXES_HINT, variants=[
                ("return the biased variance (divide by n, unbiased=False), the one that normalizes",
                 lambda: x.var(dims, unbiased=True)),
                ("return the variance, not the standard deviation", lambda: x.var(dims, unbiased=False).sqrt()),
                ("compute the variance over all N x spatial values of a channel at once, not per sample then averaged",
                 per_sample),
            ], hint="var = mean over N and spatial dims of (x - mean)**2, per channel")
        return _desc(shape, dtype), body

    cases = [case(s, d) for s, d in [((4, 3), _F32), ((2, 3, 5), _F64), ((2, 3, 4, 5), _F32),
                                      ((2, 3, 4, 5), _F64), ((2, 2, 3, 2, 3), _F32), ((2, 2, 3, 2, 3), _F64)]]
    return _run("channel_stats", cases)


def check_batch_norm_train(batch_norm_train) -> CheckResult:
    """Check ``batch_norm_train(x, gamma, beta, eps=1e-5) -> y`` (training-mode BN, batch statistics).

    Introduced in exercise notebook 02. Cases: 2D to 5D, float32/float64, eps 1e-5/1e-3/0.1, and gradients of x, gamma, beta against autograd.

    Args:
        batch_norm_train: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``batch_norm_train`` is not callable.
    """
    _require_callable(batch_norm_train, "a function batch_norm_train(x, gamma, beta, eps=1e-5) -> y")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype, eps=None, grad=False):
        extra = {} if eps is None else {"eps": eps}
        if grad:
            extra["gradients"] = "autograd"

        def body():
            x = _x(shape, dtype)
            gamma, beta = _affine_params(shape[1], dtype)
            e = 1e-5 if eps is None else eps
            expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=e)
            dims = _bn_dims(x)
            variants = _norm_variants(x, dims, gamma, beta, e, _bn_wrong_axes(x))
            if grad:
                x.requires_grad_(True)
                gamma.requires_grad_(True)
                beta.requires_grad_(True)
            args = (x, gamma, beta) if eps is None else (x, gamma, beta, eps)
            with _Unchanged(x=x, gamma=gamma, beta=beta):
                y = run(batch_norm_train, *args)
            _compare(y, expected.detach(), "output", variants=variants,
                     shape_hint="return a tensor of the input's shape",
                     hint="y = (x - mean) / sqrt(var + eps) * gamma + beta with per-channel batch mean and biased var, broadcast as (1, C, 1, ...)")
            if not grad:
                return
            if not y.requires_grad:
                raise _Failure("the output does not require grad: it is cut from the autograd graph",
                               hint="use torch operations on x only (no .detach(), .data, .numpy() or torch.no_grad())")
            dy = torch.randn_like(expected)
            run(lambda: y.backward(dy))
            xr, gr, br = (t.detach().clone().requires_grad_(True) for t in (x, gamma, beta))
            F.batch_norm(xr, None, None, gr, br, training=True, eps=e).backward(dy)
            xd = x.detach().clone().requires_grad_(True)
            mean = xd.mean(dims, keepdim=True).detach()
            var = xd.var(dims, unbiased=False, keepdim=True).detach()
            (((xd - mean) / torch.sqrt(var + e)) * _view(gamma.detach(), x.dim()) + _view(beta.detach(), x.dim())).backward(dy)
            if x.grad is None:
                raise _Failure("x.grad is None after backward", hint="compute the output from x with torch operations")
            _compare(x.grad, xr.grad, "x.grad", variants=[
                ("the statistics are detached from the graph (.detach(), .item() or .data): the gradient must flow through the batch mean and variance",
                 xd.grad)])
            _compare(gamma.grad, gr.grad, "gamma.grad")
            _compare(beta.grad, br.grad, "beta.grad")
        return _desc(shape, dtype, **extra), body

    cases = [case((4, 3), _F32), case((2, 3, 5), _F64), case((2, 3, 4, 5), _F32, eps=0.1),
             case((2, 3, 4, 5), _F64), case((2, 2, 3, 2, 3), _F64, eps=1e-3),
             case((2, 3, 4, 4), _F64, grad=True)]
    return _run("batch_norm_train", cases)
