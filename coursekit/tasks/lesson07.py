"""Lesson 07's exercise (folding BatchNorm into the previous layer): ``fold_conv_bn``, ``fold_linear_bn``, ``fold_model``.

Each task defined once (see :mod:`coursekit.tasks._task`). The conv/linear and the BN are handed
over in EVAL mode, as the task says (PyTorch's own ``fuse_conv_bn_eval`` asserts it).
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side import lesson07 as kernel

from . import _data as data
from . import _models as models
from ._task import FUSION_NAMES, FUSION_WATCH, Case, Exercise, Mismatch, Task, compare, first_mismatch

__all__ = ["EXERCISE", "FOLD_CONV_BN", "FOLD_LINEAR_BN", "FOLD_MODEL"]

_F32, _F64 = "float32", "float64"
_ATTRS = ("stride", "padding", "dilation", "groups", "padding_mode", "in_channels", "out_channels", "kernel_size")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _layers(params, inputs):
    return kernel.build_layer_and_bn(
        params,
        {
            k: data.t(v).to(_torch_dtype(params["dtype"])) if v.dtype.kind == "f" else __import__("torch").from_numpy(v.copy())
            for k, v in inputs.items()
        },
    )


def _torch_dtype(name):
    import torch

    return getattr(torch, name)


def _with_params(layer, x, weight, bias):
    import copy

    import torch
    from torch import nn

    alt = copy.deepcopy(layer).double()
    with torch.no_grad():
        alt.weight.copy_(weight)
        alt.bias = nn.Parameter(bias.clone())
        return alt(x).numpy()


def _given_modified(params, inputs, out):
    """A Mismatch when the layer or the BN handed over came back changed."""
    what, cls = params["what"], params["layer"]
    for k, v in inputs.items():
        for side in (kernel.LAYER_PREFIX, kernel.BN_PREFIX):
            after = side + kernel.AFTER + k[len(side) :]
            if k.startswith(side) and after in out and not np.array_equal(out[after], v):
                modified = "the " + cls.lower() if side == kernel.LAYER_PREFIX else "the bn"
                return Mismatch(
                    f"{what} modified {modified} it was given ({k[len(side) :]})",
                    hint=f"{what} modified {'conv' if cls.startswith('Conv') else 'linear'} or bn: build a new "
                    f"{'conv (e.g. from a deep copy)' if cls.startswith('Conv') else 'nn.Linear'}",
                )
    return None


def _not_a_folded_layer(params, layer, out, meta):
    """A Mismatch when the result is not a new layer of the same class and settings, with a bias, in the input's dtype."""
    what, cls = params["what"], params["layer"]
    if meta["same"]:
        return Mismatch(
            f"you returned the original {cls} unchanged (the object you were given)",
            hint=f"return a new nn.{cls} with the folded weight and bias; if your code catches an exception and "
            "returns its input, let the exception show instead",
        )
    if meta["type"] != cls:
        return Mismatch(
            f"{what} returned a {meta['type']}, expected a torch.nn.{cls}",
            hint=f"return a new nn.{cls} with the folded weight and bias",
        )
    for a in params["attrs"]:
        want = repr(getattr(layer, a))
        if meta["attrs"].get(a) != want:
            hint = (
                f"the folded conv lost {a}: copy every setting of the original conv (stride, padding, dilation, groups, "
                f"padding_mode)"
                if cls.startswith("Conv")
                else "keep the linear layer's sizes"
            )
            return Mismatch(f"the folded layer has {a}={meta['attrs'].get(a)}, the original {want}", hint=hint)
    if not meta["has_bias"]:
        return Mismatch(
            "the folded layer has no bias",
            hint="the fold always produces a bias: (b - running_mean) * gamma / sqrt(running_var + eps) + beta",
        )
    if "y" not in out:
        return Mismatch(
            f"the folded {cls} has dtype {meta['weight_dtype']} (bias {meta.get('bias_dtype')}), the input {params['dtype']}",
            hint="keep the original layer's dtype: build the new weight and bias from its tensors (no torch.tensor(..., "
            "dtype=...))",
        )
    return None


def _fold_variants(layer, bn, x):
    """Models of known wrong folds: (hint, output of the layer folded that way)."""
    import torch

    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    rv, rm, g, beta = bn.running_var, bn.running_mean, bn.weight.detach(), bn.bias.detach()
    shape = (-1,) + (1,) * (w.dim() - 1)
    scale = g / torch.sqrt(rv + bn.eps)
    right_w = w * scale.reshape(shape)
    multiplied = "the weight is multiplied by gamma * rsqrt(running_var + eps), not divided by it"
    return [
        (
            "eps goes inside the square root: gamma / sqrt(running_var + eps)",
            lambda: _with_params(
                layer, x, w * (g / (rv.sqrt() + bn.eps)).reshape(shape), (b - rm) * g / (rv.sqrt() + bn.eps) + beta
            ),
        ),
        (
            multiplied,
            lambda: _with_params(
                layer, x, w * (g * torch.sqrt(rv + bn.eps)).reshape(shape), (b - rm) * g * torch.sqrt(rv + bn.eps) + beta
            ),
        ),
        (
            multiplied,
            lambda: _with_params(layer, x, w * (g * torch.sqrt(rv + bn.eps)).reshape(shape), (b - rm) * scale + beta),
        ),
        (
            "the original bias is scaled too: b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta",
            lambda: _with_params(layer, x, right_w, b - rm * scale + beta) if layer.bias is not None else None,
        ),
        (
            "include the layer's own bias: b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta",
            lambda: _with_params(layer, x, right_w, -rm * scale + beta) if layer.bias is not None else None,
        ),
    ]


