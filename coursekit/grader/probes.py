"""The grader's probes: hidden inputs, the kernel-side call, and the trusted comparison, per task.

A probe is split across the trust boundary:

* ``make_cases(rng)`` (grader process) draws inputs from a generator seeded by the grader; each
  case is plain JSON parameters plus float arrays, written as ``.npz`` files;
* ``body`` (learner's kernel) is source defining ``_coursekit_body(case, T, A)``, which calls the
  learner's function on those inputs and returns ``(arrays, meta)``: tensors/arrays saved to
  ``.npz`` and JSON-able plain values. The harness ``HARNESS`` runs it for every case;
* ``compare(case, inputs, outputs, meta)`` (grader process) checks the plain data against its own
  computation with PyTorch and returns ``None`` or a one-line failure message.

Nothing the learner's kernel produces is unpickled: outputs are read with
``np.load(allow_pickle=False)`` and ``json.load``. ``forbidden`` lists identifiers an answer may
not use (the library function the task re-implements); the grader scans answer cells for them.

Used by ``coursekit.grader.grade``; see the README's "Exercises and grading" section.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Probe", "PROBES", "HARNESS", "MODEL_SRC", "NORM_NAMES", "close"]

# Identifiers of PyTorch's normalization functions, modules and kernels: an answer that touches
# one of them is not a re-implementation. Checked as names, attributes, imports and strings.
NORM_NAMES = frozenset({
    "batch_norm", "instance_norm", "layer_norm", "group_norm", "rms_norm",
    "native_batch_norm", "native_layer_norm", "native_group_norm", "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training", "batch_norm_stats", "batch_norm_elemt",
    "batch_norm_gather_stats", "batch_norm_update_stats", "_batch_norm_impl_index",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d", "LazyBatchNorm2d",
    "LazyBatchNorm3d", "SyncBatchNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
    "LayerNorm", "GroupNorm", "RMSNorm", "_BatchNorm", "_NormBase",
})
_AUTODIFF = frozenset({"grad", "vjp", "jvp", "jacobian", "hessian", "vmap"})
_FUSION = frozenset({
    "fusion", "fuse", "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval",
    "fuse_linear_bn_weights", "fuse_modules", "optimization",
})

# Runs in the learner's kernel before each probe body. It only reads grader-written inputs and
# writes plain arrays/JSON; an exception in the learner's code is reported per case.
HARNESS = r'''
def _coursekit_probe(task_dir, body):
    import json, os
    import numpy as np, torch
    with open(os.path.join(task_dir, "cases.json")) as f:
        cases = json.load(f)
    for i, case in enumerate(cases):
        try:
            with np.load(os.path.join(task_dir, f"in{i}.npz"), allow_pickle=False) as z:
                A = {k: z[k] for k in z.files}
            T = {k: torch.from_numpy(v.copy()) for k, v in A.items()}
            out, meta = body(case, T, {k: v.copy() for k, v in A.items()})
            arrays = {}
            for k, v in out.items():
                if isinstance(v, torch.Tensor):
                    v = v.detach().cpu().numpy()
                arr = np.asarray(v)
                if arr.dtype == object:
                    raise TypeError(f"expected a tensor for {k} (got {type(v).__name__})")
                arrays[k] = arr
            np.savez(os.path.join(task_dir, f"out{i}.npz"), **arrays)
            res = {"ok": True, "meta": meta}
        except Exception as e:
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:600]}
        with open(os.path.join(task_dir, f"res{i}.json"), "w") as f:
            json.dump(res, f)
'''

# The small model of the lesson-06/07 probes, built identically in the kernel and the grader
# (float64 so comparisons are tight); weights and statistics come from the grader's .npz.
MODEL_SRC = r'''
def _coursekit_model():
    import torch
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6), nn.ReLU(),
        nn.Linear(6, 3),
    ).double()
'''


@dataclass(frozen=True)
class Probe:
    """One task's probe (see the module docstring)."""

    name: str
    make_cases: Callable
    body: str
    compare: Callable
    forbidden: frozenset = field(default_factory=frozenset)


# ----------------------------------------------------------------------------- comparison helpers
def close(label: str, got, want, atol: float = 1e-8, rtol: float = 1e-6, dtype=None) -> str | None:
    """``None`` if ``got`` matches ``want`` (shape, optional dtype, values), else a one-line message."""
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{label}: expected shape {tuple(want.shape)} (got {tuple(got.shape)})"
    if dtype is not None and got.dtype != np.dtype(dtype):
        return f"{label}: expected dtype {np.dtype(dtype)} (got {got.dtype})"
    if got.dtype.kind not in "fiub":
        return f"{label}: expected numbers (got dtype {got.dtype})"
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not np.isfinite(g).all():
        return f"{label}: contains nan/inf"
    err = np.abs(g - w)
    excess = err - (atol + rtol * np.abs(w))
    if (excess <= 0).all():
        return None
    where = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), err.shape)) if err.ndim else ()
    return f"{label}: max error {err.max():.2e} at index {where} (shape {tuple(got.shape)})"


