"""Lesson 03's exercise (running statistics): ``update_running_stats``, ``MyBatchNorm2d`` and ``bn_process``.

Each task defined once (see :mod:`coursekit.tasks._task`).
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side import lesson03 as kernel

from . import _data as data
from ._norm import AXES_HINT, bn_wrong_axes, norm, norm_variants
from ._task import NORM_NAMES, NORM_OPS, REFERENCE_NORM_WATCH, Case, Exercise, Mismatch, Task, compare, first_mismatch, unchanged

SAVED = kernel.SAVED_STATE_PREFIX

__all__ = ["EXERCISE", "UPDATE_RUNNING_STATS", "MY_BATCH_NORM_2D", "BN_PROCESS"]

_F32, _F64 = "float32", "float64"
REVERSED_HINT = (
    "momentum convention reversed: in PyTorch momentum weights the NEW batch, "
    "new = (1 - momentum) * old + momentum * batch (Keras/TF's momentum weights the old value)"
)
RUNNING_VAR_HINT = "running_var tracks the UNBIASED batch variance (divide by n - 1), although the biased one normalizes"


def _update(rm, rv, x, factor, unbiased=True):
    dims = data.dims_bn(x.ndim)
    return (1 - factor) * rm + factor * x.mean(axis=dims), (1 - factor) * rv + factor * x.var(
        axis=dims, ddof=1 if unbiased else 0
    )


# ------------------------------------------------------------------------------------ update_running_stats
def _update_running_stats_cases(rng):
    specs = [
        ((4, 3), _F32, {}),
        ((2, 3, 4, 5), _F64, {"momentum": 0.3}),
        ((2, 3, 5), _F32, {"momentum": None, "num_batches_tracked": 0}),
        ((2, 2, 3, 2, 3), _F64, {"momentum": None, "num_batches_tracked": 4}),
        ((2, 3, 4, 4), _F64, {"momentum": 0.25, "num_batches_tracked": 7}),
        ((8, 3), _F64, {"momentum": None, "num_batches_tracked": 1}),
    ]
    return [
        Case(
            data.desc(s, d, **kw),
            {"kwargs": kw},
            {
                "running_mean": rng.standard_normal(s[1]).astype(d),
                "running_var": rng.uniform(0.5, 1.5, s[1]).astype(d),
                "x": data.x(rng, s, d),
            },
        )
        for s, d, kw in specs
    ]



def _update_running_stats_judge(params, inputs, out, meta):
    if meta.get("returned"):
        return Mismatch(
            f"returned {meta['returned']}, expected a tuple (new_running_mean, new_running_var)",
            hint="return the tuple (new_running_mean, new_running_var)",
        )
    kw = params["kwargs"]
    rm, rv, x = (inputs[k].astype(np.float64) for k in ("running_mean", "running_var", "x"))
    dt = inputs["x"].dtype
    m = kw.get("momentum", 0.1)
    n = kw.get("num_batches_tracked", 0)
    factor = 1.0 / (n + 1) if m is None else m
    em, ev = _update(rm, rv, x, factor)
    if m is None:
        variants = [
            (
                "num_batches_tracked counts the batches BEFORE x: the cumulative factor is 1 / (num_batches_tracked + 1)",
                lambda: _update(rm, rv, x, 1.0 / n if n else 1.0),
            ),
            (
                "momentum=None means the cumulative average (factor 1 / (num_batches_tracked + 1)), not the default momentum",
                lambda: _update(rm, rv, x, 0.1),
            ),
        ]
    else:
        variants = [(REVERSED_HINT, lambda: _update(rm, rv, x, 1 - factor))]
    return first_mismatch(
        unchanged(
            inputs,
            out,
            [("rm_after", "running_mean"), ("rv_after", "running_var"), ("x_after", "x")],
            hint="do not update running_mean/running_var (or x) in place: return new tensors",
        ),
        lambda: compare(
            "new running_mean",
            out.get("new_mean"),
            em,
            meta,
            "new_mean",
            dtype=dt,
            shape_hint=AXES_HINT,
            variants=[(h, lambda f=f: f()[0]) for h, f in variants],
        ),
        lambda: compare(
            "new running_var",
            out.get("new_var"),
            ev,
            meta,
            "new_var",
            dtype=dt,
            shape_hint=AXES_HINT,
            variants=[(h, lambda f=f: f()[1]) for h, f in variants]
            + [(RUNNING_VAR_HINT, lambda: _update(rm, rv, x, factor, unbiased=False)[1])],
        ),
    )


UPDATE_RUNNING_STATS = Task(
    "03",
    "update_running_stats",
    "update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0) -> (mean, var)",
    _update_running_stats_cases,
    kernel.run_update_running_stats,
    _update_running_stats_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
)


# ------------------------------------------------------------------------------------ MyBatchNorm2d
def _bn_state(rng, c, dtype, nbt=5):
    return {
        SAVED + "weight": rng.uniform(0.5, 1.5, c).astype(dtype),
        SAVED + "bias": rng.standard_normal(c).astype(dtype),
        SAVED + "running_mean": rng.standard_normal(c).astype(dtype),
        SAVED + "running_var": rng.uniform(0.5, 1.5, c).astype(dtype),
        SAVED + "num_batches_tracked": np.array(nbt, dtype=np.int64),
    }


def _my_batch_norm_2d_cases(rng):
    out = [
        Case(
            "state_dict keys, initial values, load to and from nn.BatchNorm2d",
            {"scenario": "state", "C": 3, "kwargs": {}},
            _bn_state(rng, 3, _F32),
        )
    ]
    for s, d, mom, eps in (((2, 3, 4, 5), _F32, 0.1, 1e-5), ((2, 4, 3, 3), _F64, None, 0.1)):
        arrays = _bn_state(rng, s[1], d, nbt=2)
        arrays.update({f"x{i}": data.x(rng, s, d) for i in range(3)})
        out.append(
            Case(
                data.desc(s, d, mode="train", momentum=mom, eps=eps),
                {"scenario": "train", "C": s[1], "kwargs": {"eps": eps, "momentum": mom}},
                arrays,
            )
        )
    s = (2, 3, 4, 5)
    out.append(
        Case(
            data.desc(s, _F64, mode="eval"),
            {"scenario": "eval", "C": 3, "kwargs": {}},
            {**_bn_state(rng, 3, _F64), "x0": data.x(rng, s, _F64)},
        )
    )
    s = (2, 3, 3, 4)
    out.append(
        Case(
            data.desc(s, _F32, affine=False, track_running_stats=False),
            {"scenario": "plain", "C": 3, "kwargs": {"affine": False, "track_running_stats": False}},
            {"x0": data.x(rng, s, _F32)},
        )
    )
    s = (2, 3, 4, 4)
    out.append(
        Case(
            data.desc(s, _F64, gradients="autograd"),
            {"scenario": "grad", "C": 3, "kwargs": {}},
            {**_bn_state(rng, 3, _F64), "x0": data.x(rng, s, _F64), "dy": rng.standard_normal(s)},
        )
    )
    return out



def _ref_bn(params, inputs, dtype="float64"):
    import torch
    from torch import nn

    ref = nn.BatchNorm2d(params["C"], **params["kwargs"]).double()
    load = {k[len(SAVED):]: torch.from_numpy(v.copy()) for k, v in inputs.items() if k.startswith(SAVED)}
    if load:
        ref.load_state_dict({k: (v if k == "num_batches_tracked" else v.double()) for k, v in load.items()})
    return ref


def _train_step(i, x, ref, out, meta, dt, mom, w, b):
    """Feed batch ``i`` to the reference; the Mismatch of the learner's output and statistics after it."""
    import torch

    prev_m, prev_v, prev_n = ref.running_mean.numpy().copy(), ref.running_var.numpy().copy(), int(ref.num_batches_tracked)
    with torch.no_grad():
        want = ref(data.t(x)).numpy()
    factor = 1.0 / (prev_n + 1) if mom is None else mom
    if mom is None:
        variants = [
            (
                "momentum=None: cumulative average, factor 1 / num_batches_tracked after counting this batch",
                lambda: _update(prev_m, prev_v, x.astype(np.float64), 0.1),
            )
        ]
    else:
        variants = [(REVERSED_HINT, lambda: _update(prev_m, prev_v, x.astype(np.float64), 1 - factor))]
    return first_mismatch(
        lambda: compare(
            f"output of batch {i + 1}",
            out.get(f"y{i}"),
            want,
            meta,
            f"y{i}",
            dtype=dt,
            variants=norm_variants(x.astype(np.float64), data.dims_bn(4), w, b, ref.eps, bn_wrong_axes(4)),
            hint="in training mode normalize with the batch's mean and biased variance",
        ),
        lambda: compare(
            f"running_mean after batch {i + 1}",
            out.get(f"step{i}_running_mean"),
            ref.running_mean.numpy(),
            dtype=dt,
            variants=[(h, lambda f=f: f()[0]) for h, f in variants],
            hint="update running_mean in training mode: (1 - momentum) * old + momentum * batch mean",
        ),
        lambda: compare(
            f"running_var after batch {i + 1}",
            out.get(f"step{i}_running_var"),
            ref.running_var.numpy(),
            dtype=dt,
            variants=[(h, lambda f=f: f()[1]) for h, f in variants]
            + [(RUNNING_VAR_HINT, lambda: _update(prev_m, prev_v, x.astype(np.float64), factor, unbiased=False)[1])],
        ),
        lambda: (
            None
            if int(out[f"step{i}_num_batches_tracked"]) == int(ref.num_batches_tracked)
            else Mismatch(
                f"num_batches_tracked is {int(out[f'step{i}_num_batches_tracked'])}, expected {int(ref.num_batches_tracked)}",
                hint="add 1 to num_batches_tracked (in place) at each training-mode forward",
            )
        ),
    )


