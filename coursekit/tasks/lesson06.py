"""Lesson 06's exercise (BatchNorm pitfalls): ``freeze_batchnorm``, ``predict`` and ``recalibrate``.

Each task defined once (see :mod:`coursekit.tasks._task`); the models are :mod:`coursekit.tasks._models`.
"""

from __future__ import annotations

import numpy as np

from . import _data as D
from . import _models as M
from ._task import Case, Exercise, Mismatch, Task, compare, first

__all__ = ["EXERCISE", "FREEZE_BATCHNORM", "PREDICT", "RECALIBRATE"]

_F32, _F64 = "float32", "float64"
TRAIN_SURVIVES = (
    "model.train() put the BatchNorm layers back into training mode: the freeze must survive it "
    "(model.train() calls train() on every submodule)"
)
_RETURN_MODEL = "return the model"


# ------------------------------------------------------------------------------------ freeze_batchnorm
def _freeze_cases(rng):
    out = [
        Case(
            "flags after model.train(): Dropout trains, BN parameters frozen, the rest trainable",
            {"kind": "conv_dropout", "dtype": _F32, "mode": "train", "flags": True},
            M.random_state(rng, "conv_dropout", _F32),
        )
    ]
    for kind, label, shape, d, mode in (
        ("conv", "Conv2d/BatchNorm2d/BatchNorm1d net", (4, 2, 4, 4), _F32, "train"),
        ("mixed", "BatchNorm3d/BatchNorm1d net", (2, 1, 3, 3, 3), _F64, "eval"),
        ("conv", "Conv2d/BatchNorm2d/BatchNorm1d net", (3, 2, 4, 4), _F64, "train"),
    ):
        arrays = M.random_state(rng, kind, d)
        arrays.update(x0=rng.standard_normal(shape).astype(d), x1=rng.standard_normal(shape).astype(d))
        out.append(
            Case(
                f"{label} frozen in {mode} mode, input {shape} {d}",
                {"kind": kind, "dtype": d, "mode": mode, "flags": False},
                arrays,
            )
        )
    return out


_FREEZE_BODY = r"""
def _coursekit_body(case, T, A, REC):
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    model = _coursekit_load(case["kind"], case["dtype"], T)
    model.train(case["mode"] == "train")
    with REC:
        ret = freeze_batchnorm(model)
    if not isinstance(ret, torch.nn.Module):
        return {}, {"returned": type(ret).__name__}
    m = ret
    bn = {n: type(mod).__name__ for n, mod in m.named_modules() if isinstance(mod, _BatchNorm)}
    meta = {"bn": bn}
    if case["flags"]:
        with REC:
            m.train()
        meta["eval_non_bn"] = [[n or "model", type(mod).__name__] for n, mod in m.named_modules()
                               if not isinstance(mod, _BatchNorm) and not mod.training]
        meta["requires_grad"] = {n: bool(p.requires_grad) for n, p in m.named_parameters()}
        return {}, meta
    out = {}
    for i, toggles in enumerate((("train",), ("eval", "train"))):
        with REC:
            for t in toggles:
                getattr(m, t)()
            y = m(T[f"x{i}"])
        out[f"y{i}"] = y
        out.update({f"state{i}_" + k: v.clone() for k, v in m.state_dict().items() if "running" in k})
        if isinstance(y, torch.Tensor) and y.requires_grad:
            with REC:
                y.sum().backward()
        meta[f"bn_grad{i}"] = [n for n, mod in m.named_modules() if isinstance(mod, _BatchNorm) and mod.weight is not None
                               and mod.weight.grad is not None and bool(mod.weight.grad.abs().sum() > 0)]
    return out, meta
"""


