"""Counter-settings of lesson 08's checked verdicts (see tests/counter_support.py)."""
from counter_support import Counter

# A copy of the lesson's `cd` module namespace whose functions a counter may rebind.
CD_COPY = """
import types as _types
_cd = cd
cd = _types.SimpleNamespace(**{name: getattr(_cd, name) for name in _cd.__all__})
"""

# Each half of `x` in a gloo process group of its own (world size 1, in this kernel): what the
# two-process run computes when nothing is exchanged. Spawning two processes again costs ~9 s.
ALONE = """
import tempfile as _tempfile
import torch.distributed as _dist


def _each_half_alone(x, dy):
    out = []
    with _tempfile.TemporaryDirectory() as tmp:
        _dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            for rank, (xs, dys) in enumerate(zip(x.chunk(2), dy.chunk(2))):
                result = cd.cross_process_bn_worker(0, 1, xs, gamma, beta, dys)
                result["rank"] = rank
                out.append(result)
        finally:
            _dist.destroy_process_group()
    return out
"""

# Accuracies of the lesson's five trained BN models under a shift, with statistics re-estimated on
# `calibration` batches; what the lesson's training cell computes, without training again.
ROWS = """
def _rows(shift_images, calibration):
    out = []
    for seed, trained in enumerate(models):
        recalibrated = copy.deepcopy(trained)
        update_bn(calibration, recalibrated)
        recalibrated.eval()
        out.append({"seed": seed,
                    "BN clean": accuracy(trained, digits.x_test, digits.y_test),
                    "BN shifted": accuracy(trained, shift_images(digits.x_test), digits.y_test),
                    "BN re-estimated": accuracy(recalibrated, shift_images(digits.x_test), digits.y_test)})
    return out
"""