def _tol(dtype) -> dict:
    return {"atol": 1e-4, "rtol": 1e-4} if str(dtype) == "float32" else {"atol": 1e-8, "rtol": 1e-6}


def _first(*messages):
    return next((m for m in messages if m), None)


def _t(a):
    import torch

    return torch.from_numpy(a.copy())


def _unchanged(out: dict, inputs: dict, pairs) -> str | None:
    import numpy as np

    for out_key, in_key in pairs:
        if out_key in out and not np.array_equal(out[out_key], inputs[in_key]):
            return f"the input {in_key} was modified in place (expected it unchanged)"
    return None


def _x(rng, shape, dtype="float64"):
    """Channels with distinct means and scales, so statistics over the wrong axes are caught."""
    import numpy as np

    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    shift = rng.uniform(-3, 3, size=c).reshape(bshape)
    scale = rng.uniform(0.5, 3, size=c).reshape(bshape)
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


_SHAPES = [(8, 3), (6, 4, 5), (4, 3, 5, 5), (3, 2, 3, 4, 4)]


def _reduce_dims(x):
    return (0,) + tuple(range(2, x.ndim))


# ------------------------------------------------------------------------------------ lesson 02
def _cs_cases(rng):
    cases = [({"shape": list(s)}, {"x": _x(rng, s)}) for s in _SHAPES]
    cases.append(({"shape": [4, 3, 5, 5]}, {"x": _x(rng, (4, 3, 5, 5), "float32")}))
    return cases


_CS_BODY = r'''
def _coursekit_body(case, T, A):
    x = T["x"]
    mean, var = channel_stats(x)
    return {"mean": mean, "var": var, "x_after": x}, {}
'''


def _cs_compare(case, inp, out, meta):
    x = inp["x"]
    dims = _reduce_dims(x)
    tol = _tol(x.dtype)
    msg = _first(_unchanged(out, inp, [("x_after", "x")]),
                 close("mean", out["mean"], x.mean(axis=dims), dtype=x.dtype, **tol),
                 close("var", out["var"], x.var(axis=dims), dtype=x.dtype, **tol))
    if msg and msg.startswith("var") and close("var", out["var"], x.var(axis=dims, ddof=1), **tol) is None:
        msg += "; hint: that is the unbiased variance, BN normalizes with the biased one (divide by N*H*W)"
    return msg


def _bnt_cases(rng):
    eps = [1e-5, 0.1, 1e-3, 1e-5, 0.5]
    shapes = _SHAPES + [(4, 3, 5, 5)]
    out = []
    for i, s in enumerate(shapes):
        dtype = "float32" if i == len(shapes) - 1 else "float64"
        c = s[1]
        out.append(({"eps": eps[i % len(eps)]}, {
            "x": _x(rng, s, dtype), "gamma": rng.uniform(0.5, 2, c).astype(dtype),
            "beta": rng.uniform(-1, 1, c).astype(dtype)}))
    return out


_BNT_BODY = r'''
def _coursekit_body(case, T, A):
    x = T["x"]
    y = batch_norm_train(x, T["gamma"], T["beta"], eps=case["eps"])
    return {"y": y, "x_after": x}, {}
'''


def _bn_train_ref(x, gamma, beta, eps, unbiased=False, eps_outside=False):
    import numpy as np

    dims = _reduce_dims(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=dims, keepdims=True)
    var = x.var(axis=dims, keepdims=True, ddof=1 if unbiased else 0)
    xhat = (x - mean) / (np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps))
    return xhat * gamma.reshape(shape) + beta.reshape(shape)


def _bnt_compare(case, inp, out, meta):
    import torch.nn.functional as F

    x, g, b = inp["x"], inp["gamma"], inp["beta"]
    want = F.batch_norm(_t(x), None, None, _t(g), _t(b), training=True, eps=case["eps"]).numpy()
    tol = _tol(x.dtype)
    msg = _first(_unchanged(out, inp, [("x_after", "x")]), close("y", out["y"], want, dtype=x.dtype, **tol))
    if msg and msg.startswith("y"):
        for kw, hint in (({"unbiased": True}, "normalize with the biased variance, not the unbiased one"),
                         ({"eps_outside": True}, "eps goes inside the square root: sqrt(var + eps)")):
            if close("y", out["y"], _bn_train_ref(x, g, b, case["eps"], **kw), **tol) is None:
                msg += f"; hint: {hint}"
    return msg


# ------------------------------------------------------------------------------------ lesson 03
def _urs_cases(rng):
    specs = [(0.1, 0, (8, 3, 4, 4)), (0.3, 5, (16, 4)), (None, 0, (6, 2, 5)), (None, 4, (5, 3, 3, 3))]
    out = []
    for m, n, s in specs:
        c = s[1]
        out.append(({"momentum": m, "num_batches_tracked": n}, {
            "running_mean": rng.uniform(-1, 1, c), "running_var": rng.uniform(0.5, 2, c), "x": _x(rng, s)}))
    return out


