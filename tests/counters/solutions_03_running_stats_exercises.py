"""Counter-settings for solutions/03_running_stats_exercises.ipynb (its try- cells; see tests/counter_support.py)."""
from counter_support import Counter

# A bn_process whose choices can each be made wrong: the variance it normalizes with, the weight of
# the new batch in the running update, and whether it writes into its input.
MAKE = """
def make_bn_process(ddof_normalize=0, new_weight=0.1, in_place=False):
    def bn_process(feature, mean, var, momentum=0.1, eps=1e-5):
        axes, shape = (0, 2, 3), (1, -1, 1, 1)
        mu, v_norm, v_store = feature.mean(axis=axes), feature.var(axis=axes, ddof=ddof_normalize), feature.var(axis=axes, ddof=1)
        out = (feature - mu.reshape(shape)) / np.sqrt(v_norm.reshape(shape) + eps)
        if in_place:
            feature[...] = out
        return out, (1 - new_weight) * mean + new_weight * mu, (1 - new_weight) * var + new_weight * v_store
    return bn_process
"""

COUNTERS = [
    Counter("try-bn_process", setup=MAKE + f"bn_process = make_bn_process({choice})", why=why, lines=(line,))
    for choice, why, line in (
        ("ddof_normalize=1", "an answer that normalizes with the sample (unbiased) variance", "output matches"),
        ("new_weight=0.9", "an answer with the momentum reversed (Keras' convention)", "running stats"),
        ("in_place=True", "an answer that writes the result into its input, as the seed's did", "input unchanged"))
]
