"""``BatchNorm``: one module for 2D to 5D input whose state_dict is interchangeable with ``nn.BatchNorm1d/2d/3d``."""
from __future__ import annotations

import torch
from torch import nn

from coursekit.reference._validate import check_eps, check_input, check_momentum
from coursekit.reference.functional import batch_norm

__all__ = ["BatchNorm"]


class BatchNorm(nn.Module):
    """Batch normalization over (N, C, *) input, built on ``coursekit.reference.batch_norm``.

    Introduced in lesson 03. Same parameters, buffers and behaviour as ``nn.BatchNorm1d/2d/3d``
    (it accepts any of their input shapes), so ``state_dict`` goes from one to the other:

    * training mode normalizes with batch statistics (biased variance) and, with
      ``track_running_stats=True``, updates ``running_mean`` and ``running_var`` (unbiased
      variance) with ``momentum`` in PyTorch's convention (weight of the new batch), and counts
      ``num_batches_tracked``; ``momentum=None`` makes the running statistics the cumulative average;
    * eval mode normalizes with the running statistics; with ``track_running_stats=False`` there
      are none (the buffers are None) and batch statistics are used in both modes.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance inside the square root. Default: 1e-5.
        momentum: weight of the new batch in the running update, or None. Default: 0.1.
        affine: learnable ``weight`` (gamma, init 1) and ``bias`` (beta, init 0). Default: True.
        track_running_stats: keep running statistics. Default: True.

    Shape:
        - Input: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W). Output: same shape.

    Example::

        >>> ours = BatchNorm(3)
        >>> _ = ours(torch.randn(8, 3, 4, 4))
        >>> theirs = nn.BatchNorm2d(3)
        >>> theirs.load_state_dict(ours.state_dict())
        <All keys matched successfully>
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"expected num_features to be a positive int (got {num_features!r})")
        check_eps(eps, True)
        check_momentum(momentum)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches counted (as after construction)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset, gamma 1 and beta 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected input with {self.num_features} channels (got {x.shape[1]} channels, "
                             f"input of shape {tuple(x.shape)})")
        # Batch statistics in training mode, and always when there are no running statistics.
        use_batch = self.training or self.running_mean is None
        update = self.training and self.track_running_stats
        return batch_norm(
            x,
            self.running_mean if update or not use_batch else None,
            self.running_var if update or not use_batch else None,
            self.weight, self.bias, training=use_batch, momentum=self.momentum, eps=self.eps,
            num_batches_tracked=self.num_batches_tracked if update else None,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")