def _fold_judge(params, inputs, out, meta):
    import torch

    layer, bn = _layers(params, inputs)
    layer, bn = layer.double(), bn.double()
    mismatch = _given_modified(params, inputs, out) or _not_a_folded_layer(params, layer, out, meta)
    if mismatch:
        return mismatch
    x = data.t(inputs["x"])
    with torch.no_grad():
        want = bn(layer(x)).numpy()
    return compare(
        "output",
        out.get("y"),
        want,
        meta,
        "y",
        dtype=params["dtype"],
        variants=_fold_variants(layer, bn, x),
        hint="W' = W * gamma / sqrt(running_var + eps) per output channel; b' = (b - running_mean) * gamma / "
        "sqrt(running_var + eps) + beta",
    )


def _fold_case(rng, what, layer, spec, bn, channels, x_shape, dtype, eps, label, attrs):
    from torch import nn

    mod = getattr(nn, layer)(**spec)
    arrays = {}
    for k, v in mod.state_dict().items():
        bound = 1 / np.sqrt(v[0].numel()) if v.dim() > 1 else 0.5
        arrays[kernel.LAYER_PREFIX + k] = rng.uniform(-bound, bound, tuple(v.shape)).astype(dtype)
    w, b = data.affine(rng, channels, dtype)
    arrays.update(
        {
            kernel.BN_PREFIX + "weight": w,
            kernel.BN_PREFIX + "bias": b,
            kernel.BN_PREFIX + "running_mean": rng.standard_normal(channels).astype(dtype),
            kernel.BN_PREFIX + "running_var": rng.uniform(0.5, 1.5, channels).astype(dtype),
            kernel.BN_PREFIX + "num_batches_tracked": np.array(5, dtype=np.int64),
        }
    )
    arrays["x"] = rng.standard_normal(x_shape).astype(dtype)
    return Case(
        label
        + (f", input {tuple(x_shape)} {dtype}" if layer != "Linear" else f" {dtype}")
        + (f", bn eps={eps}" if eps != 1e-5 else ""),
        {
            "what": what,
            "layer": layer,
            "spec": spec,
            "bn": bn,
            "channels": channels,
            "eps": eps,
            "dtype": dtype,
            "attrs": list(attrs),
        },
        arrays,
    )


def _conv_cases(rng):
    specs = [
        (
            "Conv2d",
            dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
            (2, 3, 5, 5),
            _F32,
            1e-5,
            "Conv2d(3, 4, 3, padding=1)",
        ),
        (
            "Conv2d",
            dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, bias=False),
            (2, 3, 5, 5),
            _F64,
            1e-5,
            "Conv2d(3, 4, 3, padding=1, bias=False)",
        ),
        (
            "Conv2d",
            dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2, groups=2),
            (2, 4, 7, 7),
            _F64,
            1e-5,
            "Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)",
        ),
        (
            "Conv2d",
            dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
            (2, 3, 5, 5),
            _F32,
            0.1,
            "Conv2d(3, 4, 3, padding=1, padding_mode='reflect')",
        ),
        (
            "Conv1d",
            dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="circular", bias=False),
            (2, 3, 6),
            _F64,
            1e-5,
            "Conv1d(3, 4, 3, padding=1, padding_mode='circular', bias=False)",
        ),
        (
            "Conv3d",
            dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, padding_mode="replicate"),
            (2, 2, 3, 4, 3),
            _F32,
            1e-5,
            "Conv3d(2, 4, 3, padding=1, padding_mode='replicate')",
        ),
        (
            "Conv2d",
            dict(in_channels=3, out_channels=4, kernel_size=3, padding="same", dilation=2, bias=False),
            (2, 3, 6, 6),
            _F64,
            1e-5,
            "Conv2d(3, 4, 3, padding='same', dilation=2, bias=False)",
        ),
    ]
    return [
        _fold_case(rng, "fold_conv_bn", layer, spec, f"BatchNorm{layer[-2:]}", spec["out_channels"], xs, d, eps, label, _ATTRS)
        for layer, spec, xs, d, eps, label in specs
    ]


FOLD_CONV_BN = Task(
    "07",
    "fold_conv_bn",
    "fold_conv_bn(conv, bn) -> conv",
    _conv_cases,
    kernel.run_fold_layer,
    _fold_judge,
    watch=FUSION_WATCH,
    forbidden_names=FUSION_NAMES,
    none_hint="conv.bias is None when the layer was built with bias=False: use zeros for it",
)


