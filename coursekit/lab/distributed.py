r"""BatchNorm statistics beyond one process: cross-process sums, ghost batches (lesson 08).

Data-parallel training splits each batch over several processes. Plain BatchNorm then normalizes
each process's shard with the shard's own statistics. To normalize with the statistics of the whole
batch, every process contributes three per-channel numbers and one all-reduce sums them:

.. math::
    S_1 = \sum x, \quad S_2 = \sum x^2, \quad n; \qquad
    \mu = \frac{S_1}{n}, \quad \sigma^2 = \frac{S_2}{n} - \mu^2

(the sums run over the N and spatial dims of every process's shard and are accumulated in float64,
because :math:`S_2/n - \mu^2` cancels in float32 when :math:`|\mu| \gg \sigma`; :math:`\sigma^2` is
the biased variance BatchNorm normalizes with). ``nn.SyncBatchNorm`` reaches the same statistics on
GPUs by combining per-process means, variances and counts.

Everything a child process runs is defined in this module, so ``torch.multiprocessing.spawn``
can import it by name: functions defined in a notebook cannot be pickled for a spawned process.
"""
from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "channel_sums",
    "stats_from_sums",
    "all_reduce_batch_stats",
    "sync_batch_norm",
    "ghost_batch_norm",
    "run_distributed",
    "cross_process_bn_worker",
]


