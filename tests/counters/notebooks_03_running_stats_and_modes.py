"""Counter-settings for notebooks/03_running_stats_and_modes.ipynb (see tests/counter_support.py)."""
from counter_support import Counter

# A hand-made BatchNorm2d whose choices can each be made wrong: the variance it divides by, the one
# it stores, and the weight of the new batch in the running update.
VARIANT = """
import types

class _Variant(torch.nn.Module):
    def __init__(self, c, normalize_correction=0, store_correction=1, new_weight=0.1):
        super().__init__()
        self.nc, self.sc, self.w = normalize_correction, store_correction, new_weight
        self.running_mean, self.running_var = torch.zeros(c), torch.ones(c)

    def forward(self, x):
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        mean = x.mean(dims)
        self.running_mean = (1 - self.w) * self.running_mean + self.w * mean
        self.running_var = (1 - self.w) * self.running_var + self.w * x.var(dims, correction=self.sc)
        return (x - mean.view(shape)) / torch.sqrt(x.var(dims, correction=self.nc).view(shape) + 1e-5)

def variant(**choices):
    return types.SimpleNamespace(BatchNorm2d=lambda c: _Variant(c, **choices))
"""

# The seed's bn_process with its choices exposed (statistics taken before the channel is overwritten).
SEED_VARIANT = """
def seed_variant(ddof_normalize=0, ddof_store=1, new_weight=0.1):
    def process(feature, mean, var, eps=1e-5):
        for i in range(feature.shape[1]):
            channel = feature[:, i, :, :]
            mu, v_norm, v_store = channel.mean(), channel.var(ddof=ddof_normalize), channel.var(ddof=ddof_store)
            feature[:, i, :, :] = (channel - mu) / np.sqrt(v_norm + eps)
            mean[i] = (1 - new_weight) * mean[i] + new_weight * mu
            var[i] = (1 - new_weight) * var[i] + new_weight * v_store
    return process
"""

# coursekit.reference.batch_norm with PyTorch's momentum reversed (Keras' convention) and, for
# momentum=None, the cumulative factor off by one (1/(k+1) for the k-th batch).
WRONG_REFERENCE = """
import types
_ref = ref

def _wrong_batch_norm(x, rm, rv, w=None, b=None, training=False, momentum=0.1, eps=1e-5, num_batches_tracked=None):
    if training and momentum is None:
        num_batches_tracked += 1
        momentum = 1.0 / (num_batches_tracked.item() + 1)
    elif training:
        momentum = 1 - momentum
    return _ref.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)

ref = types.SimpleNamespace(batch_norm=_wrong_batch_norm)
"""

KEEPS_TRAINING = """
import types

class _KeepsTraining(torch.nn.BatchNorm2d):
    def eval(self):
        return self

nn = types.SimpleNamespace(BatchNorm2d=_KeepsTraining)
"""