def _layer_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _freeze_judge(params, inputs, out, meta):
    import torch

    if meta.get("returned"):
        return Mismatch(f"freeze_batchnorm returned a {meta['returned']}, expected the model (an nn.Module)", hint=_RETURN_MODEL)
    bn = meta["bn"]
    if params["flags"]:
        if meta["eval_non_bn"]:
            name, typ = meta["eval_non_bn"][0]
            return Mismatch(
                f"layer {name} ({typ}) is in eval mode after model.train()",
                hint="freeze only the BatchNorm layers: the others (e.g. Dropout) must follow model.train()",
            )
        rgs = meta["requires_grad"]
        unfrozen = sorted({bn[_layer_of(n)] for n, rg in rgs.items() if _layer_of(n) in bn and rg})
        frozen = sorted({bn[_layer_of(n)] for n, rg in rgs.items() if _layer_of(n) in bn and not rg} - set(unfrozen))
        if unfrozen and frozen:
            name = next(n for n, rg in rgs.items() if _layer_of(n) in bn and rg)
            return Mismatch(
                f"{name} of BatchNorm layer {_layer_of(name)} ({bn[_layer_of(name)]}) still requires grad",
                hint=f"{', '.join(unfrozen)} layers were not frozen (only {', '.join(frozen)} were): "
                "freeze every BatchNorm type, e.g. isinstance(m, nn.modules.batchnorm._BatchNorm)",
            )
        for name, rg in rgs.items():
            if _layer_of(name) in bn and rg:
                return Mismatch(
                    f"{name} of BatchNorm layer {_layer_of(name)} ({bn[_layer_of(name)]}) still requires grad",
                    hint="freeze the affine parameters too: requires_grad False for BN weight and bias",
                )
            if _layer_of(name) not in bn and not rg:
                return Mismatch(
                    f"parameter {name} no longer requires grad",
                    hint="freeze only the BatchNorm layers' parameters; the rest keeps training",
                )
        return None
    reference = M.load(params["kind"], inputs).eval()
    dt = params["dtype"]
    for i, when in enumerate(("after model.train()", "after model.eval() then model.train()")):
        for k, v in inputs.items():
            if (
                k.startswith("sd_")
                and "running" in k
                and f"state{i}_{k[3:]}" in out
                and not np.array_equal(out[f"state{i}_{k[3:]}"], v)
            ):
                layer = _layer_of(k[3:])
                unfrozen = sorted(
                    {
                        bn.get(_layer_of(kk[3:]), "?")
                        for kk in inputs
                        if kk.startswith("sd_")
                        and "running" in kk
                        and f"state{i}_{kk[3:]}" in out
                        and not np.array_equal(out[f"state{i}_{kk[3:]}"], inputs[kk])
                    }
                )
                frozen_types = sorted(set(bn.values()) - set(unfrozen))
                if frozen_types:
                    return Mismatch(
                        f"{k[3:]} of layer {layer} ({bn.get(layer, '?')}) changed during a forward {when}",
                        hint=f"{', '.join(unfrozen)} layers were not frozen (only {', '.join(frozen_types)} were): "
                        "freeze every BatchNorm type, e.g. isinstance(m, nn.modules.batchnorm._BatchNorm)",
                    )
                return Mismatch(
                    f"{k[3:]} of layer {layer} ({bn.get(layer, '?')}) changed during a forward {when}", hint=TRAIN_SURVIVES
                )
        with torch.no_grad():
            want = reference(D.t(inputs[f"x{i}"])).numpy()
        m = compare(
            f"output {when}",
            out.get(f"y{i}"),
            want,
            meta,
            f"y{i}",
            dtype=dt,
            hint="a frozen BatchNorm normalizes with its running statistics (eval behaviour), not the batch's",
        )
        if m:
            return m
        if meta.get(f"bn_grad{i}"):
            layer = meta[f"bn_grad{i}"][0]
            return Mismatch(
                f"the weight of BatchNorm layer {layer} ({bn.get(layer, '?')}) received a gradient",
                hint="freeze the affine parameters too: requires_grad False for BN weight and bias",
            )
    return None


FREEZE_BATCHNORM = Task(
    "06", "freeze_batchnorm", "freeze_batchnorm(model) -> model", _freeze_cases, M.MODELS + _FREEZE_BODY, _freeze_judge
)


# ------------------------------------------------------------------------------------ predict
def _predict_cases(rng):
    out = []
    for kind, shape, d, mode in (
        ("mlp", (6, 5), _F32, "train"),
        ("mlp", (6, 5), _F64, "eval"),
        ("mlp", (6, 5), _F32, "mixed"),
        ("mlp", (1, 5), _F32, "train"),
        ("conv_dropout", (2, 2, 4, 4), _F64, "mixed"),
    ):
        label = "MLP with BatchNorm1d and Dropout" if kind == "mlp" else "CNN with BatchNorm2d/1d and Dropout"
        out.append(
            Case(
                f"{label}, input {shape} {d}, model in {mode} mode",
                {"kind": kind, "dtype": d, "mode": mode, "raises": False},
                {**M.random_state(rng, kind, d), "x": rng.standard_normal(shape).astype(d)},
            )
        )
    out.append(
        Case(
            "MLP in mixed mode, an input of the wrong size (the forward raises)",
            {"kind": "mlp", "dtype": _F32, "mode": "mixed", "raises": True},
            {**M.random_state(rng, "mlp", _F32), "x": rng.standard_normal((4, 7)).astype(_F32)},
        )
    )
    return out


