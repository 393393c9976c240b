"""coursekit.grader.probes, without a kernel: every probe passes a correct answer and fails known-wrong ones.

The probe body runs in this process (as it would in the learner's kernel) with the answer's names
in its namespace; the comparison is the grader's. Each wrong answer is one the probe must catch.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from coursekit.grader.probes import HARNESS, PROBES, close, NORM_NAMES
from coursekit.tasks import TASKS

GIVEN_FORWARD = '''
def batch_norm_forward(x, gamma, beta, eps=1e-5):
    dims = [0] + list(range(2, x.dim()))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = x.mean(dim=dims, keepdim=True)
    inv_std = 1.0 / torch.sqrt(x.var(dim=dims, unbiased=False) + eps)
    x_hat = (x - mean) * inv_std.reshape(shape)
    return x_hat * gamma.reshape(shape) + beta.reshape(shape), (x_hat, inv_std, gamma)
'''


def _dims(x):
    return [0] + list(range(2, x.dim()))


def channel_stats(x):
    return x.mean(dim=_dims(x)), x.var(dim=_dims(x), unbiased=False)


def batch_norm_train(x, gamma, beta, eps=1e-5):
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    f = momentum if momentum is not None else 1.0 / (num_batches_tracked + 1)
    return ((1 - f) * running_mean + f * x.mean(dim=_dims(x)),
            (1 - f) * running_var + f * x.var(dim=_dims(x), unbiased=True))


class MyBatchNorm2d(nn.BatchNorm2d):
    pass


def bn_process(feature, mean, var, momentum=0.1, eps=1e-5):
    rm, rv = torch.from_numpy(mean.copy()), torch.from_numpy(var.copy())
    out = F.batch_norm(torch.from_numpy(feature.copy()), rm, rv, training=True, momentum=momentum, eps=eps)
    return out.numpy(), rm.numpy(), rv.numpy()


def batch_norm_backward(dy, cache):
    x_hat, inv_std, gamma = cache
    dims = _dims(dy)
    shape = (1, -1) + (1,) * (dy.dim() - 2)
    dbeta, dgamma = dy.sum(dim=dims), (dy * x_hat).sum(dim=dims)
    m = dy.numel() // dy.shape[1]
    dxhat = dy * gamma.reshape(shape)
    dx = inv_std.reshape(shape) / m * (m * dxhat - dxhat.sum(dim=dims, keepdim=True)
                                       - x_hat * (dxhat * x_hat).sum(dim=dims, keepdim=True))
    return dx, dgamma, dbeta


class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        ns = {"torch": torch}
        exec(GIVEN_FORWARD, ns)
        y, cache = ns["batch_norm_forward"](x, gamma, beta, eps)
        ctx.save_for_backward(*cache)
        return y

    @staticmethod
    def backward(ctx, dy):
        return (*batch_norm_backward(dy, ctx.saved_tensors), None)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(x, normalized_shape, weight, bias, eps)


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    return F.instance_norm(x, weight=weight, bias=bias, eps=eps)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    return F.group_norm(x, num_groups, weight, bias, eps)


def freeze_batchnorm(model):
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
            m.train = lambda mode=True, _m=m: _m  # stays in eval after model.train()
            for p in m.parameters():
                p.requires_grad_(False)
    return model


def predict(model, x):
    flags = [m.training for m in model.modules()]
    model.eval()
    with torch.no_grad():
        y = model(x)
    for m, f in zip(model.modules(), flags):
        m.training = f
    return y


def recalibrate(model, loader):
    from torch.optim.swa_utils import update_bn

    update_bn(loader, model)
    return model


def fold_conv_bn(conv, bn):
    from coursekit.reference import fold_conv_bn as ref

    return ref(conv, bn)


def fold_linear_bn(linear, bn):
    from coursekit.reference import fold_linear_bn as ref

    return ref(linear, bn)


def fold_model(model):
    from coursekit.reference import fold_model as ref

    return ref(model)


CORRECT = {name: globals()[name] for name in PROBES}


# Known-wrong answers: each one a mistake the feedback names (or a plain wrong value).
def _wrong_var(x):
    return x.mean(dim=_dims(x)), x.var(dim=_dims(x), unbiased=True)


def _eps_outside(x, gamma, beta, eps=1e-5):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    m, v = channel_stats(x)
    return (x - m.reshape(shape)) / (v.reshape(shape).sqrt() + eps) * gamma.reshape(shape) + beta.reshape(shape)


def _reversed_momentum(rm, rv, x, momentum=0.1, num_batches_tracked=0):
    f = momentum if momentum is not None else 1.0 / (num_batches_tracked + 1)
    return update_running_stats(rm, rv, x, 1 - f)


class _NoRunningUpdate(nn.BatchNorm2d):
    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False if not self.training else True, 0.0, self.eps)


def _mutating_bn_process(feature, mean, var, momentum=0.1, eps=1e-5):
    out, nm, nv = bn_process(feature, mean, var, momentum, eps)
    feature[...] = out
    return out, nm, nv


def _bwd_no_dxhat_term(dy, cache):
    dx, dg, db = batch_norm_backward(dy, cache)
    return dx + 0.01, dg, db


class _AutogradFree(torch.autograd.Function):  # a backward that forgets the mean term
    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        return BatchNormFunction.forward(ctx, x, gamma, beta, eps)

    @staticmethod
    def backward(ctx, dy):
        x_hat, inv_std, gamma = ctx.saved_tensors
        shape = (1, -1) + (1,) * (dy.dim() - 2)
        dims = _dims(dy)
        return dy * gamma.reshape(shape) * inv_std.reshape(shape), (dy * x_hat).sum(dims), dy.sum(dims), None


def _ln_wrong_axes(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], None, None, eps) * (1 if weight is None else 1) + (0 if bias is None else 0)


def _in_as_bn(x, weight=None, bias=None, eps=1e-5):
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


def _gn_one_group(x, num_groups, weight=None, bias=None, eps=1e-5):
    return F.group_norm(x, 1, weight, bias, eps)


def _freeze_eval_only(model):  # undone by the next model.train()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    return model


def _predict_no_restore(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


def _recal_train_mode(model, loader):  # exponential average with momentum 0.1, not cumulative
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for x in loader:
            model(x)
    return model


def _fold_conv_drop_dilation(conv, bn):
    f = fold_conv_bn(conv, bn)
    f.dilation = (1,) * len(f.dilation)
    return f


def _fold_linear_ignore_bn(linear, bn):
    return copy.deepcopy(linear)


def _fold_model_keep_bn(model):
    return copy.deepcopy(model).eval()


WRONG = {
    "channel_stats": [_wrong_var],
    "batch_norm_train": [_eps_outside],
    "update_running_stats": [_reversed_momentum],
    "MyBatchNorm2d": [_NoRunningUpdate],
    "bn_process": [_mutating_bn_process],
    "batch_norm_backward": [_bwd_no_dxhat_term],
    "BatchNormFunction": [_AutogradFree],
    "layer_norm": [_ln_wrong_axes],
    "instance_norm": [_in_as_bn],
    "group_norm": [_gn_one_group],
    "freeze_batchnorm": [_freeze_eval_only],
    "predict": [_predict_no_restore],
    "recalibrate": [_recal_train_mode],
    "fold_conv_bn": [_fold_conv_drop_dilation],
    "fold_linear_bn": [_fold_linear_ignore_bn],
    "fold_model": [_fold_model_keep_bn],
}


def _run_probe(name, impl, tmp_path, seed=0):
    """Run a probe in-process with ``impl`` bound to the task's name; (status, message) as graded."""
    from coursekit.grader.grade import _read_outputs, _write_inputs

    probe = PROBES[name]
    cases = probe.make_cases(np.random.default_rng(seed))
    task_dir = tmp_path / name
    _write_inputs(task_dir, cases)
    ns = {"torch": torch, "nn": nn, "F": F, "np": np, name: impl, "_COURSEKIT_GIVEN": GIVEN_FORWARD}
    exec(HARNESS + probe.body, ns)
    ns["_coursekit_probe"](str(task_dir), ns["_coursekit_body"])
    return _read_outputs(task_dir, probe, cases)


