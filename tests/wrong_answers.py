"""Known-wrong answers to every graded task, and the solutions, for testing checks and the grader.

A check that passes must be able to fail: each entry of ``WRONG[task]`` is a plausible learner
mistake (a function, or a class for the class tasks) and ``HINTS[task][name]`` is a fragment of
the hint ``coursekit.checks`` must give for it (``None``: it must fail, any hint). ``STUBS[task]``
is the unfinished exercise (raises ``NotImplementedError``), and ``solutions()`` executes the
answer cells of ``solutions/*.ipynb`` and returns the learner-facing names they define.

Names are stable: ``WRONG["batch_norm_train"]["unbiased_variance"]`` etc.
"""
from __future__ import annotations

import copy
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WRONG", "HINTS", "RIGHT", "STUBS", "SHORTCUTS", "EVADING", "solutions", "SOLUTIONS_DIR"]

SOLUTIONS_DIR = Path(__file__).resolve().parent.parent / "solutions"


def solutions() -> dict[str, object]:
    """Task name -> the object the solution notebooks define (setup, given and answer cells run)."""
    import nbformat

    from coursekit.tasks import EXERCISES

    out: dict[str, object] = {}
    for ex in EXERCISES:
        nb = nbformat.read(SOLUTIONS_DIR / ex.filename, as_version=4)
        ns: dict[str, object] = {"__name__": f"solution_{ex.lesson}"}
        for cell in nb.cells:
            if cell.cell_type == "code" and (cell.get("id") == "setup" or cell.get("id", "").startswith(("answer-", "given-"))):
                exec(compile(cell.source, f"{ex.stem}:{cell.id}", "exec"), ns)
        for task in ex.tasks:
            out[task.name] = ns[task.name]
    return out


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _dims(x):
    return [0, *range(2, x.dim())]


def _v(t, x):
    return t.reshape((1, -1) + (1,) * (x.dim() - 2))


def _bn(x, gamma=None, beta=None, eps=1e-5, dims=None, unbiased=False, eps_outside=False):
    dims = _dims(x) if dims is None else list(dims)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=unbiased, keepdim=True)
    y = (x - mean) / ((var.sqrt() + eps) if eps_outside else torch.sqrt(var + eps))
    if gamma is not None:
        y = y * _v(gamma, x)
    if beta is not None:
        y = y + _v(beta, x)
    return y


WRONG: dict[str, dict[str, object]] = {}
HINTS: dict[str, dict[str, str | None]] = {}


def _wrong(task: str, name: str, hint: str | None):
    def register(obj):
        WRONG.setdefault(task, {})[name] = obj
        HINTS.setdefault(task, {})[name] = hint
        return obj
    return register


# ------------------------------------------------------------------------------------------
# 02 channel_stats
# ------------------------------------------------------------------------------------------
@_wrong("channel_stats", "unbiased_variance", "biased variance")
def _(x):
    return x.mean(_dims(x)), x.var(_dims(x))


@_wrong("channel_stats", "std_not_var", "not the standard deviation")
def _(x):
    return x.mean(_dims(x)), x.std(_dims(x), unbiased=False)


@_wrong("channel_stats", "over_n_only", "reduce over N and every spatial dim")
def _(x):
    return x.mean(0), x.var(0, unbiased=False)


@_wrong("channel_stats", "per_sample_var_averaged", "not per sample then averaged")
def _(x):
    return x.mean(_dims(x)), x.var(list(range(2, x.dim())), unbiased=False).mean(0) if x.dim() > 2 else x.var(0, unbiased=False)


@_wrong("channel_stats", "mutates_input", "do not modify x")
def _(x):
    mean = x.mean(_dims(x))
    x.sub_(_v(mean, x))
    return mean, x.pow(2).mean(_dims(x))


@_wrong("channel_stats", "calls_F_batch_norm", "batch_norm")
def _(x):
    c = x.shape[1]
    rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0)
    n = x.numel() // c
    return rm, rv * (n - 1) / n


# ------------------------------------------------------------------------------------------
# 02 batch_norm_train
# ------------------------------------------------------------------------------------------
@_wrong("batch_norm_train", "unbiased_variance", "biased variance")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, gamma, beta, eps, unbiased=True)


@_wrong("batch_norm_train", "eps_outside_sqrt", "eps goes inside the square root")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, gamma, beta, eps, eps_outside=True)


@_wrong("batch_norm_train", "stats_over_n_only", "reduced over N only")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, gamma, beta, eps, dims=[0])


@_wrong("batch_norm_train", "per_sample_stats", "statistics over the wrong axes")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, gamma, beta, eps, dims=range(2, x.dim())) if x.dim() > 2 else _bn(x, gamma, beta, eps, dims=[1])


@_wrong("batch_norm_train", "layer_norm_axes", "that is layer norm")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, gamma, beta, eps, dims=range(1, x.dim()))


@_wrong("batch_norm_train", "gamma_beta_swapped", "swapped")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, beta, gamma, eps)


@_wrong("batch_norm_train", "no_affine", "apply the affine parameters")
def _(x, gamma, beta, eps=1e-5):
    return _bn(x, None, None, eps)


@_wrong("batch_norm_train", "detached_stats", "detached from the graph")
def _(x, gamma, beta, eps=1e-5):
    mean = x.mean(_dims(x), keepdim=True).detach()
    var = x.var(_dims(x), unbiased=False, keepdim=True).detach()
    return (x - mean) / torch.sqrt(var + eps) * _v(gamma, x) + _v(beta, x)


@_wrong("batch_norm_train", "via_numpy", "use torch operations on x only")
def _(x, gamma, beta, eps=1e-5):
    a = x.detach().numpy()
    axes = tuple(_dims(x))
    y = (a - a.mean(axis=axes, keepdims=True)) / np.sqrt(a.var(axis=axes, keepdims=True) + eps)
    return torch.from_numpy(y) * _v(gamma.detach(), x) + _v(beta.detach(), x)


@_wrong("batch_norm_train", "mutates_input", "do not modify x")
def _(x, gamma, beta, eps=1e-5):
    mean = x.mean(_dims(x), keepdim=True)
    var = x.var(_dims(x), unbiased=False, keepdim=True)
    if not x.requires_grad:
        x.sub_(mean)
        return x / torch.sqrt(var + eps) * _v(gamma, x) + _v(beta, x)
    return (x - mean) / torch.sqrt(var + eps) * _v(gamma, x) + _v(beta, x)


@_wrong("batch_norm_train", "calls_F_batch_norm", "batch_norm")
def _(x, gamma, beta, eps=1e-5):
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


@_wrong("batch_norm_train", "calls_torch_batch_norm_imported_name", "batch_norm")
def _(x, gamma, beta, eps=1e-5, _f=F.batch_norm):  # bound before the check: still caught one level down
    return _f(x, None, None, gamma, beta, training=True, eps=eps)


@_wrong("batch_norm_train", "uses_nn_BatchNorm", "BatchNorm1d")
def _(x, gamma, beta, eps=1e-5):
    bn = nn.BatchNorm1d(x.shape[1], eps=eps, track_running_stats=False).to(x.dtype)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    return bn(x if x.dim() <= 3 else x.flatten(2)).reshape(x.shape)


@_wrong("batch_norm_train", "swallows_the_sentinel", "batch_norm")
def _(x, gamma, beta, eps=1e-5):
    try:
        return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
    except Exception:
        return _bn(x, gamma, beta, eps)


# ------------------------------------------------------------------------------------------
# 03 update_running_stats
# ------------------------------------------------------------------------------------------
def _update(rm, rv, x, factor, unbiased=True):
    return (1 - factor) * rm + factor * x.mean(_dims(x)), (1 - factor) * rv + factor * x.var(_dims(x), unbiased=unbiased)


@_wrong("update_running_stats", "momentum_reversed", "momentum convention reversed")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    f = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    return _update(running_mean, running_var, x, 1 - f)


@_wrong("update_running_stats", "biased_running_var", "UNBIASED")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    f = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    return _update(running_mean, running_var, x, f, unbiased=False)


@_wrong("update_running_stats", "none_off_by_one", "counts the batches BEFORE x")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    f = 1.0 / max(num_batches_tracked, 1) if momentum is None else momentum
    return _update(running_mean, running_var, x, f)


@_wrong("update_running_stats", "none_as_default_momentum", "momentum=None means the cumulative average")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    return _update(running_mean, running_var, x, 0.1 if momentum is None else momentum)


