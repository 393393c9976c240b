"""Lesson 06's exercise (BatchNorm pitfalls): ``freeze_batchnorm``, ``predict`` and ``recalibrate``.

Each task defined once (see :mod:`coursekit.tasks._task`); the bodies are :mod:`coursekit.kernel_side.lesson06`,
the models :mod:`coursekit.kernel_side.models`.
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side import lesson06 as kernel

from . import _data as data
from . import _models as models
from ._task import UPDATE_BN_WATCH, Case, Exercise, Mismatch, Task, compare, first_mismatch

__all__ = ["EXERCISE", "FREEZE_BATCHNORM", "PREDICT", "RECALIBRATE"]

_F32, _F64 = "float32", "float64"
TRAIN_SURVIVES = (
    "model.train() put the BatchNorm layers back into training mode: the freeze must survive it "
    "(model.train() calls train() on every submodule)"
)
_RETURN_MODEL = "return the model"
_FOLLOW_TRAIN = "freeze only the BatchNorm layers: the others (e.g. Dropout) must follow model.train()"


# ------------------------------------------------------------------------------------ freeze_batchnorm
# The verdict rests on data the grader recomputes, never on flags the kernel reports: the body runs
# two training steps (model.train() or model.eval() then model.train(), a forward on a grader batch
# with a grader seed for Dropout, loss = sum(y * dy), one SGD step) and returns the outputs and the
# model's FULL state after each; the judge replays the same steps on its own copy of the model,
# frozen properly (BN in eval mode, BN affine requires_grad False), and compares every tensor.
_OUTPUTS = {"conv": 3, "conv_dropout": 3, "mixed": 2}
_LR = 0.1


def _freeze_cases(rng):
    out = []
    for architecture, label, shape, d, mode in (
        ("conv_dropout", "Conv2d/BatchNorm2d/BatchNorm1d/Dropout net", (4, 2, 4, 4), _F32, "train"),
        ("conv", "Conv2d/BatchNorm2d/BatchNorm1d net", (4, 2, 4, 4), _F32, "train"),
        ("mixed", "BatchNorm3d/BatchNorm1d net", (2, 1, 3, 3, 3), _F64, "eval"),
        ("conv", "Conv2d/BatchNorm2d/BatchNorm1d net", (3, 2, 4, 4), _F64, "train"),
    ):
        arrays = models.random_state(rng, architecture, d)
        for i in range(2):
            arrays[f"x{i}"] = rng.standard_normal(shape).astype(d)
            arrays[f"dy{i}"] = rng.standard_normal((shape[0], _OUTPUTS[architecture])).astype(d)
        seeds = [int(s) for s in rng.integers(0, 2**31, 2)]
        out.append(
            Case(
                f"{label} frozen in {mode} mode, then two SGD steps after model.train(), input {shape} {d}",
                {"model": architecture, "dtype": d, "mode": mode, "seeds": seeds, "lr": _LR},
                arrays,
            )
        )
    return out



def _layer_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _freeze_replay(params, inputs, frozen=True, dropout_eval=False):
    """What a properly frozen model gives: outputs and full state after each of the two steps."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    model = models.load(params["model"], inputs, params["dtype"])
    steps = []
    for i in range(2):
        model.train()
        for mod in model.modules():
            if frozen and isinstance(mod, _BatchNorm):
                mod.eval()
                for p in mod.parameters():
                    p.requires_grad_(False)
            if dropout_eval and isinstance(mod, torch.nn.Dropout):
                mod.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params["seeds"][i])
            y = model(data.t(inputs[f"x{i}"]).to(getattr(torch, params["dtype"])))
        opt = torch.optim.SGD(model.parameters(), lr=params["lr"])
        opt.zero_grad()
        (y * data.t(inputs[f"dy{i}"]).to(y.dtype)).sum().backward()
        opt.step()
        steps.append((y.detach().numpy(), {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}))
    return steps