def _judge_state(params, inputs, out, meta, rsd):
    """Scenario "state": parameters vs buffers, dtypes and shapes, initial values, load_state_dict."""
    if meta["params"] != ["bias", "weight"]:
        return Mismatch(
            f"parameters {meta['params']}, expected ['bias', 'weight']",
            hint="only weight and bias are nn.Parameter; running statistics are buffers (register_buffer)",
        )
    for k, v in rsd.items():
        want = [str(v.dtype).replace("torch.", ""), list(v.shape)]
        if meta["kinds"][k] != want:
            return Mismatch(
                f"{k} is {meta['kinds'][k]}, expected {want}",
                hint="num_batches_tracked is a 0-dim torch.long tensor; the others have shape (C,)",
            )
        m = compare(
            f"initial {k}",
            out.get("init_" + k),
            v.numpy(),
            dtype=v.dtype if v.is_floating_point() else None,
            hint="initial values: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0",
        )
        if m:
            return m
    for k in rsd:
        m = compare(
            f"{k} after load_state_dict",
            out.get("loaded_" + k),
            inputs[SAVED + k],
            hint="load_state_dict must fill weight, bias and the running buffers",
        )
        if m:
            return m
    return None


def _judge_stateless(params, inputs, out, meta, rsd):
    """Scenario "plain" (affine=False, track_running_stats=False): batch statistics in both modes."""
    x0 = inputs["x0"]
    want = norm(x0, data.dims_bn(4), eps=params["kwargs"].get("eps", 1e-5))
    hint = "without running statistics, batch statistics normalize in both modes"
    return first_mismatch(
        lambda: compare("train-mode output", out.get("y_train"), want, meta, "y_train", dtype=x0.dtype, hint=hint),
        lambda: compare("eval-mode output", out.get("y_eval"), want, meta, "y_eval", dtype=x0.dtype, hint=hint),
    )