@_wrong("update_running_stats", "in_place", "in place")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    f = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    m, v = _update(running_mean, running_var, x, f)
    running_mean.copy_(m)
    running_var.copy_(v)
    return running_mean, running_var


@_wrong("update_running_stats", "calls_F_batch_norm", "batch_norm")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    rm, rv = running_mean.clone(), running_var.clone()
    f = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    F.batch_norm(x, rm, rv, training=True, momentum=f)
    return rm, rv


# ------------------------------------------------------------------------------------------
# 03 MyBatchNorm2d: a correct base with switches for the mistakes
# ------------------------------------------------------------------------------------------
class _BN2d(nn.Module):
    reversed_momentum = False
    biased_running_var = False
    eval_uses_batch = False
    count_batches = True
    unbiased_normalize = False

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.eps, self.momentum, self.affine, self.track_running_stats = eps, momentum, affine, track_running_stats
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self._stats(num_features, track_running_stats)

    def _stats(self, c, track):
        self.register_buffer("running_mean", torch.zeros(c) if track else None)
        self.register_buffer("running_var", torch.ones(c) if track else None)
        self.register_buffer("num_batches_tracked", torch.tensor(0) if track else None)

    def forward(self, x):
        dims = (0, 2, 3)
        if self.training or not self.track_running_stats or self.eval_uses_batch:
            mean = x.mean(dims)
            var = x.var(dims, unbiased=self.unbiased_normalize)
            if self.training and self.track_running_stats:
                with torch.no_grad():
                    if self.count_batches:
                        self.num_batches_tracked += 1
                    f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                    if self.reversed_momentum:
                        f = 1 - f
                    self.running_mean.mul_(1 - f).add_(f * mean)
                    self.running_var.mul_(1 - f).add_(f * x.var(dims, unbiased=not self.biased_running_var))
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


@_wrong("MyBatchNorm2d", "momentum_reversed", "momentum convention reversed")
class _MomentumReversed(_BN2d):
    reversed_momentum = True


@_wrong("MyBatchNorm2d", "biased_running_var", "UNBIASED")
class _BiasedRunningVar(_BN2d):
    biased_running_var = True


@_wrong("MyBatchNorm2d", "unbiased_variance", "biased variance")
class _UnbiasedNormalize(_BN2d):
    unbiased_normalize = True


@_wrong("MyBatchNorm2d", "eval_uses_batch_stats", "in eval mode normalize with running_mean")
class _EvalBatch(_BN2d):
    eval_uses_batch = True


@_wrong("MyBatchNorm2d", "num_batches_not_counted", "add 1 to num_batches_tracked")
class _NoCount(_BN2d):
    count_batches = False


@_wrong("MyBatchNorm2d", "no_num_batches_tracked", "register weight and bias as nn.Parameter")
class _NoNbt(_BN2d):
    def _stats(self, c, track):
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))


@_wrong("MyBatchNorm2d", "stats_as_parameters", "running statistics are buffers")
class _StatsParams(_BN2d):
    def _stats(self, c, track):
        self.running_mean = nn.Parameter(torch.zeros(c), requires_grad=False)
        self.running_var = nn.Parameter(torch.ones(c), requires_grad=False)
        self.register_buffer("num_batches_tracked", torch.tensor(0))


@_wrong("MyBatchNorm2d", "subclasses_nn_BatchNorm2d", "BatchNorm2d")
class _Sub(nn.BatchNorm2d):
    pass


@_wrong("MyBatchNorm2d", "calls_F_batch_norm", "batch_norm")
class _CallsF(_BN2d):
    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            0.1 if self.momentum is None else self.momentum, self.eps)


# ------------------------------------------------------------------------------------------
# 03 bn_process
# ------------------------------------------------------------------------------------------
def _process(feature, mean, var, momentum=0.1, eps=1e-5, ddof_norm=0, ddof_run=1, rev=False, eps_outside=False):
    axes = (0, 2, 3)
    bm = feature.mean(axis=axes)
    sd = np.sqrt(feature.var(axis=axes, ddof=ddof_norm)).reshape(1, -1, 1, 1)
    out = (feature - bm.reshape(1, -1, 1, 1)) / ((sd + eps) if eps_outside else np.sqrt(sd ** 2 + eps))
    m = 1 - momentum if rev else momentum
    return out, (1 - m) * mean + m * bm, (1 - m) * var + m * feature.var(axis=axes, ddof=ddof_run)


@_wrong("bn_process", "seed_mutates_input", "overwrote its input")
def _(feature, mean, var, momentum=0.1, eps=1e-5):
    for i in range(feature.shape[1]):  # the seed's loop, writing back into its arguments
        ch = feature[:, i, :, :]
        m, s_pop, s_sample = ch.mean(), ch.std(), ch.std(ddof=1)
        feature[:, i, :, :] = (ch - m) / np.sqrt(s_pop ** 2 + eps)
        mean[i] = mean[i] * (1 - momentum) + m * momentum
        var[i] = var[i] * (1 - momentum) + s_sample ** 2 * momentum
    return feature, mean, var


@_wrong("bn_process", "ddof1_normalize", "population variance")
def _(feature, mean, var, momentum=0.1, eps=1e-5):
    return _process(feature, mean, var, momentum, eps, ddof_norm=1)


@_wrong("bn_process", "ddof0_running_var", "sample variance (ddof=1)")
def _(feature, mean, var, momentum=0.1, eps=1e-5):
    return _process(feature, mean, var, momentum, eps, ddof_run=0)


@_wrong("bn_process", "momentum_reversed", "momentum convention reversed")
def _(feature, mean, var, momentum=0.1, eps=1e-5):
    return _process(feature, mean, var, momentum, eps, rev=True)


@_wrong("bn_process", "eps_outside_sqrt", "eps goes inside the square root")
def _(feature, mean, var, momentum=0.1, eps=1e-5):
    return _process(feature, mean, var, momentum, eps, eps_outside=True)


@_wrong("bn_process", "returns_tensors", "return numpy arrays")
def _(feature, mean, var, momentum=0.1, eps=1e-5):
    return tuple(torch.from_numpy(np.asarray(a)) for a in _process(feature, mean, var, momentum, eps))


# ------------------------------------------------------------------------------------------
# 04 batch_norm_backward
# ------------------------------------------------------------------------------------------
def _bwd(dy, cache, stats_path=True, var_path=True, count="all", gamma_in_dx=True, swap=False):
    x_hat, inv_std, gamma = cache
    dims = _dims(dy)
    m = dy.numel() // dy.shape[1] if count == "all" else dy.shape[0]
    g = dy * _v(gamma, dy) if gamma_in_dx else dy
    if not stats_path:
        dx = g * _v(inv_std, dy)
    else:
        inner = m * g - _v(g.sum(dims), dy)
        if var_path:
            inner = inner - x_hat * _v((g * x_hat).sum(dims), dy)
        dx = _v(inv_std, dy) / m * inner
    dgamma, dbeta = (dy * x_hat).sum(dims), dy.sum(dims)
    return (dx, dbeta, dgamma) if swap else (dx, dgamma, dbeta)


@_wrong("batch_norm_backward", "stats_as_constants", "misses the paths through the batch mean and variance")
def _(dy, cache):
    return _bwd(dy, cache, stats_path=False)


@_wrong("batch_norm_backward", "missing_variance_term", "misses the variance path")
def _(dy, cache):
    return _bwd(dy, cache, var_path=False)


@_wrong("batch_norm_backward", "m_over_n_only", "not over N only")
def _(dy, cache):
    return _bwd(dy, cache, count="n")


@_wrong("batch_norm_backward", "gamma_missing_in_dx", "gamma scales dx")
def _(dy, cache):
    return _bwd(dy, cache, gamma_in_dx=False)


@_wrong("batch_norm_backward", "dgamma_dbeta_swapped", "swapped")
def _(dy, cache):
    return _bwd(dy, cache, swap=True)


@_wrong("batch_norm_backward", "sums_keep_dims", "keepdim")
def _(dy, cache):
    dx, dgamma, dbeta = _bwd(dy, cache)
    return dx, _v(dgamma, dy), _v(dbeta, dy)