_URS_BODY = r'''
def _coursekit_body(case, T, A):
    rm, rv, x = T["running_mean"], T["running_var"], T["x"]
    new_mean, new_var = update_running_stats(rm, rv, x, momentum=case["momentum"],
                                             num_batches_tracked=case["num_batches_tracked"])
    return {"new_mean": new_mean, "new_var": new_var, "rm_after": rm, "rv_after": rv, "x_after": x}, {}
'''


def _urs_expected(case, inp, reverse=False, biased=False):
    x = inp["x"]
    dims = _reduce_dims(x)
    f = case["momentum"] if case["momentum"] is not None else 1.0 / (case["num_batches_tracked"] + 1)
    if reverse:
        f = 1 - f
    var = x.var(axis=dims, ddof=0 if biased else 1)
    return ((1 - f) * inp["running_mean"] + f * x.mean(axis=dims), (1 - f) * inp["running_var"] + f * var)


def _urs_compare(case, inp, out, meta):
    wm, wv = _urs_expected(case, inp)
    msg = _first(_unchanged(out, inp, [("rm_after", "running_mean"), ("rv_after", "running_var"), ("x_after", "x")]),
                 close("new running_mean", out["new_mean"], wm), close("new running_var", out["new_var"], wv))
    if msg and not msg.startswith("the input"):
        rm, rv = _urs_expected(case, inp, reverse=True)
        bm, bv = _urs_expected(case, inp, biased=True)
        if close("", out["new_mean"], rm) is None:
            msg += "; hint: the momentum convention is reversed (PyTorch: (1 - momentum) * running + momentum * batch)"
        elif close("", out["new_var"], bv) is None:
            msg += "; hint: running_var is updated with the unbiased batch variance (divide by n - 1)"
    return msg


def _mybn_cases(rng):
    import numpy as np

    cfgs = [{"C": 3, "eps": 1e-5, "momentum": 0.1, "affine": True},
            {"C": 4, "eps": 1e-3, "momentum": None, "affine": True},
            {"C": 2, "eps": 1e-5, "momentum": 0.2, "affine": False}]
    out = []
    for cfg in cfgs:
        c = cfg["C"]
        arrays = {f"x{i}": _x(rng, (4, c, 3, 3), "float32") for i in (1, 2, 3)}
        arrays["load_running_mean"] = rng.uniform(-1, 1, c).astype("float32")
        arrays["load_running_var"] = rng.uniform(0.5, 2, c).astype("float32")
        arrays["load_num_batches_tracked"] = np.array(int(rng.integers(1, 5)), dtype=np.int64)
        if cfg["affine"]:
            arrays["load_weight"] = rng.uniform(0.5, 2, c).astype("float32")
            arrays["load_bias"] = rng.uniform(-1, 1, c).astype("float32")
        out.append((cfg, arrays))
    return out


_MYBN_BODY = r'''
def _coursekit_body(case, T, A):
    m = MyBatchNorm2d(case["C"], eps=case["eps"], momentum=case["momentum"], affine=case["affine"])
    out = {"init_" + k: v.clone() for k, v in m.state_dict().items()}
    keys = sorted(m.state_dict())
    m.load_state_dict({k[5:]: v for k, v in T.items() if k.startswith("load_")})
    m.train()
    out["y1"], out["y2"] = m(T["x1"]), m(T["x2"])
    out.update({"train_" + k: v.clone() for k, v in m.state_dict().items()})
    m.eval()
    out["y3"] = m(T["x3"])
    out.update({"eval_" + k: v.clone() for k, v in m.state_dict().items()})
    return out, {"keys": keys}
'''


def _mybn_compare(case, inp, out, meta):
    import torch
    from torch import nn

    ref = nn.BatchNorm2d(case["C"], eps=case["eps"], momentum=case["momentum"], affine=case["affine"])
    if meta["keys"] != sorted(ref.state_dict()):
        return f"state_dict keys: expected {sorted(ref.state_dict())} (got {meta['keys']})"
    for k, v in ref.state_dict().items():
        m = close(f"initial {k}", out[f"init_{k}"], v.numpy(), atol=0, rtol=0)
        if m:
            return m
    ref.load_state_dict({k[5:]: _t(v) for k, v in inp.items() if k.startswith("load_")})
    got = {}
    with torch.no_grad():
        ref.train()
        got["y1"], got["y2"] = ref(_t(inp["x1"])), ref(_t(inp["x2"]))
        got.update({"train_" + k: v.clone() for k, v in ref.state_dict().items()})
        ref.eval()
        got["y3"] = ref(_t(inp["x3"]))
        got.update({"eval_" + k: v.clone() for k, v in ref.state_dict().items()})
    try:  # "loads into nn.BatchNorm2d and back": the learner's state must load into the real layer
        nn.BatchNorm2d(case["C"], affine=case["affine"]).load_state_dict(
            {k[6:]: _t(v) for k, v in out.items() if k.startswith("train_")})
    except Exception as exc:
        return f"its state_dict does not load into nn.BatchNorm2d: {str(exc).splitlines()[0]}"
    labels = {"y1": "train-mode output", "y2": "second train-mode output", "y3": "eval-mode output"}
    for k, want in got.items():
        m = close(labels.get(k, k.replace("_", " ", 1)), out[k], want.numpy(), atol=1e-4, rtol=1e-4)
        if m:
            return m
    return None