COUNTERS = [
    Counter("c04", setup="ema_keras = ema_pytorch",
            why="the converted momentum 0.9 fed to PyTorch's convention: the conventions mixed up"),
    Counter("c06", setup="""
import types
nn = types.SimpleNamespace(BatchNorm1d=lambda c, momentum: torch.nn.BatchNorm1d(c, momentum=1 - momentum))
""", why="layers in Keras' convention (momentum weights the old value): 0.99 is then the right smoothing"),
    Counter("c11-check", setup="traces = {**traces, 0.5: running_trace(None, data)}",
            why="the cumulative average in place of momentum 0.5: no more fluctuation than itself", lines=("fluctuates",)),
    Counter("c11-check", setup="traces = {m: running_trace(m, data, start=(true_mean, true_std ** 2)) for m in momenta}",
            why="layers whose running statistics start at the true values: nothing to forget", lines=("momentum=0.01",)),
    Counter("c11-check", setup="traces = {**traces, None: running_trace(0.5, data)}",
            why="an exponential average (momentum 0.5) in place of the cumulative one", lines=("momentum=None equals",)),
    *(Counter("c15", setup=VARIANT + f"nn = variant({choice})", why=why, lines=(line,)) for choice, why, line in (
        ("normalize_correction=1", "a layer that normalizes with the unbiased variance", "output normalized"),
        ("store_correction=0", "a layer that stores the biased variance", "running_var"),
        ("new_weight=0.9", "a layer with the momentum reversed (0.9 on the new batch)", "running_mean"))),
    Counter("c17", setup="draws = (torch.randn(2000, 1) + torch.randn(2000, 4)).double() / 2 ** 0.5",
            why="draws that share a per-batch offset: total variance 1 but within-batch variance 1/2"),
    Counter("c19", setup="""
import types
nn = types.SimpleNamespace(BatchNorm1d=lambda c, momentum: torch.nn.BatchNorm1d(c, momentum=0.1))
""", why="an exponential average with momentum 0.1 in place of the cumulative one",
            lines=("our update", "5 batch means", "5 unbiased vars", "n/(n-1)")),
    Counter("c19", setup="""
import types

class _StoresBiased(torch.nn.BatchNorm1d):
    def forward(self, x):
        y = super().forward(x)
        self.seen = getattr(self, "seen", []) + [x.var(0, correction=0)]
        with torch.no_grad():   # the running variance as the plain average of the biased ones
            self.running_var.copy_(torch.stack(self.seen).mean(0))
        return y

nn = types.SimpleNamespace(BatchNorm1d=_StoresBiased)
""", why="a cumulative layer that stores the biased batch variances", lines=("5 biased vars",)),
    Counter("c19", setup="batches = [torch.full((16, 4), 3.0) for _ in range(5)]",
            why="constant batches: every variance is 0, so the pooled variance equals the average one",
            lines=("all 80 rows",)),
    Counter("c23", setup="""
import types
nn = types.SimpleNamespace(BatchNorm2d=lambda c: torch.nn.InstanceNorm2d(c, affine=True, track_running_stats=True))
""", why="InstanceNorm (per-sample statistics) in place of BN: the training-mode output ignores the companions",
            lines=("train mode",)),
    Counter("c23", setup=KEEPS_TRAINING,
            why="a layer that stays in training mode when asked for eval", lines=("eval",)),
    Counter("c25", setup="bn = copy.deepcopy(bn)\nbn.track_running_stats = False",
            why="a layer with track_running_stats switched off (section 5): training-mode calls stop updating"),
    Counter("c27", setup="""
import types
nn = types.SimpleNamespace(BatchNorm2d=lambda c, track_running_stats: torch.nn.BatchNorm2d(c))
""", why="a layer that tracks running statistics (the default): eval mode uses them, not the batch's"),
    Counter("c29", setup="""
import types

class _FlagStaysOn(torch.nn.BatchNorm2d):
    def __setattr__(self, name, value):
        if name != "track_running_stats" or "track_running_stats" not in self.__dict__:
            super().__setattr__(name, value)

nn = types.SimpleNamespace(BatchNorm2d=_FlagStaysOn)
""", why="the flag left on (the assignment ignored): training updates the buffers, so eval no longer sees 0 and 1"),
    Counter("c33", setup=SEED_VARIANT + "seed_style_bn_process = seed_variant(ddof_normalize=1, ddof_store=0)",
            why="the two standard deviations swapped (torch's default in NumPy code)", lines=("output", "var list")),
    Counter("c33", setup=SEED_VARIANT + "seed_style_bn_process = seed_variant(new_weight=0.9)",
            why="the seed's update with the momentum reversed (0.9 on the new batch)", lines=("mean list",)),
    Counter("c35", setup="t = t_before.clone()\narr = t.numpy().copy()",
            why="the seed's own call, on a copy: the tensor is left alone and the running means agree"),
    Counter("c40", setup="""
def bn_process_fixed(feature, mean, var, eps=1e-5):   # the seed's in-place version, returning what it overwrote
    seed_style_bn_process(feature, mean, var, eps)
    return feature, mean, var
""", why="the seed's in-place function in place of the fix", lines=("untouched", "new stats")),
    Counter("c40", setup=SEED_VARIANT + """
def bn_process_fixed(feature, mean, var, eps=1e-5):   # read-only, but normalizing with the sample variance
    out, new_mean, new_var = (np.array(a, dtype=np.float64) for a in (feature, mean, var))
    seed_variant(ddof_normalize=1)(out, new_mean, new_var, eps)
    return out, new_mean, new_var
""", why="a read-only version that normalizes with the unbiased variance", lines=("output ==",)),
    Counter("c42", setup=WRONG_REFERENCE, why="the reference with the momentum reversed and the cumulative factor off by one"),
    Counter("c44", setup="""
import types
_ref = ref
ref = types.SimpleNamespace(BatchNorm=lambda c, momentum=0.1: _ref.BatchNorm(c, momentum=momentum).eval())
""", why="our layer left in eval mode: it normalizes with running statistics and never updates them",
            lines=("train-mode", "buffers")),
    Counter("c44", setup="""
import types
_ref = ref

class _SavesEps(_ref.BatchNorm):   # a port that also stores eps in its state_dict
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("eps_buffer", torch.tensor(self.eps))

ref = types.SimpleNamespace(BatchNorm=_SavesEps)
""", why="a port with an extra buffer in its state_dict", lines=("keys", "key matched")),
    Counter("c44", setup="""
import types
_ref = ref
ref = types.SimpleNamespace(BatchNorm=lambda c, momentum=0.1: _ref.BatchNorm(c, momentum=momentum, eps=1e-1))
""", why="our layer with eps 0.1 instead of 1e-5", lines=("round trip",)),
]