def _freeze_judge(params, inputs, out, meta):
    if meta.get("returned"):
        return Mismatch(f"freeze_batchnorm returned a {meta['returned']}, expected the model (an nn.Module)", hint=_RETURN_MODEL)
    from torch.nn.modules.batchnorm import _BatchNorm

    bn = {n: type(mod).__name__ for n, mod in models.model(params["model"]).named_modules() if isinstance(mod, _BatchNorm)}
    dt = params["dtype"]
    steps = _freeze_replay(params, inputs)
    dropout_eval = _freeze_replay(params, inputs, dropout_eval=True) if params["model"] == "conv_dropout" else None
    for i, when in enumerate(("after model.train()", "after model.eval() then model.train()")):
        want_y, want_state = steps[i]

        def state(k, i=i):
            return out[f"state{i}_{k}"]

        stats = [k for k in want_state if k.endswith(("running_mean", "running_var"))]
        changed = [k for k in stats if compare(k, state(k), want_state[k], dtype=False) is not None]
        if changed:
            layer = _layer_of(changed[0])
            unfrozen = sorted({bn.get(_layer_of(k), "?") for k in changed})
            frozen_types = sorted(set(bn.values()) - set(unfrozen))
            message = f"{changed[0]} of layer {layer} ({bn.get(layer, '?')}) changed during a training step {when}"
            if frozen_types:
                return Mismatch(
                    message,
                    hint=f"{', '.join(unfrozen)} layers were not frozen (only {', '.join(frozen_types)} were): "
                    "freeze every BatchNorm type, e.g. isinstance(m, nn.modules.batchnorm._BatchNorm)",
                )
            return Mismatch(message, hint=TRAIN_SURVIVES)
        variants = []
        if dropout_eval is not None:
            variants = [(_FOLLOW_TRAIN, dropout_eval[i][0])]
        m = compare(
            f"output {when}",
            out.get(f"y{i}"),
            want_y,
            meta,
            f"y{i}",
            dtype=dt,
            variants=variants,
            hint="a frozen BatchNorm normalizes with its running statistics (eval behaviour), not the batch's",
        )
        if m:
            return m
        for k, want in want_state.items():
            got = state(k)
            if compare(k, got, want, dtype=False) is None:
                continue
            layer = _layer_of(k)
            if layer in bn and k.endswith(("weight", "bias")):
                return Mismatch(
                    f"{k} of BatchNorm layer {layer} ({bn[layer]}) changed in the SGD step {when}",
                    hint="freeze the affine parameters too: requires_grad False for BN weight and bias",
                )
            if layer not in bn and np.array_equal(got, inputs[models.STATE_PREFIX + k] if i == 0 else out[f"state0_{k}"]):
                return Mismatch(
                    f"parameter {k} was not updated by the SGD step {when}",
                    hint="freeze only the BatchNorm layers' parameters; the rest keeps training",
                )
            return compare(f"{k} after the SGD step {when}", got, want, meta=None, dtype=False) or Mismatch(f"{k} differs")
    return None


FREEZE_BATCHNORM = Task(
    "06", "freeze_batchnorm", "freeze_batchnorm(model) -> model", _freeze_cases, kernel.run_freeze_batchnorm, _freeze_judge
)


# ------------------------------------------------------------------------------------ predict
# No verdict rests on flags the kernel reports: predict is called twice on the same input (a mutated
# input or a changed model changes the second output), and afterwards the body runs one more forward
# in the model's CURRENT mode on a grader batch with a grader seed (Dropout) and returns its output
# and the full state; the judge replays that forward on its own copy of the model in the ORIGINAL
# mode, so flags not restored, or running statistics updated, show as data that does not match.
def _predict_cases(rng):
    out = []
    for architecture, shape, d, mode in (
        ("mlp", (6, 5), _F32, "train"),
        ("mlp", (6, 5), _F64, "eval"),
        ("mlp", (6, 5), _F32, "mixed"),
        ("mlp", (1, 5), _F32, "train"),
        ("conv_dropout", (2, 2, 4, 4), _F64, "mixed"),
    ):
        label = "MLP with BatchNorm1d and Dropout" if architecture == "mlp" else "CNN with BatchNorm2d/1d and Dropout"
        arrays = {**models.random_state(rng, architecture, d), "x": rng.standard_normal(shape).astype(d)}
        arrays["x_next"] = rng.standard_normal((4, *shape[1:])).astype(d)
        out.append(
            Case(
                f"{label}, input {shape} {d}, model in {mode} mode",
                {"model": architecture, "dtype": d, "mode": mode, "raises": False, "seed": int(rng.integers(0, 2**31))},
                arrays,
            )
        )
    arrays = {**models.random_state(rng, "mlp", _F32), "x": rng.standard_normal((4, 7)).astype(_F32)}
    arrays["x_next"] = rng.standard_normal((4, 5)).astype(_F32)
    out.append(
        Case(
            "MLP in mixed mode, an input of the wrong size (the forward raises)",
            {"model": "mlp", "dtype": _F32, "mode": "mixed", "raises": True, "seed": int(rng.integers(0, 2**31))},
            arrays,
        )
    )
    return out