def _bnp_cases(rng):
    out = []
    for m, eps, s in ((0.1, 1e-5, (2, 2, 2, 2)), (0.25, 1e-2, (4, 3, 5, 5)), (0.1, 1e-5, (8, 3, 4, 4))):
        out.append(({"momentum": m, "eps": eps}, {
            "feature": _x(rng, s), "mean": rng.uniform(-1, 1, s[1]), "var": rng.uniform(0.5, 2, s[1])}))
    return out


_BNP_BODY = r'''
def _coursekit_body(case, T, A):
    feature, mean, var = A["feature"], A["mean"], A["var"]
    out, new_mean, new_var = bn_process(feature, mean, var, momentum=case["momentum"], eps=case["eps"])
    return {"out": out, "new_mean": new_mean, "new_var": new_var,
            "feature_after": feature, "mean_after": mean, "var_after": var}, {}
'''


def _bnp_compare(case, inp, out, meta):
    import torch.nn.functional as F

    rm, rv = _t(inp["mean"]), _t(inp["var"])
    y = F.batch_norm(_t(inp["feature"]), rm, rv, training=True, momentum=case["momentum"], eps=case["eps"])
    return _first(
        _unchanged(out, inp, [("feature_after", "feature"), ("mean_after", "mean"), ("var_after", "var")]),
        close("out", out["out"], y.numpy()), close("new_mean", out["new_mean"], rm.numpy()),
        close("new_var", out["new_var"], rv.numpy()))


# ------------------------------------------------------------------------------------ lesson 04
def _bwd_cases(rng):
    out = []
    for eps, s in ((1e-5, (8, 3)), (1e-3, (4, 3, 3, 3)), (1e-5, (5, 2, 6))):
        c = s[1]
        out.append(({"eps": eps}, {"x": _x(rng, s), "gamma": rng.uniform(0.5, 2, c),
                                   "beta": rng.uniform(-1, 1, c), "dy": rng.standard_normal(s)}))
    return out


# _COURSEKIT_GIVEN is the instructor's given-batch_norm_forward cell (set by the grader), so the cache always comes
# from the instructor's forward even if an answer cell redefines batch_norm_forward.
_BWD_BODY = r'''
_coursekit_ns = dict(globals())
exec(compile(_COURSEKIT_GIVEN, "given-batch_norm_forward", "exec"), _coursekit_ns)
_coursekit_forward = _coursekit_ns["batch_norm_forward"]

def _coursekit_body(case, T, A):
    y, cache = _coursekit_forward(T["x"], T["gamma"], T["beta"], eps=case["eps"])
    dx, dgamma, dbeta = batch_norm_backward(T["dy"], cache)
    return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}, {}
'''


def _autograd_bn(inp, eps):
    import torch
    import torch.nn.functional as F

    x, g, b = (_t(inp[k]).requires_grad_() for k in ("x", "gamma", "beta"))
    y = F.batch_norm(x, None, None, g, b, training=True, eps=eps)
    y.backward(_t(inp["dy"]))
    return y.detach().numpy(), x.grad.numpy(), g.grad.numpy(), b.grad.numpy()


def _bwd_compare(case, inp, out, meta):
    _, dx, dg, db = _autograd_bn(inp, case["eps"])
    return _first(close("dx", out["dx"], dx), close("dgamma", out["dgamma"], dg), close("dbeta", out["dbeta"], db))


_FN_BODY = r'''
def _coursekit_body(case, T, A):
    import torch
    x, g, b = (T[k].requires_grad_() for k in ("x", "gamma", "beta"))
    y = BatchNormFunction.apply(x, g, b, case["eps"])
    y.backward(T["dy"])
    return ({"y": y, "dx": x.grad, "dgamma": g.grad, "dbeta": b.grad},
            {"is_function": isinstance(BatchNormFunction, type) and issubclass(BatchNormFunction, torch.autograd.Function)})
'''


def _fn_compare(case, inp, out, meta):
    if not meta.get("is_function"):
        return "BatchNormFunction: expected a subclass of torch.autograd.Function"
    y, dx, dg, db = _autograd_bn(inp, case["eps"])
    return _first(close("y", out["y"], y), close("dx", out["dx"], dx),
                  close("dgamma", out["dgamma"], dg), close("dbeta", out["dbeta"], db))


