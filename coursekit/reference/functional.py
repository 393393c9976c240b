"""Functional normalization layers, mirroring ``torch.nn.functional`` (signatures and semantics).

Introduced in lessons 02 (batch_norm), 03 (running statistics) and 05 (the family).

All of them normalize ``x`` by the mean and the **biased** variance (divide by the number of
values ``n``) of some group of its elements, then apply an optional affine map:

.. math::
    y = \\frac{x - \\mathrm{E}[x]}{\\sqrt{\\mathrm{Var}[x] + \\epsilon}} \\cdot \\gamma + \\beta

They differ only in which elements form a group (see lesson 05's figure):

========================  ===================================  ===================
function                  statistics over                      affine shape
========================  ===================================  ===================
``batch_norm``            (N, *spatial) per channel            (C,)
``instance_norm``         (*spatial) per sample and channel    (C,)
``group_norm``            (C/G, *spatial) per sample and group (C,)
``layer_norm``            the trailing ``normalized_shape``    ``normalized_shape``
``rms_norm``              no mean: root mean square only       ``normalized_shape``
========================  ===================================  ===================
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from coursekit.reference._validate import (
    check_batch_values,
    check_eps,
    check_input,
    check_momentum,
    check_per_channel,
)

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm", "rms_norm"]


def _channel_view(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(C,) -> (1, C, 1, ..., 1) so it broadcasts against an (N, C, *) input of ``dim`` dims."""
    return t.reshape((1, -1) + (1,) * (dim - 2))