def _check_nc(x, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point {name} (got {x.dtype})")
    if not 2 <= x.dim() <= 5:
        raise ValueError(f"expected 2D to 5D {name} (N, C, *) (got shape {tuple(x.shape)})")


def channel_sums(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Per-channel :math:`[\sum x, \sum x^2, n]` of an (N, C, \*) tensor, stacked as a (3, C) tensor.

    Introduced in lesson 08. Sums (not means) are what several processes can add up: the sums of
    shards of a batch are the sums of the batch, whatever the shard sizes. They are accumulated in
    ``dtype``, float64 by default: :math:`S_2/n - \mu^2` subtracts two nearly equal numbers when
    :math:`|\mu| \gg \sigma`, and in float32 that loses the whole variance once
    :math:`|\mu| / \sigma` reaches about :math:`10^{3.5}` (lesson 08 measures it).

    Args:
        x: (N, C, \*) floating-point tensor.
        dtype: floating-point dtype to accumulate (and return) the sums in. Default: torch.float64.
            ``torch.float32`` on float32 data reproduces the cancellation.

    Shape:
        - Input: (N, C, \*). Output: (3, C) in ``dtype``.

    Example::

        >>> channel_sums(torch.ones(4, 2, 3))
        tensor([[12., 12.],
                [12., 12.],
                [12., 12.]], dtype=torch.float64)
    """
    _check_nc(x)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"expected dtype to be a floating-point torch.dtype (got {dtype!r})")
    dims = [0] + list(range(2, x.dim()))
    n = x.numel() // x.shape[1]
    xd = x.to(dtype)
    s1 = xd.sum(dims)
    return torch.stack([s1, (xd * xd).sum(dims), torch.full_like(s1, n)])


def stats_from_sums(sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""(mean, biased variance) per channel from the (3, C) sums of ``channel_sums``.

    Introduced in lesson 08. :math:`\mu = S_1 / n`, :math:`\sigma^2 = S_2 / n - \mu^2`, clamped at
    0 (rounding can make it slightly negative for a near-constant channel). Returns tensors in the
    sums' dtype: float64 from ``channel_sums`` by default, because :math:`S_2/n - \mu^2` cancels in
    float32 when the values are large compared to their spread.
    """
    if not isinstance(sums, torch.Tensor) or sums.dim() != 2 or sums.shape[0] != 3:
        got = tuple(sums.shape) if isinstance(sums, torch.Tensor) else type(sums).__name__
        raise ValueError(f"expected sums of shape (3, C) from channel_sums (got {got})")
    n = sums[2]
    mean = sums[0] / n
    return mean, (sums[1] / n - mean * mean).clamp_min(0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes with autograd: every process's input reaches every process's output, so
    the gradient of an input is the sum over processes of the gradients of the output."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = t.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_batch_stats(x: torch.Tensor, group=None,
                           differentiable: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    r"""Mean and biased variance per channel of the batch formed by every process's ``x``.

    Introduced in lesson 08. Call it in every process of an initialized process group: one
    all-reduce (sum) of the (3, C) float64 ``channel_sums``. With ``differentiable=True`` the all-reduce is
    an autograd function whose backward all-reduces the gradients too, so the gradient with
    respect to each process's ``x`` is that of full-batch BatchNorm.

    Args:
        x: this process's shard, (N_rank, C, \*); shards may have different N.
        group: the process group. Default: the world.
        differentiable: keep autograd through the all-reduce. Default: False.

    Returns:
        ``(mean, var, count)``: (C,) tensors in ``x``'s dtype (computed from float64 sums) and the
        total number of values per channel.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("expected an initialized torch.distributed process group (got none); "
                           "call torch.distributed.init_process_group first, or use run_distributed")
    sums = channel_sums(x)
    if differentiable:
        sums = _AllReduceSum.apply(sums, group)
    else:
        sums = sums.detach().clone()
        dist.all_reduce(sums, group=group)
    mean, var = stats_from_sums(sums)
    return mean.to(x.dtype), var.to(x.dtype), int(sums[2, 0].item())


def _view(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (dim - 2))


def sync_batch_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                    eps: float = 1e-5, group=None, differentiable: bool = True) -> torch.Tensor:
    r"""Training-mode BatchNorm of this process's shard with the statistics of the whole batch.

    Introduced in lesson 08. Every process must call it (it all-reduces); concatenating the outputs
    of all processes gives ``F.batch_norm(full_batch, None, None, weight, bias, training=True)``.

    .. math::
        y = \frac{x - \mu_{\text{all}}}{\sqrt{\sigma^2_{\text{all}} + \epsilon}} \gamma + \beta

    Args:
        x: this process's shard, (N_rank, C, \*).
        weight, bias: (C,) gamma and beta, or None. Default: None.
        eps: added to the variance inside the square root. Default: 1e-5.
        group: the process group. Default: the world.
        differentiable: gradients flow across processes. Default: True.
    """
    mean, var, _ = all_reduce_batch_stats(x, group, differentiable)
    y = (x - _view(mean, x.dim())) * _view(torch.rsqrt(var + eps), x.dim())
    if weight is not None:
        y = y * _view(weight, x.dim())
    if bias is not None:
        y = y + _view(bias, x.dim())
    return y


def ghost_batch_norm(x: torch.Tensor, num_splits: int, weight: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    r"""Training-mode BatchNorm applied separately to ``num_splits`` consecutive virtual batches.

    Introduced in lesson 08 (Hoffer et al., 2017, "Train longer, generalize better"): a large batch
    is cut into "ghost" batches of ``N / num_splits`` samples, each normalized with its own mean and
    biased variance, which keeps the noise of small-batch statistics while the optimizer sees the
    large batch. ``num_splits=1`` is ordinary training-mode BatchNorm.

    Args:
        x: (N, C, \*) with N divisible by ``num_splits``.
        num_splits: number of ghost batches.
        weight, bias: (C,) gamma and beta, or None. Default: None.
        eps: added to the variance inside the square root. Default: 1e-5.

    Shape:
        - Input: (N, C, \*). Output: same shape.

    Example::

        >>> x = torch.randn(8, 3)
        >>> y = ghost_batch_norm(x, 2)
        >>> torch.allclose(y[:4].mean(0), torch.zeros(3), atol=1e-6)
        True
    """
    _check_nc(x)
    if not isinstance(num_splits, int) or isinstance(num_splits, bool) or num_splits < 1:
        raise ValueError(f"expected num_splits to be a positive int (got {num_splits!r})")
    if x.shape[0] % num_splits:
        raise ValueError(
            f"expected the batch size to be divisible by num_splits (got N={x.shape[0]}, num_splits={num_splits})"
        )
    parts = [nn.functional.batch_norm(p, None, None, weight, bias, training=True, eps=eps)
             for p in x.chunk(num_splits)]
    return torch.cat(parts)


def _entry(rank: int, world_size: int, init_file: str, out_dir: str, fn: Callable, args: tuple) -> None:
    """What each spawned process runs: join the group, run ``fn``, save its result, always leave."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_distributed(fn: Callable, *args, world_size: int = 2) -> list:
    r"""Run ``fn(rank, world_size, *args)`` in ``world_size`` CPU processes joined by a gloo group.

    Introduced in lesson 08. Uses ``torch.multiprocessing.spawn`` (fresh interpreters, safe from a
    Jupyter kernel, no stdin) and a ``FileStore`` in a new temporary directory for the rendezvous
    (no network port to pick). Each process sets one torch thread, runs ``fn``, saves what it
    returns, and destroys its process group; the processes are joined before this returns and the
    temporary directory is removed.

    Args:
        fn: a function defined at module level in an importable module (spawned processes import it
            by name; a function defined in a notebook cannot be sent). It returns tensors, numbers,
            strings, or lists/dicts of them.
        *args: extra arguments, pickled to each process (tensors are fine).
        world_size: number of processes. Default: 2.

    Returns:
        The list of results, indexed by rank.

    Example::

        >>> results = run_distributed(cross_process_bn_worker, torch.randn(8, 3, 4))  # doctest: +SKIP
    """
    if not callable(fn):
        raise TypeError(f"expected a callable fn (got {type(fn).__name__})")
    if getattr(fn, "__module__", "__main__") == "__main__" or "<locals>" in getattr(fn, "__qualname__", ""):
        raise ValueError(
            f"expected fn defined at module level in an importable module (got {fn.__module__}."
            f"{fn.__qualname__}); spawned processes cannot import functions from a notebook"
        )
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"expected world_size to be a positive int (got {world_size!r})")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="coursekit-dist-") as tmp:
        init_file = os.path.join(tmp, "store")
        mp.spawn(_entry, args=(world_size, init_file, tmp, fn, args), nprocs=world_size, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(world_size)]


def cross_process_bn_worker(rank: int, world_size: int, x: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor, dy: torch.Tensor) -> dict:
    r"""Lesson 08's experiment, run in each process: BN of this rank's shard of ``x`` three ways.

    The full batch ``x`` (N, C, \*) is split into ``world_size`` equal shards along N; this process
    takes shard ``rank`` and returns, for its shard:

    * ``local``: plain training-mode BN with the shard's own statistics (what ``nn.BatchNorm2d``
      does in each process of data-parallel training);
    * ``synced``: BN with statistics all-reduced across processes (``sync_batch_norm``), and
      ``synced_dx``, the gradient of ``(synced * dy_shard).sum()`` summed over processes with
      respect to this shard (autograd through the all-reduce);
    * ``mean``, ``var``, ``count``: the all-reduced statistics;
    * ``syncbn_error``: what ``nn.SyncBatchNorm`` says when asked to train on this CPU tensor
      (an empty string if it did not complain);
    * ``seconds``: how long all of this took in this process (the rest of a ``run_distributed``
      call is starting the interpreter, importing torch and joining the group).
    """
    start = time.perf_counter()
    xs = x.chunk(world_size)[rank].clone().requires_grad_(True)   # this process's shard
    dys = dy.chunk(world_size)[rank]
    # What plain BN does in each data-parallel process: statistics of the shard only.
    local = nn.functional.batch_norm(xs.detach(), None, None, weight, bias, training=True)
    # Statistics of the whole batch: one all-reduce of [sum x, sum x^2, n].
    synced = sync_batch_norm(xs, weight, bias, differentiable=True)
    (synced * dys).sum().backward()   # the backward all-reduces too
    mean, var, count = all_reduce_batch_stats(xs.detach())
    # PyTorch's own layer, asked to train on a CPU tensor inside a process group.
    layer = nn.SyncBatchNorm(x.shape[1]).train()
    try:
        layer(xs.detach())
        message = ""
    except (ValueError, RuntimeError) as err:
        message = f"{type(err).__name__}: {err}"
    return {"local": local, "synced": synced.detach(), "synced_dx": xs.grad, "mean": mean, "var": var,
            "count": count, "syncbn_error": message, "rank": rank, "world_size": world_size,
            "seconds": time.perf_counter() - start}