# ------------------------------------------------------------------------------------ lesson 05
def _affine(rng, shape, with_affine, dtype="float64"):
    if not with_affine:
        return {}
    return {"weight": rng.uniform(0.5, 2, shape).astype(dtype), "bias": rng.uniform(-1, 1, shape).astype(dtype)}


def _ln_cases(rng):
    out = []
    for s, ns, aff, eps in (((6, 10), [10], True, 1e-5), ((4, 3, 5, 5), [3, 5, 5], False, 1e-5),
                            ((4, 3, 5, 5), [5, 5], True, 1e-3), ((3, 4, 6), [6], True, 0.1)):
        out.append(({"normalized_shape": ns, "eps": eps}, {"x": _x(rng, s), **_affine(rng, tuple(ns), aff)}))
    s = (4, 3, 6)
    out.append(({"normalized_shape": [6], "eps": 1e-5}, {"x": _x(rng, s, "float32"), **_affine(rng, (6,), True, "float32")}))
    return out


_LN_BODY = r'''
def _coursekit_body(case, T, A):
    x = T["x"]
    y = layer_norm(x, tuple(case["normalized_shape"]), weight=T.get("weight"), bias=T.get("bias"), eps=case["eps"])
    return {"y": y, "x_after": x}, {}
'''


def _norm_compare(fn):
    def compare(case, inp, out, meta):
        import torch.nn.functional as F

        x = inp["x"]
        w = _t(inp["weight"]) if "weight" in inp else None
        b = _t(inp["bias"]) if "bias" in inp else None
        kw = {k: v for k, v in case.items() if k != "eps"}
        if "normalized_shape" in kw:
            kw["normalized_shape"] = tuple(kw["normalized_shape"])
        want = getattr(F, fn)(_t(x), **kw, weight=w, bias=b, eps=case["eps"]).numpy()
        return _first(_unchanged(out, inp, [("x_after", "x")]), close("y", out["y"], want, dtype=x.dtype, **_tol(x.dtype)))
    return compare


def _in_cases(rng):
    out = []
    for s, aff, eps in (((4, 3, 10), True, 1e-5), ((2, 3, 5, 5), False, 1e-5), ((2, 2, 3, 4, 4), True, 1e-3)):
        out.append(({"eps": eps}, {"x": _x(rng, s), **_affine(rng, (s[1],), aff)}))
    out.append(({"eps": 1e-5}, {"x": _x(rng, (3, 4, 4, 4), "float32"), **_affine(rng, (4,), True, "float32")}))
    return out


_IN_BODY = r'''
def _coursekit_body(case, T, A):
    x = T["x"]
    y = instance_norm(x, weight=T.get("weight"), bias=T.get("bias"), eps=case["eps"])
    return {"y": y, "x_after": x}, {}
'''


def _gn_cases(rng):
    out = []
    for s, g, aff, eps in (((4, 6, 5, 5), 2, True, 1e-5), ((4, 6, 5, 5), 1, True, 1e-5), ((4, 6, 5, 5), 6, False, 1e-3),
                           ((3, 4, 7), 2, True, 1e-5), ((2, 6, 2, 3, 3), 3, True, 1e-5)):
        out.append(({"num_groups": g, "eps": eps}, {"x": _x(rng, s), **_affine(rng, (s[1],), aff)}))
    return out


_GN_BODY = r'''
def _coursekit_body(case, T, A):
    x = T["x"]
    y = group_norm(x, case["num_groups"], weight=T.get("weight"), bias=T.get("bias"), eps=case["eps"])
    return {"y": y, "x_after": x}, {}
'''


# ------------------------------------------------------------------------------------ lesson 06
def _model():
    ns: dict = {}
    exec(MODEL_SRC, ns)  # our own source, shared with the kernel side
    return ns["_coursekit_model"]()


def _random_state(rng):
    """A state_dict for MODEL_SRC with trained-looking BN statistics and affine parameters."""
    import numpy as np

    arrays = {}
    for k, v in _model().state_dict().items():
        if k.endswith("num_batches_tracked"):
            arrays["sd_" + k] = np.array(int(rng.integers(1, 20)), dtype=np.int64)
        elif k.endswith("running_var") or (k.endswith("weight") and v.ndim == 1):
            arrays["sd_" + k] = rng.uniform(0.5, 2, v.shape)
        else:
            arrays["sd_" + k] = rng.uniform(-0.5, 0.5, v.shape)
    return arrays


def _load(arrays):
    model = _model()
    model.load_state_dict({k[3:]: _t(v) for k, v in arrays.items() if k.startswith("sd_")})
    return model


