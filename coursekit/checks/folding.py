"""Checks for lesson 07's exercises (folding BatchNorm into the previous layer): ``fold_conv_bn``,
``fold_linear_bn`` and ``fold_model``.

Part of :mod:`coursekit.checks`; import them from there.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ._core import (_F32, _F64, CheckResult, _compare, _dtname, _Failure, _forbidden_targets, _require_callable,
                    _returned_model, _run, _Runner, _typename, _Unchanged)
from ._inputs import _bns, _randomize_bn, _randomized

__all__ = ["check_fold_conv_bn", "check_fold_linear_bn", "check_fold_model"]


def _fold_expected(layer: nn.Module, bn: nn.Module, eps_outside=False, drop_layer_bias=False):
    """Folded (weight, bias) by the algebra, with switches for the classic mistakes."""
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None and not drop_layer_bias else torch.zeros(w.shape[0], dtype=w.dtype)
    std = bn.running_var.sqrt() + bn.eps if eps_outside else torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight.detach() / std
    return w * scale.reshape((-1,) + (1,) * (w.dim() - 1)), (b - bn.running_mean) * scale + bn.bias.detach()


def _bn_for(c: int, dtype, eps=1e-5, kind=nn.BatchNorm2d) -> nn.Module:
    return _randomize_bn(kind(c, eps=eps)).to(dtype).eval()


def _check_folded(folded, layer, bn, x, what, attrs):
    cls = type(layer)
    if not isinstance(folded, cls):
        raise _Failure(f"{what} returned a {_typename(folded)}, expected an {cls.__module__.split('.')[0]}.nn.{cls.__name__}",
                       hint=f"return a new nn.{cls.__name__} with the folded weight and bias")
    for attr, hint in attrs:
        if getattr(folded, attr) != getattr(layer, attr):
            raise _Failure(f"the folded layer has {attr}={getattr(folded, attr)!r}, the original {getattr(layer, attr)!r}",
                           hint=hint)
    if folded.bias is None:
        raise _Failure("the folded layer has no bias", hint="the fold always produces a bias: (b - running_mean) * gamma / sqrt(running_var + eps) + beta")
    with torch.no_grad():
        expected = bn(layer(x))
        y = folded(x)

    def with_params(wb):
        alt = copy.deepcopy(layer)
        with torch.no_grad():
            alt.weight.copy_(wb[0])
            if alt.bias is None:
                alt.bias = nn.Parameter(wb[1].clone())
            else:
                alt.bias.copy_(wb[1])
            return alt(x)

    _compare(y, expected, "output", variants=[
        ("eps goes inside the square root: gamma / sqrt(running_var + eps)", lambda: with_params(_fold_expected(layer, bn, eps_outside=True))),
        ("include the layer's own bias: b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta",
         lambda: with_params(_fold_expected(layer, bn, drop_layer_bias=True)) if layer.bias is not None else None),
    ], hint="W' = W * gamma / sqrt(running_var + eps) per output channel; b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta")


_CONV_ATTRS = [(a, f"the folded conv lost {a}: copy every setting of the original conv (stride, padding, dilation, groups, padding_mode)")
               for a in ("stride", "padding", "dilation", "groups", "padding_mode", "in_channels", "out_channels", "kernel_size")]


def check_fold_conv_bn(fold_conv_bn) -> CheckResult:
    """Check ``fold_conv_bn(conv, bn) -> conv`` against conv followed by bn in eval mode.

    Introduced in exercise notebook 07. Cases: Conv1d/2d/3d, bias None, stride, groups, dilation, padding='same', every padding_mode, float32/float64, BN eps 0.1.

    Args:
        fold_conv_bn: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``fold_conv_bn`` is not callable.
    """
    _require_callable(fold_conv_bn, "a function fold_conv_bn(conv, bn) -> conv")
    run = _Runner(_forbidden_targets("fold"), none_hint="conv.bias is None when the layer was built with bias=False: use zeros for it")

    def case(make_conv, x_shape, dtype, eps=1e-5, label=""):
        def body():
            conv = make_conv().to(dtype)
            kind = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[len(x_shape) - 2]
            bn = _bn_for(conv.out_channels, dtype, eps, kind)
            x = torch.randn(x_shape, dtype=dtype)
            with _Unchanged(conv=conv, bn=bn, hint="fold_conv_bn modified conv or bn: build a new conv (e.g. from a deep copy)"):
                folded = run(fold_conv_bn, conv, bn)
            _check_folded(folded, conv, bn, x, "fold_conv_bn", _CONV_ATTRS)
            if folded is conv:
                raise _Failure("fold_conv_bn returned the conv it was given", hint="return a new conv")
        return f"{label}, input {tuple(x_shape)} {_dtname(dtype)}" + (f", bn eps={eps}" if eps != 1e-5 else ""), body

    cases = [
        case(lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5), _F32, label="Conv2d(3, 4, 3, padding=1)"),
        case(lambda: nn.Conv2d(3, 4, 3, padding=1, bias=False), (2, 3, 5, 5), _F64, label="Conv2d(3, 4, 3, padding=1, bias=False)"),
        case(lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), (2, 4, 7, 7), _F64,
             label="Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)"),
        case(lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 5, 5), _F32, eps=0.1,
             label="Conv2d(3, 4, 3, padding=1, padding_mode='reflect')"),
        case(lambda: nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular", bias=False), (2, 3, 6), _F64,
             label="Conv1d(3, 4, 3, padding=1, padding_mode='circular', bias=False)"),
        case(lambda: nn.Conv3d(2, 4, 3, padding=1, padding_mode="replicate"), (2, 2, 3, 4, 3), _F32,
             label="Conv3d(2, 4, 3, padding=1, padding_mode='replicate')"),
        case(lambda: nn.Conv2d(3, 4, 3, padding="same", dilation=2, bias=False), (2, 3, 6, 6), _F64,
             label="Conv2d(3, 4, 3, padding='same', dilation=2, bias=False)"),
    ]
    return _run("fold_conv_bn", cases)


def check_fold_linear_bn(fold_linear_bn) -> CheckResult:
    """Check ``fold_linear_bn(linear, bn) -> linear`` against linear followed by ``nn.BatchNorm1d`` in eval mode.

    Introduced in exercise notebook 07. Cases: bias True/False, float32/float64, BN eps 0.1.

    Args:
        fold_linear_bn: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``fold_linear_bn`` is not callable.
    """
    _require_callable(fold_linear_bn, "a function fold_linear_bn(linear, bn) -> linear")
    run = _Runner(_forbidden_targets("fold"), none_hint="linear.bias is None when the layer was built with bias=False: use zeros for it")

    def case(i, o, bias, dtype, eps=1e-5):
        def body():
            linear = nn.Linear(i, o, bias=bias).to(dtype)
            bn = _bn_for(o, dtype, eps, nn.BatchNorm1d)
            x = torch.randn(4, i, dtype=dtype)
            with _Unchanged(linear=linear, bn=bn, hint="fold_linear_bn modified linear or bn: build a new nn.Linear"):
                folded = run(fold_linear_bn, linear, bn)
            _check_folded(folded, linear, bn, x, "fold_linear_bn",
                          [(a, "keep the linear layer's sizes") for a in ("in_features", "out_features")])
            if folded is linear:
                raise _Failure("fold_linear_bn returned the layer it was given", hint="return a new nn.Linear")
        return f"Linear({i}, {o}, bias={bias}) {_dtname(dtype)}" + (f", bn eps={eps}" if eps != 1e-5 else ""), body

    cases = [case(5, 4, True, _F32), case(5, 4, False, _F64), case(6, 3, True, _F32, eps=0.1), case(3, 7, True, _F64)]
    return _run("fold_linear_bn", cases)


def _fold_model_a() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _fold_model_b() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm1d(4),  # BN after ReLU: does not fold
        nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4),
        nn.Sequential(nn.Sequential(nn.Conv1d(4, 2, 3, dilation=2, padding=2, bias=False), nn.BatchNorm1d(2))),
        nn.Flatten(), nn.Linear(2 * 6, 2))


def check_fold_model(fold_model) -> CheckResult:
    """Check ``fold_model(model) -> model``: every conv/linear -> BN pair in ``nn.Sequential`` folded, eval mode.

    Introduced in exercise notebook 07. Cases: nested nn.Sequential, a BN after ReLU that must stay, models handed over in train and eval mode.

    Args:
        fold_model: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``fold_model`` is not callable.
    """
    _require_callable(fold_model, "a function fold_model(model) -> model")
    run = _Runner(_forbidden_targets("fold"))

    def case(make, shape, dtype, mode, remaining):
        def body():
            model = _randomized(make(), dtype).train(mode == "train")
            x = torch.randn(shape, dtype=dtype)
            n_bn = len(_bns(model))
            with _Unchanged(model=model, hint="fold_model changed the original model: fold a deep copy"):
                out = _returned_model(run(fold_model, model), "fold_model")
            if out is model:
                raise _Failure("fold_model returned the model it was given", hint="return a new model (fold a deep copy)")
            if any(m.training for m in out.modules()):
                raise _Failure("the folded model is in training mode", hint="return the folded model in eval mode")
            left = len(_bns(out))
            if left > remaining:
                raise _Failure(f"{left} BatchNorm layers left, expected {remaining}",
                               hint="fold every conv/linear -> BN pair, also inside nested nn.Sequential containers (recurse)")
            if left < remaining:
                raise _Failure(f"{left} BatchNorm layers left, expected {remaining}",
                               hint="only a BN directly after a conv/linear folds; a BN after e.g. ReLU must stay")
            identities = sum(isinstance(m, nn.Identity) for m in out.modules())
            if identities != n_bn - remaining:
                raise _Failure(f"{identities} nn.Identity layers, expected {n_bn - remaining}",
                               hint="replace each folded BN by nn.Identity (keeps the container's indices)")
            with torch.no_grad():
                expected = copy.deepcopy(model).eval()(x)
                y = run(out, x)
            _compare(y, expected, "output", hint="the folded model must compute what the original does in eval mode")
        label = "conv net" if make is _fold_model_a else "1d net with a BN after ReLU"
        return f"{label} in {mode} mode, input {tuple(shape)} {_dtname(dtype)}", body

    cases = [case(_fold_model_a, (2, 2, 4, 4), _F32, "eval", 0), case(_fold_model_b, (2, 3, 6), _F64, "train", 1),
             case(_fold_model_a, (3, 2, 4, 4), _F64, "train", 0)]
    return _run("fold_model", cases)