def _judge_eval(params, inputs, out, meta, rsd):
    """Scenario "eval": the running statistics normalize, and nothing in the state changes."""
    import torch

    x0 = inputs["x0"]
    ref = _ref_bn(params, inputs).eval()
    with torch.no_grad():
        want = ref(data.t(x0)).numpy()
    w, b = ref.weight.detach().numpy(), ref.bias.detach().numpy()
    batch_stats = ("in eval mode normalize with running_mean and running_var, not the batch statistics",
                   lambda: norm(x0, data.dims_bn(4), w, b, ref.eps))
    state_changed = Mismatch(
        "the module's state changed in eval mode",
        hint="in eval mode the running statistics (and num_batches_tracked) must not change",
    )
    return first_mismatch(
        lambda: compare(
            "output", out.get("y0"), want, meta, "y0", dtype=x0.dtype, variants=[batch_stats],
            hint="eval mode: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias",
        ),
        lambda: next(
            (state_changed for k in ("running_mean", "running_var", "num_batches_tracked")
             if not np.array_equal(out["after_" + k], inputs[SAVED + k])),
            None,
        ),
    )


def _judge_gradients(params, inputs, out, meta, rsd):
    """Scenario "grad": autograd through the learner's training-mode forward matches the reference's."""
    x0, dt = inputs["x0"], inputs["x0"].dtype
    ref = _ref_bn(params, inputs).train()
    xr = data.t(x0).requires_grad_(True)
    y = ref(xr)
    y.backward(data.t(inputs["dy"]))
    return first_mismatch(
        lambda: compare("output", out.get("y0"), y.detach().numpy(), meta, "y0", dtype=dt),
        lambda: (
            Mismatch("the output does not require grad", hint="compute the forward with torch operations on x")
            if "x_grad" not in out and "x_grad" not in meta["_kinds"]
            else None
        ),
        lambda: compare(
            "x.grad", out.get("x_grad"), xr.grad.numpy(), meta, "x_grad", dtype=dt,
            hint="do not detach the batch statistics: gradients flow through them",
        ),
        lambda: compare("weight.grad", out.get("weight_grad"), ref.weight.grad.numpy(), meta, "weight_grad", dtype=dt),
        lambda: compare("bias.grad", out.get("bias_grad"), ref.bias.grad.numpy(), meta, "bias_grad", dtype=dt),
    )