def _bn_keys(model):
    from torch.nn.modules.batchnorm import _BatchNorm

    prefixes = [n + "." for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    return [k for k in model.state_dict() if any(k.startswith(p) for p in prefixes)]


_BUILD_MODEL = MODEL_SRC + r'''
def _coursekit_load(T):
    model = _coursekit_model()
    model.load_state_dict({k[3:]: v for k, v in T.items() if k.startswith("sd_")})
    return model
'''

_FREEZE_BODY = _BUILD_MODEL + r'''
def _coursekit_body(case, T, A):
    import torch
    model = _coursekit_load(T)
    model.train()
    ret = freeze_batchnorm(model)
    m = model if ret is None else ret
    m.train()
    m(T["x"]).square().mean().backward()
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad and p.grad is not None:
                p -= 0.1 * p.grad
    m.train()
    m(T["x"])
    return {"sd_" + k: v for k, v in m.state_dict().items()}, {"keys": list(m.state_dict())}
'''


def _freeze_cases(rng):
    return [({}, {**_random_state(rng), "x": rng.standard_normal((6, 2, 5, 5))})]


def _freeze_compare(case, inp, out, meta):
    model = _load(inp)
    if meta["keys"] != list(model.state_dict()):
        return "freeze_batchnorm changed the model's structure (state_dict keys differ)"
    for k in _bn_keys(model):
        if k.endswith("num_batches_tracked"):
            continue
        if close(k, out["sd_" + k], inp["sd_" + k], atol=0, rtol=0):
            what = "running statistics" if "running" in k else "affine parameters"
            return f"{k} changed after model.train(), a forward and an SGD step: the BN {what} must stay frozen"
    others = [k for k in model.state_dict() if k not in _bn_keys(model)]
    if all(close(k, out["sd_" + k], inp["sd_" + k], atol=0, rtol=0) is None for k in others):
        return "no other parameter changed after an SGD step: only the BatchNorm layers should be frozen"
    return None


def _predict_cases(rng):
    out = []
    n_modules = len(list(_model().modules()))
    for kind in ("train", "eval", "mixed"):
        flags = [kind == "train" or (kind == "mixed" and i % 2 == 0) for i in range(n_modules)]
        out.append(({"flags": flags}, {**_random_state(rng), "x": rng.standard_normal((5, 2, 5, 5))}))
    return out


_PREDICT_BODY = _BUILD_MODEL + r'''
def _coursekit_body(case, T, A):
    model = _coursekit_load(T)
    for mod, flag in zip(model.modules(), case["flags"]):
        mod.training = flag
    y = predict(model, T["x"])
    meta = {"flags_after": [mod.training for mod in model.modules()], "requires_grad": bool(y.requires_grad)}
    return {"y": y, **{"sd_" + k: v for k, v in model.state_dict().items()}}, meta
'''


def _predict_compare(case, inp, out, meta):
    import torch

    model = _load(inp).eval()
    with torch.no_grad():
        want = model(_t(inp["x"])).numpy()
    for k in model.state_dict():
        if close(k, out["sd_" + k], inp["sd_" + k], atol=0, rtol=0):
            return f"{k} changed: predict must not update the model (eval mode, no training step)"
    if meta["flags_after"] != case["flags"]:
        return "predict did not restore every submodule's previous training flag"
    if meta["requires_grad"]:
        return "the prediction requires grad: run the forward under torch.no_grad() or inference_mode()"
    return close("y", out["y"], want)


def _recal_cases(rng):
    out = []
    for mode in ("train", "eval"):
        arrays = {**_random_state(rng)}
        for i in range(4):
            arrays[f"batch{i}"] = rng.standard_normal((8, 2, 5, 5)) * 1.5 + 0.7
        out.append(({"mode": mode}, arrays))
    return out


_RECAL_BODY = _BUILD_MODEL + r'''
def _coursekit_body(case, T, A):
    from torch.nn.modules.batchnorm import _BatchNorm
    model = _coursekit_load(T)
    model.train(case["mode"] == "train")
    loader = [T[f"batch{i}"] for i in range(4)]
    ret = recalibrate(model, loader)
    m = model if ret is None else ret
    meta = {"flags_after": [mod.training for mod in m.modules()],
            "momenta": [mod.momentum for mod in m.modules() if isinstance(mod, _BatchNorm)]}
    return {"sd_" + k: v for k, v in m.state_dict().items()}, meta
'''


def _recal_compare(case, inp, out, meta):
    from torch.optim.swa_utils import update_bn

    model = _load(inp)
    model.train(case["mode"] == "train")
    flags = [m.training for m in model.modules()]
    momenta = [m.momentum for m in model.modules() if hasattr(m, "running_mean")]
    update_bn([_t(inp[f"batch{i}"]) for i in range(4)], model)
    bn = set(_bn_keys(model))
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k in bn and ("running" in k):
            m = close(k, out["sd_" + k], v.numpy())
            if m:
                return m + " (expected the cumulative average over the loader's batches)"
        elif close(k, out["sd_" + k], inp["sd_" + k], atol=0, rtol=0):
            return f"{k} changed: recalibrate must leave weights untouched"
    if meta["flags_after"] != flags:
        return f"the model's mode changed (was {case['mode']}): restore it"
    if meta["momenta"] != momenta:
        return "the BN momenta were not restored"
    return None


# ------------------------------------------------------------------------------------ lesson 07
_CONV_SPECS = [
    {"dim": 2, "in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1,
     "groups": 1, "bias": True, "padding_mode": "zeros"},
    {"dim": 2, "in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 1, "padding": 2, "dilation": 2,
     "groups": 2, "bias": False, "padding_mode": "reflect"},
    {"dim": 1, "in_channels": 3, "out_channels": 5, "kernel_size": 3, "stride": 1, "padding": 1, "dilation": 1,
     "groups": 1, "bias": True, "padding_mode": "circular"},
    {"dim": 3, "in_channels": 2, "out_channels": 4, "kernel_size": 2, "stride": 1, "padding": 1, "dilation": 1,
     "groups": 1, "bias": False, "padding_mode": "replicate"},
]


def _bn_arrays(rng, c, prefix="bn_"):
    import numpy as np

    return {prefix + "weight": rng.uniform(0.5, 2, c), prefix + "bias": rng.uniform(-1, 1, c),
            prefix + "running_mean": rng.uniform(-1, 1, c), prefix + "running_var": rng.uniform(0.5, 2, c),
            prefix + "num_batches_tracked": np.array(3, dtype=np.int64)}


def _conv_cases(rng):
    out = []
    for spec in _CONV_SPECS:
        conv = _make_conv(spec)
        arrays = {"conv_" + k: rng.uniform(-0.5, 0.5, v.shape) for k, v in conv.state_dict().items()}
        arrays.update(_bn_arrays(rng, spec["out_channels"]))
        arrays["x"] = rng.standard_normal((2, spec["in_channels"]) + (7,) * spec["dim"])
        out.append((spec, arrays))
    return out


_CONV_FACTORY = r'''
def _coursekit_conv(spec):
    from torch import nn
    kw = {k: v for k, v in spec.items() if k != "dim"}
    return [nn.Conv1d, nn.Conv2d, nn.Conv3d][spec["dim"] - 1](**kw).double()
'''


def _make_conv(spec):
    ns: dict = {}
    exec(_CONV_FACTORY, ns)
    return ns["_coursekit_conv"](spec)


_FOLD_IO = r'''
def _coursekit_fold_meta(f, conv):
    from torch import nn
    meta = {"type": type(f).__name__, "want_type": type(conv).__name__}
    for a in ("stride", "padding", "dilation", "groups", "padding_mode"):
        meta[a] = str(getattr(f, a, None)) if hasattr(conv, a) else None
        meta["want_" + a] = str(getattr(conv, a, None)) if hasattr(conv, a) else None
    return meta

def _coursekit_state(prefix, m):
    return {prefix + k: v.clone() for k, v in m.state_dict().items()}
'''

_CONV_BODY = _CONV_FACTORY + _FOLD_IO + r'''
def _coursekit_body(case, T, A):
    import torch
    from torch import nn
    conv = _coursekit_conv(case)
    conv.load_state_dict({k[5:]: v for k, v in T.items() if k.startswith("conv_")})
    bn = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][case["dim"] - 1](case["out_channels"]).double()
    bn.load_state_dict({k[3:]: v for k, v in T.items() if k.startswith("bn_")})
    conv.eval(), bn.eval()
    f = fold_conv_bn(conv, bn)
    with torch.no_grad():
        y = f(T["x"])
    return {"y": y, **_coursekit_state("conv_after_", conv), **_coursekit_state("bn_after_", bn)}, _coursekit_fold_meta(f, conv)
'''


def _fold_check_common(inp, out, meta):
    for k in inp:
        for side in ("conv_", "linear_", "bn_"):
            if k.startswith(side) and close(k, out[side + "after_" + k[len(side):]], inp[k], atol=0, rtol=0):
                return f"the input module was modified ({k}): fold into a new module"
    if meta["type"] != meta["want_type"]:
        return f"expected a new {meta['want_type']} (got {meta['type']})"
    for a in ("stride", "padding", "dilation", "groups", "padding_mode"):
        if meta.get(a) != meta.get("want_" + a):
            return f"the folded module's {a} is {meta.get(a)} (expected {meta.get('want_' + a)})"
    return None


def _conv_compare(case, inp, out, meta):
    import torch
    from torch import nn

    conv = _make_conv(case)
    conv.load_state_dict({k[5:]: _t(v) for k, v in inp.items() if k.startswith("conv_")})
    bn = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d][case["dim"] - 1](case["out_channels"]).double().eval()
    bn.load_state_dict({k[3:]: _t(v) for k, v in inp.items() if k.startswith("bn_")})
    with torch.no_grad():
        want = bn(conv(_t(inp["x"]))).numpy()
    return _first(_fold_check_common(inp, out, meta), close("output of the folded conv", out["y"], want))


