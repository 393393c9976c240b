"""Reusable experiments of lesson 06 (pitfalls): batch schedules, many-seed training, BN snapshots.

The batch-size sweep (BatchNorm vs GroupNorm on the digits) trains dozens of small networks; one
at a time that is too slow for a notebook that must run in seconds, because at batch size 2 a
training step is almost all per-operation overhead. ``fit_parallel`` therefore trains several
``small_cnn`` or ``digits_mlp`` models **at once** in one stacked network (grouped convolutions or
batched matrix products, one block per model): each model keeps its own weights, its own
normalization statistics and its own batches, so the result is the same as training them one after
the other with ``fit_steps`` (``tests/test_experiments.py`` checks this), only several times faster.

* ``digits_mlp``: Linear -> norm -> ReLU blocks for the flattened 8x8 digits (BatchNorm1d: m = N);
* ``relu_before_norm``: a copy of a network with every norm -> ReLU pair swapped (conv -> ReLU -> BN);
* ``batch_schedule``: the indices of every mini-batch of a run, from a seed;
* ``fit_steps``: train one model for a fixed number of optimizer steps;
* ``fit_parallel``: the same for several models of one architecture, in one stacked network;
* ``batch_size_sweep`` / ``SweepResult``: test accuracy for every (norm, batch size, seed), with an
  equal number of steps or an equal number of training images per run;
* ``small_batch_margins`` / ``small_batch_verdicts``: the small-batch rules of lesson 06 on a sweep;
* ``placement_accuracy``: ``small_cnn`` trained conv -> BN -> ReLU and conv -> ReLU -> BN;
* ``finetune_bn_recipes``: fine-tuning on new data with BN frozen, trainable, or re-estimated and frozen;
* ``bn_state`` / ``bn_changes``: snapshot BatchNorm running statistics and affine parameters and
  say which of them a piece of code changed (lesson 06, fine-tuning with frozen BN).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from coursekit.lab.training import accuracy, small_cnn

__all__ = [
    "digits_mlp", "relu_before_norm", "batch_schedule", "fit_steps", "fit_parallel", "SweepResult", "batch_size_sweep",
    "small_batch_margins", "small_batch_verdicts", "ORDERS", "placement_accuracy", "RECIPES",
    "finetune_bn_recipes", "bn_state", "bn_changes",
]

_BN = nn.modules.batchnorm._BatchNorm
_MLP_NORMS = ("bn", "gn", "ln", None)


def digits_mlp(norm: str | None = "bn", hidden: int = 64, depth: int = 2, groups: int = 8,
               in_features: int = 64, num_classes: int = 10) -> nn.Sequential:
    r"""An MLP for the flattened 8x8 digits: ``depth`` blocks of Linear -> norm -> ReLU, then a Linear head.

    Introduced in lesson 06 (small batches). Its ``BatchNorm1d`` layers normalize each feature over
    the batch alone, :math:`m = N` values per feature, where a ``BatchNorm2d`` after a convolution
    has :math:`m = N \cdot H \cdot W`; at batch size 2 every training-mode output of BatchNorm1d
    is :math:`\pm\gamma + \beta` (up to ``eps``).

    Args:
        norm: ``"bn"`` (``BatchNorm1d``), ``"gn"`` (``GroupNorm(groups, hidden)``), ``"ln"``
            (``LayerNorm(hidden)``) or ``None``. Default: ``"bn"``.
        hidden: width of every hidden layer. Default: 64.
        depth: number of hidden blocks. Default: 2.
        groups: GroupNorm groups; must divide ``hidden``. Default: 8.
        in_features: input size after flattening. Default: 64 (8 x 8 pixels).
        num_classes: outputs. Default: 10.

    The hidden Linear layers have a bias only without a norm (a bias before BatchNorm is cancelled
    by its mean subtraction; section (d) of lesson 06).

    Shape:
        Input: (N, *) with ``in_features`` values per sample. Output: (N, num_classes).

    Example::

        >>> digits_mlp("gn")(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if norm not in _MLP_NORMS:
        raise ValueError(f"expected norm to be 'bn', 'gn', 'ln' or None (got {norm!r})")
    for name, value in (("hidden", hidden), ("depth", depth), ("groups", groups),
                        ("in_features", in_features), ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"expected {name} to be a positive int (got {value!r})")
    if norm == "gn" and hidden % groups:
        raise ValueError(f"expected groups to divide hidden (got groups={groups}, hidden={hidden})")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden, bias=norm is None))
        if norm == "bn":
            layers.append(nn.BatchNorm1d(hidden))
        elif norm == "gn":
            layers.append(nn.GroupNorm(groups, hidden))
        elif norm == "ln":
            layers.append(nn.LayerNorm(hidden))
        layers.append(nn.ReLU())
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def relu_before_norm(model: nn.Sequential) -> nn.Sequential:
    r"""A deep copy of ``model`` with every norm -> ReLU pair swapped: conv -> ReLU -> norm.

    Introduced in lesson 06 (placement). The copy has the same weights, so the two orders of one
    seed start from the same point; ``fit_parallel`` trains either order of ``small_cnn``. Block
    :math:`j` computes :math:`\mathrm{norm}(\mathrm{ReLU}(W_j h))` instead of
    :math:`\mathrm{ReLU}(\mathrm{norm}(W_j h))`.

    Args:
        model: an ``nn.Sequential`` with at least one norm layer (BatchNorm, GroupNorm, LayerNorm)
            directly followed by an ``nn.ReLU``, e.g. ``small_cnn("bn")`` or ``digits_mlp("bn")``.

    Example::

        >>> [type(m).__name__ for m in relu_before_norm(small_cnn("bn", channels=8))][:3]
        ['Conv2d', 'ReLU', 'BatchNorm2d']
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential (got {type(model).__name__})")
    layers = list(copy.deepcopy(model).children())
    norms = (_BN, nn.GroupNorm, nn.LayerNorm)
    pairs = [i for i in range(len(layers) - 1) if isinstance(layers[i], norms) and isinstance(layers[i + 1], nn.ReLU)]
    if not pairs:
        raise ValueError("expected at least one norm layer directly followed by nn.ReLU (got none)")
    for i in pairs:
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


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
    """Train ``model`` in place with cross-entropy (Adam by default) for exactly ``steps`` mini-batches.

    Introduced in lesson 06. Unlike ``coursekit.lab.training.fit`` (a number of *epochs*), the budget is
    a number of optimizer *steps*, so runs with different batch sizes cost about the same. The
    batches are ``batch_schedule(len(x), batch_size, steps, seed)``. The model is left in train mode.

    Args:
        model: a classifier returning logits of shape (B, classes).
        x, y: training inputs (N, ...) and integer labels (N,).
        batch_size: samples per step.
        steps: number of optimizer steps.
        lr: the optimizer's learning rate. Default: 1e-2.
        seed: seed of the batch order. Default: 0.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9). Default: ``"adam"``.

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
    """The layers of a ``small_cnn`` (or its ``relu_before_norm`` copy) and its kind, or a ValueError.

    The kind is ``"bn"``, ``"gn"`` or ``"none"``, with ``"-after-relu"`` appended for conv -> ReLU -> norm.
    """
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    kinds = [type(m) for m in layers]
    base = [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]
    for norm, cls in (("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)):
        if kinds == base[:1] + [cls] + base[1:4] + [cls] + base[4:]:
            return layers, norm
        if kinds == base[:2] + [cls] + base[2:5] + [cls] + base[5:]:
            return layers, norm + "-after-relu"
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

    def _norm_relu(self, h: torch.Tensor, j: int) -> torch.Tensor:
        if self.kind == "none":
            return F.relu(h)
        if self.kind.endswith("-after-relu"):
            return self.norms[j](F.relu(h))
        return F.relu(self.norms[j](h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W) images, channel s for model s -> (B, S, classes) logits."""
        h = F.max_pool2d(self._norm_relu(self.convs[0](x), 0), 2)
        h = self._norm_relu(self.convs[1](h), 1).mean(dim=(2, 3)).view(len(x), self.s, -1)
        return torch.einsum("bsi,soi->bso", h, self.head_weight) + self.head_bias


# ---------------------------------------------------------------------------------------------
# Several digits_mlp models as one stacked network
# ---------------------------------------------------------------------------------------------

_MLP_NORM_TYPES = {nn.BatchNorm1d: "bn", nn.GroupNorm: "gn", nn.LayerNorm: "ln"}


def _mlp_layout(model: nn.Module) -> tuple[list[nn.Linear], list[nn.Module | None], str | None] | None:
    """The Linear layers, norm layers and norm kind of a ``digits_mlp``, or None for another model."""
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    if len(layers) < 4 or not isinstance(layers[0], nn.Flatten) or not isinstance(layers[-1], nn.Linear):
        return None
    linears, norms, kinds, i = [], [], set(), 1
    while i < len(layers) - 1:
        if not isinstance(layers[i], nn.Linear):
            return None
        linears.append(layers[i])
        norm = layers[i + 1] if type(layers[i + 1]) in _MLP_NORM_TYPES else None
        norms.append(norm)
        kinds.add(None if norm is None else _MLP_NORM_TYPES[type(norm)])
        i += 2 if norm is None else 3
        if not isinstance(layers[i - 1], nn.ReLU):
            return None
    if i != len(layers) - 1 or len(kinds) != 1:
        return None
    return linears + [layers[-1]], norms, kinds.pop()


class _StackedMLP(nn.Module):
    """S digits_mlp models side by side: model s owns block s of every weight, norm and statistic.

    Models with different norms may share the stack: each maximal run of consecutive models with one
    norm kind gets one wide norm layer per depth (BatchNorm1d's statistics are per feature and the
    groups of GroupNorm / LayerNorm never straddle two models, so nothing flows between models).
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        layouts = [_mlp_layout(m) for m in models]
        shapes = {tuple(tuple(lin.weight.shape) for lin in lay[0]) for lay in layouts}
        biases = {tuple(lin.bias is not None for lin in lay[0]) for lay in layouts}
        if len(shapes) > 1 or len(biases) > 1:
            raise ValueError(f"expected digits_mlp models of one width and depth (got {len(shapes)} layer-shape "
                             f"layouts and {len(biases)} bias layouts)")
        self.s = len(models)
        self.kinds = [lay[2] for lay in layouts]
        self.depth = len(layouts[0][1])
        self.hidden = layouts[0][0][0].out_features
        with torch.no_grad():
            self.weights = nn.ParameterList(
                nn.Parameter(torch.stack([lay[0][j].weight.t() for lay in layouts]).contiguous())
                for j in range(self.depth + 1))
            has_bias = [lin.bias is not None for lin in layouts[0][0]]
            self.biases = nn.ParameterList(
                nn.Parameter(torch.stack([lay[0][j].bias for lay in layouts]))
                for j in range(self.depth + 1) if has_bias[j])
        # position of layer j's bias in self.biases, or None when the layer has no bias
        self._bias_at = [sum(has_bias[:j]) if has_bias[j] else None for j in range(self.depth + 1)]
        self.segments: list[tuple[int, int, str | None]] = []
        for i, kind in enumerate(self.kinds):
            if self.segments and self.segments[-1][2] == kind:
                self.segments[-1] = (self.segments[-1][0], i + 1, kind)
            else:
                self.segments.append((i, i + 1, kind))
        self.norms = nn.ModuleList()   # index: layer * len(segments) + segment
        for j in range(self.depth):
            for lo, hi, kind in self.segments:
                smalls = [layouts[i][1][j] for i in range(lo, hi)]
                k, h = hi - lo, self.hidden
                if kind == "bn":
                    big = nn.BatchNorm1d(k * h, eps=smalls[0].eps, momentum=smalls[0].momentum)
                elif kind == "gn":
                    big = nn.GroupNorm(k * smalls[0].num_groups, k * h, eps=smalls[0].eps)
                elif kind == "ln":  # LayerNorm over h features per model = GroupNorm with one group per model
                    big = nn.GroupNorm(k, k * h, eps=smalls[0].eps)
                else:
                    big = nn.Identity()
                _Stacked._stack_into(big, smalls)
                self.norms.append(big)

    def unstack_into(self, models: Sequence[nn.Module]) -> None:
        layouts = [_mlp_layout(m) for m in models]
        with torch.no_grad():
            for j, at in enumerate(self._bias_at):
                for i, lay in enumerate(layouts):
                    lay[0][j].weight.copy_(self.weights[j][i].t())
                    if at is not None:
                        lay[0][j].bias.copy_(self.biases[at][i])
            for j in range(self.depth):
                for g, (lo, hi, _) in enumerate(self.segments):
                    big = self.norms[j * len(self.segments) + g]
                    for name, t in list(big.named_parameters()) + list(big.named_buffers()):
                        chunks = [t] * (hi - lo) if name == "num_batches_tracked" else t.chunk(hi - lo)
                        for i, chunk in zip(range(lo, hi), chunks):
                            getattr(layouts[i][1][j], name).copy_(chunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, in_features) inputs, row s for model s -> (B, S, classes) logits."""
        batch = len(x)
        h = x.transpose(0, 1)                                   # (S, B, features)
        for j, (w, at) in enumerate(zip(self.weights, self._bias_at)):
            h = torch.bmm(h, w) if at is None else torch.baddbmm(self.biases[at].unsqueeze(1), h, w)
            if j == self.depth:
                break
            flat = h.transpose(0, 1).reshape(batch, -1)         # (B, S * hidden): BN's channels
            parts = [self.norms[j * len(self.segments) + g](flat[:, lo * self.hidden:hi * self.hidden])
                     for g, (lo, hi, _) in enumerate(self.segments)]
            flat = F.relu(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
            h = flat.view(batch, self.s, self.hidden).transpose(0, 1)
        return h.transpose(0, 1)


def fit_parallel(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 steps: int, lr: float = 1e-2, seeds: Sequence[int] | None = None,
                 optimizer: str = "adam") -> list[nn.Module]:
    """Train several small models in place, all at once, as ``fit_steps`` would one by one.

    Introduced in lesson 06 (the batch-size sweeps). The models are copied into one network: for
    ``small_cnn`` models (same architecture and norm, any weights) its convolutions have
    ``groups=len(models)``; for ``digits_mlp`` models (same widths and depth, norms may differ) its
    Linear layers are batched matrix products. Model ``i`` reads its own batches
    ``batch_schedule(len(x), batch_size, steps, seeds[i])``. BatchNorm statistics are per channel and
    the groups of GroupNorm / LayerNorm never straddle two models, so no information flows between
    models; the summed loss gives each model its own gradient, and Adam's update is elementwise.
    After training the weights, running statistics and ``num_batches_tracked`` are copied back.
    Results equal ``fit_steps`` up to float rounding.

    Args:
        models: models built by ``coursekit.lab.training.small_cnn`` with the same arguments (input
            1 x H x W), or by ``digits_mlp`` with the same widths and depth.
        x, y: training inputs (N, 1, H, W) for CNNs, (N, *) for MLPs, and integer labels (N,).
        batch_size, steps, lr: as in ``fit_steps``. Default lr: 1e-2.
        seeds: seed of each model's batch order. Default: ``range(len(models))``.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9). Default: ``"adam"``.

    Returns:
        ``list(models)``, trained, in train mode.

    Example::

        >>> from coursekit.lab.data import digits_data
        >>> d = digits_data()
        >>> models = [small_cnn("gn", channels=8) for _ in range(3)]
        >>> _ = fit_parallel(models, d.x_train, d.y_train, batch_size=4, steps=5)
        >>> mlps = [digits_mlp("bn"), digits_mlp("gn")]
        >>> _ = fit_parallel(mlps, d.x_train, d.y_train, batch_size=2, steps=5, seeds=[0, 0])
    """
    models = list(models)
    if not models:
        raise ValueError("expected at least one model (got an empty sequence)")
    _check_xy(x, y)
    seeds = list(range(len(models))) if seeds is None else list(seeds)
    if len(seeds) != len(models):
        raise ValueError(f"expected one seed per model ({len(models)}) (got {len(seeds)} seeds)")
    s = len(models)
    if all(_mlp_layout(m) is not None for m in models):
        stacked: nn.Module = _StackedMLP(models)
        inputs = x.reshape(len(x), -1)
        if inputs.shape[1] != stacked.weights[0].shape[1]:
            raise ValueError(f"expected inputs with {stacked.weights[0].shape[1]} features per sample "
                             f"(got {inputs.shape[1]})")
        classes = stacked.weights[-1].shape[2]
    else:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (N, 1, H, W) (got {tuple(x.shape)})")
        stacked = _Stacked(models)
        inputs = x[:, 0]
        classes = stacked.classes
    schedules = torch.stack([batch_schedule(len(x), batch_size, steps, sd) for sd in seeds], dim=2)
    opt = _optimizer(stacked.parameters(), optimizer, lr)
    stacked.train()
    for idx in schedules:  # idx: (batch_size, S), column s = model s's batch
        logits = stacked(inputs[idx])
        # mean over the batch for every model, summed over models: model s gets exactly its own gradient
        loss = F.cross_entropy(logits.reshape(-1, classes), y[idx].reshape(-1)) * s
        opt.zero_grad()
        loss.backward()
        opt.step()
    stacked.unstack_into(models)
    for m in models:
        m.train()
    return models


@dataclass
class SweepResult:
    """Test accuracies of ``batch_size_sweep``: ``accuracy[norm][batch_size]`` is one value per seed.

    ``steps[batch_size]`` is the number of optimizer steps of every run at that batch size, so a
    run saw ``batch_size * steps[batch_size]`` training images.
    """

    norms: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: dict[int, int]
    accuracy: dict[str, dict[int, list[float]]]
    models: dict[tuple[str, int], list[nn.Module]] = field(default_factory=dict, repr=False)

    def mean(self, norm: str, batch_size: int) -> float:
        """Mean test accuracy over the seeds."""
        acc = self.accuracy[norm][batch_size]
        return sum(acc) / len(acc)

    def median(self, norm: str, batch_size: int) -> float:
        """Median test accuracy over the seeds (the lower middle value for an even count)."""
        acc = sorted(self.accuracy[norm][batch_size])
        return acc[(len(acc) - 1) // 2]

    def table(self, digits: int = 2) -> str:
        """One row per batch size: every seed's accuracy and the mean, for every norm, rounded."""
        head = f"{'batch':>5} {'images':>6} " + " ".join(
            f"{n.upper() + ' per seed':>{(digits + 4) * len(self.seeds)}} {'mean':>5}" for n in self.norms)
        rows = [head]
        for b in self.batch_sizes:
            cells = []
            for n in self.norms:
                seeds = " ".join(f"{a:.{digits}f}" for a in self.accuracy[n][b])
                cells.append(f"{seeds:>{(digits + 4) * len(self.seeds)}} {self.mean(n, b):>5.{digits}f}")
            rows.append(f"{b:>5} {b * self.steps[b]:>6} " + " ".join(cells))
        return "\n".join(rows)


def _sweep_steps(arch, norms, batch_sizes, seeds, steps, images) -> int | None:
    """``batch_size_sweep``'s arguments checked; the steps per run (150 when neither steps nor images)."""
    allowed = {"cnn": ("bn", "gn"), "mlp": ("bn", "gn", "ln")}
    if arch not in allowed:
        raise ValueError(f"expected arch 'cnn' or 'mlp' (got {arch!r})")
    for n in norms:
        if n not in allowed[arch]:
            raise ValueError(f"expected norms from {allowed[arch]} for arch={arch!r} (got {n!r})")
    if not seeds:
        raise ValueError("expected at least one seed (got none)")
    if steps is not None and images is not None:
        raise ValueError(f"expected steps or images, not both (got steps={steps!r}, images={images!r})")
    if images is not None:
        bad = [b for b in batch_sizes if images % b]
        if bad:
            raise ValueError(f"expected images to be a multiple of every batch size (got images={images}, "
                             f"batch sizes {bad})")
        return None
    return 150 if steps is None else steps


def batch_size_sweep(data, *, arch: str = "cnn", norms: Sequence[str] = ("bn", "gn"),
                     batch_sizes: Sequence[int] = (2, 4, 8, 16, 32), seeds: Sequence[int] = (0, 1, 2),
                     steps: int | None = None, images: int | None = None, lr: float = 1e-2,
                     channels: int = 8, hidden: int = 64, depth: int = 2, groups: int = 4,
                     keep_models: bool = False) -> SweepResult:
    """Test accuracy of a small network trained at every batch size with each norm, for several seeds.

    Introduced in lesson 06 (small batches). For every norm and batch size, one model per seed is
    initialised with ``torch.manual_seed(seed)`` (so the norms of one seed start from the same
    weights) and trained with batches from that seed (``fit_parallel``); it is then evaluated in
    eval mode on the test split. The budget is either the same number of ``steps`` for every batch
    size (larger batches then see more images) or the same number of training ``images``
    (``images // batch_size`` steps; larger batches then take fewer steps).

    Args:
        data: a ``coursekit.lab.data.Split`` of (N, 1, H, W) images, e.g. ``digits_data()``.
        arch: ``"cnn"`` (``small_cnn``: BatchNorm2d, m = N*H*W values per channel) or ``"mlp"``
            (``digits_mlp``: BatchNorm1d, m = N). Default: ``"cnn"``.
        norms: for the CNN a subset of ``("bn", "gn")``, for the MLP of ``("bn", "gn", "ln")``.
            Default: ``("bn", "gn")``.
        batch_sizes: training batch sizes. Default: (2, 4, 8, 16, 32).
        seeds: one run per seed. Default: (0, 1, 2).
        steps: optimizer steps per run; give ``steps`` or ``images``, not both. Default: 150 when
            ``images`` is None.
        images: training images per run; must be a multiple of every batch size. Default: None.
        lr: Adam's learning rate. Default: 1e-2.
        channels: ``small_cnn`` channels. Default: 8.
        hidden, depth: ``digits_mlp`` width and number of hidden blocks. Defaults: 64 and 2.
        groups: GroupNorm groups. Default: 4.
        keep_models: keep the trained models in ``result.models[(norm, batch_size)]``. Default: False.

    Example::

        >>> from coursekit.lab.data import digits_data
        >>> r = batch_size_sweep(digits_data(), batch_sizes=(4, 32), seeds=(0,), steps=5)
        >>> sorted(r.accuracy["bn"])
        [4, 32]
        >>> r = batch_size_sweep(digits_data(), arch="mlp", batch_sizes=(2, 8), seeds=(0,), images=16)
        >>> r.steps
        {2: 8, 8: 2}
    """
    steps = _sweep_steps(arch, norms, batch_sizes, seeds, steps, images)
    budget = {b: steps if images is None else images // b for b in batch_sizes}

    def build(norm: str) -> nn.Module:
        if arch == "cnn":
            return small_cnn(norm, channels=channels, groups=groups)
        return digits_mlp(norm, hidden=hidden, depth=depth, groups=groups)

    acc: dict[str, dict[int, list[float]]] = {n: {} for n in norms}
    kept: dict[tuple[str, int], list[nn.Module]] = {}
    # the MLP stack accepts mixed norms: one stacked run per batch size trains every (norm, seed)
    runs = [tuple(norms)] if arch == "mlp" else [(n,) for n in norms]
    for b in batch_sizes:
        for run in runs:
            models = []
            for norm in run:
                for s in seeds:
                    torch.manual_seed(s)
                    models.append(build(norm))
            fit_parallel(models, data.x_train, data.y_train, batch_size=b, steps=budget[b], lr=lr,
                         seeds=list(seeds) * len(run))
            for i, norm in enumerate(run):
                mine = models[i * len(seeds):(i + 1) * len(seeds)]
                for m in mine:
                    m.eval()
                acc[norm][b] = [accuracy(m, data.x_test, data.y_test) for m in mine]
                if keep_models:
                    kept[(norm, b)] = mine
    acc = {n: {b: acc[n][b] for b in batch_sizes} for n in norms}
    return SweepResult(tuple(norms), tuple(batch_sizes), tuple(seeds), budget, acc, kept)


def small_batch_margins(sweep: SweepResult) -> dict[str, float]:
    r"""The values lesson 06's small-batch verdicts compare with their thresholds.

    With :math:`a_n(b)_s` the test accuracy of norm :math:`n` at batch size :math:`b` for seed
    :math:`s`, and :math:`\tilde a_n(b)` its median over the seeds (``SweepResult.median``):

    * ``"gap2"``: :math:`\min_s\, a_{GN}(2)_s - a_{BN}(2)_s`;
    * ``"median_gap2"``: :math:`\tilde a_{GN}(2) - \tilde a_{BN}(2)`;
    * ``"bn_drop"``, ``"gn_drop"``: :math:`\tilde a_n(4) - \tilde a_n(2)` for BN and GN;
    * ``"level"``: :math:`\min_{b \ge 4}\, \tilde a_{BN}(b) - \tilde a_{GN}(b)` (BN ahead is positive).

    Args:
        sweep: a ``batch_size_sweep`` result with norms ``"bn"`` and ``"gn"`` and batch sizes
            2, 4 and at least one larger.

    Raises:
        ValueError: a norm or batch size the rules need is missing from ``sweep``.
    """
    missing = [n for n in ("bn", "gn") if n not in sweep.norms] + [b for b in (2, 4) if b not in sweep.batch_sizes]
    if missing:
        raise ValueError(f"expected a sweep with norms 'bn', 'gn' and batch sizes 2, 4 (missing {missing})")
    acc = sweep.accuracy
    return {
        "gap2": min(g - b for b, g in zip(acc["bn"][2], acc["gn"][2])),
        "median_gap2": sweep.median("gn", 2) - sweep.median("bn", 2),
        "bn_drop": sweep.median("bn", 4) - sweep.median("bn", 2),
        "gn_drop": sweep.median("gn", 4) - sweep.median("gn", 2),
        "level": min(sweep.median("bn", b) - sweep.median("gn", b) for b in sweep.batch_sizes if b >= 4),
    }


def small_batch_verdicts(sweep: SweepResult) -> dict[str, bool]:
    """Lesson 06's small-batch verdicts: BN breaks down at batch 2, GN does not, and they are level from 4 up.

    On the margins of :func:`small_batch_margins`:

    * ``"gn_beats_bn_at_2"``: ``gap2 > 0.05`` and ``median_gap2 > 0.15``;
    * ``"bn_falls_gn_holds"``: ``bn_drop > 0.15`` and ``gn_drop < 0.1``;
    * ``"level_from_4"``: ``level > -0.03``.

    The thresholds leave a margin over the worst value seen on seeds 0-9 on two arithmetic paths
    (``tests/test_small_batch.py`` lists them). Introduced in lesson 06 (small batches).

    Args:
        sweep: as for :func:`small_batch_margins`.

    Example::

        >>> acc = {"bn": {2: [0.5], 4: [0.8], 8: [0.85]}, "gn": {2: [0.8], 4: [0.82], 8: [0.85]}}
        >>> r = SweepResult(("bn", "gn"), (2, 4, 8), (0,), {2: 8, 4: 4, 8: 2}, acc)
        >>> small_batch_verdicts(r)
        {'gn_beats_bn_at_2': True, 'bn_falls_gn_holds': True, 'level_from_4': True}
    """
    m = small_batch_margins(sweep)
    return {
        "gn_beats_bn_at_2": m["gap2"] > 0.05 and m["median_gap2"] > 0.15,
        "bn_falls_gn_holds": m["bn_drop"] > 0.15 and m["gn_drop"] < 0.1,
        "level_from_4": m["level"] > -0.03,
    }


# ---------------------------------------------------------------------------------------------
# Placement and fine-tuning experiments of lesson 06
# ---------------------------------------------------------------------------------------------

ORDERS = ("conv->BN->ReLU", "conv->ReLU->BN")
RECIPES = ("frozen, old statistics", "trainable BN (train mode)", "update_bn, then frozen")


def _recalibrate(model: nn.Module, x: torch.Tensor, batch_size: int = 200) -> nn.Module:
    update_bn([x[i:i + batch_size] for i in range(0, len(x), batch_size)], model)
    return model


def placement_accuracy(data, seeds: Sequence[int] = (0, 1, 2, 3, 4), *, steps: int = 200,
                       steps_relu_first: int | None = None, lr: float = 1e-2, batch_size: int = 32,
                       channels: int = 8) -> dict[str, list[float]]:
    """Test accuracy of ``small_cnn("bn")`` trained in both orders, conv -> BN -> ReLU and conv -> ReLU -> BN.

    Introduced in lesson 06 (placement). For each seed one ``small_cnn`` is built after
    ``torch.manual_seed(seed)`` and its ``relu_before_norm`` copy starts from the same weights; both
    train with Adam on the same batches (``fit_parallel``). Before evaluation (eval mode, test split)
    every model's running statistics are re-estimated with ``update_bn`` on the training images, so
    a running average left stale by a short run (section (g)) does not decide the comparison.

    Args:
        data: a ``coursekit.lab.data.Split`` of (N, 1, H, W) images, e.g. ``digits_data()``.
        seeds: one model per order and seed. Default: (0, 1, 2, 3, 4).
        steps: optimizer steps of every run. Default: 200.
        steps_relu_first: steps of the conv -> ReLU -> BN runs. Default: None (= ``steps``).
        lr, batch_size, channels: Adam's learning rate, the batch size, ``small_cnn`` channels.
            Defaults: 1e-2, 32, 8.

    Returns:
        ``{order: [accuracy per seed]}`` for the two names in ``ORDERS``.

    Example::

        >>> from coursekit.lab.data import digits_data
        >>> sorted(placement_accuracy(digits_data(), seeds=(0,), steps=3))
        ['conv->BN->ReLU', 'conv->ReLU->BN']
    """
    if not seeds:
        raise ValueError("expected at least one seed (got none)")
    budget = {ORDERS[0]: steps, ORDERS[1]: steps if steps_relu_first is None else steps_relu_first}
    acc = {}
    for order in ORDERS:
        nets = []
        for s in seeds:
            torch.manual_seed(s)
            net = small_cnn("bn", channels=channels)
            nets.append(net if order == ORDERS[0] else relu_before_norm(net))
        fit_parallel(nets, data.x_train, data.y_train, batch_size=batch_size, steps=budget[order], lr=lr,
                     seeds=list(seeds))
        acc[order] = [accuracy(_recalibrate(net, data.x_train).eval(), data.x_test, data.y_test) for net in nets]
    return acc


def _freeze_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, _BN):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
    return model


def finetune_bn_recipes(models: Sequence[nn.Module], new, *, steps: int = 10, lr: float = 1e-3,
                        batch_size: int = 32, seeds: Sequence[int] | None = None) -> dict[str, list[float]]:
    """Fine-tune copies of trained BN models on new data with three BatchNorm recipes; test accuracy of each.

    Introduced in lesson 06 (when to freeze BN). Every recipe fine-tunes all other weights with Adam
    for ``steps`` batches of the new training images (a loop that never calls ``model.train()``):

    * ``"frozen, old statistics"``: BN layers in eval mode, γ and β without gradient;
    * ``"trainable BN (train mode)"``: BN layers left as in training, statistics and γ, β updated
      (what fastai's ``train_bn=True`` keeps when it freezes the rest of a pretrained body);
    * ``"update_bn, then frozen"``: running statistics re-estimated on the new training images with
      ``update_bn`` (no labels, batches of 200), then frozen as in the first recipe.

    The models are not changed. Accuracy is measured in eval mode on ``new.x_test``.

    Args:
        models: trained models with BatchNorm layers (their statistics describe the old data).
        new: a ``coursekit.lab.data.Split`` of the new data.
        steps, lr, batch_size: fine-tuning budget. Defaults: 10, 1e-3, 32.
        seeds: seed of each model's batch order. Default: ``range(len(models))``.

    Returns:
        ``{recipe: [accuracy per model]}`` for the names in ``RECIPES``.
    """
    models = list(models)
    seeds = list(range(len(models))) if seeds is None else list(seeds)
    if not models or len(seeds) != len(models):
        raise ValueError(f"expected at least one model and one seed per model (got {len(models)} models, "
                         f"{len(seeds)} seeds)")
    _check_xy(new.x_train, new.y_train)
    acc: dict[str, list[float]] = {r: [] for r in RECIPES}
    for model, seed in zip(models, seeds):
        for recipe in RECIPES:
            net = copy.deepcopy(model).train()
            if recipe == RECIPES[2]:
                _recalibrate(net, new.x_train)
            if recipe != RECIPES[1]:
                _freeze_bn(net)
            opt = _optimizer([p for p in net.parameters() if p.requires_grad], "adam", lr)
            for idx in batch_schedule(len(new.x_train), batch_size, steps, seed):
                loss = F.cross_entropy(net(new.x_train[idx]), new.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            acc[recipe].append(accuracy(net.eval(), new.x_test, new.y_test))
    return acc


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
