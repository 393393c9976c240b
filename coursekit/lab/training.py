"""Small models and a plain training loop shared by the lessons' experiments (lessons 01, 06, 08)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["mlp", "small_cnn", "History", "fit", "accuracy", "mse", "layer_outputs"]


def mlp(in_features: int = 1, hidden: int = 10, depth: int = 8, out_features: int = 1,
        activation: Callable[[], nn.Module] = nn.Tanh, batch_norm: bool = False,
        bn_momentum: float | None = 0.1, weight_std: float | None = None,
        bias_init: float | None = None) -> nn.Sequential:
    """A deep MLP: ``depth`` blocks of Linear -> [BatchNorm1d] -> activation, then a Linear head.

    Introduced in lesson 01 (why normalize): with ``weight_std=0.1, bias_init=-0.2`` and tanh it
    reproduces the seed experiment's badly initialised network.

    Args:
        in_features, hidden, out_features: layer widths. Defaults: 1, 10, 1.
        depth: number of hidden blocks. Default: 8.
        activation: factory of the non-linearity. Default: ``nn.Tanh``.
        batch_norm: insert ``nn.BatchNorm1d(hidden, momentum=bn_momentum)`` before each activation.
        bn_momentum: PyTorch convention (weight of the *new* batch). Default: 0.1.
        weight_std: if given, every Linear weight is drawn from N(0, weight_std**2).
        bias_init: if given, every Linear bias is set to this constant.
    """
    if depth < 1 or hidden < 1:
        raise ValueError(f"expected depth >= 1 and hidden >= 1 (got depth={depth}, hidden={hidden})")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden, momentum=bn_momentum))
        layers.append(activation())
        width = hidden
    layers.append(nn.Linear(width, out_features))
    for m in layers:
        if isinstance(m, nn.Linear):
            if weight_std is not None:
                nn.init.normal_(m.weight, 0.0, weight_std)
            if bias_init is not None:
                nn.init.constant_(m.bias, bias_init)
    return nn.Sequential(*layers)


def small_cnn(norm: str | None = "bn", channels: int = 16, num_classes: int = 10,
              groups: int = 4, conv_bias: bool | None = None) -> nn.Sequential:
    """A two-block CNN for 1x8x8 digits: (conv3x3 -> norm -> ReLU) x2 with pooling, then a Linear head.

    Introduced in lesson 06 (pitfalls: small batches).

    Args:
        norm: ``"bn"`` (BatchNorm2d), ``"gn"`` (GroupNorm with ``groups`` groups) or ``None``.
        channels: channels of the first block (the second has twice as many). Default: 16.
        num_classes: outputs. Default: 10.
        groups: GroupNorm groups; must divide ``channels``. Default: 4.
        conv_bias: bias on the convs; by default only when there is no norm (a bias before BN is
            cancelled by its mean subtraction, lesson 06).
    """
    if norm not in ("bn", "gn", None):
        raise ValueError(f"expected norm to be 'bn', 'gn' or None (got {norm!r})")
    if norm == "gn" and channels % groups:
        raise ValueError(f"expected groups to divide channels (got groups={groups}, channels={channels})")
    bias = (norm is None) if conv_bias is None else conv_bias

    def block(cin: int, cout: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
        if norm == "bn":
            layers.append(nn.BatchNorm2d(cout))
        elif norm == "gn":
            layers.append(nn.GroupNorm(groups, cout))
        return layers + [nn.ReLU()]

    return nn.Sequential(
        *block(1, channels), nn.MaxPool2d(2),
        *block(channels, 2 * channels), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * channels, num_classes),
    )


@dataclass
class History:
    """Per-epoch losses recorded by ``fit`` (``test_loss`` only when test data was given)."""

    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_metric: list[float] = field(default_factory=list)


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error of ``model(x)`` against ``y``, evaluated in the model's current mode."""
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x), y))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` whose arg-max prediction equals the label ``y``, in the model's current mode."""
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: Callable | None = None,
        epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, optimizer: str = "adam",
        x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
        metric: Callable[[nn.Module, torch.Tensor, torch.Tensor], float] | None = None,
        seed: int = 0, drop_last: bool = True) -> History:
    """Train ``model`` in place with mini-batches; evaluate on the test data in eval mode after each epoch.

    Introduced in lesson 01. The shuffling uses its own seeded generator, so two calls with the same
    seed see the same batches. ``drop_last=True`` (default) avoids a final batch of one sample, which
    BatchNorm rejects in training mode (lesson 06).

    Args:
        loss_fn: defaults to MSE for float targets and cross-entropy for integer labels.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        metric: evaluated on the test data after each epoch (e.g. ``accuracy``); defaults to the loss.
    """
    if len(x) != len(y):
        raise ValueError(f"expected as many targets as inputs (got {len(x)} inputs, {len(y)} targets)")
    if batch_size < 1 or batch_size > len(x):
        raise ValueError(f"expected 1 <= batch_size <= {len(x)} (got {batch_size})")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"expected optimizer 'adam' or 'sgd' (got {optimizer!r})")
    if loss_fn is None:
        loss_fn = nn.functional.cross_entropy if not y.is_floating_point() else nn.functional.mse_loss
    opt = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    g = torch.Generator().manual_seed(seed)
    hist = History()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        stop = len(x) - len(x) % batch_size if drop_last else len(x)
        total, count = 0.0, 0
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        hist.train_loss.append(total / max(count, 1))
        if x_test is not None and y_test is not None:
            model.eval()
            with torch.no_grad():
                hist.test_loss.append(float(loss_fn(model(x_test), y_test)))
                if metric is not None:
                    hist.test_metric.append(metric(model, x_test, y_test))
    return hist


def layer_outputs(model: nn.Module, x: torch.Tensor, module_type: type | tuple[type, ...],
                  inputs: bool = False) -> list[torch.Tensor]:
    """What every submodule of a given type produced (or received) during one forward pass.

    Introduced in lesson 01, to draw per-layer histograms of pre-activations and activations.
    The pass runs under ``torch.no_grad`` in the model's **current** mode: in training mode the
    BatchNorm layers use the statistics of ``x`` *and update their running statistics*, so take
    snapshots of a training-mode model on a ``copy.deepcopy`` of it.

    Args:
        model: any module; its submodules are visited in the order they run.
        x: the input batch.
        module_type: a module class (e.g. ``nn.Tanh``) or a tuple of classes to record.
        inputs: record the first positional input of each such module instead of its output.
            Default: False.

    Returns:
        A list of detached tensors, one per call of a matching module, in call order.

    Example::

        >>> net = mlp(depth=3)
        >>> [t.shape for t in layer_outputs(net, torch.randn(5, 1), nn.Tanh)]
        [torch.Size([5, 10]), torch.Size([5, 10]), torch.Size([5, 10])]
    """
    types = module_type if isinstance(module_type, tuple) else (module_type,)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError(f"expected module_type to be an nn.Module subclass or a tuple of them (got {module_type!r})")
    matches = [m for m in model.modules() if isinstance(m, types)]
    if not matches:
        raise ValueError(f"expected model to contain a {' or '.join(t.__name__ for t in types)} module (got none)")
    recorded: list[torch.Tensor] = []

    def hook(module, args, output):
        recorded.append((args[0] if inputs else output).detach().clone())

    handles = [m.register_forward_hook(hook) for m in matches]
    try:
        with torch.no_grad():
            model(x)
    finally:  # never leave hooks behind, even when the forward pass fails
        for h in handles:
            h.remove()
    return recorded