def _predict_replay(params, inputs):
    """The forward on ``x_next`` of an untouched model in the case's ORIGINAL mode: output and state."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    model = models.load(params["model"], inputs, params["dtype"])
    model.train(params["mode"] != "eval")
    if params["mode"] == "mixed":
        next(m for m in model.modules() if isinstance(m, _BatchNorm)).eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(params["seed"])
        y = model(data.t(inputs["x_next"]).to(getattr(torch, params["dtype"])))
    return y.numpy(), {k: v.numpy().copy() for k, v in model.state_dict().items()}


def _predict_judge(params, inputs, out, meta):
    import torch

    restore = (
        "restore the flags in a finally: block, so they come back even if the forward raises"
        if params["raises"]
        else "restore each submodule's OWN previous flag (a model can be partly in eval, e.g. a frozen BN), also if "
        "the forward raises"
    )
    what = "after a forward that raised" if params["raises"] else "after predict"

    def mode_kept():
        want_y, want_state = _predict_replay(params, inputs)
        m = compare(
            f"a training-step forward {what} (training flags not restored?)",
            out.get("y_next"),
            want_y,
            meta,
            "y_next",
            dtype=params["dtype"],
            hint=restore,
        )
        if m:
            return Mismatch(
                f"training flags not restored {what}: {m.message}", hint=restore, max_error=m.max_error, where=m.where
            )
        for k, want in want_state.items():
            if compare(k, out[f"next_{k}"], want, dtype=False):
                return Mismatch(f"training flags not restored {what}: {k} differs after a forward", hint=restore)
        return None

    if params["raises"]:
        return mode_kept()
    model = models.load(params["model"], inputs).eval()
    with torch.no_grad():
        want = model(data.t(inputs["x"])).numpy()
    changed = next(
        (k for k in inputs if k.startswith(models.STATE_PREFIX) and "running" in k
         and not np.array_equal(out["state_" + k[len(models.STATE_PREFIX):]], inputs[k])),
        None,
    )
    eval_hint = "predict must run the model in eval mode (running statistics, no dropout)"
    return first_mismatch(
        lambda: compare("output", out.get("y"), want, meta, "y", dtype=params["dtype"], hint=eval_hint),
        lambda: (
            Mismatch(
                "the BatchNorm running statistics changed",
                hint="predict changed the running statistics: the forward ran in training mode (call eval first)",
            )
            if changed
            else None
        ),
        lambda: (
            Mismatch(
                "the output requires grad", hint="run the forward without autograd (torch.no_grad() or torch.inference_mode())"
            )
            if meta["_kinds"]["y"].get("requires_grad")
            else None
        ),
        lambda: compare(
            "output of a second call on the same input",
            out.get("y_again"),
            want,
            meta,
            "y_again",
            dtype=params["dtype"],
            hint="do not modify x (or the model) in place: the same call must give the same output",
        ),
        mode_kept,
    )


PREDICT = Task("06", "predict", "predict(model, x) -> y", _predict_cases, kernel.run_predict, _predict_judge)


# ------------------------------------------------------------------------------------ recalibrate
def _recalibrate_cases(rng):
    out = []
    for d, sizes, mode, loader in (
        (_F32, (4, 4, 4), "eval", "list"),
        (_F64, (3, 3, 3, 3), "train", "DataLoader"),
        (_F64, (5, 3, 2), "eval", "list"),
    ):
        arrays = models.random_state(rng, "conv", d)
        for k in list(arrays):
            if k.endswith("running_mean"):
                arrays[k] = arrays[k] + 3
            elif k.endswith("running_var"):
                arrays[k] = arrays[k] * 5
        for i, n in enumerate(sizes):
            arrays[f"batch{i}"] = (rng.standard_normal((n, 2, 4, 4)) * 1.5 + 0.7).astype(d)
        arrays["x_next"] = rng.standard_normal((4, 2, 4, 4)).astype(d)
        out.append(
            Case(
                f"model in {mode} mode, {d}, {loader} of batch sizes {list(sizes)}",
                {"dtype": d, "mode": mode, "loader": loader, "n": len(sizes)},
                arrays,
            )
        )
    return out



def _estimate(model, batches, reset, momentum):
    """The state after training-mode forwards over ``batches`` on a copy of ``model`` with each BN's ``momentum``."""
    import copy

    import torch

    m = copy.deepcopy(model).train()
    for bn in m.modules():
        if hasattr(bn, "running_mean"):
            if reset:
                bn.reset_running_stats()
            bn.momentum = momentum
    with torch.no_grad():
        for b in batches:
            m(b)
    return m.state_dict()