def test_every_task_has_a_probe():
    assert set(PROBES) == {t.name for t in TASKS.values()}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_passes_a_correct_answer(name, tmp_path):
    assert _run_probe(name, CORRECT[name], tmp_path) == ("pass", "")


@pytest.mark.parametrize("name,wrong", [(n, w) for n, ws in WRONG.items() for w in ws],
                         ids=[f"{n}-{w.__name__}" for n, ws in WRONG.items() for w in ws])
def test_probe_fails_a_wrong_answer(name, wrong, tmp_path):
    status, message = _run_probe(name, wrong, tmp_path)
    assert status == "fail", message
    assert message.startswith("case ")


def test_probe_reports_an_exception_as_error(tmp_path):
    def boom(x):
        raise NotImplementedError()

    status, message = _run_probe("channel_stats", boom, tmp_path)
    assert status == "error" and "NotImplementedError" in message


def test_hints_name_the_known_mistakes(tmp_path):
    assert "biased variance" in _run_probe("channel_stats", _wrong_var, tmp_path)[1]
    assert "inside the square root" in _run_probe("batch_norm_train", _eps_outside, tmp_path / "b")[1]
    assert "reversed" in _run_probe("update_running_stats", _reversed_momentum, tmp_path / "c")[1]
    assert "modified in place" in _run_probe("bn_process", _mutating_bn_process, tmp_path / "d")[1]
    assert "dilation" in _run_probe("fold_conv_bn", _fold_conv_drop_dilation, tmp_path / "e")[1]


