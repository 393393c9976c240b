"""Checks for lesson 05's exercises (the normalization family): ``layer_norm``, ``instance_norm`` and
``group_norm``.

Part of :mod:`coursekit.checks`; import them from there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import (_F32, _F64, CheckResult, _compare, _desc, _forbidden_targets, _require_callable, _run, _Runner,
                    _Unchanged)
from ._inputs import _bn_dims, _norm, _norm_variants, _view, _x

__all__ = ["check_layer_norm", "check_instance_norm", "check_group_norm"]


_AFFINE_NONE = "weight and bias are optional: apply each one only when it is not None"


def check_layer_norm(layer_norm) -> CheckResult:
    """Check ``layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)`` against ``F.layer_norm``.

    Introduced in exercise notebook 05. Cases: int/tuple/list normalized_shape over 1 to 3 trailing dims, weight/bias given or None, eps varied.

    Args:
        layer_norm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``layer_norm`` is not callable.
    """
    _require_callable(layer_norm, "a function layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"), none_hint=_AFFINE_NONE)

    def case(shape, dtype, ns, weight=False, bias=False, eps=None):
        extra = {"normalized_shape": ns}
        if weight:
            extra["weight"] = "given"
        if bias:
            extra["bias"] = "given"
        if eps is not None:
            extra["eps"] = eps

        def body():
            x = _x(shape, dtype)
            nshape = (ns,) if isinstance(ns, int) else tuple(ns)
            w = torch.rand(nshape, dtype=dtype) + 0.5 if weight else None
            b = torch.randn(nshape, dtype=dtype) if bias else None
            e = 1e-5 if eps is None else eps
            kwargs = {}
            if weight:
                kwargs["weight"] = w
            if bias:
                kwargs["bias"] = b
            if eps is not None:
                kwargs["eps"] = eps
            with _Unchanged(x=x, weight=w, bias=b):
                y = run(layer_norm, x, ns, **kwargs)
            expected = F.layer_norm(x, nshape, w, b, e)
            k = len(nshape)
            dims = tuple(range(x.dim() - k, x.dim()))
            ident = lambda t: t  # noqa: E731
            variants = [
                ("normalize with the biased variance (unbiased=False)", lambda: _norm(x, dims, w, b, e, unbiased=True, wview=ident)),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: _norm(x, dims, w, b, e, eps_outside=True, wview=ident)),
                ("layer norm statistics are per sample over the trailing normalized_shape dims, not across the batch",
                 lambda: _norm(x, (0,), w, b, e, wview=ident)),
            ]
            if k > 1:
                variants.append(("normalize over ALL the trailing normalized_shape dims, not the last one only",
                                 lambda: _norm(x, (x.dim() - 1,), w, b, e, wview=ident)))
            if k < x.dim() - 1:
                variants.append(("normalize over the trailing normalized_shape dims only, not every dim but the first",
                                 lambda: _norm(x, tuple(range(1, x.dim())), w, b, e, wview=ident)))
            _compare(y, expected, "output", variants=variants, shape_hint="return a tensor of the input's shape",
                     hint="per sample: mean and biased variance over the trailing normalized_shape dims; weight/bias have shape normalized_shape")
        return _desc(shape, dtype, **extra), body

    cases = [case((4, 10), _F32, 10), case((2, 3, 5), _F64, (3, 5), weight=True, bias=True),
             case((2, 3, 4, 4), _F32, [4, 4], weight=True), case((2, 3, 4, 4), _F64, (3, 4, 4), bias=True, eps=0.1),
             case((2, 2, 3, 2, 3), _F64, (3,), weight=True, bias=True), case((3, 5), _F32, 5, weight=True, bias=True, eps=1e-3)]
    return _run("layer_norm", cases)



def _channel_affine_case(shape, dtype, weight: bool, bias: bool, eps):
    """Input and optional per-channel affine of one instance/group-norm case, and the keyword
    arguments the learner's function is called with (only those the case sets)."""
    c = shape[1]
    x = _x(shape, dtype)
    w = torch.rand(c, dtype=dtype) + 0.5 if weight else None
    b = torch.randn(c, dtype=dtype) if bias else None
    e = 1e-5 if eps is None else eps
    kwargs = {k: v for k, v, on in (("weight", w, weight), ("bias", b, bias), ("eps", eps, eps is not None)) if on}
    return x, w, b, e, kwargs