def _judge_training(params, inputs, out, meta, rsd):
    """Scenario "train": three batches, the output and the running statistics after each."""
    ref = _ref_bn(params, inputs).train()
    mom = params["kwargs"].get("momentum", 0.1)
    w, b = ref.weight.detach().numpy().copy(), ref.bias.detach().numpy().copy()
    for i in range(3):
        m = _train_step(i, inputs[f"x{i}"], ref, out, meta, inputs["x0"].dtype, mom, w, b)
        if m:
            return m
    return None


# scenario of a case (``kernel.run_my_batch_norm_2d`` runs the same one) -> its judge
_SCENARIO_JUDGES = {
    "state": _judge_state,
    "plain": _judge_stateless,
    "eval": _judge_eval,
    "grad": _judge_gradients,
    "train": _judge_training,
}


def _state_dict_keys_mismatch(scenario, keys, expected):
    if scenario == "plain":
        return Mismatch(
            f"state_dict keys {keys}, expected none",
            hint="affine=False: no weight/bias; track_running_stats=False: no running buffers (register them as None)",
        )
    return Mismatch(
        f"state_dict keys {keys}, expected {expected}",
        hint="register weight and bias as nn.Parameter and running_mean, running_var, num_batches_tracked as buffers, "
             "with these names",
    )


def _my_batch_norm_2d_judge(params, inputs, out, meta):
    from torch import nn

    if meta.get("not_module"):
        return Mismatch("MyBatchNorm2d is not an nn.Module", hint="write class MyBatchNorm2d(nn.Module)")
    if meta.get("subclasses"):
        return Mismatch(
            "MyBatchNorm2d subclasses PyTorch's batch norm",
            hint="do not subclass nn.BatchNorm2d: the task is to re-implement it from nn.Module",
        )
    if meta.get("instance"):
        return Mismatch(f"MyBatchNorm2d(...) gave a {meta['instance']}", hint="write class MyBatchNorm2d(nn.Module)")
    rsd = nn.BatchNorm2d(params["C"], **params["kwargs"]).state_dict()
    if meta["keys"] != sorted(rsd):
        return _state_dict_keys_mismatch(params["scenario"], meta["keys"], sorted(rsd))
    return _SCENARIO_JUDGES[params["scenario"]](params, inputs, out, meta, rsd)