def test_close_reports_shape_dtype_and_location():
    assert close("y", np.zeros(3), np.zeros(3)) is None
    assert "expected shape (3,)" in close("y", np.zeros(2), np.zeros(3))
    assert "expected dtype float32" in close("y", np.zeros(3), np.zeros(3), dtype="float32")
    msg = close("y", np.array([0.0, 1.0, 0.0]), np.zeros(3))
    assert "index (1,)" in msg and "1.00e+00" in msg
    assert "nan" in close("y", np.array([np.nan]), np.zeros(1))


def test_norm_tasks_forbid_the_library_functions():
    for name in ("channel_stats", "batch_norm_train", "layer_norm", "instance_norm", "group_norm", "MyBatchNorm2d"):
        assert {"batch_norm", "BatchNorm2d", "layer_norm", "group_norm"} <= PROBES[name].forbidden
    assert "fusion" in PROBES["fold_conv_bn"].forbidden and "BatchNorm2d" not in PROBES["fold_model"].forbidden
    assert "BatchNorm2d" in NORM_NAMES


class _Tripwire:
    fired = False

    def __reduce__(self):  # unpickling this object would flip the flag
        return (_fire, ())


def _fire():
    _Tripwire.fired = True
    return 0


def test_pickled_outputs_are_never_loaded(tmp_path):
    """A kernel that writes an object array (a pickle) gets a failure, and nothing is unpickled."""
    import json

    from coursekit.grader.grade import _read_outputs, _write_inputs

    probe = PROBES["channel_stats"]
    cases = probe.make_cases(np.random.default_rng(0))[:1]
    _write_inputs(tmp_path / "t", cases)
    np.savez(tmp_path / "t" / "out0.npz", mean=np.array([_Tripwire()], dtype=object), var=np.zeros(3))
    (tmp_path / "t" / "res0.json").write_text(json.dumps({"ok": True, "meta": {}}))
    status, message = _read_outputs(tmp_path / "t", probe, cases)
    assert status == "fail" and "allow_pickle" in message
    assert not _Tripwire.fired