def _lin_cases(rng):
    return [
        _fold_case(
            rng,
            "fold_linear_bn",
            "Linear",
            dict(in_features=i, out_features=o, bias=bias),
            "BatchNorm1d",
            o,
            (4, i),
            d,
            eps,
            f"Linear({i}, {o}, bias={bias})",
            ("in_features", "out_features"),
        )
        for i, o, bias, d, eps in (
            (5, 4, True, _F32, 1e-5),
            (5, 4, False, _F64, 1e-5),
            (6, 3, True, _F32, 0.1),
            (3, 7, True, _F64, 1e-5),
        )
    ]


FOLD_LINEAR_BN = Task(
    "07",
    "fold_linear_bn",
    "fold_linear_bn(linear, bn) -> linear",
    _lin_cases,
    kernel.run_fold_layer,
    _fold_judge,
    watch=FUSION_WATCH,
    forbidden_names=FUSION_NAMES,
    none_hint="linear.bias is None when the layer was built with bias=False: use zeros for it",
)


# ------------------------------------------------------------------------------------ fold_model
def _fold_model_cases(rng):
    out = []
    for architecture, shape, d, mode, remaining in (
        ("conv2d_nested", (2, 2, 4, 4), _F32, "eval", 0),
        ("conv1d_bn_after_relu", (2, 3, 6), _F64, "train", 1),
        ("conv2d_nested", (3, 2, 4, 4), _F64, "train", 0),
    ):
        label = "conv net" if architecture == "conv2d_nested" else "1d net with a BN after ReLU"
        out.append(
            Case(
                f"{label} in {mode} mode, input {shape} {d}",
                {"model": architecture, "dtype": d, "mode": mode, "remaining": remaining},
                {**models.random_state(rng, architecture, d), "x": rng.standard_normal(shape).astype(d)},
            )
        )
    return out



def _fold_model_judge(params, inputs, out, meta):
    import torch

    model = models.load(params["model"], inputs).eval()
    with torch.no_grad():
        want = model(data.t(inputs["x"])).numpy()
    state = [k for k in inputs if k.startswith(models.STATE_PREFIX)]
    if meta["original_changed"] or any(not np.array_equal(out[k], inputs[k]) for k in state):
        return Mismatch("the original model was modified", hint="fold_model changed the original model: fold a deep copy")
    if meta["same"]:
        return Mismatch(
            "you returned the original model (the object you were given)", hint="return a new model (fold a deep copy)"
        )
    if "training" not in meta:
        return Mismatch(f"fold_model returned a {meta['type']}, expected the model (an nn.Module)", hint="return the model")
    if meta["training"]:
        return Mismatch("the folded model is in training mode", hint="return the folded model in eval mode")
    left, remaining = meta["bn_left"], params["remaining"]
    if left > remaining:
        return Mismatch(
            f"{left} BatchNorm layers left, expected {remaining}",
            hint="fold every conv/linear -> BN pair, also inside nested nn.Sequential containers (recurse)",
        )
    if left < remaining:
        return Mismatch(
            f"{left} BatchNorm layers left, expected {remaining}",
            hint="only a BN directly after a conv/linear folds; a BN after e.g. ReLU must stay",
        )
    if meta["identities"] != meta["n_bn"] - remaining:
        return Mismatch(
            f"{meta['identities']} nn.Identity layers, expected {meta['n_bn'] - remaining}",
            hint="replace each folded BN by nn.Identity (keeps the container's indices)",
        )
    return first_mismatch(
        lambda: compare(
            "output",
            out.get("y"),
            want,
            meta,
            "y",
            dtype=params["dtype"],
            hint="the folded model must compute what the original does in eval mode",
        ),
        lambda: _folded_state(model, out, params["dtype"]),
    )


def _folded_state(model, out, dtype):
    """The folded model's state against the grader's own fold of the same model (every tensor)."""
    from coursekit.reference.fold import fold_model as reference_fold

    want = {k: v.detach().numpy() for k, v in reference_fold(model).state_dict().items()}
    got = {k[len(kernel.FOLDED_PREFIX) :]: v for k, v in out.items() if k.startswith(kernel.FOLDED_PREFIX)}
    if sorted(got) != sorted(want):
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        return Mismatch(
            f"the folded model's state has {extra or 'no'} extra and {missing or 'no'} missing entries",
            hint="replace each folded layer by the folded one and its BN by nn.Identity (keep the container's indices)",
        )
    for k, w in want.items():
        m = compare(f"folded {k}", got[k], w, dtype=dtype if w.dtype.kind == "f" else False)
        if m:
            return Mismatch(
                m.message,
                hint="W' = W * gamma / sqrt(running_var + eps); b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta",
                max_error=m.max_error,
                where=m.where,
            )
    return None


FOLD_MODEL = Task(
    "07",
    "fold_model",
    "fold_model(model) -> model",
    _fold_model_cases,
    kernel.run_fold_model,
    _fold_model_judge,
    watch=FUSION_WATCH,
    forbidden_names=FUSION_NAMES,
)

EXERCISE = Exercise("07", "07_folding_exercises", (FOLD_CONV_BN, FOLD_LINEAR_BN, FOLD_MODEL))