_PREDICT_BODY = r"""
def _coursekit_body(case, T, A, REC):
    from torch.nn.modules.batchnorm import _BatchNorm
    model = _coursekit_load(case["kind"], case["dtype"], T)
    model.train(case["mode"] != "eval")
    if case["mode"] == "mixed":
        next(m for m in model.modules() if isinstance(m, _BatchNorm)).eval()
    flags = [m.training for m in model.modules()]
    names = [n or "model" for n, _ in model.named_modules()]
    x = T["x"]
    meta = {"flags_before": flags, "names": names}
    if case["raises"]:
        try:
            with REC:
                predict(model, x)
        except Exception:  # expected: the shape error propagates (or is handled); the flags must be back
            pass
        meta["flags_after"] = [m.training for m in model.modules()]
        return {}, meta
    with REC:
        y = predict(model, x)
    meta["flags_after"] = [m.training for m in model.modules()]
    return {"y": y, "x_after": x, **{"sd_" + k: v for k, v in model.state_dict().items()}}, meta
"""


def _predict_judge(params, inputs, out, meta):
    import torch

    from ._task import unchanged

    def flags():
        if meta["flags_after"] == meta["flags_before"]:
            return None
        names = [n for n, a, b in zip(meta["names"], meta["flags_before"], meta["flags_after"]) if a != b]
        if params["raises"]:
            return Mismatch(
                "training flags not restored after a forward that raised",
                hint="restore the flags in a finally: block, so they come back even if the forward raises",
            )
        return Mismatch(
            f"training flags changed for {', '.join(names)}",
            hint="restore each submodule's OWN previous flag (a model can be partly in eval, e.g. a frozen BN), also if "
                 "the forward raises",
        )

    if params["raises"]:
        return flags()
    model = M.load(params["kind"], inputs).eval()
    with torch.no_grad():
        want = model(D.t(inputs["x"])).numpy()
    changed = next((k for k in inputs if k.startswith("sd_") and "running" in k and not np.array_equal(out[k], inputs[k])), None)
    return first(
        unchanged(inputs, out, [("x_after", "x")]),
        lambda: (
            Mismatch(
                "the BatchNorm running statistics changed",
                hint="predict changed the running statistics: the forward ran in training mode (call eval first)",
            )
            if changed
            else None
        ),
        lambda: compare(
            "output",
            out.get("y"),
            want,
            meta,
            "y",
            dtype=params["dtype"],
            hint="predict must run the model in eval mode (running statistics, no dropout)",
        ),
        lambda: (
            Mismatch(
                "the output requires grad", hint="run the forward without autograd (torch.no_grad() or torch.inference_mode())"
            )
            if meta["_kinds"]["y"].get("requires_grad")
            else None
        ),
        flags,
    )


PREDICT = Task("06", "predict", "predict(model, x) -> y", _predict_cases, M.MODELS + _PREDICT_BODY, _predict_judge)


# ------------------------------------------------------------------------------------ recalibrate
def _recal_cases(rng):
    out = []
    for d, sizes, mode, loader in (
        (_F32, (4, 4, 4), "eval", "list"),
        (_F64, (3, 3, 3, 3), "train", "DataLoader"),
        (_F64, (5, 3, 2), "eval", "list"),
    ):
        arrays = M.random_state(rng, "conv", d)
        for k in list(arrays):
            if k.endswith("running_mean"):
                arrays[k] = arrays[k] + 3
            elif k.endswith("running_var"):
                arrays[k] = arrays[k] * 5
        for i, n in enumerate(sizes):
            arrays[f"batch{i}"] = (rng.standard_normal((n, 2, 4, 4)) * 1.5 + 0.7).astype(d)
        out.append(
            Case(
                f"model in {mode} mode, {d}, {loader} of batch sizes {list(sizes)}",
                {"dtype": d, "mode": mode, "loader": loader, "n": len(sizes)},
                arrays,
            )
        )
    return out


