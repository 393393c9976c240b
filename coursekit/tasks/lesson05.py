"""Lesson 05's exercise (the normalization family): ``layer_norm``, ``instance_norm`` and ``group_norm``.

Each task defined once (see :mod:`coursekit.tasks._task`); the right answers are their
``torch.nn.functional`` namesakes.
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side import lesson05 as kernel

from . import _data as data
from ._norm import BIASED_HINT, EPS_HINT, norm, norm_variants
from ._task import NORM_NAMES, NORM_OPS, REFERENCE_NORM_WATCH, Case, Exercise, Task, compare, first_mismatch, unchanged

__all__ = ["EXERCISE", "LAYER_NORM", "INSTANCE_NORM", "GROUP_NORM"]

_F32, _F64 = "float32", "float64"
AFFINE_NONE = "weight and bias are optional: apply each one only when it is not None"

# the body of all three: the learner's function called with the case's arguments

def _affine_arrays(rng, shape, dtype, weight, bias):
    w, b = data.affine(rng, shape, dtype)
    return {**({"weight": w} if weight else {}), **({"bias": b} if bias else {})}


def _extra(weight, bias, eps):
    out = {k: "given" for k, on in (("weight", weight), ("bias", bias)) if on}
    if eps is not None:
        out["eps"] = eps
    return out


def _common(inputs, out, meta, want, variants, hint):
    dt = inputs["x"].dtype
    return first_mismatch(
        unchanged(inputs, out, [("x_after", "x"), ("weight_after", "weight"), ("bias_after", "bias")]),
        lambda: compare(
            "output",
            out.get("y"),
            want,
            meta,
            "y",
            dtype=dt,
            variants=variants,
            shape_hint="return a tensor of the input's shape",
            hint=hint,
        ),
    )


def _wb(inputs):
    return (
        inputs["weight"].astype(np.float64) if "weight" in inputs else None,
        inputs["bias"].astype(np.float64) if "bias" in inputs else None,
    )


# ------------------------------------------------------------------------------------ layer_norm
def _layer_norm_cases(rng):
    specs = [
        ((4, 10), _F32, 10, False, False, None),
        ((2, 3, 5), _F64, (3, 5), True, True, None),
        ((2, 3, 4, 4), _F32, [4, 4], True, False, None),
        ((2, 3, 4, 4), _F64, (3, 4, 4), False, True, 0.1),
        ((2, 2, 3, 2, 3), _F64, (3,), True, True, None),
        ((3, 5), _F32, 5, True, True, 1e-3),
    ]
    out = []
    for s, d, ns, w, b, eps in specs:
        nshape = (ns,) if isinstance(ns, int) else tuple(ns)
        params = {"ns": ns if isinstance(ns, int) else list(ns), "ns_kind": type(ns).__name__}
        if eps is not None:
            params["eps"] = eps
        out.append(
            Case(
                data.desc(s, d, normalized_shape=ns, **_extra(w, b, eps)),
                params,
                {"x": data.x(rng, s, d), **_affine_arrays(rng, nshape, d, w, b)},
            )
        )
    return out


def _layer_norm_judge(params, inputs, out, meta):
    import torch.nn.functional as F

    x = inputs["x"].astype(np.float64)
    ns = params["ns"]
    nshape = (ns,) if isinstance(ns, int) else tuple(ns)
    w, b = _wb(inputs)
    eps = params.get("eps", 1e-5)
    want = F.layer_norm(data.t(x), nshape, None if w is None else data.t(w), None if b is None else data.t(b), eps).numpy()
    k = len(nshape)
    dims = tuple(range(x.ndim - k, x.ndim))
    ws = nshape
    variants = [
        ("normalize with the biased variance (unbiased=False)", lambda: norm(x, dims, w, b, eps, unbiased=True, wshape=ws)),
        ("eps goes inside the square root: sqrt(var + eps)", lambda: norm(x, dims, w, b, eps, eps_outside=True, wshape=ws)),
        (
            "layer norm statistics are per sample over the trailing normalized_shape dims, not across the batch",
            lambda: norm(x, (0,), w, b, eps, wshape=ws),
        ),
    ]
    if k > 1:
        variants.append(
            (
                "normalize over ALL the trailing normalized_shape dims, not the last one only",
                lambda: norm(x, (x.ndim - 1,), w, b, eps, wshape=ws),
            )
        )
    if k < x.ndim - 1:
        variants.append(
            (
                "normalize over the trailing normalized_shape dims only, not every dim but the first",
                lambda: norm(x, tuple(range(1, x.ndim)), w, b, eps, wshape=ws),
            )
        )
    return _common(
        inputs,
        out,
        meta,
        want,
        variants,
        "per sample: mean and biased variance over the trailing normalized_shape dims; weight/bias have shape normalized_shape",
    )


LAYER_NORM = Task(
    "05",
    "layer_norm",
    "layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)",
    _layer_norm_cases,
    kernel.run_functional_norm,
    _layer_norm_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
    none_hint=AFFINE_NONE,
)


# ------------------------------------------------------------------------------------ instance_norm
def _instance_norm_cases(rng):
    specs = [
        ((2, 3, 5), _F32, False, False, None),
        ((2, 3, 4, 5), _F64, True, True, None),
        ((2, 2, 3, 2, 3), _F32, True, False, None),
        ((2, 3, 4, 4), _F64, False, True, 0.1),
        ((1, 3, 6), _F64, True, True, 1e-3),
    ]
    return [
        Case(
            data.desc(s, d, **_extra(w, b, eps)),
            {} if eps is None else {"eps": eps},
            {"x": data.x(rng, s, d), **_affine_arrays(rng, s[1], d, w, b)},
        )
        for s, d, w, b, eps in specs
    ]


def _instance_norm_judge(params, inputs, out, meta):
    import torch.nn.functional as F

    x = inputs["x"].astype(np.float64)
    w, b = _wb(inputs)
    eps = params.get("eps", 1e-5)
    affine = {"weight": None if w is None else data.t(w), "bias": None if b is None else data.t(b)}
    want = F.instance_norm(data.t(x), **affine, eps=eps).numpy()
    dims = tuple(range(2, x.ndim))
    wrong = [
        (
            data.dims_bn(x.ndim),
            "statistics over the wrong axes: that is batch norm; instance norm uses each sample's own statistics per "
            "channel (spatial dims only)",
        ),
        (
            tuple(range(1, x.ndim)),
            "statistics over the wrong axes: that is layer norm; instance norm keeps one mean/variance per sample AND channel",
        ),
    ]
    return _common(
        inputs,
        out,
        meta,
        want,
        norm_variants(x, dims, w, b, eps, wrong),
        "per (sample, channel): mean and biased variance over the spatial dims; weight/bias per channel",
    )


INSTANCE_NORM = Task(
    "05",
    "instance_norm",
    "instance_norm(x, weight=None, bias=None, eps=1e-5)",
    _instance_norm_cases,
    kernel.run_functional_norm,
    _instance_norm_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
    none_hint=AFFINE_NONE,
)


# ------------------------------------------------------------------------------------ group_norm
def _grouped(x, g, w, b, eps, strided=False, dims=(2,), **kw):
    n, c = x.shape[:2]
    xs = x
    if strided:  # channel k in group k % g: the classic reshape mistake
        xs = x.reshape(n, c // g, g, *x.shape[2:]).swapaxes(1, 2)
    y = norm(xs.reshape(n, g, -1), dims, eps=eps, **kw).reshape(xs.shape)
    if strided:
        y = y.swapaxes(1, 2).reshape(x.shape)
    return norm_affine(y, w, b)


def norm_affine(y, w, b):
    if w is not None:
        y = y * data.view(w, y.ndim)
    if b is not None:
        y = y + data.view(b, y.ndim)
    return y


def _group_norm_cases(rng):
    specs = [
        ((2, 6), _F32, 3, False, False, None),
        ((2, 6, 5), _F64, 2, True, True, None),
        ((2, 4, 3, 3), _F32, 1, False, False, None),
        ((2, 4, 3, 3), _F64, 4, True, False, None),
        ((2, 6, 2, 3, 2), _F64, 3, True, True, 0.1),
        ((2, 8, 3, 3), _F32, 2, False, True, None),
    ]
    return [
        Case(
            data.desc(s, d, num_groups=g, **_extra(w, b, eps)),
            {"num_groups": g, **({} if eps is None else {"eps": eps})},
            {"x": data.x(rng, s, d), **_affine_arrays(rng, s[1], d, w, b)},
        )
        for s, d, g, w, b, eps in specs
    ]


def _group_norm_judge(params, inputs, out, meta):
    import torch.nn.functional as F

    x = inputs["x"].astype(np.float64)
    w, b = _wb(inputs)
    eps = params.get("eps", 1e-5)
    g = params["num_groups"]
    want = F.group_norm(data.t(x), g, None if w is None else data.t(w), None if b is None else data.t(b), eps).numpy()
    variants = [
        (
            "a group is C/G CONSECUTIVE channels (channels 0..C/G-1 form group 0), not every G-th channel",
            lambda: _grouped(x, g, w, b, eps, strided=True),
        ),
        (BIASED_HINT, lambda: _grouped(x, g, w, b, eps, unbiased=True)),
        (EPS_HINT, lambda: _grouped(x, g, w, b, eps, eps_outside=True)),
        (
            "statistics over the wrong axes: that is instance norm (one group per channel); use num_groups groups of C/G "
            "channels",
            lambda: norm(x, tuple(range(2, x.ndim)), w, b, eps) if x.ndim > 2 else _grouped(x, x.shape[1], w, b, eps),
        ),
        (
            "statistics over the wrong axes: per sample and group, not across the batch",
            lambda: _grouped(x, g, w, b, eps, dims=(0, 2)),
        ),
    ]
    return _common(
        inputs,
        out,
        meta,
        want,
        variants,
        "reshape to (N, G, -1), normalize each row with its mean and biased variance, reshape back, then the per-channel affine",
    )


GROUP_NORM = Task(
    "05",
    "group_norm",
    "group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)",
    _group_norm_cases,
    kernel.run_functional_norm,
    _group_norm_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
    none_hint=AFFINE_NONE,
)

EXERCISE = Exercise("05", "05_normalization_family_exercises", (LAYER_NORM, INSTANCE_NORM, GROUP_NORM))
