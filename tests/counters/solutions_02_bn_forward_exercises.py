"""Counter-settings for solutions/02_bn_forward_exercises.ipynb (its try- cells; see tests/counter_support.py)."""
from counter_support import Counter

COUNTERS = [
    Counter("try-batch_norm_train", setup="""
def batch_norm_train(x, gamma, beta, eps=1e-5):   # the known wrong answer: unbiased variance
    shape, dims = (1, -1) + (1,) * (x.dim() - 2), [0, *range(2, x.dim())]
    x_hat = (x - x.mean(dim=dims).reshape(shape)) / torch.sqrt(x.var(dim=dims).reshape(shape) + eps)
    return x_hat * gamma.reshape(shape) + beta.reshape(shape)
""", why="an answer that normalizes with the unbiased variance"),
]
