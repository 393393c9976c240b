"""Checks for lesson 04's exercises (the batch-norm backward): ``batch_norm_backward`` and
``BatchNormFunction``.

Part of :mod:`coursekit.checks`; import them from there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import (_F32, _F64, CheckResult, _compare, _desc, _Failure, _forbidden_targets, _require_callable,
                    _require_class, _run, _Runner, _Unchanged, _unpack)
from ._inputs import _affine_params, _bn_dims, _bn_wrong_axes, _norm_variants, _view, _x

__all__ = ["check_batch_norm_backward", "check_BatchNormFunction"]


def _bn_grads(x, gamma, beta, eps, dy):
    """dx, dgamma, dbeta of training-mode BN by autograd, in float64, cast back to x's dtype."""
    xs = [t.detach().double().requires_grad_(True) for t in (x, gamma, beta)]
    F.batch_norm(xs[0], None, None, xs[1], xs[2], training=True, eps=eps).backward(dy.double())
    return tuple(t.grad.to(x.dtype) for t in xs)


def check_batch_norm_backward(batch_norm_backward) -> CheckResult:
    """Check ``batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)`` with ``cache = (x_hat, inv_std, gamma)``.

    Introduced in exercise notebook 04. Cases: 2D to 5D, float32/float64; dx, dgamma, dbeta against autograd of F.batch_norm in float64.

    Args:
        batch_norm_backward: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``batch_norm_backward`` is not callable.
    """
    _require_callable(batch_norm_backward, "a function batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype, eps=1e-5):
        def body():
            c = shape[1]
            x = _x(shape, dtype)
            gamma, beta = _affine_params(c, dtype)
            dims = _bn_dims(x)
            v = lambda t: _view(t, x.dim())  # noqa: E731
            mean = x.mean(dims)
            inv_std = 1 / torch.sqrt(x.var(dims, unbiased=False) + eps)
            x_hat = (x - v(mean)) * v(inv_std)
            dy = torch.randn(shape, dtype=dtype)
            with _Unchanged(dy=dy, x_hat=x_hat, inv_std=inv_std, gamma=gamma):
                out = run(batch_norm_backward, dy, (x_hat, inv_std, gamma))
            dx, dgamma, dbeta = _unpack(out, 3, "(dx, dgamma, dbeta)")
            edx, edgamma, edbeta = _bn_grads(x, gamma, beta, eps, dy)
            m = x.numel() // c
            g = v(gamma) * dy
            n_only = x.shape[0]
            sum_hint = "dgamma and dbeta have shape (C,): sum over N and every spatial dim"
            _compare(dgamma, edgamma, "dgamma", shape_hint=sum_hint, variants=[
                ("dgamma = sum(dy * x_hat) and dbeta = sum(dy) (they are swapped)", dy.sum(dims))],
                hint="dgamma = sum of dy * x_hat over N and spatial dims")
            _compare(dbeta, edbeta, "dbeta", shape_hint=sum_hint, variants=[
                ("dgamma = sum(dy * x_hat) and dbeta = sum(dy) (they are swapped)", (dy * x_hat).sum(dims))])
            _compare(dx, edx, "dx", shape_hint="dx has the shape of x", variants=[
                ("dx misses the paths through the batch mean and variance (they depend on x): dx = gamma * inv_std * dy holds only in eval mode",
                 g * v(inv_std)),
                ("dx has the mean path but misses the variance path: also subtract x_hat * mean(gamma * dy * x_hat)",
                 v(inv_std) * (g - v(g.sum(dims)) / m)),
                ("the means in dx are over all m = N x spatial values of a channel, not over N only",
                 (lambda: v(inv_std) / n_only * (n_only * g - v(g.sum(dims)) - x_hat * v((g * x_hat).sum(dims))))
                 if x.dim() > 2 else None),
                ("gamma scales dx: dx_hat = gamma * dy", lambda: v(inv_std) / m * (m * dy - v(dy.sum(dims)) - x_hat * v((dy * x_hat).sum(dims)))),
            ], hint="dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)), dx_hat = gamma * dy, sums per channel")
        return _desc(shape, dtype), body

    cases = [case((4, 3), _F64), case((2, 3, 5), _F64), case((2, 3, 4, 5), _F32),
             case((2, 3, 4, 5), _F64, eps=0.1), case((2, 2, 3, 2, 3), _F64), case((8, 5), _F32)]
    return _run("batch_norm_backward", cases)


def check_BatchNormFunction(BatchNormFunction) -> CheckResult:
    """Check ``BatchNormFunction``: a ``torch.autograd.Function``, ``apply(x, gamma, beta, eps)``, analytic backward.

    Introduced in exercise notebook 04. Cases: forward and all three gradients for 2D to 5D, float32/float64, then torch.autograd.gradcheck.

    Args:
        BatchNormFunction: the learner's class.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``BatchNormFunction`` is not a class.
    """
    _require_class(BatchNormFunction, torch.autograd.Function, "a class BatchNormFunction(torch.autograd.Function)")
    # autograd's own machinery may be used; only the batch-norm kernels are forbidden
    run = _Runner(_forbidden_targets("norm"))

    def require_function():
        if not issubclass(BatchNormFunction, torch.autograd.Function):
            raise _Failure("BatchNormFunction is not a torch.autograd.Function",
                           hint="write class BatchNormFunction(torch.autograd.Function) with static forward(ctx, ...) and backward(ctx, dy)")

    def case(shape, dtype, eps=1e-5):
        def body():
            require_function()
            c = shape[1]
            x = _x(shape, dtype).requires_grad_(True)
            gamma, beta = (t.requires_grad_(True) for t in _affine_params(c, dtype))
            with _Unchanged(x=x, gamma=gamma, beta=beta):
                y = run(BatchNormFunction.apply, x, gamma, beta, eps)
            expected = F.batch_norm(x.detach(), None, None, gamma.detach(), beta.detach(), training=True, eps=eps)
            _compare(y, expected, "forward output",
                     variants=_norm_variants(x.detach(), _bn_dims(x), gamma.detach(), beta.detach(), eps, _bn_wrong_axes(x)),
                     shape_hint="forward returns a tensor of the input's shape")
            if not y.requires_grad:
                raise _Failure("the output does not require grad", hint="return the output tensor from forward; autograd connects it")
            dy = torch.randn(shape, dtype=dtype)
            run(lambda: y.backward(dy))
            edx, edgamma, edbeta = _bn_grads(x, gamma, beta, eps, dy)
            v = lambda t: _view(t, x.dim())  # noqa: E731
            dims = _bn_dims(x)
            inv_std = 1 / torch.sqrt(x.detach().var(dims, unbiased=False) + eps)
            x_hat = (x.detach() - v(x.detach().mean(dims))) * v(inv_std)
            for name, t, e, variants in (
                    ("x.grad", x, edx, [("dx misses the paths through the batch mean and variance: "
                                         "dx = gamma * inv_std * dy holds only in eval mode", v(gamma.detach() * inv_std) * dy)]),
                    ("gamma.grad", gamma, edgamma, [("dgamma = sum(dy * x_hat), dbeta = sum(dy) (swapped)", dy.sum(dims))]),
                    ("beta.grad", beta, edbeta, [("dgamma = sum(dy * x_hat), dbeta = sum(dy) (swapped)", (dy * x_hat).sum(dims))])):
                if t.grad is None:
                    raise _Failure(f"{name} is None after backward",
                                   hint="backward returns (dx, dgamma, dbeta, None): one gradient per forward input")
                _compare(t.grad, e, name, variants=variants)
        return _desc(shape, dtype, eps=eps), body

    def gradcheck_case():
        require_function()
        x = _x((2, 3, 4), _F64).requires_grad_(True)
        gamma, beta = (t.requires_grad_(True) for t in _affine_params(3, _F64))
        ok = run(torch.autograd.gradcheck, lambda a, b, c: BatchNormFunction.apply(a, b, c, 1e-5),
                 (x, gamma, beta), eps=1e-6, atol=1e-6, raise_exception=False)
        if not ok:
            raise _Failure("torch.autograd.gradcheck failed", hint="the analytic backward disagrees with finite differences")

    cases = [case((4, 3), _F32), case((2, 3, 4, 5), _F64, eps=0.1), case((2, 2, 3, 2, 3), _F32),
             case((2, 3, 5), _F64), ("gradcheck, shape (2, 3, 4) float64", gradcheck_case)]
    return _run("BatchNormFunction", cases)