@_wrong("batch_norm_backward", "mutates_dy", "do not modify dy")
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    dims = _dims(dy)
    dgamma, dbeta = (dy * x_hat).sum(dims), dy.sum(dims)
    dy.mul_(_v(gamma, dy))  # dx_hat computed in place
    m = dy.numel() // dy.shape[1]
    dx = _v(inv_std, dy) / m * (m * dy - _v(dy.sum(dims), dy) - x_hat * _v((dy * x_hat).sum(dims), dy))
    return dx, dgamma, dbeta


# ------------------------------------------------------------------------------------------
# 04 BatchNormFunction
# ------------------------------------------------------------------------------------------
def _fwd(x, gamma, beta, eps):
    dims = _dims(x)
    mean = x.mean(dims)
    inv_std = 1 / torch.sqrt(x.var(dims, unbiased=False) + eps)
    x_hat = (x - _v(mean, x)) * _v(inv_std, x)
    return x_hat * _v(gamma, x) + _v(beta, x), (x_hat, inv_std, gamma)


def _function(name, hint, backward_kwargs=None, n_grads=4, forward=None):
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps=1e-5):
            if forward is not None:
                return forward(x, gamma, beta, eps)
            y, cache = _fwd(x, gamma, beta, eps)
            ctx.save_for_backward(*cache)
            return y

        @staticmethod
        def backward(ctx, dy):
            grads = _bwd(dy, ctx.saved_tensors, **(backward_kwargs or {}))
            return (*grads, None)[:n_grads]

    Wrong.__name__ = Wrong.__qualname__ = f"BatchNormFunction_{name}"
    _wrong("BatchNormFunction", name, hint)(Wrong)


_function("stats_as_constants", "misses the paths through the batch mean and variance", {"stats_path": False})
_function("dgamma_dbeta_swapped", "swapped", {"swap": True})
_function("three_gradients", "one gradient per input of forward", n_grads=3)
_function("calls_F_batch_norm", "do not call F.batch_norm",
          forward=lambda x, g, b, eps: F.batch_norm(x, None, None, g, b, training=True, eps=eps))


@_wrong("BatchNormFunction", "not_a_function", "torch.autograd.Function")
class _NotAFunction:
    @staticmethod
    def apply(x, gamma, beta, eps=1e-5):
        return _fwd(x, gamma, beta, eps)[0]


# ------------------------------------------------------------------------------------------
# 05 layer_norm, instance_norm, group_norm
# ------------------------------------------------------------------------------------------
def _ln(x, normalized_shape, weight=None, bias=None, eps=1e-5, dims=None, unbiased=False, eps_outside=False):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    dims = tuple(range(x.dim() - len(shape), x.dim())) if dims is None else tuple(dims)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=unbiased, keepdim=True)
    y = (x - mean) / ((var.sqrt() + eps) if eps_outside else torch.sqrt(var + eps))
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@_wrong("layer_norm", "unbiased_variance", "biased variance")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _ln(x, normalized_shape, weight, bias, eps, unbiased=True)


@_wrong("layer_norm", "eps_outside_sqrt", "eps goes inside the square root")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _ln(x, normalized_shape, weight, bias, eps, eps_outside=True)


@_wrong("layer_norm", "last_dim_only", "not the last one only")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _ln(x, normalized_shape, weight, bias, eps, dims=(-1,))


@_wrong("layer_norm", "all_but_first_dim", "trailing normalized_shape dims only")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _ln(x, normalized_shape, weight, bias, eps, dims=range(1, x.dim()))


@_wrong("layer_norm", "batch_axes", "per sample")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _ln(x, normalized_shape, weight, bias, eps, dims=(0,))


@_wrong("layer_norm", "none_not_handled", "apply each one only when it is not None")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _ln(x, normalized_shape, None, None, eps) * weight + bias


@_wrong("layer_norm", "int_shape_not_handled", "normalized_shape may be an int")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(x.dim() - len(normalized_shape), x.dim()))
    return _ln(x, tuple(normalized_shape), weight, bias, eps, dims=dims)


@_wrong("layer_norm", "calls_F_layer_norm", "layer_norm")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return F.layer_norm(x, shape, weight, bias, eps)


@_wrong("layer_norm", "calls_F_group_norm", "group_norm")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    y = F.group_norm(x.reshape(-1, 1, int(np.prod(shape))), 1, eps=eps).reshape(x.shape)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def _in(x, weight=None, bias=None, eps=1e-5, dims=None, **kw):
    dims = range(2, x.dim()) if dims is None else dims
    return _bn(x, weight, bias, eps, dims=dims, **kw)


@_wrong("instance_norm", "batch_stats", "that is batch norm")
def _(x, weight=None, bias=None, eps=1e-5):
    return _in(x, weight, bias, eps, dims=_dims(x))


@_wrong("instance_norm", "layer_stats", "that is layer norm")
def _(x, weight=None, bias=None, eps=1e-5):
    return _in(x, weight, bias, eps, dims=range(1, x.dim()))


@_wrong("instance_norm", "unbiased_variance", "biased variance")
def _(x, weight=None, bias=None, eps=1e-5):
    return _in(x, weight, bias, eps, unbiased=True)


@_wrong("instance_norm", "eps_outside_sqrt", "eps goes inside the square root")
def _(x, weight=None, bias=None, eps=1e-5):
    return _in(x, weight, bias, eps, eps_outside=True)


@_wrong("instance_norm", "calls_F_instance_norm", "instance_norm")
def _(x, weight=None, bias=None, eps=1e-5):
    return F.instance_norm(x, weight=weight, bias=bias, eps=eps)


@_wrong("instance_norm", "uses_nn_InstanceNorm", "InstanceNorm")
def _(x, weight=None, bias=None, eps=1e-5):
    layer = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[x.dim()](x.shape[1], eps=eps)
    y = layer(x)
    return y * _v(weight, x) if weight is not None else y


