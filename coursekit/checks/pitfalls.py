"""Checks for lesson 06's exercises (BatchNorm pitfalls): ``freeze_batchnorm``, ``predict`` and
``recalibrate``.

Part of :mod:`coursekit.checks`; import them from there.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ._core import (_F32, _F64, CheckResult, _compare, _dtname, _Failure, _forbidden_targets, _require_callable,
                    _returned_model, _run, _Runner, _typename, _Unchanged)
from ._inputs import _BN_TYPES, _bns, _randomized

__all__ = ["check_freeze_batchnorm", "check_predict", "check_recalibrate"]


def _model_2d(dropout: bool = True) -> nn.Module:
    layers = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
              nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
              nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(6, 3))
    return nn.Sequential(*layers)


def _model_mixed() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(), nn.Flatten(2),
                         nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4)), nn.Flatten(), nn.Linear(4 * 27, 2))


_TRAIN_SURVIVES = ("model.train() put the BatchNorm layers back into training mode: the freeze must survive it "
                   "(model.train() calls train() on every submodule)")


def check_freeze_batchnorm(freeze_batchnorm) -> CheckResult:
    """Check ``freeze_batchnorm(model) -> model``: BN frozen (statistics and affine), surviving ``model.train()``.

    Introduced in exercise notebook 06. Cases: BatchNorm1d/2d/3d at any depth; flags and requires_grad after model.train(); forward after model.train() and after model.eval() + model.train().

    Args:
        freeze_batchnorm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``freeze_batchnorm`` is not callable.
    """
    _require_callable(freeze_batchnorm, "a function freeze_batchnorm(model) -> model")
    run = _Runner(())

    def flags_case():
        model = _randomized(_model_2d(), _F32).train()
        model = _returned_model(run(freeze_batchnorm, model), "freeze_batchnorm")
        run(model.train)
        for name, mod in model.named_modules():
            if not isinstance(mod, _BN_TYPES) and not mod.training:
                raise _Failure(f"layer {name or 'model'} ({_typename(mod)}) is in eval mode after model.train()",
                               hint="freeze only the BatchNorm layers: the others (e.g. Dropout) must follow model.train()")
        for bn in _bns(model):
            for p in bn.parameters():
                if p.requires_grad:
                    raise _Failure("a BatchNorm weight/bias still requires grad",
                                   hint="freeze the affine parameters too: requires_grad False for BN weight and bias")
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if not isinstance(owner, _BN_TYPES) and not p.requires_grad:
                raise _Failure(f"parameter {name} no longer requires grad",
                               hint="freeze only the BatchNorm layers' parameters; the rest keeps training")

    def forward_case(make, label, shape, dtype, start_mode):
        def body():
            model = _randomized(make(), dtype).train(start_mode == "train")
            reference = copy.deepcopy(model).eval()
            model = _returned_model(run(freeze_batchnorm, model), "freeze_batchnorm")
            before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
            for toggles, when in (((model.train,), "after model.train()"),
                                  ((model.eval, model.train), "after model.eval() then model.train()")):
                for toggle in toggles:
                    run(toggle)
                x = torch.randn(shape, dtype=dtype)
                y = run(model, x)
                after = model.state_dict()
                for k, v in before.items():
                    if not torch.equal(after[k], v):
                        raise _Failure(f"{k} changed during a forward {when}", hint=_TRAIN_SURVIVES)
                with torch.no_grad():
                    expected = reference(x)
                _compare(y, expected, f"output {when}",
                         hint="a frozen BatchNorm normalizes with its running statistics (eval behaviour), not the batch's")
                run(lambda: y.sum().backward())
                for bn in _bns(model):
                    if bn.weight.grad is not None and bool(bn.weight.grad.abs().sum() > 0):
                        raise _Failure("a BatchNorm weight received a gradient",
                                       hint="freeze the affine parameters too: requires_grad False for BN weight and bias")
        return f"{label} frozen in {start_mode} mode, input {tuple(shape)} {_dtname(dtype)}", body

    conv_net = lambda: _model_2d(dropout=False)  # noqa: E731
    cases = [("flags after model.train(): Dropout trains, BN parameters frozen, the rest trainable", flags_case),
             forward_case(conv_net, "Conv2d/BatchNorm2d/BatchNorm1d net", (4, 2, 4, 4), _F32, "train"),
             forward_case(_model_mixed, "BatchNorm3d/BatchNorm1d net", (2, 1, 3, 3, 3), _F64, "eval"),
             forward_case(conv_net, "Conv2d/BatchNorm2d/BatchNorm1d net", (3, 2, 4, 4), _F64, "train")]
    return _run("freeze_batchnorm", cases)


def check_predict(predict) -> CheckResult:
    """Check ``predict(model, x) -> y``: eval-mode forward without autograd, every training flag restored.

    Introduced in exercise notebook 06. Cases: model in train, eval and mixed modes, a batch of one, float32/float64.

    Args:
        predict: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``predict`` is not callable.
    """
    _require_callable(predict, "a function predict(model, x) -> y")
    run = _Runner(())

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))

    def case(make, shape, dtype, mode):
        label = "MLP with BatchNorm1d and Dropout" if make is mlp else "CNN with BatchNorm2d/1d and Dropout"

        def body():
            model = _randomized(make(), dtype).train(mode != "eval")
            if mode == "mixed":
                _bns(model)[0].eval()
            flags = [m.training for m in model.modules()]
            reference = copy.deepcopy(model).eval()
            x = torch.randn(shape, dtype=dtype)
            with _Unchanged(x=x):
                with _Unchanged(running_statistics=[v for k, v in model.state_dict().items() if "running" in k],
                                message="the BatchNorm running statistics changed",
                                hint="predict changed the running statistics: the forward ran in training mode (call eval first)"):
                    y = run(predict, model, x)
            with torch.no_grad():
                expected = reference(x)
            _compare(y, expected, "output", hint="predict must run the model in eval mode (running statistics, no dropout)")
            if y.requires_grad:
                raise _Failure("the output requires grad", hint="run the forward without autograd (torch.no_grad() or torch.inference_mode())")
            now = [m.training for m in model.modules()]
            if now != flags:
                names = [n or "model" for (n, _), a, b in zip(model.named_modules(), flags, now) if a != b]
                raise _Failure(f"training flags changed for {', '.join(names)}",
                               hint="restore each submodule's OWN previous flag (a model can be partly in eval, e.g. a frozen BN), also if the forward raises")
        return f"{label}, input {tuple(shape)} {_dtname(dtype)}, model in {mode} mode", body

    def raising_case():
        model = _randomized(mlp(), _F32).train()
        _bns(model)[0].eval()
        flags = [m.training for m in model.modules()]
        try:
            predict(model, torch.randn(4, 7))  # 7 features for a Linear(5, ...): the forward raises
        except Exception:  # expected: the shape error propagates (or is handled), flags must be back
            pass
        if [m.training for m in model.modules()] != flags:
            raise _Failure("training flags not restored after a forward that raised",
                           hint="restore the flags in a finally: block, so they come back even if the forward raises")

    cases = [case(mlp, (6, 5), _F32, "train"), case(mlp, (6, 5), _F64, "eval"), case(mlp, (6, 5), _F32, "mixed"),
             case(mlp, (1, 5), _F32, "train"), case(lambda: _model_2d(dropout=True), (2, 2, 4, 4), _F64, "mixed"),
             ("MLP in mixed mode, an input of the wrong size (the forward raises)", raising_case)]
    return _run("predict", cases)


def _bn_stats(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _bns(model)]


def _estimate(model: nn.Module, batches, reset: bool, momentum) -> list:
    model = copy.deepcopy(model).train()
    for bn in _bns(model):
        if reset:
            bn.reset_running_stats()
        bn.momentum = momentum
    with torch.no_grad():
        for b in batches:
            model(b[0] if isinstance(b, (list, tuple)) else b)
    return _bn_stats(model)


def check_recalibrate(recalibrate) -> CheckResult:
    """Check ``recalibrate(model, loader) -> model`` against ``torch.optim.swa_utils.update_bn``.

    Introduced in exercise notebook 06. Cases: list of tensors and DataLoader of (x, y) batches, unequal batch sizes, model in train and eval mode; compared with torch.optim.swa_utils.update_bn.

    Args:
        recalibrate: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``recalibrate`` is not callable.
    """
    _require_callable(recalibrate, "a function recalibrate(model, loader) -> model")
    run = _Runner(_forbidden_targets("update_bn"))

    def case(dtype, sizes, mode, loader_kind):
        def body():
            model = _randomized(_model_2d(dropout=False), dtype).train(mode == "train")
            with torch.no_grad():
                for bn in _bns(model):
                    bn.running_mean.add_(3.0)
                    bn.running_var.mul_(5.0)
                    bn.num_batches_tracked.fill_(10)
            xs = [torch.randn(n, 2, 4, 4, dtype=dtype) for n in sizes]
            if loader_kind == "DataLoader":
                ds = torch.utils.data.TensorDataset(torch.cat(xs), torch.zeros(sum(sizes)))
                loader = torch.utils.data.DataLoader(ds, batch_size=sizes[0], shuffle=False)
                batches = [[x, None] for x in torch.cat(xs).split(sizes[0])]
            else:
                loader = xs
                batches = xs
            weights = {k: v.clone() for k, v in model.named_parameters()}
            momenta = [bn.momentum for bn in _bns(model)]
            pre = copy.deepcopy(model)
            torch.optim.swa_utils.update_bn(loader, pre_expected := copy.deepcopy(model))
            expected = _bn_stats(pre_expected)
            out = _returned_model(run(recalibrate, model, loader), "recalibrate")
            got = _bn_stats(out)
            if len(got) != len(expected):
                raise _Failure(f"the returned model has {len(got)} BatchNorm layers, expected {len(expected)}",
                               hint="return the model you were given, with re-estimated statistics")
            for i, ((gm, gv), (em, ev)) in enumerate(zip(got, expected)):
                variants = [(hint, lambda reset=reset, mom=mom: _estimate(pre, batches, reset, mom)[i])
                            for hint, reset, mom in (
                                ("reset the running statistics first: the estimate still includes the old statistics", False, None),
                                ("use the cumulative average over the batches (momentum=None), not the exponential moving average", True, 0.1))]
                _compare(gm, em, f"running_mean of BN layer {i}", variants=[(h, lambda f=f: f()[0]) for h, f in variants],
                         hint="re-estimate: reset the statistics, then a training-mode forward per batch with momentum=None, no gradients")
                _compare(gv, ev, f"running_var of BN layer {i}", variants=[(h, lambda f=f: f()[1]) for h, f in variants])
            for k, v in out.named_parameters():
                if k in weights and not torch.equal(v, weights[k]):
                    raise _Failure(f"parameter {k} changed", hint="recalibrate only re-estimates statistics: run the forwards under torch.no_grad() and never step an optimizer")
            if [bn.momentum for bn in _bns(out)] != momenta:
                raise _Failure(f"BN momenta are {[bn.momentum for bn in _bns(out)]}, expected {momenta}",
                               hint="restore each BN layer's momentum after re-estimating")
            if out.training != (mode == "train"):
                raise _Failure(f"the model is in {'train' if out.training else 'eval'} mode, it was in {mode} mode",
                               hint="restore the model's previous mode at the end")
        return f"model in {mode} mode, {_dtname(dtype)}, {loader_kind} of batch sizes {list(sizes)}", body

    cases = [case(_F32, (4, 4, 4), "eval", "list"), case(_F64, (3, 3, 3, 3), "train", "DataLoader"),
             case(_F64, (5, 3, 2), "eval", "list")]
    return _run("recalibrate", cases)
