"""Normalization in numpy (float64) with switches for the classic mistakes: the judges' wrong-answer models.

Part of :mod:`coursekit.tasks`; the right answers themselves always come from ``torch.nn.functional``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["norm", "norm_variants", "bn_wrong_axes", "AXES_HINT", "BIASED_HINT", "EPS_HINT"]

BIASED_HINT = "normalize with the biased variance (divide by n, unbiased=False); the unbiased one is only for running_var"
EPS_HINT = "eps goes inside the square root: divide by sqrt(var + eps), not sqrt(var) + eps"
AXES_HINT = "reduce over N and every spatial dim (all dims but the channel dim 1): one value per channel, shape (C,)"


def norm(x, dims, weight=None, bias=None, eps=1e-5, unbiased=False, eps_outside=False, wshape=None):
    """Normalize ``x`` over ``dims`` (float64), then the optional affine reshaped to ``wshape``."""
    x = np.asarray(x, dtype=np.float64)
    dims = tuple(dims)
    mean = x.mean(axis=dims, keepdims=True)
    var = x.var(axis=dims, keepdims=True, ddof=1 if unbiased else 0)
    y = (x - mean) / (np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps))
    shape = wshape if wshape is not None else (1, -1) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * np.asarray(weight, dtype=np.float64).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape(shape)
    return y


def norm_variants(x, dims, weight, bias, eps, wrong_axes=(), wshape=None) -> list:
    """(hint, lazy value) for the classic mistakes of a normalization over ``dims``."""
    v = [
        (BIASED_HINT, lambda: norm(x, dims, weight, bias, eps, unbiased=True, wshape=wshape)),
        (EPS_HINT, lambda: norm(x, dims, weight, bias, eps, eps_outside=True, wshape=wshape)),
    ]
    for axes, hint in wrong_axes:
        v.append((hint, lambda axes=axes: norm(x, axes, weight, bias, eps, wshape=wshape)))
    if weight is not None and bias is not None:
        v.append(
            (
                "gamma scales and beta shifts: y = x_hat * gamma + beta (they are swapped)",
                lambda: norm(x, dims, bias, weight, eps, wshape=wshape),
            )
        )
    if weight is not None or bias is not None:
        v.append(("apply the affine parameters: y = x_hat * gamma + beta", lambda: norm(x, dims, eps=eps, wshape=wshape)))
    return v


def bn_wrong_axes(ndim: int) -> list:
    """(axes, hint) of batch norm's statistics over the wrong axes."""
    axes = []
    if ndim > 2:
        axes.append(
            (
                (0,),
                "statistics over the wrong axes: you reduced over N only; reduce over N and every spatial dim (all dims "
                "but the channel dim 1)",
            )
        )
        axes.append(
            (
                tuple(range(2, ndim)),
                "statistics over the wrong axes: you used per-image (per-sample) statistics; batch norm shares them "
                "across the batch (reduce over N and all spatial dims, per channel)",
            )
        )
    axes.append(
        (
            tuple(range(1, ndim)),
            "statistics over the wrong axes: you normalized each sample over its channels (that is layer norm); reduce "
            "over N and all spatial dims, per channel",
        )
    )
    axes.append(
        (
            tuple(range(ndim)),
            "statistics over the wrong axes: you used one mean/variance for everything; batch norm keeps one per channel",
        )
    )
    return axes