def _lin_cases(rng):
    out = []
    for bias in (True, False):
        arrays = {"linear_weight": rng.uniform(-0.5, 0.5, (4, 5))}
        if bias:
            arrays["linear_bias"] = rng.uniform(-0.5, 0.5, 4)
        arrays.update(_bn_arrays(rng, 4))
        arrays["x"] = rng.standard_normal((6, 5))
        out.append(({"bias": bias}, arrays))
    return out


_LIN_BODY = _FOLD_IO + r'''
def _coursekit_body(case, T, A):
    import torch
    from torch import nn
    lin = nn.Linear(5, 4, bias=case["bias"]).double()
    lin.load_state_dict({k[7:]: v for k, v in T.items() if k.startswith("linear_")})
    bn = nn.BatchNorm1d(4).double()
    bn.load_state_dict({k[3:]: v for k, v in T.items() if k.startswith("bn_")})
    lin.eval(), bn.eval()
    f = fold_linear_bn(lin, bn)
    with torch.no_grad():
        y = f(T["x"])
    return {"y": y, **_coursekit_state("linear_after_", lin), **_coursekit_state("bn_after_", bn)}, _coursekit_fold_meta(f, lin)
'''


def _lin_compare(case, inp, out, meta):
    import torch
    from torch import nn

    lin = nn.Linear(5, 4, bias=case["bias"]).double()
    lin.load_state_dict({k[7:]: _t(v) for k, v in inp.items() if k.startswith("linear_")})
    bn = nn.BatchNorm1d(4).double().eval()
    bn.load_state_dict({k[3:]: _t(v) for k, v in inp.items() if k.startswith("bn_")})
    with torch.no_grad():
        want = bn(lin(_t(inp["x"]))).numpy()
    return _first(_fold_check_common(inp, out, meta), close("output of the folded linear", out["y"], want))


