"""Lesson 02's exercise (the batch-norm forward): ``channel_stats`` and ``batch_norm_train``.

Each task defined once (see :mod:`coursekit.tasks._task`): cases, kernel-side body, trusted judge,
known wrong answers, forbidden operations.
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side import lesson02 as kernel

from . import _data as data
from ._norm import AXES_HINT, bn_wrong_axes, norm_variants
from ._task import NORM_NAMES, NORM_OPS, REFERENCE_NORM_WATCH, Case, Exercise, Mismatch, Task, compare, first_mismatch, unchanged

__all__ = ["EXERCISE", "CHANNEL_STATS", "BATCH_NORM_TRAIN"]

_F32, _F64 = "float32", "float64"


# ------------------------------------------------------------------------------------ channel_stats
def _channel_stats_cases(rng):
    specs = [
        ((4, 3), _F32),
        ((2, 3, 5), _F64),
        ((2, 3, 4, 5), _F32),
        ((2, 3, 4, 5), _F64),
        ((2, 2, 3, 2, 3), _F32),
        ((2, 2, 3, 2, 3), _F64),
    ]
    return [Case(data.desc(s, d), {}, {"x": data.x(rng, s, d)}) for s, d in specs]



def _channel_stats_judge(params, inputs, out, meta):
    x = inputs["x"].astype(np.float64)
    if meta.get("returned"):
        return Mismatch(f"returned {meta['returned']}, expected a tuple (mean, var)", hint="return the tuple (mean, var)")
    dims = data.dims_bn(x.ndim)
    dt = inputs["x"].dtype
    per_image = lambda: x.var(axis=tuple(range(2, x.ndim))).mean(0) if x.ndim > 2 else None  # noqa: E731
    return first_mismatch(
        unchanged(inputs, out, [("x_after", "x")]),
        lambda: compare(
            "mean",
            out.get("mean"),
            x.mean(axis=dims),
            meta,
            "mean",
            dtype=dt,
            shape_hint=AXES_HINT,
            variants=[(h, lambda a=a: x.mean(axis=a)) for a, h in bn_wrong_axes(x.ndim)],
        ),
        lambda: compare(
            "var",
            out.get("var"),
            x.var(axis=dims),
            meta,
            "var",
            dtype=dt,
            shape_hint=AXES_HINT,
            variants=[
                (
                    "return the biased variance (divide by n, unbiased=False), the one that normalizes",
                    lambda: x.var(axis=dims, ddof=1),
                ),
                ("return the variance, not the standard deviation", lambda: x.std(axis=dims)),
                (
                    "compute the variance over all N x spatial values of a channel at once, not per sample then averaged",
                    per_image,
                ),
            ]
            + [(h, lambda a=a: x.var(axis=a)) for a, h in bn_wrong_axes(x.ndim)],
            hint="var = mean over N and spatial dims of (x - mean)**2, per channel",
        ),
    )


CHANNEL_STATS = Task(
    "02",
    "channel_stats",
    "channel_stats(x) -> (mean, var)",
    _channel_stats_cases,
    kernel.run_channel_stats,
    _channel_stats_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
)


# ------------------------------------------------------------------------------------ batch_norm_train
def _batch_norm_train_cases(rng):
    specs = [
        ((4, 3), _F32, None, False),
        ((2, 3, 5), _F64, None, False),
        ((2, 3, 4, 5), _F32, 0.1, False),
        ((2, 3, 4, 5), _F64, None, False),
        ((2, 2, 3, 2, 3), _F64, 1e-3, False),
        ((2, 3, 4, 4), _F64, None, True),
    ]
    out = []
    for s, d, eps, grad in specs:
        gamma, beta = data.affine(rng, s[1], d)
        arrays = {"x": data.x(rng, s, d), "gamma": gamma, "beta": beta}
        extra = {} if eps is None else {"eps": eps}
        if grad:
            arrays["dy"] = rng.standard_normal(s).astype(d)
            extra["gradients"] = "autograd"
        out.append(Case(data.desc(s, d, **extra), {"eps": eps, "grad": grad}, arrays))
    return out



def _bn_train_grads(x, gamma, beta, eps, dy):
    import torch.nn.functional as F

    xs = [data.t(a).requires_grad_(True) for a in (x, gamma, beta)]
    F.batch_norm(xs[0], None, None, xs[1], xs[2], training=True, eps=eps).backward(data.t(dy))
    return [a.grad.numpy() for a in xs]


def _batch_norm_train_judge(params, inputs, out, meta):
    import torch.nn.functional as F

    x, g, b = (inputs[k].astype(np.float64) for k in ("x", "gamma", "beta"))
    dt = inputs["x"].dtype
    eps = 1e-5 if params["eps"] is None else params["eps"]
    dims = data.dims_bn(x.ndim)
    want = F.batch_norm(data.t(x), None, None, data.t(g), data.t(b), training=True, eps=eps).numpy()
    m = first_mismatch(
        unchanged(inputs, out, [("x_after", "x"), ("gamma_after", "gamma"), ("beta_after", "beta")]),
        lambda: compare(
            "output",
            out.get("y"),
            want,
            meta,
            "y",
            dtype=dt,
            variants=norm_variants(x, dims, g, b, eps, bn_wrong_axes(x.ndim)),
            shape_hint="return a tensor of the input's shape",
            hint="y = (x - mean) / sqrt(var + eps) * gamma + beta with per-channel batch mean and biased var, broadcast "
                 "as (1, C, 1, ...)",
        ),
    )
    if m or not params["grad"]:
        return m
    if not meta["_kinds"]["y"].get("requires_grad"):
        return Mismatch(
            "the output does not require grad: it is cut from the autograd graph",
            hint="use torch operations on x only (no .detach(), .data, .numpy() or torch.no_grad())",
        )
    dx, dg, db = _bn_train_grads(x, g, b, eps, inputs["dy"])
    inv_std = 1 / np.sqrt(x.var(axis=dims) + eps)
    detached = data.view(g * inv_std, x.ndim) * inputs["dy"]
    return first_mismatch(
        lambda: compare(
            "x.grad",
            out.get("x_grad"),
            dx,
            meta,
            "x_grad",
            dtype=dt,
            hint="compute the output from x with torch operations",
            variants=[
                (
                    "the statistics are detached from the graph (.detach(), .item() or .data): the gradient must flow "
                    "through the batch mean and variance",
                    detached,
                )
            ],
        ),
        lambda: compare("gamma.grad", out.get("gamma_grad"), dg, meta, "gamma_grad", dtype=dt),
        lambda: compare("beta.grad", out.get("beta_grad"), db, meta, "beta_grad", dtype=dt),
    )


BATCH_NORM_TRAIN = Task(
    "02",
    "batch_norm_train",
    "batch_norm_train(x, gamma, beta, eps=1e-5) -> y",
    _batch_norm_train_cases,
    kernel.run_batch_norm_train,
    _batch_norm_train_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
)

EXERCISE = Exercise("02", "02_bn_forward_exercises", (CHANNEL_STATS, BATCH_NORM_TRAIN))