def check_instance_norm(instance_norm) -> CheckResult:
    """Check ``instance_norm(x, weight=None, bias=None, eps=1e-5)`` against ``F.instance_norm``.

    Introduced in exercise notebook 05. Cases: 3D to 5D input (batch of one included), weight/bias given or None, eps varied.

    Args:
        instance_norm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``instance_norm`` is not callable.
    """
    _require_callable(instance_norm, "a function instance_norm(x, weight=None, bias=None, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"), none_hint=_AFFINE_NONE)

    def case(shape, dtype, weight=False, bias=False, eps=None):
        extra = {k: "given" for k, on in (("weight", weight), ("bias", bias)) if on}
        if eps is not None:
            extra["eps"] = eps

        def body():
            x, w, b, e, kwargs = _channel_affine_case(shape, dtype, weight, bias, eps)
            with _Unchanged(x=x, weight=w, bias=b):
                y = run(instance_norm, x, **kwargs)
            expected = F.instance_norm(x, weight=w, bias=b, eps=e)
            dims = tuple(range(2, x.dim()))
            wrong = [(_bn_dims(x), "statistics over the wrong axes: that is batch norm; instance norm uses each sample's own statistics per channel (spatial dims only)"),
                     (tuple(range(1, x.dim())), "statistics over the wrong axes: that is layer norm; instance norm keeps one mean/variance per sample AND channel")]
            _compare(y, expected, "output", variants=_norm_variants(x, dims, w, b, e, wrong),
                     shape_hint="return a tensor of the input's shape",
                     hint="per (sample, channel): mean and biased variance over the spatial dims; weight/bias per channel")
        return _desc(shape, dtype, **extra), body

    cases = [case((2, 3, 5), _F32), case((2, 3, 4, 5), _F64, weight=True, bias=True),
             case((2, 2, 3, 2, 3), _F32, weight=True), case((2, 3, 4, 4), _F64, bias=True, eps=0.1),
             case((1, 3, 6), _F64, weight=True, bias=True, eps=1e-3)]
    return _run("instance_norm", cases)


def check_group_norm(group_norm) -> CheckResult:
    """Check ``group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)`` against ``F.group_norm``.

    Introduced in exercise notebook 05. Cases: 2D to 5D input, num_groups from 1 to C, weight/bias given or None, eps varied.

    Args:
        group_norm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``group_norm`` is not callable.
    """
    _require_callable(group_norm, "a function group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"), none_hint=_AFFINE_NONE)

    def grouped(x, g, w, b, e, strided=False, dims=(2,), **kw):
        n, c = x.shape[:2]
        xs = x
        if strided:  # channel k in group k % g: the classic reshape mistake
            xs = x.reshape(n, c // g, g, *x.shape[2:]).transpose(1, 2)
        y = _norm(xs.reshape(n, g, -1), dims, eps=e, **kw).reshape(xs.shape)
        if strided:
            y = y.transpose(1, 2).reshape(x.shape)
        if w is not None:
            y = y * _view(w, x.dim())
        if b is not None:
            y = y + _view(b, x.dim())
        return y

    def case(shape, dtype, groups, weight=False, bias=False, eps=None):
        extra = {"num_groups": groups}
        extra.update({k: "given" for k, on in (("weight", weight), ("bias", bias)) if on})
        if eps is not None:
            extra["eps"] = eps

        def body():
            x, w, b, e, kwargs = _channel_affine_case(shape, dtype, weight, bias, eps)
            with _Unchanged(x=x, weight=w, bias=b):
                y = run(group_norm, x, groups, **kwargs)
            expected = F.group_norm(x, groups, w, b, e)
            variants = [
                ("a group is C/G CONSECUTIVE channels (channels 0..C/G-1 form group 0), not every G-th channel",
                 lambda: grouped(x, groups, w, b, e, strided=True)),
                ("normalize with the biased variance (unbiased=False)", lambda: grouped(x, groups, w, b, e, unbiased=True)),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: grouped(x, groups, w, b, e, eps_outside=True)),
                ("statistics over the wrong axes: that is instance norm (one group per channel); use num_groups groups of C/G channels",
                 lambda: _norm(x, tuple(range(2, x.dim())), w, b, e) if x.dim() > 2 else grouped(x, x.shape[1], w, b, e)),
                ("statistics over the wrong axes: per sample and group, not across the batch",
                 lambda: grouped(x, groups, w, b, e, dims=(0, 2))),
            ]
            _compare(y, expected, "output", variants=variants, shape_hint="return a tensor of the input's shape",
                     hint="reshape to (N, G, -1), normalize each row with its mean and biased variance, reshape back, then the per-channel affine")
        return _desc(shape, dtype, **extra), body

    cases = [case((2, 6), _F32, 3), case((2, 6, 5), _F64, 2, weight=True, bias=True),
             case((2, 4, 3, 3), _F32, 1), case((2, 4, 3, 3), _F64, 4, weight=True),
             case((2, 6, 2, 3, 2), _F64, 3, weight=True, bias=True, eps=0.1), case((2, 8, 3, 3), _F32, 2, bias=True)]
    return _run("group_norm", cases)