def _fm_cases(rng):
    return [({}, {**_random_state(rng), "x": rng.standard_normal((4, 2, 5, 5))})]


_FM_BODY = _BUILD_MODEL + r'''
def _coursekit_body(case, T, A):
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    model = _coursekit_load(T)
    model.eval()  # folding is only defined for eval-mode BN (PyTorch's fusers refuse train mode too)
    f = fold_model(model)
    with torch.no_grad():
        y = f(T["x"])
    meta = {"bn_left": sum(isinstance(m, _BatchNorm) for m in f.modules()),
            "training": any(m.training for m in f.modules())}
    return {"y": y, **{"sd_" + k: v for k, v in model.state_dict().items()}}, meta
'''


def _fm_compare(case, inp, out, meta):
    import torch

    model = _load(inp).eval()
    with torch.no_grad():
        want = model(_t(inp["x"])).numpy()
    for k in model.state_dict():
        if close(k, out["sd_" + k], inp["sd_" + k], atol=0, rtol=0):
            return f"the original model was modified ({k}): return a new model"
    if meta["bn_left"]:
        return f"{meta['bn_left']} BatchNorm layer(s) left in the folded model (expected nn.Identity in their place)"
    if meta["training"]:
        return "the folded model is not in eval mode"
    return close("output of the folded model", out["y"], want)


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("channel_stats", _cs_cases, _CS_BODY, _cs_compare, NORM_NAMES),
    Probe("batch_norm_train", _bnt_cases, _BNT_BODY, _bnt_compare, NORM_NAMES),
    Probe("update_running_stats", _urs_cases, _URS_BODY, _urs_compare, NORM_NAMES),
    Probe("MyBatchNorm2d", _mybn_cases, _MYBN_BODY, _mybn_compare, NORM_NAMES),
    Probe("bn_process", _bnp_cases, _BNP_BODY, _bnp_compare, NORM_NAMES),
    Probe("batch_norm_backward", _bwd_cases, _BWD_BODY, _bwd_compare, NORM_NAMES | _AUTODIFF),
    Probe("BatchNormFunction", _bwd_cases, _FN_BODY, _fn_compare, NORM_NAMES | _AUTODIFF),
    Probe("layer_norm", _ln_cases, _LN_BODY, _norm_compare("layer_norm"), NORM_NAMES),
    Probe("instance_norm", _in_cases, _IN_BODY, _norm_compare("instance_norm"), NORM_NAMES),
    Probe("group_norm", _gn_cases, _GN_BODY, _norm_compare("group_norm"), NORM_NAMES),
    Probe("freeze_batchnorm", _freeze_cases, _FREEZE_BODY, _freeze_compare),
    Probe("predict", _predict_cases, _PREDICT_BODY, _predict_compare),
    Probe("recalibrate", _recal_cases, _RECAL_BODY, _recal_compare, frozenset({"update_bn", "swa_utils"})),
    Probe("fold_conv_bn", _conv_cases, _CONV_BODY, _conv_compare, _FUSION),
    Probe("fold_linear_bn", _lin_cases, _LIN_BODY, _lin_compare, _FUSION),
    Probe("fold_model", _fm_cases, _FM_BODY, _fm_compare, _FUSION),
)}
