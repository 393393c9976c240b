"""Inputs shared by several tasks' case generators, and torch conversions for the judges.

Part of :mod:`coursekit.tasks`. Generators draw from a numpy ``Generator`` (the check's visible
seed or the grader's hidden one); channels AND samples get their own offsets and spreads, so
statistics over the wrong axes (per image, per sample, over N only) always show.
"""

from __future__ import annotations

import numpy as np

__all__ = ["x", "affine", "t", "dims_bn", "view", "desc"]


def x(rng: np.random.Generator, shape, dtype="float64") -> np.ndarray:
    """(N, C, *) input: per-channel offset and spread, plus a per-sample offset."""
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    shift = rng.uniform(-2, 2, size=c).reshape(bshape)
    scale = rng.uniform(0.5, 2.5, size=c).reshape(bshape)
    per_sample = rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1)) * 0.7
    return (rng.standard_normal(shape) * scale + shift + per_sample).astype(dtype)


def affine(rng: np.random.Generator, shape, dtype="float64") -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias): weight in [0.5, 1.5), bias standard normal."""
    return (rng.uniform(0.5, 1.5, shape).astype(dtype), rng.standard_normal(shape).astype(dtype))


def t(a):
    """A float64 torch tensor from a numpy array (the judges compute in float64)."""
    import torch

    return torch.from_numpy(np.asarray(a, dtype=np.float64).copy())


def dims_bn(ndim: int) -> tuple[int, ...]:
    """The axes batch norm reduces: N and every spatial dim."""
    return (0,) + tuple(range(2, ndim))


def view(a: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(a).reshape((1, -1) + (1,) * (ndim - 2))


def desc(shape, dtype, **extra) -> str:
    text = f"shape {tuple(shape)} {dtype}"
    for k, v in extra.items():
        text += f", {k}={v}"
    return text

