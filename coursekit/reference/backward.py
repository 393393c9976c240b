"""The analytic backward pass of batch normalization (lesson 04)."""
from __future__ import annotations

import torch

from coursekit.reference._validate import check_batch_values, check_eps, check_input, check_per_channel

__all__ = ["batch_norm_backward"]


def batch_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None,
                        eps: float = 1e-5, *, training: bool = True,
                        running_mean: torch.Tensor | None = None,
                        running_var: torch.Tensor | None = None):
    """Gradients of batch normalization with respect to its input and affine parameters.

    Introduced in lesson 04. For each channel, with ``m`` values (N times the spatial size),
    :math:`\\hat{x} = (x - \\mu)\\,s`, :math:`s = 1/\\sqrt{\\sigma^2_{\\text{biased}} + \\epsilon}`
    and :math:`d\\hat{x} = \\gamma\\,dy`:

    .. math::
        d\\beta = \\sum dy, \\qquad d\\gamma = \\sum dy\\,\\hat{x}, \\qquad
        dx = \\frac{s}{m}\\Big(m\\,d\\hat{x} - \\sum d\\hat{x} - \\hat{x}\\sum d\\hat{x}\\,\\hat{x}\\Big)

    The last two terms are the gradient flowing through the batch mean and variance; in eval mode
    (``training=False``) the statistics are constants and ``dx = gamma * dy / sqrt(running_var + eps)``.

    Args:
        dy: gradient of the loss with respect to the output, same shape as ``x``.
        x: the forward input, (N, C, *) with 0 to 3 spatial dims.
        weight: gamma, (C,) or None (then gamma = 1). Default: None.
        eps: the forward's eps. Default: 1e-5.
        training: the forward used batch statistics. Default: True.
        running_mean, running_var: (C,), needed when ``training=False``.

    Returns:
        ``(dx, dgamma, dbeta)``: ``dx`` shaped like ``x``; ``dgamma`` and ``dbeta`` of shape (C,)
        (computed even when ``weight`` is None: the gradients an affine layer would get).

    Example::

        >>> x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
        >>> dy = torch.randn(4, 3, dtype=torch.float64)
        >>> torch.nn.functional.batch_norm(x, None, None, training=True).backward(dy)
        >>> torch.allclose(batch_norm_backward(dy, x.detach())[0], x.grad)
        True
    """
    check_input(x)
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape:
        got = tuple(dy.shape) if isinstance(dy, torch.Tensor) else type(dy).__name__
        raise ValueError(f"expected dy of the input's shape {tuple(x.shape)} (got {got})")
    c = x.shape[1]
    check_per_channel(weight, c, "weight")
    check_eps(eps, training)
    dims = [0] + list(range(2, x.dim()))
    view = lambda t: t.reshape((1, -1) + (1,) * (x.dim() - 2))  # noqa: E731
    gamma = weight if weight is not None else torch.ones(c, dtype=x.dtype)
    if training:
        check_batch_values(x)
        mean = x.mean(dim=dims)
        var = (x - view(mean)).pow(2).mean(dim=dims)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("expected running_mean and running_var when training=False (got None)")
        check_per_channel(running_mean, c, "running_mean")
        check_per_channel(running_var, c, "running_var")
        mean, var = running_mean.to(x.dtype), running_var.to(x.dtype)
    inv_std = torch.rsqrt(var + eps)
    x_hat = (x - view(mean)) * view(inv_std)
    dbeta = dy.sum(dim=dims)
    dgamma = (dy * x_hat).sum(dim=dims)
    dx_hat = dy * view(gamma)
    if not training:
        return dx_hat * view(inv_std), dgamma, dbeta
    m = x.numel() // c
    dx = view(inv_std / m) * (m * dx_hat - view(dx_hat.sum(dim=dims))
                              - x_hat * view((dx_hat * x_hat).sum(dim=dims)))
    return dx, dgamma, dbeta
