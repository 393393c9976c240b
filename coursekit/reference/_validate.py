"""Argument checks shared by the reference maths: one place per concept, errors say expected vs got."""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_input", "check_per_channel", "check_eps", "check_momentum", "check_batch_values"]


def check_input(x, min_dim: int = 2, max_dim: int = 5, name: str = "input") -> None:
    """A floating-point tensor with ``min_dim``..``max_dim`` dims, e.g. "expected 2D to 5D input (got 1D input)"."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point {name} (got {x.dtype}); convert with .float()")
    if not min_dim <= x.dim() <= max_dim:
        want = f"{min_dim}D to {max_dim}D" if max_dim < 99 else f"at least {min_dim}D"
        raise ValueError(f"expected {want} {name} (got {x.dim()}D {name} of shape {tuple(x.shape)})")


def check_per_channel(t, num: int, name: str, shape: Sequence[int] | None = None) -> None:
    """``t`` is None or a tensor of shape ``shape`` (default ``(num,)``), e.g. one value per channel."""
    if t is None:
        return
    want = tuple(shape) if shape is not None else (num,)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor of shape {want} (got {type(t).__name__})")
    if tuple(t.shape) != want:
        raise ValueError(f"expected {name} of shape {want} to match the input (got {tuple(t.shape)})")


def check_eps(eps: float, training: bool) -> None:
    """eps > 0 whenever batch statistics are used: a constant channel would divide by zero."""
    if not isinstance(eps, (int, float)) or eps < 0 or (training and eps == 0):
        want = "eps > 0 in training mode" if training else "eps >= 0"
        raise ValueError(f"expected {want} (got eps={eps!r})")


def check_momentum(momentum) -> None:
    """PyTorch's convention: the weight in [0, 1] of the new batch, or None for a cumulative average."""
    if momentum is not None and (not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0):
        raise ValueError(f"expected momentum in [0, 1] or None (got {momentum!r})")


def check_batch_values(x: torch.Tensor, per: str = "channel") -> None:
    """Batch statistics need two or more values per channel; PyTorch raises the same condition."""
    count = x.numel() // max(x.shape[1], 1)
    if count <= 1:
        raise ValueError(
            f"expected more than 1 value per {per} when training (got input of shape {tuple(x.shape)}); "
            "use a batch of 2 or more, or eval mode"
        )
