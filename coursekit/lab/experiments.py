"""Reusable experiments of lesson 06 (pitfalls): batch schedules, many-seed training, BN snapshots.

The batch-size sweep (BatchNorm vs GroupNorm on the digits) trains 30 small CNNs; one at a time
that is too slow for a notebook that must run in seconds, because at batch size 2 a training step
is almost all per-operation overhead. ``fit_parallel`` therefore trains several ``small_cnn``
models **at once** in one stacked network (grouped convolutions, one group per model): each model
keeps its own weights, its own normalization statistics and its own batches, so the result is the
same as training them one after the other with ``fit_steps`` (``tests/test_experiments.py``
checks this), only several times faster.

* ``batch_schedule``: the indices of every mini-batch of a run, from a seed;
* ``fit_steps``: train one model for a fixed number of optimizer steps;
* ``fit_parallel``: the same for several models of one architecture, in one stacked network;
* ``batch_size_sweep`` / ``SweepResult``: test accuracy for every (norm, batch size, seed);
* ``bn_state`` / ``bn_changes``: snapshot BatchNorm running statistics and affine parameters and
  say which of them a piece of code changed (lesson 06, fine-tuning with frozen BN).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from coursekit.lab.training import accuracy, small_cnn

__all__ = [
    "batch_schedule", "fit_steps", "fit_parallel", "SweepResult", "batch_size_sweep",
    "bn_state", "bn_changes",
]

_BN = nn.modules.batchnorm._BatchNorm


def batch_schedule(n: int, batch_size: int, steps: int, seed: int = 0) -> torch.Tensor:
    """Indices of the mini-batches of a run: shuffled epochs, each cut into full batches.

    Introduced in lesson 06. Every epoch is a fresh permutation of ``range(n)`` drawn from a
    generator seeded with ``seed`` (the global RNG is untouched); its last incomplete batch is
    dropped, so a batch never holds one sample twice and never holds a single sample (which
    BatchNorm rejects in training mode).

    Args:
        n: number of training samples.
        batch_size: samples per batch, ``1 <= batch_size <= n``.
        steps: number of batches (optimizer steps), ``>= 1``.
        seed: seed of the shuffling. Default: 0.

    Shape:
        Output: (steps, batch_size), int64.

    Example::

        >>> batch_schedule(10, 4, steps=3, seed=0).shape
        torch.Size([3, 4])
    """
    for name, value in (("n", n), ("batch_size", batch_size), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"expected {name} to be a positive int (got {value!r})")
    if batch_size > n:
        raise ValueError(f"expected batch_size <= n={n} (got batch_size={batch_size})")
    g = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)
    batches = [torch.randperm(n, generator=g)[: per_epoch * batch_size].view(per_epoch, batch_size)
               for _ in range(epochs)]
    return torch.cat(batches)[:steps]


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"expected x and y to be tensors (got {type(x).__name__} and {type(y).__name__})")
    if len(x) != len(y):
        raise ValueError(f"expected as many labels as inputs (got {len(x)} inputs, {len(y)} labels)")


def _optimizer(params, name: str, lr: float) -> torch.optim.Optimizer:
    # fused: one kernel for all parameters; at these tiny sizes the optimizer step is mostly
    # per-tensor overhead, and fused Adam cut a sweep step by about a fifth on a 2-core CPU
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=True)
    raise ValueError(f"expected optimizer 'adam' or 'sgd' (got {name!r})")


def fit_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, steps: int,
              lr: float = 1e-2, seed: int = 0, optimizer: str = "adam") -> nn.Module:
    """Train ``model`` in place with Adam and cross-entropy for exactly ``steps`` mini-batches.

    Introduced in lesson 06. Unlike ``coursekit.lab.training.fit`` (a number of *epochs*), the budget is
    a number of optimizer *steps*, so runs with different batch sizes cost about the same. The
    batches are ``batch_schedule(len(x), batch_size, steps, seed)``. The model is left in train mode.

    Args:
        model: a classifier returning logits of shape (B, classes).
        x, y: training inputs (N, ...) and integer labels (N,).
        batch_size: samples per step.
        steps: number of optimizer steps.
        lr: Adam's learning rate. Default: 1e-2.
        seed: seed of the batch order. Default: 0.

    Example::

        >>> from coursekit.lab.data import digits_data
        >>> from coursekit.lab.training import small_cnn
        >>> d = digits_data()
        >>> model = fit_steps(small_cnn("bn", channels=8), d.x_train, d.y_train, batch_size=32, steps=5)
    """
    _check_xy(x, y)
    schedule = batch_schedule(len(x), batch_size, steps, seed)
    opt = _optimizer(model.parameters(), optimizer, lr)
    model.train()
    for idx in schedule:
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# ---------------------------------------------------------------------------------------------
# Several small_cnn models as one stacked network
# ---------------------------------------------------------------------------------------------

def _layout(model: nn.Module) -> tuple[list[nn.Module], str]:
    """The layers of a ``small_cnn`` and its norm kind, or a ValueError saying what differs."""
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    kinds = [type(m) for m in layers]
    base = [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    for norm, cls in (("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)):
        if kinds == base[:1] + [cls] + base[1:4] + [cls] + base[4:]:
            return layers, norm
    if kinds == base:
        return layers, "none"
    raise ValueError("expected models built by coursekit.lab.training.small_cnn "
                     f"(got a {type(model).__name__} with layers {[k.__name__ for k in kinds]})")


class _Stacked(nn.Module):
    """S small_cnn models side by side: channels of model s are the s-th block of every layer."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        layouts = [_layout(m) for m in models]
        kinds = {k for _, k in layouts}
        shapes = {tuple((n, tuple(p.shape)) for n, p in m.named_parameters()) for m in models}
        if len(kinds) > 1 or len(shapes) > 1:
            raise ValueError(f"expected models of one architecture (got norms {sorted(kinds)} "
                             f"and {len(shapes)} different parameter layouts)")
        self.s = s = len(models)
        layers, self.kind = layouts[0]
        convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
        norms = [i for i, m in enumerate(layers) if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        self.convs = nn.ModuleList()
        for i in convs:
            c = layers[i]
            big = nn.Conv2d(s * c.in_channels, s * c.out_channels, c.kernel_size, padding=c.padding,
                            groups=s, bias=c.bias is not None)
            self._stack_into(big, [list(m.children())[i] for m in models])
            self.convs.append(big)
        self.norms = nn.ModuleList()
        for i in norms:
            n = layers[i]
            if isinstance(n, nn.BatchNorm2d):
                big = nn.BatchNorm2d(s * n.num_features, eps=n.eps, momentum=n.momentum)
            else:  # consecutive groups never straddle two models because each model's block is whole
                big = nn.GroupNorm(s * n.num_groups, s * n.num_channels, eps=n.eps)
            self._stack_into(big, [list(m.children())[i] for m in models])
            self.norms.append(big)
        head = layers[-1]
        self.head_weight = nn.Parameter(torch.stack([list(m.children())[-1].weight.detach() for m in models]))
        self.head_bias = nn.Parameter(torch.stack([list(m.children())[-1].bias.detach() for m in models]))
        self.classes = head.out_features

    @staticmethod
    def _stack_into(big: nn.Module, smalls: list[nn.Module]) -> None:
        with torch.no_grad():
            for name, t in list(big.named_parameters()) + list(big.named_buffers()):
                parts = [getattr(m, name) for m in smalls]
                if name == "num_batches_tracked":
                    t.copy_(parts[0])
                else:
                    t.copy_(torch.cat([p.detach() for p in parts]))

    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        layers0, _ = _layout(models[0])
        convs = [i for i, m in enumerate(layers0) if isinstance(m, nn.Conv2d)]
        norms = [i for i, m in enumerate(layers0) if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        with torch.no_grad():
            for big, i in list(zip(self.convs, convs)) + list(zip(self.norms, norms)):
                for name, t in list(big.named_parameters()) + list(big.named_buffers()):
                    chunks = [t] * self.s if name == "num_batches_tracked" else t.chunk(self.s)
                    for m, chunk in zip(models, chunks):
                        getattr(list(m.children())[i], name).copy_(chunk)
            for s, m in enumerate(models):
                list(m.children())[-1].weight.copy_(self.head_weight[s])
                list(m.children())[-1].bias.copy_(self.head_bias[s])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W) images, channel s for model s -> (B, S, classes) logits."""
        h = self.convs[0](x)
        if self.kind != "none":
            h = self.norms[0](h)
        h = F.max_pool2d(F.relu(h), 2)
        h = self.convs[1](h)
        if self.kind != "none":
            h = self.norms[1](h)
        h = F.relu(h).mean(dim=(2, 3)).view(len(x), self.s, -1)
        return torch.einsum("bsi,soi->bso", h, self.head_weight) + self.head_bias


def fit_parallel(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 steps: int, lr: float = 1e-2, seeds: Sequence[int] | None = None,
                 optimizer: str = "adam") -> list[nn.Module]:
    """Train several ``small_cnn`` models in place, all at once, as ``fit_steps`` would one by one.

    Introduced in lesson 06 (the batch-size sweep). The models (same architecture and norm, any
    weights) are copied into one network whose convolutions have ``groups=len(models)``; model
    ``i`` reads its own batches ``batch_schedule(len(x), batch_size, steps, seeds[i])`` through its
    own input channel. BatchNorm statistics are per channel and GroupNorm's groups never straddle
    two models, so no information flows between models; the summed loss gives each model its own
    gradient, and Adam's update is elementwise. After training the weights, running statistics and
    ``num_batches_tracked`` are copied back. Results equal ``fit_steps`` up to float rounding.

    Args:
        models: models built by ``coursekit.lab.training.small_cnn`` with the same arguments, input
            1 x H x W.
        x, y: training images (N, 1, H, W) and integer labels (N,).
        batch_size, steps, lr: as in ``fit_steps``. Default lr: 1e-2.
        seeds: seed of each model's batch order. Default: ``range(len(models))``.

    Returns:
        ``list(models)``, trained, in train mode.

    Example::

        >>> from coursekit.lab.data import digits_data
        >>> d = digits_data()
        >>> models = [small_cnn("gn", channels=8) for _ in range(3)]
        >>> _ = fit_parallel(models, d.x_train, d.y_train, batch_size=4, steps=5)
    """
    models = list(models)
    if not models:
        raise ValueError("expected at least one model (got an empty sequence)")
    _check_xy(x, y)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, 1, H, W) (got {tuple(x.shape)})")
    seeds = list(range(len(models))) if seeds is None else list(seeds)
    if len(seeds) != len(models):
        raise ValueError(f"expected one seed per model ({len(models)}) (got {len(seeds)} seeds)")
    stacked = _Stacked(models)
    schedules = torch.stack([batch_schedule(len(x), batch_size, steps, s) for s in seeds], dim=2)
    opt = _optimizer(stacked.parameters(), optimizer, lr)
    images = x[:, 0]
    s = len(models)
    stacked.train()
    for idx in schedules:  # idx: (batch_size, S), column s = model s's batch
        logits = stacked(images[idx])
        # mean over the batch for every model, summed over models: model s gets exactly its own gradient
        loss = F.cross_entropy(logits.reshape(-1, stacked.classes), y[idx].reshape(-1)) * s
        opt.zero_grad()
        loss.backward()
        opt.step()
    stacked.unstack_into(models)
    for m in models:
        m.train()
    return models


@dataclass
class SweepResult:
    """Test accuracies of ``batch_size_sweep``: ``accuracy[norm][batch_size]`` is one value per seed."""

    norms: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    accuracy: dict[str, dict[int, list[float]]]
    models: dict[tuple[str, int], list[nn.Module]] = field(default_factory=dict, repr=False)

    def mean(self, norm: str, batch_size: int) -> float:
        """Mean test accuracy over the seeds."""
        acc = self.accuracy[norm][batch_size]
        return sum(acc) / len(acc)

    def table(self, digits: int = 2) -> str:
        """One row per batch size: every seed's accuracy and the mean, for every norm, rounded."""
        head = f"{'batch':>5} " + " ".join(f"{n.upper() + ' per seed':>{6 * len(self.seeds) + 2}} {'mean':>5}"
                                           for n in self.norms)
        rows = [head]
        for b in self.batch_sizes:
            cells = []
            for n in self.norms:
                seeds = " ".join(f"{a:.{digits}f}" for a in self.accuracy[n][b])
                cells.append(f"{seeds:>{6 * len(self.seeds) + 2}} {self.mean(n, b):>5.{digits}f}")
            rows.append(f"{b:>5} " + " ".join(cells))
        return "\n".join(rows)


def batch_size_sweep(data, *, norms: Sequence[str] = ("bn", "gn"),
                     batch_sizes: Sequence[int] = (2, 4, 8, 16, 32), seeds: Sequence[int] = (0, 1, 2),
                     steps: int = 150, lr: float = 1e-2, channels: int = 8, groups: int = 4,
                     keep_models: bool = False) -> SweepResult:
    """Test accuracy of ``small_cnn(norm)`` trained at every batch size, for several seeds.

    Introduced in lesson 06 (small batches). For every norm and batch size, one model per seed is
    initialised with ``torch.manual_seed(seed)`` and trained for the same number of ``steps`` with
    batches from that seed (``fit_parallel``); it is then evaluated in eval mode on the test split.

    Args:
        data: a ``coursekit.lab.data.Split`` of (N, 1, H, W) images, e.g. ``digits_data()``.
        norms: subset of ``("bn", "gn")``. Default: both.
        batch_sizes: training batch sizes. Default: (2, 4, 8, 16, 32).
        seeds: one run per seed. Default: (0, 1, 2).
        steps: optimizer steps per run. Default: 150.
        lr: Adam's learning rate. Default: 1e-2.
        channels, groups: passed to ``small_cnn``. Defaults: 8 and 4.
        keep_models: keep the trained models in ``result.models[(norm, batch_size)]``. Default: False.

    Example::

        >>> from coursekit.lab.data import digits_data
        >>> r = batch_size_sweep(digits_data(), batch_sizes=(4, 32), seeds=(0,), steps=5)
        >>> sorted(r.accuracy["bn"])
        [4, 32]
    """
    for n in norms:
        if n not in ("bn", "gn"):
            raise ValueError(f"expected norms from ('bn', 'gn') (got {n!r})")
    if not seeds:
        raise ValueError("expected at least one seed (got none)")
    acc: dict[str, dict[int, list[float]]] = {n: {} for n in norms}
    kept: dict[tuple[str, int], list[nn.Module]] = {}
    for norm in norms:
        for b in batch_sizes:
            models = []
            for s in seeds:
                torch.manual_seed(s)
                models.append(small_cnn(norm, channels=channels, groups=groups))
            fit_parallel(models, data.x_train, data.y_train, batch_size=b, steps=steps, lr=lr, seeds=seeds)
            for m in models:
                m.eval()
            acc[norm][b] = [accuracy(m, data.x_test, data.y_test) for m in models]
            if keep_models:
                kept[(norm, b)] = models
    return SweepResult(tuple(norms), tuple(batch_sizes), tuple(seeds), steps, acc, kept)


# ---------------------------------------------------------------------------------------------
# What did a piece of code change in the BatchNorm layers?
# ---------------------------------------------------------------------------------------------

def bn_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Copies of every BatchNorm layer's running statistics and affine parameters.

    Introduced in lesson 06 (fine-tuning with frozen BN). Keys are module names; values hold
    ``running_mean``, ``running_var``, ``weight`` and ``bias`` (those the layer has).

    Example::

        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        >>> sorted(bn_state(m)["1"])
        ['bias', 'running_mean', 'running_var', 'weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module (got {type(model).__name__})")
    state = {}
    for name, m in model.named_modules():
        if isinstance(m, _BN):
            state[name] = {k: getattr(m, k).detach().clone() for k in
                           ("running_mean", "running_var", "weight", "bias") if getattr(m, k, None) is not None}
    return state


def bn_changes(before: dict, after: dict, atol: float = 0.0) -> dict[str, bool]:
    """Whether the running statistics and the affine parameters differ between two ``bn_state``s.

    Returns ``{"running stats changed": bool, "gamma/beta changed": bool}`` over all layers.

    Example::

        >>> m = nn.Sequential(nn.BatchNorm1d(3))
        >>> s0 = bn_state(m); _ = m(torch.randn(4, 3))
        >>> bn_changes(s0, bn_state(m))
        {'running stats changed': True, 'gamma/beta changed': False}
    """
    if before.keys() != after.keys():
        raise ValueError(f"expected states of the same model (got layers {sorted(before)} and {sorted(after)})")

    def differs(keys):
        return any(not torch.allclose(before[n][k], after[n][k], rtol=0.0, atol=atol)
                   for n in before for k in keys if k in before[n])

    return {"running stats changed": differs(("running_mean", "running_var")),
            "gamma/beta changed": differs(("weight", "bias"))}