_RECAL_BODY = r"""
def _coursekit_body(case, T, A, REC):
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    model = _coursekit_load("conv", case["dtype"], T)
    model.train(case["mode"] == "train")
    xs = [T[f"batch{i}"] for i in range(case["n"])]
    if case["loader"] == "DataLoader":
        ds = torch.utils.data.TensorDataset(torch.cat(xs), torch.zeros(sum(len(x) for x in xs)))
        loader = torch.utils.data.DataLoader(ds, batch_size=len(xs[0]), shuffle=False)
    else:
        loader = xs
    with REC:
        ret = recalibrate(model, loader)
    if not isinstance(ret, torch.nn.Module):
        return {}, {"returned": type(ret).__name__}
    bns = [m for m in ret.modules() if isinstance(m, _BatchNorm)]
    meta = {"training": ret.training, "momenta": [m.momentum for m in bns], "n_bn": len(bns)}
    return {"sd_" + k: v for k, v in ret.state_dict().items()}, meta
"""


def _recal_judge(params, inputs, out, meta):
    import copy

    import torch
    from torch.optim.swa_utils import update_bn

    if meta.get("returned"):
        return Mismatch(f"recalibrate returned a {meta['returned']}, expected the model (an nn.Module)", hint=_RETURN_MODEL)
    model = M.load("conv", inputs)
    model.train(params["mode"] == "train")
    xs = [D.t(inputs[f"batch{i}"]) for i in range(params["n"])]
    if params["loader"] == "DataLoader":
        xs = list(torch.cat(xs).split(len(xs[0])))
    momenta = [m.momentum for m in model.modules() if hasattr(m, "running_mean")]
    expected = copy.deepcopy(model)
    update_bn(xs, expected)

    def estimate(reset, momentum):
        m = copy.deepcopy(model).train()
        for bn in m.modules():
            if hasattr(bn, "running_mean"):
                if reset:
                    bn.reset_running_stats()
                bn.momentum = momentum
        with torch.no_grad():
            for b in xs:
                m(b)
        return m.state_dict()

    if meta["n_bn"] != len(momenta):
        return Mismatch(
            f"the returned model has {meta['n_bn']} BatchNorm layers, expected {len(momenta)}",
            hint="return the model you were given, with re-estimated statistics",
        )
    for k, v in expected.state_dict().items():
        if "running" not in k:
            continue
        variants = [
            (
                "reset the running statistics first: the estimate still includes the old statistics",
                lambda k=k: estimate(False, None)[k].numpy(),
            ),
            (
                "use the cumulative average over the batches (momentum=None), not the exponential moving average",
                lambda k=k: estimate(True, 0.1)[k].numpy(),
            ),
        ]
        m = compare(
            k,
            out.get("sd_" + k),
            v.numpy(),
            dtype=params["dtype"],
            variants=variants,
            hint="re-estimate: reset the statistics, then a training-mode forward per batch with momentum=None, no gradients",
        )
        if m:
            return m
    for k in model.state_dict():
        if "running" not in k and "num_batches" not in k and not np.array_equal(out["sd_" + k], inputs["sd_" + k]):
            return Mismatch(
                f"parameter {k} changed",
                hint="recalibrate only re-estimates statistics: run the forwards under torch.no_grad() and never step an "
                     "optimizer",
            )
    if meta["momenta"] != momenta:
        return Mismatch(
            f"BN momenta are {meta['momenta']}, expected {momenta}", hint="restore each BN layer's momentum after re-estimating"
        )
    if meta["training"] != (params["mode"] == "train"):
        return Mismatch(
            f"the model is in {'train' if meta['training'] else 'eval'} mode, it was in {params['mode']} mode",
            hint="restore the model's previous mode at the end",
        )
    return None


RECALIBRATE = Task(
    "06",
    "recalibrate",
    "recalibrate(model, loader) -> model",
    _recal_cases,
    M.MODELS + _RECAL_BODY,
    _recal_judge,
    watch=("torch.optim.swa_utils:update_bn",),
    forbidden_names=frozenset({"update_bn", "swa_utils"}),
)

EXERCISE = Exercise("06", "06_pitfalls_exercises", (FREEZE_BATCHNORM, PREDICT, RECALIBRATE))
