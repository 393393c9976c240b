"""Counter-settings for solutions/04_bn_backward_exercises.ipynb: each checked verdict seen failing.

The stage checks get the classic wrong stage that the learner could write (the same mistakes as
tests/test_exercise04_stages.py); the other cells get a wrong backward or a BN layer that treats its
statistics as constants in the mode whose claim is tested.
"""
from counter_support import Counter

_DETACHED_BN = '''
import types
import torch.nn as _tnn


class _BatchNorm1dDetached(_tnn.BatchNorm1d):
    """BatchNorm1d that normalizes with the batch statistics as constants in the mode(s) given."""

    modes = ()

    def forward(self, x):
        if self.training not in self.modes:
            return super().forward(x)
        mu = x.mean((0, 2), keepdim=True).detach()
        var = x.var((0, 2), unbiased=False, keepdim=True).detach()
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight.reshape(1, -1, 1) + self.bias.reshape(1, -1, 1)
'''

_STATS_AS_CONSTANTS = '''
def _constant_stats_backward(dy, cache):
    x_hat, inv_std, gamma = cache
    dims, shape = [0, *range(2, dy.dim())], (1, -1) + (1,) * (dy.dim() - 2)
    return dy * (gamma * inv_std).reshape(shape), (dy * x_hat).sum(dim=dims), dy.sum(dim=dims)
'''

# stage check -> (the classic wrong stage, what it is)
_WRONG_STAGES = {
    "check-stage1": ("dbeta = dy.mean(dim=dims)\ndgamma = dy.sum(dim=dims)\ndx_hat = dy",
                     "stage 1 written with a mean for dbeta, no x_hat in dgamma and no gamma in dx_hat"),
    "check-stage2": ("dinv_std = (dx_hat * x_hat).sum(dim=dims)\ndcentered_from_x_hat = dx_hat",
                     "stage 2 with x_hat in place of centered and the x_hat part of dcentered missing inv_std"),
    "check-stage3": ("dvar = dinv_std * (-0.5) * inv_std ** 2", "stage 3 with the power rule's exponent wrong (s**2, not s**3)"),
    "check-stage4": ("dcentered = dcentered_from_x_hat", "stage 4 without the variance path"),
    "check-stage5": ("dmean = dcentered.sum(dim=dims)", "stage 5 with the sign of the local derivative lost"),
    "check-stage6": ("dx = dcentered", "stage 6 without the path through the mean"),
}

COUNTERS = [Counter(cell, setup, why=why) for cell, (setup, why) in _WRONG_STAGES.items()] + [
    Counter("try-batch_norm_backward",
            _STATS_AS_CONSTANTS + "def batch_norm_backward(dy, cache):\n"
            "    dx, dgamma, dbeta = _constant_stats_backward(dy, cache)\n"
            "    return dx, dbeta, dgamma\n",
            why="a backward that treats the batch statistics as constants and swaps dgamma and dbeta"),
    Counter("eval-gradient", _DETACHED_BN + "_BatchNorm1dDetached.modes = (True,)\n"
            "nn = types.SimpleNamespace(BatchNorm1d=_BatchNorm1dDetached)",
            why="a BatchNorm1d whose training forward detaches its batch statistics: dx is then the sums-dropped formula",
            lines=("train mode",)),
    Counter("eval-gradient", _DETACHED_BN + "_BatchNorm1dDetached.modes = (False,)\n"
            "nn = types.SimpleNamespace(BatchNorm1d=_BatchNorm1dDetached)",
            why="a BatchNorm1d that in eval mode normalizes with detached batch statistics instead of the running ones",
            lines=("eval mode",)),
    Counter("try-BatchNormFunction", _STATS_AS_CONSTANTS + '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        y, cache = batch_norm_forward(x, gamma, beta, eps)
        ctx.save_for_backward(*cache)
        return y

    @staticmethod
    def backward(ctx, dy):
        return (*_constant_stats_backward(dy, ctx.saved_tensors), None)
''', why="a BatchNormFunction whose backward treats the batch statistics as constants"),
]