COUNTERS = [
    # §1 sums against averaged shard statistics
    Counter("c03", setup=CD_COPY + """
cd.channel_sums = lambda x: torch.stack([x.mean((0, 2, 3)), (x * x).mean((0, 2, 3)), torch.ones(x.shape[1], dtype=x.dtype)])
""", why="each process contributes its shard's mean and mean square with count 1, i.e. shard statistics "
          "averaged with equal weights: the result is not the full batch's", lines=("from summed",)),
    Counter("c03", setup="""
_two_shards = two_shards
two_shards = lambda sizes=(4, 16), shift=1.5, seed=0: _two_shards((10, 10), 0.0, seed)
""", why="two equal shards from the same data: averaging the shard statistics is then nearly right",
         lines=("averaging shard statistics",)),
    Counter("predict-equal-shards-run", setup="""
_two_shards = two_shards
two_shards = lambda sizes=(10, 10), shift=1.5, seed=0: _two_shards((4, 16), shift, seed)
""", why="uneven shards (4 and 16 samples): unweighted averages of means, and of variances plus the "
         "spread of the means, are not the full batch's", lines=("shard means ==", "average + variance")),
    Counter("predict-equal-shards-run", setup="""
_two_shards = two_shards


def two_shards(sizes=(10, 10), shift=1.5, seed=0):
    a, _ = _two_shards(sizes, shift, seed)
    return a, 2 * a.mean((0, 2, 3), keepdim=True) - a   # same size, same means, same variances
""", why="two equal shards with the same channel means: no spread between shards, so the averaged "
         "variance is the full batch's", lines=("average of shard variances",)),
    # float32 cancellation
    Counter("c03-cancel", setup=CD_COPY + """
cd.channel_sums = lambda x, dtype=None: _cd.channel_sums(x)
""", why="sums accumulated in float64 whatever dtype is asked for: the 'float32' row no longer cancels",
         lines=("off by more than 50%",)),
    Counter("c03-cancel", setup=CD_COPY + """
cd.channel_sums = lambda x, dtype=None: _cd.channel_sums(x, dtype=x.dtype if dtype is None else dtype)
""", why="sums accumulated in the input's dtype (float32 here) by default, as channel_sums did before "
         "it accumulated in float64", lines=("the same sums in float64",)),
    Counter("c03-cancel", setup="""
two_pass_var = lambda x: (x * x).mean(0) - x.mean(0) ** 2
""", why="a one-pass formula in float32 in place of the two-pass one", lines=("two-pass variance",)),
    Counter("c03-cancel", setup="""
noise = noise + 1e3
""", why="data whose mean is 1000, not 0, in the 'mean 0' row: float32 sums then cancel",
         lines=("mean 0:",)),
    # running statistics and the count
    Counter("c03-running", setup="""
full = shard_b
""", why="the reference BN sees only shard b, as one data-parallel process does: statistics of the "
         "whole batch do not match its running statistics", lines=("with the global count",)),
    Counter("c03-running", setup="""
full, shard_b = shard_a, shard_a[:0]
""", why="one process holds the whole batch (shard b is empty): the shard's count is then the global count",
         lines=("with the shard's count",)),
    # two processes
    Counter("c08", setup=ALONE + """
results = _each_half_alone(x, dy)
""", why="no exchange between the processes (each half of x in a process group of its own, run in this "
         "kernel instead of spawning two processes again): the statistics are each shard's own",
         lines=("all-reduced", "synced BN output", "synced BN gradient")),
    Counter("c08", setup=ALONE + """
x, dy = torch.cat([x[:8], x[:8]]), torch.cat([dy[:8], dy[:8]])
results = _each_half_alone(x, dy)
""", why="two identical shards (each half of x in a process group of its own, run in this kernel): "
         "per-process statistics are then the full batch's", lines=("per-process BN",)),
    # SyncBatchNorm
    Counter("c12", setup="""
import types as _types


class _SyncedBN(torch.nn.SyncBatchNorm):
    # What SyncBatchNorm computes in a group of two processes: statistics of this batch and of the
    # other process's batch (drawn here), for the output and the running statistics.
    def forward(self, inp):
        if not self.training:
            return super().forward(inp)
        both = torch.cat([inp, torch.randn_like(inp) + 1.0])
        return F.batch_norm(both, self.running_mean, self.running_var, self.weight, self.bias,
                            True, self.momentum, self.eps)[: len(inp)]


nn = _types.SimpleNamespace(**{k: getattr(torch.nn, k) for k in dir(torch.nn) if not k.startswith("_")})
nn.SyncBatchNorm = _SyncedBN
""", why="a SyncBatchNorm that does synchronise, as in a group of two processes (simulated in this "
         "kernel: CPU SyncBatchNorm refuses to train inside a real group)"),
    # ghost batches
    Counter("c14-check", setup=CD_COPY + """
cd.ghost_batch_norm = lambda x, num_splits: _cd.ghost_batch_norm(x, 1)
""", why="one batch normalized as a whole instead of 8 ghost batches"),
    Counter("c16", setup="""
population = population.sort().values
""", why="the same values sorted, as data ordered by class or size would be: a batch of consecutive "
         "values is not a sample of independent values"),
    # gradient accumulation
    Counter("c20", setup="""
def accumulated_grads(model, xb, yb, micro):
    model.zero_grad()
    for xm, ym in zip(xb.chunk(micro), yb.chunk(micro)):
        F.cross_entropy(model(xm), ym).backward()   # each loss not divided by the number of micro-batches
    return torch.cat([p.grad.flatten() for p in model.parameters()])
""", why="accumulation that forgets to divide each micro-batch's loss by 4", lines=("without BN", "LayerNorm")),
    Counter("c20", setup="""
_digits_mlp = digits_mlp
digits_mlp = lambda norm, seed=0: _digits_mlp(norm, seed).eval()
""", why="BN in eval mode (frozen statistics, as when fine-tuning with frozen BN): it no longer looks at "
         "the micro-batch", lines=("with BN", "relative gradient difference", "running means equal")),
    # distribution shift
    Counter("c24", setup=ROWS + """
_mild = lambda images: 0.8 * images + 0.1
rows = _rows(_mild, [_mild(b) for b in digits.x_train.split(64)])
""", why="a milder shift, 0.8 x + 0.1 (it costs each model between 0.01 and 0.27 accuracy on both arithmetic paths), "
         "re-evaluated on the lesson's five trained models", lines=("shift costs",)),
    Counter("c24", setup=ROWS + """
rows = _rows(shift, list(digits.x_train.split(64)))
""", why="statistics re-estimated on clean training images instead of shifted ones, on the lesson's "
         "five trained models", lines=("re-estimating",)),
]
