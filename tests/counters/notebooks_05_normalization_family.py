"""Counter-settings for notebooks/05_normalization_family.ipynb (see tests/counter_support.py)."""
from counter_support import Counter

# The four scratch layers normalizing with the unbiased variance (torch.var's default).
UNBIASED_SCRATCH = """
def _unbiased(dims):
    def f(x):
        return (x - x.mean(dim=dims, keepdim=True)) / torch.sqrt(x.var(dim=dims, keepdim=True) + 1e-5)
    return f

bn_scratch, ln_scratch, in_scratch = _unbiased((0, 2, 3)), _unbiased((1, 2, 3)), _unbiased((2, 3))
gn_scratch = lambda x, g: _unbiased((2, 3, 4))(x.reshape(x.shape[0], g, -1, *x.shape[2:])).reshape(x.shape)
"""

COUNTERS = [
    Counter("c08", setup="""
_bn, _ln = bn_scratch, ln_scratch
bn_scratch, ln_scratch, in_scratch = _ln, _bn, _bn
gn_scratch = lambda t, g: _ln(t)
""", why="each layer computed over the wrong axes (BN's over one sample, LN's and IN's over the batch, GN's over all channels)"),
    Counter("c10", setup=UNBIASED_SCRATCH, why="scratch layers that normalize with the unbiased variance"),
    Counter("c12", setup=UNBIASED_SCRATCH, why="scratch layers that normalize with the unbiased variance"),
    Counter("c14", setup="""
import types
nn = types.SimpleNamespace(RMSNorm=lambda n: torch.nn.RMSNorm(n, eps=1e-5))
""", why="an RMSNorm built with LayerNorm's eps 1e-5", lines=("eps is None",)),
    Counter("c14", setup="""
import types
F = types.SimpleNamespace(rms_norm=torch.nn.functional.layer_norm, layer_norm=torch.nn.functional.rms_norm)
""", why="the two library functions swapped: an RMSNorm that subtracts the mean, a LayerNorm that does not",
            lines=("scratch ==", "on these tokens")),
    Counter("c14", setup="""
import types
F = types.SimpleNamespace(rms_norm=torch.nn.functional.rms_norm, layer_norm=lambda t, shape, eps: torch.nn.functional.layer_norm(
    t.transpose(-1, -2), t.shape[-2:-1], eps=eps).transpose(-1, -2))
""", why="a LayerNorm over the tokens axis instead of the features", lines=("mean 0",)),
    Counter("c18", setup="""
import types
nn = types.SimpleNamespace(InstanceNorm2d=lambda c, track_running_stats=True: torch.nn.InstanceNorm2d(
    c, track_running_stats=True))
""", why="an InstanceNorm that tracks running statistics by default (as BatchNorm does)", lines=("default",)),
    Counter("c18", setup="""
import types
nn = types.SimpleNamespace(InstanceNorm2d=lambda c, track_running_stats=False: torch.nn.InstanceNorm2d(
    c, track_running_stats=track_running_stats, momentum=0.9))
""", why="the momentum reversed (0.9 on the new batch)", lines=("running_mean",)),
    Counter("c18", setup="""
import types

class _KeepsTraining(torch.nn.InstanceNorm2d):
    def eval(self):
        return self

nn = types.SimpleNamespace(InstanceNorm2d=_KeepsTraining)
""", why="a tracking InstanceNorm that stays in training mode when asked for eval", lines=("tracked",)),
    Counter("c22", setup="""
import types
F = types.SimpleNamespace(instance_norm=lambda t, eps: (t - t.mean((2, 3), keepdim=True))
                          / (t.var((2, 3), unbiased=False, keepdim=True).sqrt() + eps))
""", why="an InstanceNorm with eps outside the square root", lines=("within 0.1%",)),
    Counter("c22", setup="flat = 1 + torch.randn(1, 1, 32, 32)",
            why="a group with variance about 1, not 1e-4: eps = 0.1 barely shrinks it", lines=("below 0.1",)),
    Counter("c24", setup="""
import types

def _with_beta_one(shape, elementwise_affine=True):
    layer = torch.nn.LayerNorm(shape)
    torch.nn.init.ones_(layer.bias)
    return layer

nn = types.SimpleNamespace(LayerNorm=_with_beta_one, GroupNorm=torch.nn.GroupNorm)
""", why="LayerNorms with the affine map on and beta = 1: each group's mean is beta's", lines=("groups, each",)),
    Counter("c24", setup="""
import types
F = types.SimpleNamespace(layer_norm=torch.nn.functional.layer_norm,
                          instance_norm=lambda t: torch.nn.functional.instance_norm(
                              t, torch.zeros(6), torch.ones(6), use_input_stats=False))
""", why="InstanceNorm in eval mode with (fresh) running statistics", lines=("== InstanceNorm2d",)),
    Counter("c26", setup="""
import types
nn = types.SimpleNamespace(GroupNorm=lambda g, c: torch.nn.GroupNorm(2, c), LayerNorm=torch.nn.LayerNorm)
""", why="GroupNorm(2, 6) in place of GroupNorm(1, 6): two groups per sample", lines=("initialisation", "copied")),
    Counter("c26", setup="position_gamma = gn1.weight.detach()[:, None, None].expand(6, 5, 5).clone()",
            why="a per-position gamma that happens to be constant over positions (the cell re-seeds, so gn1's is the same)",
            lines=("per-position",)),
    Counter("c28", setup="""
import types
nn = types.SimpleNamespace(GroupNorm=lambda g, c: torch.nn.GroupNorm(3, c), InstanceNorm2d=torch.nn.InstanceNorm2d)
""", why="GroupNorm(3, 6) in place of GroupNorm(6, 6)", lines=("initialisation", "same random")),
    Counter("c28", setup="""
import types

class _KeepsTraining(torch.nn.InstanceNorm2d):
    def eval(self):
        return self

nn = types.SimpleNamespace(GroupNorm=torch.nn.GroupNorm, InstanceNorm2d=_KeepsTraining)
""", why="the tracking InstanceNorm left in training mode: per-sample statistics, like GroupNorm",
            lines=("track_running_stats",)),
    Counter("c30", setup="""
import types
nn = types.SimpleNamespace(BatchNorm2d=lambda c: torch.nn.InstanceNorm2d(c), LayerNorm=lambda s: torch.nn.BatchNorm2d(6),
                           InstanceNorm2d=lambda c: torch.nn.LayerNorm([6, 5, 5]), GroupNorm=lambda g, c: torch.nn.BatchNorm2d(c))
""", why="each row measured on another layer (BN's on InstanceNorm, LN's and GN's on BatchNorm, IN's on LayerNorm)"),
]
