"""Counter-settings for solutions/05_normalization_family_exercises.ipynb (its try- cells; see tests/counter_support.py)."""
from counter_support import Counter

COUNTERS = [
    Counter("try-group_norm", setup="""
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):   # groups that also span the batch
    groups = x.transpose(0, 1).reshape(num_groups, -1)
    y = (groups - groups.mean(dim=1, keepdim=True)) / torch.sqrt(groups.var(dim=1, unbiased=False, keepdim=True) + eps)
    return y.reshape(x.transpose(0, 1).shape).transpose(0, 1)
""", why="a group_norm whose statistics span the batch axis too (BatchNorm-like groups)"),
]
