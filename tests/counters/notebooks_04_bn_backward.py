"""Counter-settings for notebooks/04_bn_backward.ipynb: each checked verdict seen failing.

The false settings are the classic mistakes of a hand-written backward (a rule applied wrongly, a
statistic treated as a constant, the variance path forgotten, the unbiased variance), the two BN
layers of the lesson swapped, a layer without BN, and eval mode normalizing with batch statistics.
"""
from counter_support import Counter

COUNTERS = [
    Counter("rules-check", '''
def power_grad(dout, v, p=3):
    return dout * v ** p                                     # the power kept instead of p v^(p-1)


def broadcast_grad(dout, x):
    return (dout * x).mean(reduce_dims(x))                   # the uses averaged instead of summed


def mean_grad(dstat, x):
    return per_channel(dstat, x).expand_as(x)                # the 1/m forgotten


def two_uses_grad(dout, x):
    return dout * per_channel(x.mean(reduce_dims(x)), x)     # the path through the mean dropped
''', why="each rule written with its classic mistake"),
    Counter("center-check", "center_backward = lambda dy: dy",
            why="centering's backward with the mean treated as a constant"),
    Counter("center-gradcheck", "CenterFn, CenterMeanAsConstantFn = CenterMeanAsConstantFn, CenterFn",
            why="the two Functions swapped: CenterFn's backward forgets the mean, the other one is right"),
    Counter("c19", "bn_detached_stats = true_bn",
            why="statistics kept in the graph (true BN in place of the detached layer): dx no longer differs",
            lines=("dx differs",)),
    Counter("c19", '''
def bn_detached_stats(x, gamma, beta, eps=1e-5):
    dims, pc = reduce_dims(x), lambda v: per_channel(v, x)
    mu, var = x.mean(dims).detach(), x.var(dims, correction=1).detach()  # the unbiased variance
    return pc(gamma) * (x - pc(mu)) / torch.sqrt(pc(var) + eps) + pc(beta)
''', why="a detached layer that also normalizes with the unbiased variance: its forward and dgamma differ",
            lines=("forward identical", "dgamma, dbeta")),
    Counter("c21", "true_bn, bn_detached_stats = bn_detached_stats, true_bn",
            why="the true and the detached layer swapped"),
    Counter("c23", '''
import types
_true_dx = true_grads[0]
true_grads = [xd.grad, *true_grads[1:]]
xd = types.SimpleNamespace(grad=_true_dx)
''', why="the detached layer's dx presented as true BN's and the other way round"),
    Counter("c26", 'runs = {"true BN": runs["detached statistics"], "detached statistics": runs["true BN"]}',
            why="the two training runs swapped",
            lines=("true BN:", "detached:")),
    Counter("c26", "runs = {name: train_shift_scale(lambda z, gamma, beta: z) for name in runs}",
            why="no BN at all (the layer's output is z itself): a and b can now reduce the loss",
            lines=("loss changes",)),
    Counter("c28", '''
import types
import torch.nn.functional as _F
F = types.SimpleNamespace(batch_norm=lambda x, running_mean, running_var, weight=None, bias=None, training=False, eps=1e-5:
                          _F.batch_norm(x, None, None, weight, bias, training=True, eps=eps))
''', why="a layer that normalizes with the batch statistics in eval mode (as with track_running_stats=False)"),
    Counter("c30", '''
import types
F = types.SimpleNamespace(batch_norm=lambda x, running_mean, running_var, weight=None, bias=None, training=False, eps=1e-5:
                          bn_forward_nodes(x, weight, bias, eps)[0])
''', why="F.batch_norm replaced by BN written with tensor ops: many nodes, nothing saved on the last one",
            lines=("F.batch_norm", "the node saves")),
    Counter("c30", '''
_ops_nodes = bn_forward_nodes


def bn_forward_nodes(x, gamma, beta, eps=1e-5):
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps), _ops_nodes(x, gamma, beta, eps)[1]
''', why="the tensor-op BN replaced by the fused F.batch_norm: no mean node to walk",
            lines=("tensor ops",)),
    Counter("c32", '''
import types


def _constant_statistics_backward(dy, x, weight=None, eps=1e-5, **ignored):
    dims = reduce_dims(x)
    gamma = torch.ones(x.shape[1], dtype=x.dtype) if weight is None else weight
    s = per_channel(1.0 / torch.sqrt(x.var(dims, correction=0) + eps), x)
    x_hat = (x - per_channel(x.mean(dims), x)) * s
    return dy * per_channel(gamma, x) * s, (dy * x_hat).sum(dims), dy.sum(dims)


ref = types.SimpleNamespace(batch_norm_backward=_constant_statistics_backward)
''', why="a reference backward that treats the batch statistics as constants, in eval mode too"),
    Counter("reveal-check", '''
def bn_backward_closed_form(dy, x, gamma, eps=1e-5):
    _, n = bn_forward_nodes(x, gamma, torch.zeros_like(gamma), eps)
    dims, pc, x_hat = reduce_dims(x), lambda v: per_channel(v, x), n["x_hat"]
    dx_hat = dy * pc(gamma)
    return pc(n["s"]) * (dx_hat - pc(dx_hat.mean(dims))), (dy * x_hat).sum(dims), dy.sum(dims)
''', why="the closed form without the variance path"),
]