def _affine(y: torch.Tensor, weight, bias, view) -> torch.Tensor:
    if weight is not None:
        y = y * view(weight)
    if bias is not None:
        y = y + view(bias)
    return y


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               training: bool = False, momentum: float | None = 0.1, eps: float = 1e-5,
               num_batches_tracked: torch.Tensor | None = None) -> torch.Tensor:
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    In training mode each channel is normalized with the mean and the **biased** variance of the
    batch, computed over every dimension but the channel one (N and all spatial dims). If running
    statistics are given they are updated **in place**, as PyTorch does, with the **unbiased**
    variance (``n / (n - 1)`` times the biased one, ``n`` values per channel):

    .. math::
        \\hat{x}_{\\text{running}} \\leftarrow (1 - \\text{momentum}) \\, \\hat{x}_{\\text{running}}
        + \\text{momentum} \\, x_{\\text{batch}}

    ``momentum`` is PyTorch's convention (the weight of the *new* batch; Keras' ``momentum=0.99``
    weights the *old* value and corresponds to 0.01 here). ``momentum=None`` gives the cumulative
    average: the factor is ``1 / num_batches_tracked`` after counting this batch, so it needs
    ``num_batches_tracked``. In eval mode (``training=False``) the running statistics normalize.

    Args:
        x: input of shape (N, C) or (N, C, L) or (N, C, H, W) or (N, C, D, H, W).
        running_mean, running_var: (C,) running statistics, or None (only in training mode).
        weight, bias: (C,) affine parameters gamma and beta, or None. Default: None.
        training: use batch statistics (and update the running ones). Default: False.
        momentum: weight of the new batch in the running update, or None. Default: 0.1.
        eps: added to the variance inside the square root. Default: 1e-5.
        num_batches_tracked: optional 0-dim int tensor, incremented in place when the running
            statistics are updated (as ``nn.BatchNorm*`` does). Default: None.

    Shape:
        - Input: (N, C, *) with 0 to 3 spatial dims. Output: same shape as the input.

    Example::

        >>> x = torch.randn(8, 3, 4, 4)
        >>> rm, rv = torch.zeros(3), torch.ones(3)
        >>> y = batch_norm(x, rm, rv, training=True)
        >>> torch.allclose(y, torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-6)
        True
    """
    check_input(x)
    num_features = x.shape[1]
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var"),
                    (weight, "weight"), (bias, "bias")):
        check_per_channel(t, num_features, name)
    check_eps(eps, training)
    check_momentum(momentum)
    if (running_mean is None) != (running_var is None):
        raise ValueError("expected running_mean and running_var both given or both None "
                         f"(got running_mean={'None' if running_mean is None else 'tensor'}, "
                         f"running_var={'None' if running_var is None else 'tensor'})")
    view = lambda t: _channel_view(t, x.dim())  # noqa: E731

    if not training:
        if running_mean is None:
            raise ValueError("expected running_mean and running_var in eval mode (training=False) (got None); "
                             "pass training=True to use batch statistics")
        mean, var = running_mean.to(x.dtype), running_var.to(x.dtype)
    else:
        check_batch_values(x)
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        var = (x - view(mean)).pow(2).mean(dim=dims)  # biased: what normalizes
        if running_mean is not None:
            factor = momentum
            if num_batches_tracked is not None:
                num_batches_tracked.add_(1)
            if momentum is None:
                if num_batches_tracked is None:
                    raise ValueError("expected num_batches_tracked with momentum=None (cumulative average) (got None)")
                factor = 1.0 / float(num_batches_tracked)
            n = x.numel() // num_features
            with torch.no_grad():  # running statistics are state, not part of the graph
                unbiased = var.detach() * (n / (n - 1))
                running_mean.mul_(1 - factor).add_(mean.detach().to(running_mean.dtype), alpha=factor)
                running_var.mul_(1 - factor).add_(unbiased.to(running_var.dtype), alpha=factor)
    y = (x - view(mean)) / torch.sqrt(view(var) + eps)
    return _affine(y, weight, bias, view)


def instance_norm(x: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Instance normalization, as ``torch.nn.functional.instance_norm``.

    Every (sample, channel) pair is normalized over its spatial dims with its own mean and biased
    variance. If running statistics are given they are updated in place with the batch average of
    the per-instance means and unbiased variances (what ``nn.InstanceNorm*d(track_running_stats=True)``
    keeps); with ``use_input_stats=False`` they normalize instead.

    Args:
        x: (N, C, L), (N, C, H, W) or (N, C, D, H, W).
        running_mean, running_var: (C,) or None. Default: None.
        weight, bias: (C,) per-channel affine, or None. Default: None.
        use_input_stats: normalize with per-instance statistics. Default: True.
        momentum: weight of the new batch in the running update. Default: 0.1.
        eps: added to the variance inside the square root. Default: 1e-5.

    Shape:
        Output: same shape as the input.

    Example::

        >>> x = torch.randn(2, 3, 5, 5)
        >>> torch.allclose(instance_norm(x), torch.nn.functional.instance_norm(x), atol=1e-6)
        True
    """
    check_input(x, 3, 5)
    c = x.shape[1]
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var"),
                    (weight, "weight"), (bias, "bias")):
        check_per_channel(t, c, name)
    check_eps(eps, use_input_stats)
    check_momentum(momentum)
    view = lambda t: _channel_view(t, x.dim())  # noqa: E731
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("expected running_mean and running_var with use_input_stats=False (got None)")
        mean, var = view(running_mean.to(x.dtype)), view(running_var.to(x.dtype))
    else:
        dims = list(range(2, x.dim()))
        n = 1
        for d in dims:
            n *= x.shape[d]
        if n <= 1:
            raise ValueError(f"expected more than 1 spatial element per instance (got input of shape {tuple(x.shape)})")
        mean = x.mean(dim=dims, keepdim=True)
        var = (x - mean).pow(2).mean(dim=dims, keepdim=True)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                batch_mean = mean.detach().flatten(1).mean(0)
                batch_var = (var.detach() * (n / (n - 1))).flatten(1).mean(0)
                running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(batch_var.to(running_var.dtype), alpha=momentum)
    y = (x - mean) / torch.sqrt(var + eps)
    return _affine(y, weight, bias, view)


