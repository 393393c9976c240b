"""Counter-settings for notebooks/02_bn_forward_by_hand.ipynb (see tests/counter_support.py)."""
from counter_support import Counter

# A forward that normalizes with the unbiased variance (torch.var's default): the classic mistake.
UNBIASED_BY_HAND = """
def unbiased_by_hand(x, gamma, beta, eps=1e-5):
    shape, dims = (1, -1) + (1,) * (x.dim() - 2), [0, *range(2, x.dim())]
    x_hat = (x - x.mean(dim=dims).reshape(shape)) / torch.sqrt(x.var(dim=dims).reshape(shape) + eps)
    return gamma.reshape(shape) * x_hat + beta.reshape(shape)
"""

EVAL_MODE_LAYERS = """
import types
nn = types.SimpleNamespace(**{name: (lambda cls: lambda c: cls(c).eval())(getattr(torch.nn, name))
                              for name in ("BatchNorm1d", "BatchNorm2d")})
"""

COUNTERS = [
    Counter("c11", setup="var = x.var(dim=(0, 2, 3))",
            why="normalizing by hand with the unbiased variance", lines=("by hand equals",)),
    Counter("c11", setup=EVAL_MODE_LAYERS,
            why="the layer in eval mode (fresh running statistics 0 and 1): it does not normalize by the batch"),
    Counter("c14", setup="col = 3.0 + 1e-3 * torch.arange(-2.0, 3.0)",
            why="a nearly constant column (biased variance 2e-6 < eps): eps changes the result at the first decimal"),
    Counter("c16", setup="B = (torch.arange(1.0, 6.0) + torch.arange(5.0).view(5, 1)) ** 2",
            why="columns that are not shifted copies of each other (squared entries)"),
    Counter("c22", setup=EVAL_MODE_LAYERS,
            why="the layers in eval mode: fresh running statistics instead of each column's own", lines=("[N, C",)),
    Counter("c22", setup="B = torch.arange(5.0).view(5, 1).expand(5, 5).clone()",
            why="identical columns: one channel over all 25 values has the columns' own mean and variance",
            lines=("one channel",)),
    Counter("c23-relu", setup="pre = torch.cat([sym_pre[:32], -sym_pre[:32]])",
            why="an exactly symmetric input (each sample with its negative) in place of the skewed one",
            lines=("skewed input",)),
    Counter("c23-relu", setup="sym_pre = pre",
            why="the skewed input in place of the symmetric one", lines=("symmetric input",)),
    Counter("c26", setup="var = x.var(dim=(0, 2, 3))",
            why="gamma from the unbiased variance, which BN does not divide by", lines=("gives back the input",)),
    Counter("c26", setup="other = x[[1, 0]]",
            why="another batch with the same statistics (the same two images, swapped)", lines=("another batch",)),
    Counter("c26", setup="""
import types

class _KeepsTraining(torch.nn.BatchNorm2d):
    def eval(self):
        return self

nn = types.SimpleNamespace(BatchNorm2d=_KeepsTraining)
""", why="a layer that stays in training mode when asked for eval: batch statistics, so `other` is not given back",
            lines=("eval mode",)),
    Counter("c31", setup=UNBIASED_BY_HAND + "results = compare_with_pytorch(unbiased_by_hand, torch.Generator().manual_seed(0))",
            why="the by-hand forward with the unbiased variance, compared the same way"),
    Counter("c33", setup=UNBIASED_BY_HAND + "batch_norm_by_hand = unbiased_by_hand",
            why="the loop with the unbiased variance"),
]