def _wrong_statistics(params, model, batches, expected, out):
    """A Mismatch when a re-estimated running statistic is off (known wrong estimates named)."""
    for k, v in expected.state_dict().items():
        if "running" not in k:
            continue
        variants = [
            (
                "reset the running statistics first: the estimate still includes the old statistics",
                lambda k=k: _estimate(model, batches, False, None)[k].numpy(),
            ),
            (
                "use the cumulative average over the batches (momentum=None), not the exponential moving average",
                lambda k=k: _estimate(model, batches, True, 0.1)[k].numpy(),
            ),
        ]
        m = compare(
            k,
            out.get(models.STATE_PREFIX + k),
            v.numpy(),
            dtype=params["dtype"],
            variants=variants,
            hint="re-estimate: reset the statistics, then a training-mode forward per batch with momentum=None, no gradients",
        )
        if m:
            return m
    return None


def _parameters_changed(model, inputs, out):
    for k in model.state_dict():
        key = models.STATE_PREFIX + k
        if "running" not in k and "num_batches" not in k and not np.array_equal(out[key], inputs[key]):
            return Mismatch(
                f"parameter {k} changed",
                hint="recalibrate only re-estimates statistics: run the forwards under torch.no_grad() and never step an "
                "optimizer",
            )
    return None


def _mode_or_momenta_not_restored(params, inputs, expected, out):
    """The mode and momenta recalibrate left, replayed on the grader's own recalibrated copy."""
    import torch

    mode_hint = "restore the model's previous mode at the end"
    x_next = data.t(inputs["x_next"])
    with torch.no_grad():
        want_y = expected(x_next).numpy()
        want_next = {k: v.numpy().copy() for k, v in expected.state_dict().items()}
        torch.nn.Module.train(expected, True)
        expected(x_next)
        want_mom = {k: v.numpy().copy() for k, v in expected.state_dict().items()}
    m = compare("a forward after recalibrate", out.get("y_next"), want_y, dtype=params["dtype"], hint=mode_hint)
    if m:
        return Mismatch(f"the model's mode was not restored: {m.message}", hint=mode_hint, max_error=m.max_error, where=m.where)
    for prefix, want_state in (("next_", want_next), ("mom_", want_mom)):
        for k, v in want_state.items():
            if "running" in k and compare(k, out[prefix + k], v, dtype=params["dtype"]):
                return Mismatch(f"{k} after a training-mode forward that follows recalibrate is off",
                                hint="restore each BN layer's momentum after re-estimating")
    return None


def _recalibrate_judge(params, inputs, out, meta):
    import copy

    import torch
    from torch.optim.swa_utils import update_bn

    if meta.get("returned"):
        return Mismatch(f"recalibrate returned a {meta['returned']}, expected the model (an nn.Module)", hint=_RETURN_MODEL)
    model = models.load("conv", inputs)
    model.train(params["mode"] == "train")
    batches = [data.t(inputs[f"batch{i}"]) for i in range(params["n"])]
    if params["loader"] == "DataLoader":
        batches = list(torch.cat(batches).split(len(batches[0])))
    n_bn = sum(1 for m in model.modules() if hasattr(m, "running_mean"))
    expected = copy.deepcopy(model)
    update_bn(batches, expected)
    # n_bn is only the kernel's word: it can fail an answer with a clear message, never pass one
    if meta["n_bn"] != n_bn:
        return Mismatch(
            f"the returned model has {meta['n_bn']} BatchNorm layers, expected {n_bn}",
            hint="return the model you were given, with re-estimated statistics",
        )
    return first_mismatch(
        lambda: _wrong_statistics(params, model, batches, expected, out),
        lambda: _parameters_changed(model, inputs, out),
        lambda: _mode_or_momenta_not_restored(params, inputs, expected, out),
    )


RECALIBRATE = Task(
    "06",
    "recalibrate",
    "recalibrate(model, loader) -> model",
    _recalibrate_cases,
    kernel.run_recalibrate,
    _recalibrate_judge,
    watch=UPDATE_BN_WATCH,
    forbidden_names=frozenset({"update_bn", "swa_utils"}),
)

EXERCISE = Exercise("06", "06_pitfalls_exercises", (FREEZE_BATCHNORM, PREDICT, RECALIBRATE))