def group_norm(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Group normalization, as ``torch.nn.functional.group_norm``.

    The C channels of each sample are split into ``num_groups`` consecutive groups; each group is
    normalized over its channels and all spatial dims with its own mean and biased variance. The
    affine map is per channel. ``num_groups=1`` normalizes each sample over (C, *) like
    ``layer_norm`` (whose affine is per element instead); ``num_groups=C`` is ``instance_norm``.

    Args:
        x: (N, C, *) with any number of trailing dims.
        num_groups: number of groups; must divide C.
        weight, bias: (C,) or None. Default: None.
        eps: added to the variance inside the square root. Default: 1e-5.

    Shape:
        Output: same shape as the input.

    Example::

        >>> x = torch.randn(2, 6, 4, 4)
        >>> torch.allclose(group_norm(x, 3), torch.nn.functional.group_norm(x, 3), atol=1e-6)
        True
    """
    check_input(x, 2, 99)
    n_batch, c = x.shape[:2]
    if not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ValueError(f"expected num_groups to be a positive int dividing the {c} channels (got {num_groups!r})")
    check_per_channel(weight, c, "weight")
    check_per_channel(bias, c, "bias")
    check_eps(eps, True)
    g = x.reshape(n_batch, num_groups, -1)
    mean = g.mean(dim=2, keepdim=True)
    var = (g - mean).pow(2).mean(dim=2, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    return _affine(y, weight, bias, lambda t: _channel_view(t, x.dim()))


def _trailing_dims(x: torch.Tensor, normalized_shape, eps: float, **params) -> tuple[int, ...]:
    """Validate a layer_norm/rms_norm call; return the trailing dims to reduce over.

    ``params`` are the optional per-element tensors (weight, bias), each of shape ``normalized_shape``.
    """
    check_input(x, 1, 99)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or len(shape) > x.dim() or tuple(x.shape[-len(shape):]) != shape:
        raise ValueError(f"expected input whose trailing dims are normalized_shape={shape} "
                         f"(got input of shape {tuple(x.shape)})")
    for name, t in params.items():
        check_per_channel(t, 0, name, shape)
    check_eps(eps, True)
    return tuple(range(x.dim() - len(shape), x.dim()))


def layer_norm(x: torch.Tensor, normalized_shape: int | Sequence[int], weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalization, as ``torch.nn.functional.layer_norm``.

    Each sample is normalized over its trailing ``normalized_shape`` dims (mean and biased
    variance); ``weight`` and ``bias`` have shape ``normalized_shape``: one value per element.

    Args:
        x: (*, *normalized_shape).
        normalized_shape: the trailing shape to normalize over, e.g. ``(C, H, W)`` or ``D``.
        weight, bias: tensors of shape ``normalized_shape`` or None. Default: None.
        eps: added to the variance inside the square root. Default: 1e-5.

    Example::

        >>> x = torch.randn(4, 10)
        >>> torch.allclose(layer_norm(x, 10), torch.nn.functional.layer_norm(x, (10,)), atol=1e-6)
        True
    """
    dims = _trailing_dims(x, normalized_shape, eps, weight=weight, bias=bias)
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).pow(2).mean(dim=dims, keepdim=True)
    return _affine((x - mean) / torch.sqrt(var + eps), weight, bias, lambda t: t)


def rms_norm(x: torch.Tensor, normalized_shape: int | Sequence[int], weight: torch.Tensor | None = None,
             eps: float | None = None) -> torch.Tensor:
    """Root-mean-square normalization, as ``torch.nn.functional.rms_norm``.

    No mean is subtracted: ``y = x / sqrt(mean(x**2) + eps) * weight`` over the trailing
    ``normalized_shape`` dims. ``eps=None`` uses ``torch.finfo(x.dtype).eps``, as PyTorch does.

    Example::

        >>> x = torch.randn(4, 10)
        >>> torch.allclose(rms_norm(x, 10), torch.nn.functional.rms_norm(x, (10,)), atol=1e-6)
        True
    """
    if eps is None and isinstance(x, torch.Tensor) and x.is_floating_point():
        eps = torch.finfo(x.dtype).eps
    dims = _trailing_dims(x, normalized_shape, eps, weight=weight)
    y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps)
    return y * weight if weight is not None else y
