"""Checks for lesson 03's exercises (running statistics): ``update_running_stats``, ``MyBatchNorm2d``
and ``bn_process``.

Part of :mod:`coursekit.checks`; import them from there.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._core import (_F32, _F64, CheckResult, _compare, _desc, _Failure, _forbidden_targets, _require_callable,
                    _require_class, _run, _Runner, _tol, _typename, _Unchanged, _unpack)
from ._inputs import _AXES_HINT, _bn_dims, _bn_wrong_axes, _norm, _norm_variants, _randomize_bn, _x

__all__ = ["check_update_running_stats", "check_MyBatchNorm2d", "check_bn_process"]


_REVERSED_HINT = ("momentum convention reversed: in PyTorch momentum weights the NEW batch, "
                  "new = (1 - momentum) * old + momentum * batch (Keras/TF's momentum weights the old value)")
_RUNNING_VAR_HINT = "running_var tracks the UNBIASED batch variance (divide by n - 1), although the biased one normalizes"


def _running_update(rm, rv, x, factor, unbiased=True):
    dims = _bn_dims(x)
    mean = x.mean(dims)
    var = x.var(dims, unbiased=unbiased)
    return (1 - factor) * rm + factor * mean, (1 - factor) * rv + factor * var


def check_update_running_stats(update_running_stats) -> CheckResult:
    """Check ``update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0)``.

    Introduced in exercise notebook 03. Cases: momentum 0.1, 0.3, 0.25 and None with num_batches_tracked 0, 1, 4; inputs must come back unchanged.

    Args:
        update_running_stats: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``update_running_stats`` is not callable.
    """
    _require_callable(update_running_stats, "a function update_running_stats(running_mean, running_var, x, "
                                            "momentum=0.1, num_batches_tracked=0) -> (mean, var)")
    run = _Runner(_forbidden_targets("norm"))
    default = object()

    def case(shape, dtype, momentum=default, nbt=default):
        extra = {}
        if momentum is not default:
            extra["momentum"] = momentum
        if nbt is not default:
            extra["num_batches_tracked"] = nbt

        def body():
            c = shape[1]
            x = _x(shape, dtype)
            rm = torch.randn(c, dtype=dtype)
            rv = torch.rand(c, dtype=dtype) + 0.5
            m = 0.1 if momentum is default else momentum
            n = 0 if nbt is default else nbt
            factor = 1.0 / (n + 1) if m is None else m
            em, ev = _running_update(rm, rv, x, factor)
            with _Unchanged(running_mean=rm, running_var=rv, x=x,
                            hint="do not update running_mean/running_var (or x) in place: return new tensors"):
                out = run(update_running_stats, rm, rv, x, **extra)
            new_m, new_v = _unpack(out, 2, "(new_running_mean, new_running_var)")
            variants = []
            if m is None:
                variants.append(("num_batches_tracked counts the batches BEFORE x: the cumulative factor is 1 / (num_batches_tracked + 1)",
                                 lambda: _running_update(rm, rv, x, 1.0 / n if n else 1.0)))
                variants.append(("momentum=None means the cumulative average (factor 1 / (num_batches_tracked + 1)), not the default momentum",
                                 lambda: _running_update(rm, rv, x, 0.1)))
            else:
                variants.append((_REVERSED_HINT, lambda: _running_update(rm, rv, x, 1 - factor)))
            mean_variants = [(h, (lambda f=f: f()[0])) for h, f in variants]
            var_variants = [(h, (lambda f=f: f()[1])) for h, f in variants]
            var_variants.append((_RUNNING_VAR_HINT, lambda: _running_update(rm, rv, x, factor, unbiased=False)[1]))
            _compare(new_m, em, "new running_mean", variants=mean_variants, shape_hint=_AXES_HINT)
            _compare(new_v, ev, "new running_var", variants=var_variants, shape_hint=_AXES_HINT)
        return _desc(shape, dtype, **extra), body

    cases = [case((4, 3), _F32), case((2, 3, 4, 5), _F64, momentum=0.3),
             case((2, 3, 5), _F32, momentum=None, nbt=0), case((2, 2, 3, 2, 3), _F64, momentum=None, nbt=4),
             case((2, 3, 4, 4), _F64, momentum=0.25, nbt=7), case((8, 3), _F64, momentum=None, nbt=1)]
    return _run("update_running_stats", cases)


def check_MyBatchNorm2d(MyBatchNorm2d) -> CheckResult:
    """Check the class ``MyBatchNorm2d``: state_dict interchangeable with ``nn.BatchNorm2d``, same forward.

    Introduced in exercise notebook 03. Cases: state_dict keys/initial values/round trip, 3 training batches (momentum 0.1 and None), eval mode, affine=False with track_running_stats=False, gradients.

    Args:
        MyBatchNorm2d: the learner's class.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``MyBatchNorm2d`` is not a class.
    """
    _require_class(MyBatchNorm2d, nn.Module, "a class MyBatchNorm2d(nn.Module)")
    run = _Runner(_forbidden_targets("norm"))
    from torch.nn.modules.batchnorm import _NormBase

    def make(*args, **kwargs) -> nn.Module:
        if not issubclass(MyBatchNorm2d, nn.Module):
            raise _Failure("MyBatchNorm2d is not an nn.Module", hint="write class MyBatchNorm2d(nn.Module)")
        if issubclass(MyBatchNorm2d, _NormBase):
            raise _Failure("MyBatchNorm2d subclasses PyTorch's batch norm",
                           hint="do not subclass nn.BatchNorm2d: the task is to re-implement it from nn.Module")
        m = run(MyBatchNorm2d, *args, **kwargs)
        if not isinstance(m, nn.Module):
            raise _Failure(f"MyBatchNorm2d(...) gave a {_typename(m)}", hint="write class MyBatchNorm2d(nn.Module)")
        return m

    def state_case():
        m = make(3)
        ref = nn.BatchNorm2d(3)
        sd, rsd = m.state_dict(), ref.state_dict()
        if set(sd) != set(rsd):
            raise _Failure(f"state_dict keys {sorted(sd)}, expected {sorted(rsd)}",
                           hint="register weight and bias as nn.Parameter and running_mean, running_var, num_batches_tracked as buffers, with these names")
        params = {n for n, _ in m.named_parameters()}
        if params != {"weight", "bias"}:
            raise _Failure(f"parameters {sorted(params)}, expected ['bias', 'weight']",
                           hint="only weight and bias are nn.Parameter; running statistics are buffers (register_buffer)")
        for k in rsd:
            if not isinstance(sd[k], torch.Tensor) or sd[k].shape != rsd[k].shape or sd[k].dtype != rsd[k].dtype:
                got = f"{tuple(sd[k].shape)} {sd[k].dtype}" if isinstance(sd[k], torch.Tensor) else _typename(sd[k])
                raise _Failure(f"{k} is {got}, expected {tuple(rsd[k].shape)} {rsd[k].dtype}",
                               hint="num_batches_tracked is a 0-dim torch.long tensor; the others have shape (C,)")
            _compare(sd[k].double(), rsd[k].double(), f"initial {k}",
                     hint="initial values: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0")
        ref2 = _randomize_bn(nn.BatchNorm2d(3))
        run(m.load_state_dict, ref2.state_dict())
        back = nn.BatchNorm2d(3)
        back.load_state_dict(m.state_dict())
        for k, v in ref2.state_dict().items():
            _compare(back.state_dict()[k].double(), v.double(), f"{k} after a round trip through load_state_dict")

    def train_case(shape, dtype, momentum, eps, steps=3):
        def body():
            c = shape[1]
            m = make(c, eps=eps, momentum=momentum)
            ref = _randomize_bn(nn.BatchNorm2d(c, eps=eps, momentum=momentum))
            if momentum is None:
                with torch.no_grad():
                    ref.num_batches_tracked.fill_(2)
            m.to(dtype)
            ref.to(dtype)
            run(m.load_state_dict, ref.state_dict())
            m.train()
            ref.train()
            for step in range(steps):
                x = _x(shape, dtype)
                prev_m, prev_v = ref.running_mean.clone(), ref.running_var.clone()
                prev_n = int(ref.num_batches_tracked)
                y = run(m, x)
                with torch.no_grad():
                    expected = ref(x)
                _compare(y, expected, f"output of batch {step + 1}",
                         variants=_norm_variants(x, _bn_dims(x), ref.weight.detach(), ref.bias.detach(), eps, _bn_wrong_axes(x)),
                         hint="in training mode normalize with the batch's mean and biased variance")
                factor = 1.0 / (prev_n + 1) if momentum is None else momentum
                variants = [(_REVERSED_HINT, lambda: _running_update(prev_m, prev_v, x, 1 - factor))] if momentum is not None else [
                    ("momentum=None: cumulative average, factor 1 / num_batches_tracked after counting this batch",
                     lambda: _running_update(prev_m, prev_v, x, 0.1))]
                state = m.state_dict()
                _compare(state.get("running_mean"), ref.running_mean, f"running_mean after batch {step + 1}",
                         variants=[(h, lambda f=f: f()[0]) for h, f in variants],
                         hint="update running_mean in training mode: (1 - momentum) * old + momentum * batch mean")
                _compare(state.get("running_var"), ref.running_var, f"running_var after batch {step + 1}",
                         variants=[(h, lambda f=f: f()[1]) for h, f in variants]
                         + [(_RUNNING_VAR_HINT, lambda: _running_update(prev_m, prev_v, x, factor, unbiased=False)[1])])
                nbt = state.get("num_batches_tracked")
                if not isinstance(nbt, torch.Tensor) or int(nbt) != int(ref.num_batches_tracked):
                    raise _Failure(f"num_batches_tracked is {nbt if not isinstance(nbt, torch.Tensor) else int(nbt)}, "
                                   f"expected {int(ref.num_batches_tracked)}",
                                   hint="add 1 to num_batches_tracked (in place) at each training-mode forward")
        return _desc(shape, dtype, mode="train", momentum=momentum, eps=eps), body

    def eval_case(shape, dtype):
        def body():
            c = shape[1]
            ref = _randomize_bn(nn.BatchNorm2d(c)).to(dtype).eval()
            m = make(c).to(dtype)
            run(m.load_state_dict, ref.state_dict())
            m.eval()
            x = _x(shape, dtype)
            with _Unchanged(running_stats=m, message="the module's state changed in eval mode",
                            hint="in eval mode the running statistics (and num_batches_tracked) must not change"):
                y = run(m, x)
            with torch.no_grad():
                expected = ref(x)
            _compare(y, expected, "output", variants=[
                ("in eval mode normalize with running_mean and running_var, not the batch statistics",
                 lambda: _norm(x, _bn_dims(x), ref.weight.detach(), ref.bias.detach(), ref.eps))],
                hint="eval mode: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias")
        return _desc(shape, dtype, mode="eval"), body

    def plain_case(shape, dtype):
        def body():
            c = shape[1]
            m = make(c, affine=False, track_running_stats=False).to(dtype)
            keys = set(m.state_dict())
            if keys:
                raise _Failure(f"state_dict keys {sorted(keys)}, expected none",
                               hint="affine=False: no weight/bias; track_running_stats=False: no running buffers (register them as None)")
            x = _x(shape, dtype)
            for mode in ("train", "eval"):
                m.train(mode == "train")
                y = run(m, x)
                _compare(y, F.batch_norm(x, None, None, training=True), f"{mode}-mode output",
                         hint="without running statistics, batch statistics normalize in both modes")
        return _desc(shape, dtype, affine=False, track_running_stats=False), body

    def grad_case(shape, dtype):
        def body():
            c = shape[1]
            ref = _randomize_bn(nn.BatchNorm2d(c)).to(dtype).train()
            m = make(c).to(dtype).train()
            run(m.load_state_dict, ref.state_dict())
            x = _x(shape, dtype)
            xm = x.clone().requires_grad_(True)
            xr = x.clone().requires_grad_(True)
            dy = torch.randn(shape, dtype=dtype)
            y = run(m, xm)
            if not isinstance(y, torch.Tensor) or not y.requires_grad:
                raise _Failure("the output does not require grad", hint="compute the forward with torch operations on x")
            run(lambda: y.backward(dy))
            ref(xr).backward(dy)
            params = dict(m.named_parameters())
            _compare(xm.grad, xr.grad, "x.grad", hint="do not detach the batch statistics: gradients flow through them")
            for name in ("weight", "bias"):
                _compare(params[name].grad, getattr(ref, name).grad, f"{name}.grad")
        return _desc(shape, dtype, gradients="autograd"), body

    cases = [("state_dict keys, initial values, load to and from nn.BatchNorm2d", state_case),
             train_case((2, 3, 4, 5), _F32, 0.1, 1e-5), train_case((2, 4, 3, 3), _F64, None, 0.1),
             eval_case((2, 3, 4, 5), _F64), plain_case((2, 3, 3, 4), _F32), grad_case((2, 3, 4, 4), _F64)]
    return _run("MyBatchNorm2d", cases)


def check_bn_process(bn_process) -> CheckResult:
    """Check ``bn_process(feature, mean, var, momentum=0.1, eps=1e-5) -> (out, new_mean, new_var)`` (numpy).

    Introduced in exercise notebook 03. Cases: numpy float32/float64, momentum and eps varied; the arrays passed in must come back unchanged.

    Args:
        bn_process: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``bn_process`` is not callable.
    """
    _require_callable(bn_process, "a function bn_process(feature, mean, var, momentum=0.1, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype, momentum=None, eps=None):
        extra = {k: v for k, v in (("momentum", momentum), ("eps", eps)) if v is not None}
        np_dtype = np.float64 if dtype == _F64 else np.float32

        def body():
            c = shape[1]
            x = _x(shape, _F64)
            feature = x.numpy().astype(np_dtype)
            mean = np.random.default_rng(c).normal(size=c).astype(np_dtype)
            var = (np.random.default_rng(c + 1).random(c) + 0.5).astype(np_dtype)
            m = 0.1 if momentum is None else momentum
            e = 1e-5 if eps is None else eps
            x = torch.from_numpy(feature).double()
            rm, rv = torch.from_numpy(mean).double(), torch.from_numpy(var).double()
            with _Unchanged(feature=feature, mean=mean, var=var,
                            hint="bn_process overwrote its input (the seed's bug): work on copies and return new arrays"):
                out = run(bn_process, feature, mean, var, **extra)
            out = _unpack(out, 3, "(out, new_mean, new_var)")
            got = []
            for name, value in zip(("out", "new_mean", "new_var"), out):
                if isinstance(value, torch.Tensor):
                    raise _Failure(f"{name} is a torch.Tensor", hint="bn_process works on numpy arrays: return numpy arrays")
                if not isinstance(value, np.ndarray):
                    raise _Failure(f"{name} is a {_typename(value)}, expected a numpy array",
                                   hint="return numpy arrays (not lists)")
                got.append(torch.from_numpy(np.asarray(value, dtype=np.float64)))
            tol = _tol(dtype)
            dims = _bn_dims(x)
            _compare(got[0], _norm(x, dims, eps=e), "out", tol=tol, variants=[
                ("normalize with the population variance (numpy's default ddof=0); ddof=1 (torch's default for .std/.var) is for the running var",
                 lambda: _norm(x, dims, eps=e, unbiased=True)),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: _norm(x, dims, eps=e, eps_outside=True))],
                shape_hint="out has the feature's shape (N, C, H, W)")
            em, ev = _running_update(rm, rv, x, m)
            _compare(got[1], em, "new_mean", tol=tol, variants=[(_REVERSED_HINT, lambda: _running_update(rm, rv, x, 1 - m)[0])])
            _compare(got[2], ev, "new_var", tol=tol, variants=[
                (_REVERSED_HINT, lambda: _running_update(rm, rv, x, 1 - m)[1]),
                ("the running var uses the sample variance (ddof=1), torch's unbiased estimate",
                 lambda: _running_update(rm, rv, x, m, unbiased=False)[1])])
        return _desc(shape, dtype, **extra).replace("float", "numpy float"), body

    cases = [case((2, 2, 2, 2), _F32), case((4, 3, 5, 5), _F64, momentum=0.3),
             case((2, 3, 4, 4), _F64, eps=0.1), case((3, 2, 3, 3), _F32, momentum=0.5, eps=1e-3)]
    return _run("bn_process", cases)
