"""Data sets used by the lessons. Nothing is downloaded: synthetic data or scikit-learn's bundled digits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "quadratic_data", "standardize", "digits_data"]


@dataclass(frozen=True)
class Split:
    """Train/test tensors of one data set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def quadratic_data(n: int = 2000, low: float = -7.0, high: float = 10.0, noise: float = 2.0,
                   test_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """The regression problem of lesson 01: ``y = x**2 - 5 + noise`` on ``x`` uniform in [low, high].

    Introduced in lesson 01 (why normalize). Points are shuffled, then split.

    Args:
        n: number of points. Default: 2000.
        low, high: range of ``x``. Default: -7 and 10.
        noise: standard deviation of the Gaussian noise added to ``y``. Default: 2.
        test_fraction: share of points held out for testing. Default: 0.2.
        seed: seed of the generator (the global RNG is left untouched). Default: 0.

    Shape:
        x and y are (n_split, 1).

    Example::

        >>> d = quadratic_data(n=100, seed=1)
        >>> d.x_train.shape, d.y_test.shape
        (torch.Size([80, 1]), torch.Size([20, 1]))
    """
    if n < 2:
        raise ValueError(f"expected n >= 2 points (got {n})")
    if not low < high:
        raise ValueError(f"expected low < high (got low={low}, high={high})")
    if not 0 < test_fraction < 1:
        raise ValueError(f"expected 0 < test_fraction < 1 (got {test_fraction})")
    g = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    y = x**2 - 5 + noise * torch.randn(n, 1, generator=g, dtype=torch.float64)
    n_test = max(1, int(round(n * test_fraction)))
    x, y = x.to(dtype), y.to(dtype)
    return Split(x[n_test:], y[n_test:], x[:n_test], y[:n_test])


def standardize(split: Split, eps: float = 1e-12) -> Split:
    """Standardize inputs and targets with the **training** set's mean and std (per column).

    Introduced in lesson 01 (why normalize): normalizing a network's inputs (and, for regression,
    its targets) is the preprocessing step BatchNorm extends to the hidden layers. The test split
    is transformed with the training statistics, so nothing is learned from it. The std is the
    population std (``unbiased=False``); ``eps`` guards a constant column.

    Shape:
        the same as ``split``; every tensor is ``(n_split, features)``.

    Example::

        >>> s = standardize(quadratic_data(seed=0))
        >>> round(float(s.y_train.mean()), 4), round(float(s.y_train.std(unbiased=False)), 4)
        (0.0, 1.0)
    """
    if not isinstance(split, Split):
        raise ValueError(f"expected a Split (got {type(split).__name__})")
    if split.x_train.dim() != 2 or split.y_train.dim() != 2:
        raise ValueError(f"expected 2D (n, features) tensors (got x {split.x_train.dim()}D, y {split.y_train.dim()}D)")

    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return t.mean(dim=0, keepdim=True), t.std(dim=0, unbiased=False, keepdim=True).clamp_min(eps)

    (mx, sx), (my, sy) = stats(split.x_train), stats(split.y_train)
    return Split((split.x_train - mx) / sx, (split.y_train - my) / sy, (split.x_test - mx) / sx, (split.y_test - my) / sy)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """What ``sklearn.datasets.load_digits`` returns (pixels ``(1797, 64)``, labels), read from the file
    scikit-learn ships, without importing scikit-learn (its import costs about a second)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ImportError("expected scikit-learn to be installed (its bundled digits file is read)")
    data = np.loadtxt(os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz"), delimiter=",")
    return data[:, :-1], data[:, -1].astype(int)


def digits_data(test_fraction: float = 0.25, seed: int = 0, dtype: torch.dtype = torch.float32) -> Split:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as image tensors.

    Introduced in lesson 06 (small batches). Pixels are scaled from 0..16 to 0..1; the split is
    stratified by class and seeded, so every lesson sees the same images.

    Shape:
        x is (n, 1, 8, 8), y is (n,) with int64 class labels.

    Example::

        >>> d = digits_data()
        >>> d.x_train.shape[1:], int(d.y_train.max())
        (torch.Size([1, 8, 8]), 9)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"expected 0 < test_fraction < 1 (got {test_fraction})")
    pixels, target = _load_digits()
    x = torch.tensor(pixels / 16.0, dtype=dtype).reshape(-1, 1, 8, 8)
    y = torch.tensor(target, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in range(10):  # stratify: the same share of every class in the test set
        idx = np.flatnonzero(target == label)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_idx] = True
    train = torch.from_numpy(rng.permutation(np.flatnonzero(~test_mask)))
    test = torch.from_numpy(np.flatnonzero(test_mask))
    return Split(x[train], y[train], x[test], y[test])