def _gn(x, g, weight=None, bias=None, eps=1e-5, strided=False, dims=(2,), **kw):
    n, c = x.shape[:2]
    xs = x.reshape(n, c // g, g, *x.shape[2:]).transpose(1, 2) if strided else x
    r = xs.reshape(n, g, -1)
    y = _bn(r, eps=eps, dims=dims, **kw).reshape(xs.shape)
    if strided:
        y = y.transpose(1, 2).reshape(x.shape)
    if weight is not None:
        y = y * _v(weight, x)
    if bias is not None:
        y = y + _v(bias, x)
    return y


@_wrong("group_norm", "strided_groups", "CONSECUTIVE")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _gn(x, num_groups, weight, bias, eps, strided=True)


@_wrong("group_norm", "unbiased_variance", "biased variance")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _gn(x, num_groups, weight, bias, eps, unbiased=True)


@_wrong("group_norm", "eps_outside_sqrt", "eps goes inside the square root")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _gn(x, num_groups, weight, bias, eps, eps_outside=True)


@_wrong("group_norm", "per_channel_stats", "that is instance norm")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _bn(x, weight, bias, eps, dims=range(2, x.dim())) if x.dim() > 2 else _gn(x, x.shape[1], weight, bias, eps)


@_wrong("group_norm", "groups_across_batch", "not across the batch")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _gn(x, num_groups, weight, bias, eps, dims=(0, 2))


@_wrong("group_norm", "calls_F_group_norm", "group_norm")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return F.group_norm(x, num_groups, weight, bias, eps)


# ------------------------------------------------------------------------------------------
# 06 freeze_batchnorm, predict, recalibrate
# ------------------------------------------------------------------------------------------
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _keep_eval(module, mode=True):
    return nn.Module.train(module, False)


def _freeze(model, survive=True, grads=True, also=()):
    for m in model.modules():
        if isinstance(m, _BN_TYPES + tuple(also)):
            m.eval()
            if grads:
                for p in m.parameters():
                    p.requires_grad_(False)
            if survive:
                m.train = types.MethodType(_keep_eval, m)
    return model


@_wrong("freeze_batchnorm", "eval_only", "the freeze must survive it")
def _(model):
    return _freeze(model, survive=False)


@_wrong("freeze_batchnorm", "model_eval", "the freeze must survive it")
def _(model):
    model.eval()
    return _freeze(model, survive=False)


@_wrong("freeze_batchnorm", "momentum_zero", "normalizes with its running statistics")
def _(model):
    for m in model.modules():
        if isinstance(m, _BN_TYPES):
            m.momentum = 0.0
            for p in m.parameters():
                p.requires_grad_(False)
    return model


@_wrong("freeze_batchnorm", "affine_still_trains", "freeze the affine parameters too")
def _(model):
    return _freeze(model, grads=False)


@_wrong("freeze_batchnorm", "freezes_dropout_too", "freeze only the BatchNorm layers")
def _(model):
    return _freeze(model, also=(nn.Dropout,))


@_wrong("freeze_batchnorm", "freezes_all_parameters", "freeze only the BatchNorm layers' parameters")
def _(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return _freeze(model)


@_wrong("freeze_batchnorm", "returns_none", "return the model")
def _(model):
    _freeze(model)


# Forgers: they do not do the task but make what the kernel would REPORT look right (flags measured in
# the kernel); the judges recompute from data instead, so they fail like any do-nothing answer.
def _poke_callers(**values):
    """Overwrite entries of any dict named ``meta`` in the callers' frames (the body's record)."""
    import sys

    f = sys._getframe(2)
    while f is not None:
        meta = f.f_locals.get("meta")
        if isinstance(meta, dict):
            meta.update(values)
        f = f.f_back


@_wrong("freeze_batchnorm", "does_nothing_forges_flags", None)
def _(model):
    # reports BN parameters as frozen (named_parameters lies) and keeps a snapshot as the "state"
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    bn = tuple(n + "." for n, m in model.named_modules() if isinstance(m, _BN_TYPES))
    real = model.named_parameters

    def named_parameters(*args, **kwargs):
        for n, p in real(*args, **kwargs):
            yield n, (p.detach() if n.startswith(bn) else p)

    model.named_parameters = named_parameters
    model.state_dict = lambda *a, **k: {k2: v.clone() for k2, v in snapshot.items()}
    return model


@_wrong("predict", "leaves_eval_forges_flags", "restore each submodule's OWN previous flag")
def _(model, x):
    model.eval()  # never restored ...
    with torch.no_grad():
        y = model(x)
    # ... but the recorded "flags before" are made to match the flags after
    _poke_callers(flags_before=[m.training for m in model.modules()])
    return y


class _HiddenBN(nn.Module):
    """Runs a BN in eval mode while hiding it from modules() (an nn.Identity child stands in for it)."""

    def __init__(self, bn):
        super().__init__()
        object.__setattr__(self, "hidden", bn.eval())
        self.stand_in = nn.Identity()
        self.eval()

    def forward(self, x):
        return self.hidden(x)


@_wrong("fold_model", "does_not_fold_hides_bn", "replace each folded layer by the folded one")
def _(model):
    # folds nothing: each BN after a conv/linear is hidden so the counts the kernel reports look folded
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        kids = list(seq)
        for i in range(1, len(kids)):
            if isinstance(kids[i], _BN_TYPES) and isinstance(kids[i - 1], (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                seq[i] = _HiddenBN(kids[i])
    return model


@_wrong("predict", "no_eval", "eval")
def _(model, x):
    with torch.no_grad():
        return model(x)


@_wrong("predict", "no_restore", "restore each submodule's OWN previous flag")
def _(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@_wrong("predict", "restores_with_model_train", "restore each submodule's OWN previous flag")
def _(model, x):
    was = model.training
    model.eval()
    with torch.no_grad():
        y = model(x)
    model.train(was)
    return y


@_wrong("predict", "autograd_on", "without autograd")
def _(model, x):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    y = model(x)
    for m, f in flags:
        m.training = f
    return y


@_wrong("predict", "no_finally", "finally")
def _(model, x):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        y = model(x)
    for m, f in flags:
        m.training = f
    return y


def _recal(model, loader, reset=True, momentum=None, restore_mode=True, restore_momentum=True):
    bns = [m for m in model.modules() if isinstance(m, _BN_TYPES)]
    was, momenta = model.training, [bn.momentum for bn in bns]
    for bn in bns:
        if reset:
            bn.reset_running_stats()
        bn.momentum = momentum
    model.train()
    with torch.no_grad():
        for b in loader:
            model(b[0] if isinstance(b, (list, tuple)) else b)
    if restore_momentum:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    if restore_mode:
        model.train(was)
    return model


@_wrong("recalibrate", "no_reset", "reset the running statistics first")
def _(model, loader):
    return _recal(model, loader, reset=False)


@_wrong("recalibrate", "moving_average", "cumulative average")
def _(model, loader):
    return _recal(model, loader, momentum=0.1)


@_wrong("recalibrate", "mode_not_restored", "restore the model's previous mode")
def _(model, loader):
    return _recal(model, loader, restore_mode=False)


@_wrong("recalibrate", "momentum_not_restored", "restore each BN layer's momentum")
def _(model, loader):
    return _recal(model, loader, restore_momentum=False)


@_wrong("recalibrate", "calls_update_bn", "do not use swa_utils")
def _(model, loader):
    torch.optim.swa_utils.update_bn(loader, model)
    return model


# ------------------------------------------------------------------------------------------
# 07 fold_conv_bn, fold_linear_bn, fold_model
# ------------------------------------------------------------------------------------------
def _fold_wb(layer, bn, eps_outside=False, use_bias=True):
    with torch.no_grad():
        std = (bn.running_var.sqrt() + bn.eps) if eps_outside else torch.sqrt(bn.running_var + bn.eps)
        s = bn.weight / std
        b = layer.bias if (layer.bias is not None and use_bias) else torch.zeros_like(bn.running_mean)
        return layer.weight * s.reshape((-1,) + (1,) * (layer.weight.dim() - 1)), (b - bn.running_mean) * s + bn.bias


def _fold(layer, bn, **kw):
    w, b = _fold_wb(layer, bn, **kw)
    out = copy.deepcopy(layer)
    with torch.no_grad():
        out.weight.copy_(w)
    out.bias = nn.Parameter(b)
    return out


@_wrong("fold_conv_bn", "seed_fuse_drops_dilation", "lost dilation")
def _(conv, bn):
    w, b = _fold_wb(conv, bn)
    cls = type(conv)
    out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
              groups=conv.groups, bias=True).to(w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


@_wrong("fold_conv_bn", "drops_padding_mode", "lost padding_mode")
def _(conv, bn):
    w, b = _fold_wb(conv, bn)
    out = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=True).to(w.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        out.bias.copy_(b)
    return out


@_wrong("fold_conv_bn", "bias_none_not_handled", "conv.bias is None")
def _(conv, bn):
    out = copy.deepcopy(conv)
    with torch.no_grad():
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        out.weight.mul_(s.reshape(-1, *[1] * (conv.weight.dim() - 1)))
        out.bias = nn.Parameter((conv.bias - bn.running_mean) * s + bn.bias)
    return out


@_wrong("fold_conv_bn", "eps_outside_sqrt", "eps goes inside the square root")
def _(conv, bn):
    return _fold(conv, bn, eps_outside=True)


@_wrong("fold_conv_bn", "conv_bias_ignored", "include the layer's own bias")
def _(conv, bn):
    return _fold(conv, bn, use_bias=False)


@_wrong("fold_conv_bn", "mutates_conv", "modified conv or bn")
def _(conv, bn):
    w, b = _fold_wb(conv, bn)
    with torch.no_grad():
        conv.weight.copy_(w)
    conv.bias = nn.Parameter(b)
    return conv


@_wrong("fold_conv_bn", "calls_fuse_conv_bn_eval", "do not use fuse_conv_bn_eval")
def _(conv, bn):
    from torch.nn.utils import fusion

    return fusion.fuse_conv_bn_eval(conv, bn)


@_wrong("fold_linear_bn", "bias_none_not_handled", "linear.bias is None")
def _(linear, bn):
    out = copy.deepcopy(linear)
    with torch.no_grad():
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        out.weight.mul_(s[:, None])
        out.bias = nn.Parameter((linear.bias - bn.running_mean) * s + bn.bias)
    return out


@_wrong("fold_linear_bn", "eps_outside_sqrt", "eps goes inside the square root")
def _(linear, bn):
    return _fold(linear, bn, eps_outside=True)


@_wrong("fold_linear_bn", "linear_bias_ignored", "include the layer's own bias")
def _(linear, bn):
    return _fold(linear, bn, use_bias=False)


@_wrong("fold_linear_bn", "mutates_linear", "modified linear or bn")
def _(linear, bn):
    w, b = _fold_wb(linear, bn)
    with torch.no_grad():
        linear.weight.copy_(w)
    linear.bias = nn.Parameter(b)
    return linear


@_wrong("fold_linear_bn", "calls_fuse_linear_bn_eval", "do not use fuse_linear_bn_eval")
def _(linear, bn):
    from torch.nn.utils import fusion

    return fusion.fuse_linear_bn_eval(linear, bn)


_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _fold_seq(model, recurse=True, replace=True, skip_activations=False):
    if recurse:
        for child in model.children():
            _fold_seq(child, recurse, replace, skip_activations)
    if isinstance(model, nn.Sequential):
        i = 1
        while i < len(model):
            j = i - 1
            if skip_activations:
                while j > 0 and isinstance(model[j], (nn.ReLU,)):
                    j -= 1
            if isinstance(model[i], _BN_TYPES) and isinstance(model[j], _FOLDABLE):
                model[j] = _fold(model[j], model[i])
                if replace:
                    model[i] = nn.Identity()
                else:
                    del model[i]
                    continue
            i += 1
    return model


@_wrong("fold_model", "top_level_only", "recurse")
def _(model):
    return _fold_seq(copy.deepcopy(model).eval(), recurse=False).eval()


@_wrong("fold_model", "mutates_original", "changed the original model")
def _(model):
    return _fold_seq(model.eval())


@_wrong("fold_model", "left_in_training_mode", "eval mode")
def _(model):
    return _fold_seq(copy.deepcopy(model))


@_wrong("fold_model", "deletes_bn", "replace each folded BN by nn.Identity")
def _(model):
    return _fold_seq(copy.deepcopy(model), replace=False).eval()


@_wrong("fold_model", "folds_through_relu", "a BN after e.g. ReLU must stay")
def _(model):
    return _fold_seq(copy.deepcopy(model), skip_activations=True).eval()


@_wrong("fold_model", "calls_fx_fuse", "do not use fuse")
def _(model):
    from torch.fx.experimental import optimization

    return optimization.fuse(copy.deepcopy(model).eval())


# ------------------------------------------------------------------------------------------
# from published code (blog posts, course solutions, detection repos) and probes the grader must survive
# ------------------------------------------------------------------------------------------
@_wrong("channel_stats", "keepdim_shapes", "keepdim")
def _(x):
    return x.mean(_dims(x), keepdim=True), x.var(_dims(x), unbiased=False, keepdim=True)


@_wrong("channel_stats", "unbiased_variance_probe", "biased variance")
def _(x):
    return x.mean(dim=_dims(x)), x.var(dim=_dims(x), unbiased=True)


@_wrong("batch_norm_train", "getattr_name_from_strings", "batch_norm")
def _(x, gamma, beta, eps=1e-5):
    return getattr(F, "batch" + "_norm")(x, None, None, gamma, beta, training=True, eps=eps)


@_wrong("batch_norm_train", "stats_in_float32", "float32 precision")
def _(x, gamma, beta, eps=1e-5):
    xf = x.float()
    mean = xf.mean(_dims(x), keepdim=True)
    var = xf.var(_dims(x), unbiased=False, keepdim=True)
    return ((x - mean.to(x.dtype)) / torch.sqrt(var.to(x.dtype) + eps)) * _v(gamma, x) + _v(beta, x)


@_wrong("batch_norm_train", "assumes_4d_input", "fixed number of dimensions")
def _(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * gamma.view(1, c, 1, 1) + beta.view(1, c, 1, 1)


@_wrong("batch_norm_backward", "bessel_factor", "n/(n-1)")
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    dx, dg, db = _bwd(dy, cache)
    m = dy.numel() // dy.shape[1]
    return dx * m / (m - 1), dg, db


@_wrong("batch_norm_backward", "autograd_grad", "no autograd")
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    shape = (1, -1) + (1,) * (dy.dim() - 2)
    x = (x_hat / inv_std.reshape(shape)).detach().requires_grad_(True)  # any x with this x_hat
    g = gamma.detach().clone().requires_grad_(True)
    b = torch.zeros_like(g, requires_grad=True)
    dims = _dims(dy)
    y = (x - x.mean(dims, keepdim=True)) * inv_std.reshape(shape) * g.reshape(shape) + b.reshape(shape)
    return torch.autograd.grad(y, (x, g, b), dy)


@_wrong("batch_norm_backward", "dx_off_by_a_constant", None)
def _(dy, cache):
    dx, dg, db = _bwd(dy, cache)
    return dx + 0.01, dg, db


@_wrong("freeze_batchnorm", "only_batchnorm2d", "BatchNorm1d layers were not frozen")
def _(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            m.train = lambda mode=True, _m=m: _m
            for p in m.parameters():
                p.requires_grad_(False)
    return model


def _scaled(layer, bn):
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1)), scale


def _new_layer(layer, weight, bias):
    new = copy.deepcopy(layer)
    with torch.no_grad():
        new.weight.copy_(weight)
        new.bias = nn.Parameter(bias.detach().clone())
    return new


@_wrong("fold_conv_bn", "original_bias_not_scaled", "the original bias is scaled too")
def _(conv, bn):
    s, scale = _scaled(conv, bn)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return _new_layer(conv, conv.weight.detach() * s, b + bn.bias.detach() - bn.running_mean * scale)


@_wrong("fold_conv_bn", "divides_by_rsqrt", "multiplied by gamma * rsqrt")
def _(conv, bn):
    r = torch.rsqrt(bn.running_var + bn.eps)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    scale = bn.weight.detach() / r
    return _new_layer(conv, conv.weight.detach() * scale.reshape((-1,) + (1,) * (conv.weight.dim() - 1)),
                      (b - bn.running_mean) * scale + bn.bias.detach())


@_wrong("fold_conv_bn", "swallows_error_returns_input", "let the exception show")
def _(conv, bn):
    try:
        std = bn.running_std  # no such attribute: the helper's except hides it
        return _new_layer(conv, conv.weight / std, conv.bias)
    except Exception:
        return conv


@_wrong("fold_conv_bn", "float32_layer", "keep the original layer's dtype")
def _(conv, bn):
    s, scale = _scaled(conv, bn)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new = copy.deepcopy(conv).float()  # a fresh default-dtype layer
    with torch.no_grad():
        new.weight.copy_(conv.weight * s)
        new.bias = nn.Parameter(((b - bn.running_mean) * scale + bn.bias).float())
    return new


@_wrong("fold_linear_bn", "returns_a_copy_unfolded", None)
def _(linear, bn):
    return copy.deepcopy(linear)


@_wrong("fold_model", "keeps_every_bn", "fold every conv/linear -> BN pair")
def _(model):
    return copy.deepcopy(model).eval()


# ------------------------------------------------------------------------------------------
# obfuscated library calls the static scan cannot see: caught at run time, in the check and the grader
# ------------------------------------------------------------------------------------------
@_wrong("batch_norm_backward", "autograd_through_built_names", "no autograd")
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    shape = (1, -1) + (1,) * (dy.dim() - 2)
    x = (x_hat / inv_std.reshape(shape)).detach().requires_grad_(True)
    g = gamma.detach().clone().requires_grad_(True)
    b = torch.zeros_like(g, requires_grad=True)
    dims = _dims(dy)
    y = (x - x.mean(dims, keepdim=True)) * inv_std.reshape(shape) * g.reshape(shape) + b.reshape(shape)
    differentiate = getattr(getattr(torch, "auto" + "grad"), "gr" + "ad")
    return differentiate(y, (x, g, b), dy)


@_wrong("recalibrate", "update_bn_through_built_names", "do not call torch.optim.swa_utils.update_bn")
def _(model, loader):
    import importlib

    getattr(importlib.import_module("torch.optim." + "swa" + "_utils"), "update" + "_bn")(loader, model)
    return model


@_wrong("fold_conv_bn", "fusion_through_built_names", "do not call torch.nn.utils.fusion.fuse_conv_bn_eval")
def _(conv, bn):
    import importlib

    return getattr(importlib.import_module("torch.nn.utils." + "fu" + "sion"), "fuse_conv_bn" + "_eval")(conv, bn)


# ------------------------------------------------------------------------------------------
# run-time shortcuts: the library reached through another thread or process, with the record
# switched off or edited, through operators or Python implementations a typed list would miss, or
# copied at run time. Refused by coursekit.grader.guard in the check and the grader alike;
# SHORTCUTS lists them with the layer that stops them (tests/test_shortcuts.py)
# ------------------------------------------------------------------------------------------
SHORTCUTS: dict[str, dict[str, str]] = {}  # task -> shortcut name -> class of shortcut


def _shortcut(task: str, name: str, kind: str, hint: str | None):
    def register(obj):
        SHORTCUTS.setdefault(task, {})[name] = kind
        return _wrong(task, name, hint)(obj)
    return register


def _lib(name):
    """A function of torch.nn.functional under a name the static scan cannot see."""
    return getattr(F, name.replace("-", "_"))


def _in_thread(fn, *args):
    """``fn(*args)`` in another thread; its exception re-raised here (as a thread pool would)."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # handed back to the caller
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _in_fork(fn, *args):
    """``fn(*args)`` in a forked child; the result comes back pickled through a pipe."""
    import os
    import pickle

    r, w = os.pipe()
    pid = getattr(os, "fo" + "rk")()
    if pid == 0:  # the child: compute, send, leave without running the parent's cleanup
        try:
            os.write(w, pickle.dumps(fn(*args)))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return pickle.loads(data)


def _bn_lib(x, gamma, beta, eps):
    return _lib("batch-norm")(x, None, None, gamma, beta, training=True, eps=eps)


def _stats_lib(x):
    c = x.shape[1]
    rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
    _lib("batch-norm")(x, rm, rv, training=True, momentum=1.0)
    n = x.numel() // c
    return rm, rv * (n - 1) / n


def _copied(module: str, attr: str):
    """A watched function rebuilt at run time from its code object (``code.replace``): a new code object."""
    import importlib
    import inspect

    fn = inspect.unwrap(getattr(importlib.import_module(module), attr))
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _source_exec(module: str, attr: str):
    """A module's source read from disk and exec'd under another name: the function it defines."""
    import importlib.util

    path = importlib.util.find_spec(module).origin
    with open(path) as f:
        source = f.read()
    ns: dict = {"__name__": "learners_copy"}
    exec(compile(source, "learners_copy.py", "exec"), ns)
    return ns[attr]


# 02 ------------------------------------------------------------------------------------------
@_shortcut("channel_stats", "stats_in_a_thread", "thread", "do not call F.batch_norm")
def _(x):
    return _in_thread(_stats_lib, x)


@_shortcut("channel_stats", "stats_in_a_forked_child", "process", "compute in this process")
def _(x):
    return _in_fork(_stats_lib, x)


@_shortcut("channel_stats", "stats_from_python_c", "process", "compute in this process")
def _(x):
    import json
    import subprocess
    import sys

    code = ("import json,sys,torch; d=json.load(sys.stdin); x=torch.tensor(d['x'],dtype=torch.float64); "
            "dims=[0,*range(2,x.dim())]; c=x.shape[1]; rm,rv=torch.zeros(c,dtype=x.dtype),torch.ones(c,dtype=x.dtype); "
            "getattr(torch.nn.functional,'batch'+'_norm')(x,rm,rv,training=True,momentum=1.0); n=x.numel()//c; "
            "print(json.dumps([rm.tolist(),(rv*(n-1)/n).tolist()]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps({"x": x.tolist()}),
                                      capture_output=True, text=True, check=True).stdout
    mean, var = json.loads(out)
    return torch.tensor(mean, dtype=x.dtype), torch.tensor(var, dtype=x.dtype)


def _bn_decomp_backward(dy, x, gamma, eps):
    """The gradients of training-mode BN from torch's Python decomposition (plain ops a typed list misses)."""
    import importlib

    decomp = importlib.import_module("torch._" + "decomp.decompositions")
    dims = _dims(x)
    mean, invstd = x.mean(dims), torch.rsqrt(x.var(dims, unbiased=False) + eps)
    return getattr(decomp, "native_batch" + "_norm_backward")(dy, x, gamma, None, None, mean, invstd, True, eps,
                                                               [True, True, True])


def _evading(forward, run):
    """``forward(x, gamma, beta, eps)`` as an autograd.Function whose forward and backward are both run by
    ``run(fn, *args)`` (a thread, a process, the record switched off, ...): no library call is left for
    the body's own backward to show."""

    class Evading(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps):
            ctx.save_for_backward(x, gamma)
            ctx.eps, ctx.given = eps, (gamma is not None, beta is not None)
            return run(forward, *(None if t is None else t.detach() for t in (x, gamma, beta)), eps)

        @staticmethod
        def backward(ctx, dy):
            x, gamma = ctx.saved_tensors
            dx, dgamma, dbeta = run(_bn_decomp_backward, dy, x, gamma, ctx.eps)
            return dx, dgamma if ctx.given[0] else None, dbeta if ctx.given[1] else None, None

    return Evading.apply


def _direct(fn, *args):
    return fn(*args)


def _pool(fn, *args):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def _mp_fork(fn, *args):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(fn, args)


def _modes_off(fn, *args):
    from torch.utils import _python_dispatch

    with _python_dispatch._disable_current_modes():
        return fn(*args)


def _dispatch_off(fn, *args):
    with torch._C._DisableTorchDispatch():
        return fn(*args)


def _stack_popped(fn, *args):
    modes = []
    while torch._C._len_torch_dispatch_stack():
        modes.append(torch._C._pop_torch_dispatch_stack(None))
    try:
        return fn(*args)
    finally:
        for mode in reversed(modes):
            torch._C._push_on_torch_dispatch_stack(mode)


def _record_blinded(fn, *args):
    class Blind(set):
        def add(self, item):
            pass

    for i in range(torch._C._len_torch_dispatch_stack()):
        torch._C._get_dispatch_stack_at(i).ops = Blind()
    return fn(*args)


def _bn_redispatch(x, gamma, beta, eps):
    op = getattr(torch.ops.aten, "native" + "_batch_norm").default
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
    return op.redispatch(keys, x, gamma, beta, None, None, True, 0.0, eps)[0]


def _bn_with_update(x, gamma, beta, eps):
    c = x.shape[1]
    rm, rv = torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype)
    return getattr(torch.ops.aten, "_batch_norm" + "_with_update")(x, gamma, beta, rm, rv, 0.1, eps)[0]


def _bn_decomp(x, gamma, beta, eps):
    import importlib

    decomp = importlib.import_module("torch._" + "decomp.decompositions")
    return getattr(decomp, "native" + "_batch_norm")(x, gamma, beta, None, None, True, 0.1, eps)[0]


def _bn_zscore(x, gamma, beta, eps):
    import importlib

    zscore = getattr(importlib.import_module("scipy." + "stats"), "z" + "score")
    dims = tuple(_dims(x))
    var = x.var(dims, unbiased=False, keepdim=True)
    y = torch.from_numpy(zscore(x.numpy(), axis=dims)) * torch.sqrt(var / (var + eps))
    return y * _v(gamma, x) + _v(beta, x)


EVADING: dict[str, tuple] = {}  # batch_norm_train shortcut -> (forward, run), for answer cells built from them
for _name, _kind, _forward, _run in (
        ("thread_pool", "thread", _bn_lib, _pool),
        ("multiprocessing_fork", "process", _bn_lib, _mp_fork),
        ("modes_disabled", "record off", _bn_lib, _modes_off),
        ("torch_dispatch_disabled", "record off", _bn_lib, _dispatch_off),
        ("mode_stack_popped", "record off", _bn_lib, _stack_popped),
        ("recorder_ops_replaced", "record edited", _bn_lib, _record_blinded),
        ("redispatch_below_the_record", "record off", _bn_redispatch, _direct),
        ("batch_norm_with_update_op", "unlisted op", _bn_with_update, _direct),
        ("torch_decomp_native_batch_norm", "decomposition", _bn_decomp, _direct),
        ("scipy_zscore", "library normalization", _bn_zscore, _direct)):
    _hint = {"process": "compute in this process", "decomposition": "do not call torch._decomp",
             "library normalization": "do not call scipy"}.get(_kind, "do not call F.batch_norm")
    EVADING[_name] = (_forward, _run)
    _shortcut("batch_norm_train", _name, _kind, _hint)(
        lambda x, gamma, beta, eps=1e-5, _f=_forward, _r=_run: _evading(_f, _r)(x, gamma, beta, eps))


@_shortcut("batch_norm_train", "reference_code_copied", "copied code", "do not call coursekit.reference")
def _(x, gamma, beta, eps=1e-5):
    return _copied("coursekit." + "reference.functional", "batch" + "_norm")(x, None, None, gamma, beta, training=True,
                                                                             eps=eps)


@_shortcut("batch_norm_train", "reference_source_exec", "source exec", "copying the library's code")
def _(x, gamma, beta, eps=1e-5):
    fn = _source_exec("coursekit." + "reference.functional", "batch" + "_norm")
    return fn(x, None, None, gamma, beta, training=True, eps=eps)


# 03 ------------------------------------------------------------------------------------------
def _running_stats_by_library(running_mean, running_var, x, momentum, num_batches_tracked):
    """What both shortcuts below compute, elsewhere: the running-statistics update of F.batch_norm."""
    def work():
        rm, rv = running_mean.clone(), running_var.clone()
        f = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
        _lib("batch-norm")(x, rm, rv, training=True, momentum=f)
        return rm, rv

    return work


@_shortcut("update_running_stats", "running_stats_in_a_thread", "thread", "do not call F.batch_norm")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    return _in_thread(_running_stats_by_library(running_mean, running_var, x, momentum, num_batches_tracked))


@_shortcut("update_running_stats", "running_stats_in_a_forked_child", "process", "compute in this process")
def _(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    return _in_fork(_running_stats_by_library(running_mean, running_var, x, momentum, num_batches_tracked))


class _UnlistedOps(_BN2d):
    """The library's training and eval kernels under operator names a typed list missed."""

    def forward(self, x):
        aten = torch.ops.aten
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            rm, rv = self.running_mean, self.running_var

            def train(x, gamma, beta, eps):
                return getattr(aten, "_batch_norm" + "_with_update")(x, gamma, beta, rm, rv, f, eps)[0]

            return _evading(train, _direct)(x, self.weight, self.bias, self.eps)
        if not self.training and self.track_running_stats:
            return getattr(aten, "_batch_norm" + "_no_update")(x, self.weight, self.bias, self.running_mean,
                                                               self.running_var, 0.0, self.eps)[0]
        return super().forward(x)


_shortcut("MyBatchNorm2d", "batch_norm_with_update_ops", "unlisted op", "do not call F.batch_norm")(_UnlistedOps)


# 04 ------------------------------------------------------------------------------------------
def _x_from_cache(dy, cache):
    x_hat, inv_std, gamma = cache
    return x_hat / inv_std.reshape((1, -1) + (1,) * (dy.dim() - 2))


def _eps_from_cache(dy, cache):
    """The eps behind ``inv_std`` (per channel, broadcastable): what the shortcuts' own forwards need."""
    inv_std = cache[1]
    var = _x_from_cache(dy, cache).var(_dims(dy), unbiased=False)
    return (1 / inv_std**2 - var).reshape((1, -1) + (1,) * (dy.dim() - 2))


@_shortcut("batch_norm_backward", "torch_decomp_backward", "decomposition", "do not call torch._decomp")
def _(dy, cache):
    import importlib

    x_hat, inv_std, gamma = cache
    decomp = importlib.import_module("torch._" + "decomp.decompositions")
    mean = torch.zeros_like(inv_std)
    out = getattr(decomp, "native_batch" + "_norm_backward")(dy, _x_from_cache(dy, cache), gamma, None, None, mean,
                                                               inv_std, True, 1e-5, [True, True, True])
    return tuple(out)


# in lesson 04 the thread start is refused first (no threads in its graded backward)
@_shortcut("batch_norm_backward", "backward_kernel_in_a_thread", "thread", "compute in the thread your function is called in")
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    op = getattr(torch.ops.aten, "native_batch" + "_norm_backward")
    mean = torch.zeros_like(inv_std)
    return tuple(_in_thread(op, dy, _x_from_cache(dy, cache), gamma, None, None, mean, inv_std, True, 1e-5,
                            [True, True, True]))


# importing forward_ad loads torch's jvp decompositions, which read torch/_decomp's source: refused too
@_shortcut("batch_norm_backward", "backward_kernel_in_a_forked_child", "process", "compute in this process")
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    op = getattr(torch.ops.aten, "native_batch" + "_norm_backward")
    mean = torch.zeros_like(inv_std)
    return tuple(_in_fork(op, dy, _x_from_cache(dy, cache), gamma, None, None, mean, inv_std, True, 1e-5,
                          [True, True, True]))


@_shortcut("batch_norm_backward", "forward_mode_ad", "forward AD", None)
def _(dy, cache):
    # the BN Jacobian is symmetric per channel: J·dy (forward mode) equals Jᵀ·dy
    import torch.autograd.forward_ad as fwad

    x_hat, inv_std, gamma = cache
    dims, view = _dims(dy), (1, -1) + (1,) * (dy.dim() - 2)
    x = _x_from_cache(dy, cache)
    eps = _eps_from_cache(dy, cache)
    with fwad.dual_level():
        d = fwad.make_dual(x, dy)
        y = (d - d.mean(dims, keepdim=True)) / torch.sqrt(d.var(dims, unbiased=False, keepdim=True) + eps)
        dx = fwad.unpack_dual(y * gamma.reshape(view)).tangent
    return dx, (dy * x_hat).sum(dims), dy.sum(dims)


def _autograd_of(fn, saved, eps, dy):
    """The gradients of ``fn(x, gamma, beta, eps)`` at the ``saved`` inputs, by autograd's engine (the
    name hidden: in a graded notebook BatchNormFunction's cell is scanned with batch_norm_backward's)."""
    with torch.enable_grad():
        xs = [t.detach().requires_grad_(True) for t in saved]
        return getattr(torch.autograd, "gr" + "ad")(fn(*xs, eps), xs, dy)


class _FunctionInAThread(torch.autograd.Function):
    """forward and backward computed by the library (F.batch_norm and its autograd) in another thread."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        ctx.save_for_backward(x, gamma, beta)
        ctx.eps = eps
        return _in_thread(_bn_lib, x, gamma, beta, eps)

    @staticmethod
    def backward(ctx, dy):
        return (*_in_thread(_autograd_of, _bn_lib, ctx.saved_tensors, ctx.eps, dy), None)


_IN_ONE_THREAD = "compute in the thread your function is called in"
_shortcut("BatchNormFunction", "library_in_a_thread", "thread", _IN_ONE_THREAD)(_FunctionInAThread)


class _AutogradOfOwnForward(torch.autograd.Function):
    """A correct own forward; backward differentiates it with autograd instead of deriving it."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        ctx.save_for_backward(x, gamma, beta)
        ctx.eps = eps
        return _bn(x, gamma, beta, eps)

    @staticmethod
    def backward(ctx, dy):
        return (*_autograd_of(_bn, ctx.saved_tensors, ctx.eps, dy), None)


_shortcut("BatchNormFunction", "autograd_of_own_forward", "nested autograd", "no autograd")(_AutogradOfOwnForward)


# the engine run in another thread: the autograd record is per thread, so only refusing the thread stops it
@_shortcut("batch_norm_backward", "autograd_engine_in_a_thread", "autograd in a thread", _IN_ONE_THREAD)
def _(dy, cache):
    x_hat, inv_std, gamma = cache
    dims, view = _dims(dy), (1, -1) + (1,) * (dy.dim() - 2)
    x = _x_from_cache(dy, cache)
    eps = _eps_from_cache(dy, cache)

    def engine():  # the learner's own forward, differentiated by autograd
        with torch.enable_grad():
            xs, g = x.detach().requires_grad_(True), gamma.detach().requires_grad_(True)
            y = (xs - xs.mean(dims, keepdim=True)) / torch.sqrt(xs.var(dims, unbiased=False, keepdim=True) + eps)
            return getattr(torch.autograd, "gr" + "ad")(y * g.reshape(view), (xs, g), dy)

    dx, dgamma = _in_thread(engine)
    return dx, dgamma, dy.sum(dims)


class _EngineInAThreadPool(_AutogradOfOwnForward):
    """The same own forward; backward differentiates it with autograd in a ThreadPoolExecutor worker."""

    @staticmethod
    def backward(ctx, dy):
        return (*_pool(_autograd_of, _bn, ctx.saved_tensors, ctx.eps, dy), None)


_shortcut("BatchNormFunction", "autograd_engine_in_a_thread", "autograd in a thread",
          "compute in the thread your function is called in")(_EngineInAThreadPool)


# autograd without the engine: the learner's own graph walked by hand, each node called as a function;
# no operator tells that apart, the native layer (coursekit.grader.handcalls) does
def _by_hand(y, dy):
    """Gradients of ``y`` (weighted by ``dy``) for every leaf of its graph, by calling its nodes in turn."""
    order, seen = [], set()

    def visit(fn):
        if fn is not None and fn not in seen:
            seen.add(fn)
            for nxt, _ in fn.next_functions:
                visit(nxt)
            order.append(fn)

    visit(y.grad_fn)
    pending, leaves = {y.grad_fn: dy}, {}
    for fn in reversed(order):
        incoming = pending.pop(fn, None)  # (not named "grad": the static scan reads that as autograd)
        if incoming is None:
            continue
        if hasattr(fn, "variable"):
            leaves[id(fn.variable)] = incoming
            continue
        outs = fn(incoming)
        for (nxt, k), out in zip(fn.next_functions, outs if isinstance(outs, tuple) else (outs,)):
            if nxt is not None and out is not None:
                out = out.sum_to_size(nxt._input_metadata[k].shape)  # the engine's broadcasting
                pending[nxt] = pending[nxt] + out if nxt in pending else out
    return leaves


def _hand_walked(x, gamma, eps, dy):
    """(dx, dgamma, dbeta) of the learner's own forward, its graph walked by hand."""
    dims, view = _dims(dy), (1, -1) + (1,) * (dy.dim() - 2)
    with torch.enable_grad():
        xs, g = x.detach().requires_grad_(True), gamma.detach().clone().requires_grad_(True)
        centered = xs - xs.mean(dims, keepdim=True)
        y = centered * ((centered * centered).mean(dims, keepdim=True) + eps).rsqrt() * g.reshape(view)
    leaves = _by_hand(y, dy)
    return leaves[id(xs)], leaves[id(g)], dy.sum(dims)


@_shortcut("batch_norm_backward", "grad_fn_called_by_hand", "autograd by hand", "calling grad_fn by hand")
def _(dy, cache):
    return _hand_walked(_x_from_cache(dy, cache), cache[2], _eps_from_cache(dy, cache), dy)


# (no BatchNormFunction twin: inside the engine's torch.autograd.grad, as the gradcheck case runs it, a node
# called by hand returns None for every input the current graph task does not need; the layer refuses it anyway)


# 05 ------------------------------------------------------------------------------------------
@_shortcut("layer_norm", "torch_refs_native_layer_norm", "decomposition", "do not call torch._refs")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    import importlib

    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    refs = importlib.import_module("torch._" + "refs")
    return getattr(refs, "native_layer" + "_norm")(x, shape, weight, bias, eps)[0]


@_shortcut("layer_norm", "reference_source_exec", "source exec", "copying the library's code")
def _(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _source_exec("coursekit." + "reference.functional", "layer" + "_norm")(x, normalized_shape, weight, bias, eps)


@_shortcut("instance_norm", "instance_norm_in_a_thread", "thread", "do not call F.instance_norm")
def _(x, weight=None, bias=None, eps=1e-5):
    return _in_thread(lambda: _lib("instance-norm")(x, weight=weight, bias=bias, eps=eps))


@_shortcut("group_norm", "torch_refs_code_copied", "copied code", "do not call torch._refs")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    fn = _copied("torch._" + "refs", "native_group" + "_norm")
    n, c = x.shape[:2]
    return fn(x, weight, bias, n, c, x[0, 0].numel(), num_groups, eps)[0]


@_shortcut("group_norm", "group_norm_in_a_forked_child", "process", "compute in this process")
def _(x, num_groups, weight=None, bias=None, eps=1e-5):
    return _in_fork(lambda: _lib("group-norm")(x, num_groups, weight, bias, eps))


# 06 ------------------------------------------------------------------------------------------
def _update_bn():
    import importlib

    return getattr(importlib.import_module("torch.optim." + "swa" + "_utils"), "update" + "_bn")


@_shortcut("recalibrate", "update_bn_in_a_thread", "thread", "do not call torch.optim.swa_utils.update_bn")
def _(model, loader):
    _in_thread(_update_bn(), loader, model)
    return model


@_shortcut("recalibrate", "update_bn_in_a_forked_child", "process", "compute in this process")
def _(model, loader):
    def work():
        _update_bn()(loader, model)
        return model.state_dict()

    model.load_state_dict(_in_fork(work))
    return model


@_shortcut("recalibrate", "update_bn_code_copied", "copied code", "do not call torch.optim.swa_utils.update_bn")
def _(model, loader):
    _copied("torch.optim." + "swa" + "_utils", "update" + "_bn")(loader, model)
    return model


@_shortcut("recalibrate", "update_bn_source_exec", "source exec", "copying the library's code")
def _(model, loader):
    _source_exec("torch.optim." + "swa" + "_utils", "update" + "_bn")(loader, model)
    return model


# 07 ------------------------------------------------------------------------------------------
def _fusion(name):
    import importlib

    return getattr(importlib.import_module("torch.nn.utils." + "fu" + "sion"), name)


@_shortcut("fold_conv_bn", "fusion_in_a_thread", "thread", "do not call torch.nn.utils.fusion.fuse_conv_bn_eval")
def _(conv, bn):
    return _in_thread(_fusion("fuse_conv_bn" + "_eval"), conv, bn)


@_shortcut("fold_linear_bn", "reference_fold_source_exec", "source exec", "copying the library's code")
def _(linear, bn):
    return _source_exec("coursekit." + "reference.fold", "fold_linear" + "_bn")(linear, bn)


@_shortcut("fold_linear_bn", "fusion_in_a_forked_child", "process", "compute in this process")
def _(linear, bn):
    return _in_fork(_fusion("fuse_linear_bn" + "_eval"), linear, bn)


@_shortcut("fold_model", "reference_code_copied", "copied code", "do not call coursekit.reference.fold")
def _(model):
    return _copied("coursekit." + "reference.fold", "fold" + "_model")(copy.deepcopy(model).eval())


# ------------------------------------------------------------------------------------------
# the unfinished exercises, as the builder leaves them
# ------------------------------------------------------------------------------------------
def _stub(*args, **kwargs):
    # YOUR CODE HERE
    raise NotImplementedError()


class _StubBatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError()

    def forward(self, x):
        # YOUR CODE HERE
        raise NotImplementedError()


class _StubFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        # YOUR CODE HERE
        raise NotImplementedError()

    @staticmethod
    def backward(ctx, dy):
        # YOUR CODE HERE
        raise NotImplementedError()


STUBS: dict[str, object] = {name: _stub for name in WRONG}
STUBS["MyBatchNorm2d"] = _StubBatchNorm2d
STUBS["BatchNormFunction"] = _StubFunction


# ------------------------------------------------------------------------------------------
# other correct answers: each must pass the check and the grader alike
# ------------------------------------------------------------------------------------------
def _pytorch_fusion_copied_verbatim(wrapper: str):
    """torch.nn.utils.fusion's source pasted into a learner's cell with a one-line wrapper.

    The pasted functions are the learner's own (new code objects), as in a real answer cell.
    """
    import inspect

    import torch.nn.utils.fusion as fusion

    ns: dict = {"__name__": "learner_cell"}
    exec(compile(inspect.getsource(fusion) + "\n" + wrapper, "learner_fusion_cell.py", "exec"), ns)
    return ns[wrapper.split("(")[0].split()[-1]]


_fold_conv_pytorch_verbatim = _pytorch_fusion_copied_verbatim(
    "def fold_conv_bn(conv, bn):\n    return fuse_conv_bn_eval(conv, bn)\n")
_fold_linear_pytorch_verbatim = _pytorch_fusion_copied_verbatim(
    "def fold_linear_bn(linear, bn):\n    return fuse_linear_bn_eval(linear, bn)\n")


def _own_work_in_threads(x, gamma, beta, eps=1e-5):
    """Each channel normalized by the learner's own code, one thread per channel: threads are allowed."""
    from concurrent.futures import ThreadPoolExecutor

    def channel(c):
        xc = x.select(1, c)
        return (xc - xc.mean()) / torch.sqrt(xc.var(unbiased=False) + eps) * gamma[c] + beta[c]

    with ThreadPoolExecutor(2) as pool:
        return torch.stack(list(pool.map(channel, range(x.shape[1]))), dim=1)


RIGHT: dict[str, dict[str, object]] = {
    "batch_norm_train": {"own_work_in_threads": _own_work_in_threads},
    "fold_conv_bn": {"pytorch_fuse_conv_bn_eval_copied": _fold_conv_pytorch_verbatim},
    "fold_linear_bn": {"pytorch_fuse_linear_bn_eval_copied": _fold_linear_pytorch_verbatim},
}