MY_BATCH_NORM_2D = Task(
    "03",
    "MyBatchNorm2d",
    "a class MyBatchNorm2d(nn.Module)",
    _my_batch_norm_2d_cases,
    kernel.run_my_batch_norm_2d,
    _my_batch_norm_2d_judge,
    kind="class",
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
)


# ------------------------------------------------------------------------------------ bn_process
def _bn_process_cases(rng):
    specs = [
        ((2, 2, 2, 2), _F32, {}),
        ((4, 3, 5, 5), _F64, {"momentum": 0.3}),
        ((2, 3, 4, 4), _F64, {"eps": 0.1}),
        ((3, 2, 3, 3), _F32, {"momentum": 0.5, "eps": 1e-3}),
    ]
    return [
        Case(
            data.desc(s, "numpy " + d, **kw),
            {"kwargs": kw},
            {
                "feature": data.x(rng, s, d),
                "mean": rng.standard_normal(s[1]).astype(d),
                "var": rng.uniform(0.5, 1.5, s[1]).astype(d),
            },
        )
        for s, d, kw in specs
    ]



def _bn_process_judge(params, inputs, out, meta):
    if meta.get("returned"):
        return Mismatch(
            f"returned {meta['returned']}, expected a tuple (out, new_mean, new_var)",
            hint="return the tuple (out, new_mean, new_var)",
        )
    kw = params["kwargs"]
    m, eps = kw.get("momentum", 0.1), kw.get("eps", 1e-5)
    x, rm, rv = (inputs[k].astype(np.float64) for k in ("feature", "mean", "var"))
    dims = data.dims_bn(4)
    tol = 1e-10 if inputs["feature"].dtype == np.float64 else 1e-5
    em, ev = _update(rm, rv, x, m)
    arr = dict(value_type="ndarray", tol=tol, dtype=False)
    bad_dtype = next((k for k in ("out", "new_mean", "new_var") if out.get(k) is not None and out[k].dtype.kind != "f"), None)
    return first_mismatch(
        unchanged(
            inputs,
            out,
            [("feature_after", "feature"), ("mean_after", "mean"), ("var_after", "var")],
            hint="bn_process overwrote its input (the seed's bug): work on copies and return new arrays",
        ),
        lambda: Mismatch(f"{bad_dtype} holds {out[bad_dtype].dtype} values", hint="return float arrays") if bad_dtype else None,
        lambda: compare(
            "out",
            out.get("out"),
            norm(x, dims, eps=eps),
            meta,
            "out",
            **arr,
            shape_hint="out has the feature's shape (N, C, H, W)",
            variants=[
                (
                    "normalize with the population variance (numpy's default ddof=0); ddof=1 (torch's default for "
                    ".std/.var) is for the running var",
                    lambda: norm(x, dims, eps=eps, unbiased=True),
                ),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: norm(x, dims, eps=eps, eps_outside=True)),
            ],
        ),
        lambda: compare(
            "new_mean",
            out.get("new_mean"),
            em,
            meta,
            "new_mean",
            **arr,
            variants=[(REVERSED_HINT, lambda: _update(rm, rv, x, 1 - m)[0])],
        ),
        lambda: compare(
            "new_var",
            out.get("new_var"),
            ev,
            meta,
            "new_var",
            **arr,
            variants=[
                (REVERSED_HINT, lambda: _update(rm, rv, x, 1 - m)[1]),
                (
                    "the running var uses the sample variance (ddof=1), torch's unbiased estimate",
                    lambda: _update(rm, rv, x, m, unbiased=False)[1],
                ),
            ],
        ),
    )


BN_PROCESS = Task(
    "03",
    "bn_process",
    "bn_process(feature, mean, var, momentum=0.1, eps=1e-5) -> (out, new_mean, new_var)",
    _bn_process_cases,
    kernel.run_bn_process,
    _bn_process_judge,
    forbidden_ops=NORM_OPS,
    watch=REFERENCE_NORM_WATCH,
    forbidden_names=NORM_NAMES,
)

EXERCISE = Exercise("03", "03_running_stats_exercises", (UPDATE_RUNNING_STATS, MY_BATCH_NORM_2D, BN_PROCESS))
