"""Counter-settings of solutions/07's try-cell verdicts (see tests/counter_support.py)."""
from counter_support import Counter

COUNTERS = [
    Counter("try-fold_model", setup="""

def _fold_conv_without_bias(conv, bn):
    # exercise 07's known wrong answer: the conv's own bias left out of the folded bias
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        folded.weight.mul_(scale.reshape(-1, 1, 1, 1))
        folded.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
    return folded


def fold_model(model):
    folded = copy.deepcopy(model)
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            for i in range(1, len(module)):
                if isinstance(module[i], nn.BatchNorm2d) and isinstance(module[i - 1], nn.Conv2d):
                    module[i - 1], module[i] = _fold_conv_without_bias(module[i - 1], module[i]), nn.Identity()
    return folded.eval()
""", why="a fold_model whose conv fold ignores the conv's own bias (known wrong answer 'conv_bias_ignored'; "
         "the nested conv has a bias)", lines=("same output",)),
    Counter("try-fold_model", setup="""
import functools as _functools
import types as _types
nn = _types.SimpleNamespace(**{k: getattr(torch.nn, k) for k in dir(torch.nn) if not k.startswith("_")})
nn.Linear = _functools.partial(torch.nn.Linear, bias=False)
""", why="a head built without bias: the printed structure says bias=False (this line is the model's "
         "repr, not a claim; the cell prints it whole)", lines=("bias=True",)),
]
