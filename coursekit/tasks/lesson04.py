"""Lesson 04's exercise (the batch-norm backward): ``batch_norm_backward`` and ``BatchNormFunction``.

Each task defined once (see :mod:`coursekit.tasks._task`). The cache ``(x_hat, inv_std, gamma)``
given to ``batch_norm_backward`` is computed here, on the trusted side, exactly as the notebook's
given ``batch_norm_forward`` computes it.
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side import lesson04 as kernel

from . import _data as data
from ._norm import bn_wrong_axes, norm_variants
from ._task import (
    AUTOGRAD_NAMES,
    AUTOGRAD_OPS,
    NORM_NAMES,
    NORM_OPS,
    REFERENCE_NORM_WATCH,
    Case,
    Exercise,
    Mismatch,
    Task,
    compare,
    first_mismatch,
)

__all__ = ["EXERCISE", "BATCH_NORM_BACKWARD", "BATCH_NORM_FUNCTION"]

_F32, _F64 = "float32", "float64"
SWAPPED_HINT = "dgamma = sum(dy * x_hat) and dbeta = sum(dy) (they are swapped)"
BESSEL_HINT = (
    "an extra n/(n-1) factor: the forward normalizes with the biased variance (divide by m), "
    "so no Bessel correction appears in the backward"
)


def _grads(x, gamma, beta, eps, dy):
    """dx, dgamma, dbeta of training-mode BN by autograd of F.batch_norm in float64."""
    import torch.nn.functional as F

    xs = [data.t(a).requires_grad_(True) for a in (x, gamma, beta)]
    F.batch_norm(xs[0], None, None, xs[1], xs[2], training=True, eps=eps).backward(data.t(dy))
    return [a.grad.numpy() for a in xs]


def _dx_variants(x_hat, inv_std, gamma, dy):
    nd = x_hat.ndim
    dims = data.dims_bn(nd)
    v = lambda a: data.view(a, nd)  # noqa: E731
    m = x_hat.size // x_hat.shape[1]
    g = v(gamma) * dy

    def formula(g, count, dims=dims, var_factor=1.0):
        return (
            v(inv_std)
            / count
            * (count * g - g.sum(axis=dims, keepdims=True) - var_factor * x_hat * (g * x_hat).sum(axis=dims, keepdims=True))
        )

    n = x_hat.shape[0]
    out = [
        (
            "dx misses the paths through the batch mean and variance (they depend on x): dx = gamma * inv_std * dy holds "
            "only in eval mode",
            lambda: g * v(inv_std),
        ),
        (
            "dx has the mean path but misses the variance path: var depends on x through centered (stages 3 and 4 "
            "of Task 1A), and that path reaches every dx of the channel",
            lambda: v(inv_std) * (g - g.sum(axis=dims, keepdims=True) / m),
        ),
        ("gamma scales dx: dx_hat = gamma * dy", lambda: formula(dy, m)),
        (BESSEL_HINT, lambda: formula(g, m) * m / (m - 1)),
        (BESSEL_HINT, lambda: formula(g, m, var_factor=m / (m - 1))),
    ]
    if nd > 2:
        out.append(
            (
                "the means in dx are over all m = N x spatial values of a channel, not over N only",
                lambda: (
                    v(inv_std) / n * (n * g - g.sum(axis=dims, keepdims=True) - x_hat * (g * x_hat).sum(axis=dims, keepdims=True))
                ),
            )
        )
    return out


# ------------------------------------------------------------------------------------ batch_norm_backward
def _backward_cases(rng):
    specs = [
        ((4, 3), _F64, 1e-5),
        ((2, 3, 5), _F64, 1e-5),
        ((2, 3, 4, 5), _F32, 1e-5),
        ((2, 3, 4, 5), _F64, 0.1),
        ((2, 2, 3, 2, 3), _F64, 1e-5),
        ((8, 5), _F32, 1e-5),
    ]
    out = []
    for s, d, eps in specs:
        x = data.x(rng, s, d)
        gamma, beta = data.affine(rng, s[1], d)
        xd = x.astype(np.float64)
        dims = data.dims_bn(len(s))
        inv_std = 1 / np.sqrt(xd.var(axis=dims) + eps)
        x_hat = (xd - xd.mean(axis=dims, keepdims=True)) * data.view(inv_std, len(s))
        out.append(
            Case(
                data.desc(s, d, **({"eps": eps} if eps != 1e-5 else {})),
                {"eps": eps},
                {
                    "x": x,
                    "gamma": gamma,
                    "beta": beta,
                    "x_hat": x_hat.astype(d),
                    "inv_std": inv_std.astype(d),
                    "dy": rng.standard_normal(s).astype(d),
                },
            )
        )
    return out



def _backward_judge(params, inputs, out, meta):
    from ._task import unchanged

    if meta.get("returned"):
        return Mismatch(
            f"returned {meta['returned']}, expected a tuple (dx, dgamma, dbeta)", hint="return the tuple (dx, dgamma, dbeta)"
        )
    x, gamma, beta = (inputs[k].astype(np.float64) for k in ("x", "gamma", "beta"))
    x_hat, inv_std, dy = (inputs[k].astype(np.float64) for k in ("x_hat", "inv_std", "dy"))
    dt = inputs["x"].dtype
    dx, dg, db = _grads(x, gamma, beta, params["eps"], dy)
    dims = data.dims_bn(x.ndim)
    sum_hint = "dgamma and dbeta have shape (C,): sum over N and every spatial dim"
    return first_mismatch(
        unchanged(
            inputs, out, [("dy_after", "dy"), ("x_hat_after", "x_hat"), ("inv_std_after", "inv_std"), ("gamma_after", "gamma")]
        ),
        lambda: compare(
            "dgamma",
            out.get("dgamma"),
            dg,
            meta,
            "dgamma",
            dtype=dt,
            shape_hint=sum_hint,
            variants=[(SWAPPED_HINT, lambda: dy.sum(axis=dims))],
            hint="gamma multiplies x_hat at every position of its channel: what does one position send back "
            "to gamma, and how do the positions of a channel add up? (stage 1 of Task 1A)",
        ),
        lambda: compare(
            "dbeta",
            out.get("dbeta"),
            db,
            meta,
            "dbeta",
            dtype=dt,
            shape_hint=sum_hint,
            variants=[(SWAPPED_HINT, lambda: (dy * x_hat).sum(axis=dims))],
        ),
        lambda: compare(
            "dx",
            out.get("dx"),
            dx,
            meta,
            "dx",
            dtype=dt,
            shape_hint="dx has the shape of x",
            variants=_dx_variants(x_hat, inv_std, gamma, dy),
            hint="dx collects three paths from x to y: directly through x_hat, through the mean and through the "
            "variance; run your stages of Task 1A with check_stage to see which one is off",
        ),
    )


BATCH_NORM_BACKWARD = Task(
    "04",
    "batch_norm_backward",
    "batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)",
    _backward_cases,
    kernel.run_batch_norm_backward,
    _backward_judge,
    forbidden_ops=NORM_OPS | AUTOGRAD_OPS,
    forbid_autograd=True,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES | AUTOGRAD_NAMES,
)


# ------------------------------------------------------------------------------------ BatchNormFunction
_DIRECTIONS = 3


def _function_cases(rng):
    out = []
    for s, d, eps in (((4, 3), _F32, 1e-5), ((2, 3, 4, 5), _F64, 0.1), ((2, 2, 3, 2, 3), _F32, 1e-5), ((2, 3, 5), _F64, 1e-5)):
        gamma, beta = data.affine(rng, s[1], d)
        out.append(
            Case(
                data.desc(s, d, eps=eps),
                {"eps": eps, "gradcheck": False},
                {"x": data.x(rng, s, d), "gamma": gamma, "beta": beta, "dy": rng.standard_normal(s).astype(d)},
            )
        )
    gamma, beta = data.affine(rng, 3)
    # the backward in three grader directions of one forward (retain_graph), each compared with the
    # grader's own gradients: data, where a kernel-side gradcheck would be a boolean to trust
    arrays = {"x": data.x(rng, (2, 3, 4)), "gamma": gamma, "beta": beta}
    arrays.update({f"dy{i}": rng.standard_normal((2, 3, 4)) for i in range(_DIRECTIONS)})
    out.append(
        Case(
            "gradcheck: the backward in 3 directions of one forward, shape (2, 3, 4) float64",
            {"eps": 1e-5, "gradcheck": True},
            arrays,
        )
    )
    return out



def _function_judge(params, inputs, out, meta):
    import torch.nn.functional as F

    from ._task import unchanged

    if meta.get("not_function"):
        return Mismatch(
            "BatchNormFunction is not a torch.autograd.Function",
            hint="write class BatchNormFunction(torch.autograd.Function) with static forward(ctx, ...) and backward(ctx, dy)",
        )
    x, g, b = (inputs[k].astype(np.float64) for k in ("x", "gamma", "beta"))
    if params["gradcheck"]:
        eps = params["eps"]
        want = F.batch_norm(data.t(x), None, None, data.t(g), data.t(b), training=True, eps=eps).numpy()
        checks = [lambda: compare("output", out.get("y"), want, meta, "y", dtype="float64")]
        for i in range(_DIRECTIONS):
            grads = _grads(x, g, b, eps, inputs[f"dy{i}"])
            for name, w in zip(("dx", "dgamma", "dbeta"), grads):
                checks.append(
                    lambda name=name, w=w, i=i: compare(
                        f"{name} in direction {i + 1} of {_DIRECTIONS}",
                        out.get(f"{name}{i}"),
                        w,
                        meta,
                        f"{name}{i}",
                        dtype="float64",
                        hint="the analytic backward disagrees with the true gradient (what gradcheck tests)",
                    )
                )
        return first_mismatch(*checks)
    dy = inputs["dy"].astype(np.float64)
    dt = inputs["x"].dtype
    eps = params["eps"]
    dims = data.dims_bn(x.ndim)
    want = F.batch_norm(data.t(x), None, None, data.t(g), data.t(b), training=True, eps=eps).numpy()
    dx, dg, db = _grads(x, g, b, eps, dy)
    inv_std = 1 / np.sqrt(x.var(axis=dims) + eps)
    x_hat = (x - x.mean(axis=dims, keepdims=True)) * data.view(inv_std, x.ndim)

    def none(k, name):
        if meta["_kinds"].get(k, {}).get("kind") != "NoneType":
            return None
        return Mismatch(
            f"{name} is None after backward", hint="backward returns (dx, dgamma, dbeta, None): one gradient per forward input"
        )

    return first_mismatch(
        unchanged(inputs, out, [("x_after", "x"), ("gamma_after", "gamma"), ("beta_after", "beta")]),
        lambda: compare(
            "forward output",
            out.get("y"),
            want,
            meta,
            "y",
            dtype=dt,
            variants=norm_variants(x, dims, g, b, eps, bn_wrong_axes(x.ndim)),
            shape_hint="forward returns a tensor of the input's shape",
        ),
        lambda: (
            None
            if "dx" in meta["_kinds"]
            else Mismatch("the output does not require grad", hint="return the output tensor from forward; autograd connects it")
        ),
        lambda: none("dx", "x.grad"),
        lambda: none("dgamma", "gamma.grad"),
        lambda: none("dbeta", "beta.grad"),
        lambda: compare("x.grad", out.get("dx"), dx, meta, "dx", dtype=dt, variants=_dx_variants(x_hat, inv_std, g, dy)),
        lambda: compare(
            "gamma.grad", out.get("dgamma"), dg, meta, "dgamma", dtype=dt, variants=[(SWAPPED_HINT, lambda: dy.sum(axis=dims))]
        ),
        lambda: compare(
            "beta.grad",
            out.get("dbeta"),
            db,
            meta,
            "dbeta",
            dtype=dt,
            variants=[(SWAPPED_HINT, lambda: (dy * x_hat).sum(axis=dims))],
        ),
    )


BATCH_NORM_FUNCTION = Task(
    "04",
    "BatchNormFunction",
    "a class BatchNormFunction(torch.autograd.Function)",
    _function_cases,
    kernel.run_batch_norm_function,
    _function_judge,
    kind="class",
    forbidden_ops=NORM_OPS | AUTOGRAD_OPS,
    forbid_nested_autograd=True,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
)

EXERCISE = Exercise("04", "04_bn_backward_exercises", (BATCH_NORM_BACKWARD, BATCH_NORM_FUNCTION))
