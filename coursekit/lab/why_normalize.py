"""Experiments of lesson 01 (why normalize): many small MLPs trained side by side, BN vs plain.

Lesson 01 tests each advantage claimed for BatchNorm with sweeps over seeds, learning rates and
initial weight scales: a few hundred runs of an 8 x 10 tanh MLP. One at a time that takes far
longer than a lesson may run, because a step of such a tiny network is almost all per-operation
overhead. ``ParallelMLP`` therefore holds ``K`` networks of one architecture as stacked weight
tensors and runs them with batched matrix products: each network keeps its own weights, its own
BatchNorm statistics, its own data, batches and learning rate, so the result is the one
``coursekit.lab.training.fit`` gives for each network alone (``tests/test_why_normalize.py``
checks this), only many times faster.

* ``ParallelMLP``: ``K`` copies of ``training.mlp`` networks, stacked;
* ``train_parallel`` / ``ParallelRun``: Adam training of all ``K`` at once (MSE or
  cross-entropy), with per-epoch test losses, optional noise injected after each BN layer
  (Santurkar et al., 2018), a per-step smoothness measure, a per-step measure of how far each
  layer's input distribution moves, and an optional per-step monitor (``coursekit.lab.diagnostics``);
* ``seed_net`` / ``train_grid``: the lesson's networks, and a sweep (learning rates or weight
  scales x seeds) trained as one ``ParallelMLP``;
* ``layer_gradient_norms``: per-layer weight-gradient norms of a network (vanishing gradients);
* ``predict_the_mean_mse``: the "learned nothing" level of a regression;
* ``plot_sweep``: final test loss against a swept setting, one line per network kind.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from coursekit.lab.data import Split
from coursekit.lab.plots import finish_axes
from coursekit.lab.training import mlp

__all__ = [
    "ParallelMLP", "ParallelRun", "train_parallel", "seed_net", "train_grid", "layer_gradient_norms", "predict_the_mean_mse",
    "plot_sweep",
]


def _as_list(value, k: int, name: str) -> list[float]:
    """A scalar repeated ``k`` times, or a sequence of length ``k``, as floats."""
    if isinstance(value, (int, float)):
        return [float(value)] * k
    values = [float(v) for v in value]
    if len(values) != k:
        raise ValueError(f"expected {name} to be a number or {k} numbers, one per network (got {len(values)})")
    return values


class ParallelMLP:
    """``K`` MLPs of one architecture (built by ``training.mlp``) trained and evaluated side by side.

    Introduced in lesson 01. Network ``k`` computes exactly what ``nets[k]`` computes: for each hidden
    block ``h <- act(BN(h W^T + b))`` (BN only if the networks have it), then a linear head. Weights
    are copied, never shared: training a ``ParallelMLP`` leaves ``nets`` untouched.

    In training mode each network's BatchNorm uses the mean and (biased) variance of *its own*
    batch and updates its running statistics with PyTorch's momentum convention
    (``r <- (1 - momentum) r + momentum * stat``, unbiased variance), as ``nn.BatchNorm1d`` does;
    eval mode uses the running statistics.

    Args:
        nets: ``nn.Sequential`` networks from ``training.mlp`` with identical layer shapes and the
            same ``batch_norm`` choice.
        dropout: probability of zeroing each hidden activation in training mode (inverted dropout,
            applied after each activation). Default: 0.

    Shape:
        input ``(K, B, in_features)``, output ``(K, B, out_features)``.

    Example::

        >>> from coursekit.lab.training import mlp
        >>> nets = [mlp(depth=3, batch_norm=True) for _ in range(4)]
        >>> ParallelMLP(nets)(torch.randn(4, 16, 1)).shape
        torch.Size([4, 16, 1])
    """

    def __init__(self, nets: Sequence[nn.Sequential], dropout: float = 0.0):
        if len(nets) < 1:
            raise ValueError("expected at least one network (got none)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"expected 0 <= dropout < 1 (got {dropout})")
        layouts = [tuple((type(m).__name__, tuple(getattr(m, "weight", torch.empty(0)).shape)) for m in net)
                   for net in nets]
        if any(layout != layouts[0] for layout in layouts):
            raise ValueError("expected networks with identical layers (got different layer types or shapes)")
        first = nets[0]
        linears = [i for i, m in enumerate(first) if isinstance(m, nn.Linear)]
        if not linears or linears[-1] != len(first) - 1:
            raise ValueError("expected an mlp: Linear -> [BatchNorm1d] -> activation blocks, then a Linear head "
                             f"(got {[type(m).__name__ for m in first]})")
        self.batch_norm = any(isinstance(m, nn.BatchNorm1d) for m in first)
        self.activation = first[linears[0] + (2 if self.batch_norm else 1)]
        bns = [m for m in first if isinstance(m, nn.BatchNorm1d)]
        self.momentum = bns[0].momentum if bns else None
        self.eps = bns[0].eps if bns else None
        self.dropout = dropout
        self.num_models = len(nets)

        def stack(get) -> torch.Tensor:
            return torch.stack([get(net).detach().clone() for net in nets])

        # weights stored transposed, (K, in, out), so a layer is one batched matmul x @ W + b
        self.weight = [stack(lambda n, i=i: n[i].weight.t()) for i in linears]
        self.bias = [stack(lambda n, i=i: n[i].bias.unsqueeze(0)) for i in linears]
        bn_idx = [i for i, m in enumerate(first) if isinstance(m, nn.BatchNorm1d)]
        self.bn_weight = [stack(lambda n, i=i: n[i].weight.unsqueeze(0)) for i in bn_idx]
        self.bn_bias = [stack(lambda n, i=i: n[i].bias.unsqueeze(0)) for i in bn_idx]
        self.running_mean = [stack(lambda n, i=i: n[i].running_mean.unsqueeze(0)) for i in bn_idx]
        self.running_var = [stack(lambda n, i=i: n[i].running_var.unsqueeze(0)) for i in bn_idx]
        for p in self.parameters():
            p.requires_grad_(True)

    def recalibrated(self, x: torch.Tensor) -> ParallelMLP:
        """A copy whose running statistics are the exact batch statistics of ``x`` (one pass).

        Eval mode then normalizes with the mean and unbiased variance of the whole of ``x``, what
        ``torch.optim.swa_utils.update_bn`` computes with one batch; ``self`` is left untouched.
        """
        twin = copy.copy(self)
        twin.running_mean = [r.clone() for r in self.running_mean]
        twin.running_var = [r.clone() for r in self.running_var]
        if self.batch_norm:
            twin.momentum = 1.0
            with torch.no_grad():
                twin(x, training=True)
            twin.momentum = self.momentum
        return twin

    @property
    def depth(self) -> int:
        """Number of hidden blocks."""
        return len(self.weight) - 1

    def parameters(self) -> list[torch.Tensor]:
        """All trainable tensors, each with the network index as its first dimension."""
        return self.weight + self.bias + self.bn_weight + self.bn_bias

    def __call__(self, x: torch.Tensor, training: bool = False, noise=None, update_stats: bool = True,
                 record: list | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Forward pass of all networks.

        Args:
            x: ``(K, B, in_features)``, one batch per network.
            training: batch statistics (True) or running statistics (False). Default: False.
            noise: optional list of ``(scale, shift)`` per hidden layer, each ``(K, 1, hidden)``,
                applied after BN as ``scale * z + shift`` (noise injection, lesson 01 section 7).
            update_stats: in training mode, update the running statistics. Default: True.
            record: if a list, the input of every activation (the pre-activation) is appended.
            generator: random generator of dropout. Default: the global one.
        """
        if x.dim() != 3 or x.shape[0] != self.num_models:
            raise ValueError(f"expected input of shape ({self.num_models}, B, features) (got {tuple(x.shape)})")
        h = x
        for layer in range(self.depth):
            h = torch.baddbmm(self.bias[layer], h, self.weight[layer])
            if self.batch_norm:
                if training:
                    mean = h.mean(dim=1, keepdim=True)
                    var = h.var(dim=1, unbiased=False, keepdim=True)
                    if update_stats:
                        with torch.no_grad():
                            n = h.shape[1]
                            m = self.momentum
                            self.running_mean[layer].mul_(1 - m).add_(m * mean)
                            self.running_var[layer].mul_(1 - m).add_(m * var * n / max(n - 1, 1))
                else:
                    mean, var = self.running_mean[layer], self.running_var[layer]
                h = (h - mean) / torch.sqrt(var + self.eps) * self.bn_weight[layer] + self.bn_bias[layer]
            if noise is not None:
                scale, shift = noise[layer]
                h = h * scale + shift
            if record is not None:
                record.append(h)
            h = self.activation(h)
            if self.dropout and training:
                keep = torch.rand(h.shape, generator=generator) >= self.dropout
                h = h * keep / (1 - self.dropout)
        return torch.baddbmm(self.bias[-1], h, self.weight[-1])


@dataclass
class ParallelRun:
    """What ``train_parallel`` recorded, one row per network.

    Attributes:
        test_loss: ``(K, evaluations)`` test loss in eval mode after every ``eval_every``-th epoch
            and after the last one.
        test_loss_recalibrated: ``(K, evaluations)`` the same with BatchNorm's running statistics
            replaced by the statistics of the whole training set (as ``update_bn`` would set
            them, lesson 06); equal to ``test_loss`` for networks without BN.
        train_loss: ``(K,)`` final loss on the whole training set in eval mode, with recalibrated
            statistics.
        path: measurements along the training path, each ``(K, measured steps)`` (empty unless
            ``smoothness=True``): ``"grad"`` ``||g(theta_t)||``, ``"grad_change"``
            ``||g(theta_{t+1}) - g(theta_t)||`` and ``"step"`` ``||theta_{t+1} - theta_t||``, all on
            the step's batch, and ``"loss_change"`` ``|L(theta_{t+1}) - L(theta_t)|`` on that batch.
        shift: ``(K, measured steps)`` how far the activation inputs' distribution moved over each step
            (empty unless requested).
        model: the trained ``ParallelMLP``.
    """

    test_loss: torch.Tensor
    test_loss_recalibrated: torch.Tensor
    train_loss: torch.Tensor
    model: ParallelMLP
    path: dict = field(default_factory=dict)
    shift: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def _per_model_sq_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(t.pow(2).flatten(1).sum(dim=1) for t in tensors)


def _distribution(model: ParallelMLP, x: torch.Tensor, noise) -> torch.Tensor:
    """Mean and std of every activation input over the batch ``x``: ``(K, 2 * layers * hidden)``."""
    pre: list[torch.Tensor] = []
    with torch.no_grad():
        model(x, training=True, noise=noise, update_stats=False, record=pre)
    return torch.cat([torch.cat([p.mean(dim=1), p.std(dim=1, unbiased=False)], dim=1) for p in pre], dim=1)


def _loss_function(kind: str):
    """Per-network loss ``(K, B, out), (K, B[, 1]) -> (K,)``: MSE, or cross-entropy on class labels."""
    if kind == "mse":
        return lambda out, y: (out - y).pow(2).mean(dim=(1, 2))
    if kind == "cross_entropy":
        return lambda out, y: nn.functional.cross_entropy(
            out.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(dim=1)
    raise ValueError(f"expected loss 'mse' or 'cross_entropy' (got {kind!r})")


def _stacked(splits: Sequence[Split]) -> list[torch.Tensor]:
    """``x_train, y_train, x_test, y_test`` of all splits, each stacked along a new first dimension."""
    sizes = {(len(s.x_train), len(s.x_test)) for s in splits}
    if len(sizes) != 1:
        raise ValueError(f"expected splits of equal sizes (got {sorted(sizes)})")
    return [torch.stack([getattr(s, name) for s in splits]) for name in ("x_train", "y_train", "x_test", "y_test")]


def _draw_noise(noise, model: ParallelMLP, generator: torch.Generator):
    """One ``(scale, shift)`` per hidden layer, each ``(K, 1, hidden)`` (see ``train_parallel``), or None."""
    if noise is None:
        return None
    a, b = noise
    k, hidden = model.num_models, model.weight[0].shape[2]
    out = []
    for _ in range(model.depth):
        shift = (torch.rand(k, 1, hidden, generator=generator) * 2 - 1) * a
        scale = torch.exp((torch.rand(k, 1, hidden, generator=generator) * 2 - 1) * math.log(b))
        out.append((scale, shift))
    return out


def train_parallel(model: ParallelMLP, splits: Sequence[Split], lr, seeds: Sequence[int], *, epochs: int = 6,
                   batch_size: int = 64, noise: tuple[float, float] | None = None, noise_seed: int = 0,
                   smoothness: bool = False, shift_probe: int = 0, measure_every: int = 1,
                   dropout_seed: int = 0, loss: str = "mse", eval_every: int = 1, monitor=None) -> ParallelRun:
    """Train every network of ``model`` with Adam on its own data; evaluate after each epoch.

    Introduced in lesson 01. For network ``k`` this is ``training.fit(nets[k], splits[k].x_train,
    ..., lr=lr[k], seed=seeds[k])``: the same batches (a fresh permutation per epoch from a
    generator seeded with ``seeds[k]``, the last incomplete batch dropped), MSE loss, Adam with
    PyTorch's defaults (betas 0.9, 0.999, eps 1e-8), and the test MSE in eval mode after each epoch.

    Optional measurements, for the discussion of *why* BN helps (Santurkar et al., 2018):

    * ``noise=(a, b)``: at every step, each BN output unit gets a new random affine distortion
      ``z -> s z + m`` with ``m ~ U(-a, a)`` and ``log s ~ U(-log b, log b)``: the distribution
      of every layer's input changes at every step (injected "internal covariate shift"). Eval
      mode uses no noise (``s = 1``, the median, and ``m = 0``, the mean).
    * ``smoothness=True``: after each step, the gradient on the same batch is recomputed at the
      new parameters; ``||g_new - g_old|| / ||step||`` estimates how fast the gradient changes
      along the training path (a local Lipschitz constant of the gradient, "beta-smoothness").
    * ``shift_probe=P``: after each step, the mean and std of every activation input over the
      first ``P`` training points are recomputed (training mode, running statistics untouched);
      ``shift`` is the mean absolute change of these numbers over the step.

    Args:
        model: the networks (trained in place).
        splits: one ``Split`` per network, all of the same sizes.
        lr: one learning rate, or one per network.
        seeds: one shuffling seed per network.
        epochs: passes over the training data. Default: 6.
        batch_size: samples per step. Default: 64.
        noise: ``(a, b)`` of the injected noise, or None. Default: None.
        noise_seed, dropout_seed: seeds of the noise and dropout generators. Default: 0.
        smoothness: record the smoothness measure. Default: False.
        shift_probe: number of training points used to measure distribution shift (0: off).
        measure_every: take the smoothness and shift measurements at every ``measure_every``-th
            step only (steps 1, 1 + measure_every, ...), to save time. Default: 1.
        loss: ``"mse"`` (targets ``(n, out)``) or ``"cross_entropy"`` (int64 class labels ``(n,)``).
            Default: ``"mse"``.
        eval_every: evaluate the test loss after every ``eval_every``-th epoch (and the last). Default: 1.
        monitor: optional callable ``monitor(step, model, grads, updates)`` called after every step
            (``step`` counts from 1; ``grads`` and ``updates``, the parameter changes just applied, are
            in ``model.parameters()`` order), e.g. a ``coursekit.lab.diagnostics.LayerMonitor``.

    Returns:
        A ``ParallelRun``.
    """
    lrs, (x_train, y_train, x_test, y_test) = _checked_training(model, splits, lr, seeds, epochs, batch_size, noise,
                                                                shift_probe, measure_every, eval_every)
    loss_of = _loss_function(loss)
    run = _Training(model, _ParallelAdam(model.parameters(), lrs), loss_of, torch.Generator().manual_seed(dropout_seed),
                    noise, torch.Generator().manual_seed(noise_seed), smoothness, x_train[:, :shift_probe],
                    measure_every, monitor)
    shufflers = [torch.Generator().manual_seed(int(s)) for s in seeds]
    test_curve, recal_curve = [], []
    for epoch in range(epochs):
        orders = torch.stack([torch.randperm(x_train.shape[1], generator=g) for g in shufflers])
        run.epoch(x_train, y_train, orders, batch_size)
        if (epoch + 1) % eval_every and epoch + 1 < epochs:
            continue
        with torch.no_grad():
            test_curve.append(loss_of(model(x_test), y_test))
            recal_curve.append(loss_of(model.recalibrated(x_train)(x_test), y_test))
    with torch.no_grad():
        train_loss = loss_of(model.recalibrated(x_train)(x_train), y_train)
    return ParallelRun(
        test_loss=torch.stack(test_curve, dim=1), test_loss_recalibrated=torch.stack(recal_curve, dim=1),
        train_loss=train_loss, model=model,
        path=(dict(zip(("grad", "grad_change", "step", "loss_change"), torch.stack(run.smooth, dim=2)))
              if run.smooth else {}),
        shift=torch.stack(run.shifts, dim=1) if run.shifts else torch.empty(0),
    )


@dataclass
class _Training:
    """The steps of ``train_parallel``: batches, Adam, the optional noise, monitor and measurements."""

    model: ParallelMLP
    adam: _ParallelAdam
    loss_of: object
    dropout_gen: torch.Generator
    noise: tuple[float, float] | None
    noise_gen: torch.Generator
    smoothness: bool
    probe: torch.Tensor  # the first shift_probe training points of each network (empty: no shift measure)
    measure_every: int
    monitor: object = None
    steps: int = 0
    smooth: list = field(default_factory=list)
    shifts: list = field(default_factory=list)
    noise_now: object = None

    def __post_init__(self):
        self.noise_now = _draw_noise(self.noise, self.model, self.noise_gen)

    def losses(self, xb, yb, update_stats: bool = True) -> torch.Tensor:
        out = self.model(xb, training=True, noise=self.noise_now, update_stats=update_stats, generator=self.dropout_gen)
        return self.loss_of(out, yb)

    def epoch(self, x_train, y_train, orders, batch_size: int) -> None:
        """One pass over the batches of ``orders`` (the last incomplete batch dropped)."""
        n, rows = x_train.shape[1], torch.arange(self.model.num_models).unsqueeze(1)
        for start in range(0, n - n % batch_size, batch_size):
            idx = orders[:, start:start + batch_size]
            self.step(x_train[rows, idx], y_train[rows, idx])

    def step(self, xb, yb) -> None:
        params = self.model.parameters()
        measure = self.steps % self.measure_every == 0
        shift = self.probe.shape[1] > 0 and measure
        if shift:
            before = _distribution(self.model, self.probe, self.noise_now)
        loss_now = self.losses(xb, yb)
        grads = torch.autograd.grad(loss_now.sum(), params)
        self.steps += 1
        old = [p.detach().clone() for p in params] if self.smoothness and measure else None
        updates = self.adam.step(grads)
        if self.monitor is not None:
            self.monitor(self.steps, self.model, grads, updates)
        if self.smoothness and measure:
            # same batch, same noise, new parameters; the running statistics stay as they are
            loss_new = self.losses(xb, yb, update_stats=False)
            new_grads = torch.autograd.grad(loss_new.sum(), params)
            self.smooth.append(_path_measures(params, old, grads, new_grads, loss_now, loss_new))
        # the next step's noise is drawn now: the shift compares what step t and step t+1 see
        self.noise_now = _draw_noise(self.noise, self.model, self.noise_gen)
        if shift:
            self.shifts.append((_distribution(self.model, self.probe, self.noise_now) - before).abs().mean(dim=1))


def _checked_training(model: ParallelMLP, splits, lr, seeds, epochs, batch_size, noise, shift_probe, measure_every,
                      eval_every) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``train_parallel``'s arguments validated: (one learning rate per network, the stacked data)."""
    k = model.num_models
    lrs = torch.tensor(_as_list(lr, k, "lr"))
    if any(v <= 0 for v in lrs.tolist()):
        raise ValueError(f"expected positive learning rates (got {lrs.tolist()})")
    if len(splits) != k or len(seeds) != k:
        raise ValueError(f"expected {k} splits and {k} seeds, one per network (got {len(splits)} and {len(seeds)})")
    if epochs < 1:
        raise ValueError(f"expected epochs >= 1 (got {epochs})")
    if noise is not None and (len(noise) != 2 or noise[0] < 0 or noise[1] < 1):
        raise ValueError(f"expected noise=(a, b) with a >= 0 and b >= 1 (got {noise})")
    data = _stacked(splits)
    n = data[0].shape[1]
    if not 1 < batch_size <= n:
        raise ValueError(f"expected 2 <= batch_size <= {n} (got {batch_size})")
    if not 0 <= shift_probe <= n:
        raise ValueError(f"expected 0 <= shift_probe <= {n} (got {shift_probe})")
    if measure_every < 1 or eval_every < 1:
        raise ValueError(f"expected measure_every >= 1 and eval_every >= 1 (got {measure_every}, {eval_every})")
    return lrs, data


class _ParallelAdam:
    """Adam over stacked networks, elementwise as ``torch.optim.Adam`` with PyTorch's defaults (betas 0.9,
    0.999, eps 1e-8), one learning rate per network (it broadcasts over each network's slice); one
    ``_foreach`` call per operation."""

    betas, eps = (0.9, 0.999), 1e-8

    def __init__(self, params: list[torch.Tensor], lrs: torch.Tensor):
        self.params = params
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.neg_lr = [-lrs.view(-1, *([1] * (p.dim() - 1))) for p in params]
        self.steps = 0

    def step(self, grads) -> list[torch.Tensor]:
        """Apply one update; returns the parameter changes just applied (in ``params`` order)."""
        beta1, beta2 = self.betas
        self.steps += 1
        bc1, bc2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        with torch.no_grad():
            torch._foreach_lerp_(self.exp_avg, grads, 1 - beta1)
            torch._foreach_mul_(self.exp_avg_sq, beta2)
            torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(self.exp_avg_sq)
            torch._foreach_div_(denom, math.sqrt(bc2))
            torch._foreach_add_(denom, self.eps)
            updates = torch._foreach_mul(torch._foreach_div(self.neg_lr, bc1), self.exp_avg)
            torch._foreach_div_(updates, denom)
            torch._foreach_add_(self.params, updates)
        return updates


def _path_measures(params, old, grads, new_grads, loss_now, loss_new) -> torch.Tensor:
    """``(4, K)``: gradient norm, gradient change, step length and loss change of one step (``ParallelRun.path``)."""
    return torch.stack([
        _per_model_sq_norm(grads).sqrt(),
        _per_model_sq_norm([a - b for a, b in zip(new_grads, grads)]).sqrt(),
        _per_model_sq_norm([p.detach() - o for p, o in zip(params, old)]).sqrt(),
        (loss_new - loss_now).detach().abs(),
    ])


def seed_net(batch_norm: bool, seed: int, weight_std: float | str | None = 0.1, bias_init: float | None = -0.2,
             bn_momentum: float = 0.5, hidden: int = 10, depth: int = 8) -> nn.Sequential:
    """The seed experiment's network: ``depth`` x ``hidden`` tanh MLP, N(0, weight_std**2) weights, constant bias.

    Introduced in lesson 01. The defaults are the seed article's: weight std 0.1, bias -0.2, 8 layers
    of 10 tanh units, BN momentum 0.5 (PyTorch's convention). ``torch.manual_seed(seed)`` is set
    first, so the same seed gives the same weights with and without BN.

    ``weight_std="kaiming"`` draws every weight from N(0, (5/3)**2 / fan_in) instead
    (``nn.init.kaiming_normal_`` with tanh's gain 5/3): the scale that keeps a tanh layer's output
    variance roughly constant with depth, the usual competitor of BN. ``None``: PyTorch's default.
    """
    if isinstance(weight_std, str) and weight_std != "kaiming":
        raise ValueError(f"expected weight_std to be a number, None or 'kaiming' (got {weight_std!r})")
    torch.manual_seed(seed)
    net = mlp(in_features=1, hidden=hidden, depth=depth, out_features=1, activation=nn.Tanh, batch_norm=batch_norm,
              bn_momentum=bn_momentum, weight_std=None if weight_std == "kaiming" else weight_std, bias_init=bias_init)
    if weight_std == "kaiming":
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="tanh")
    return net


def train_grid(batch_norm: bool, splits: Mapping[int, Split], seeds: Sequence[int], *, lr=0.03,
               weight_std=0.1, bias_init: float | None = -0.2, bn_momentum: float = 0.5, hidden: int = 10,
               depth: int = 8, dropout: float = 0.0, **train_kw) -> tuple[ParallelRun, torch.Tensor]:
    """Train ``seed_net`` networks for every (setting, seed) pair at once and return the final test losses.

    Introduced in lesson 01. ``lr`` or ``weight_std`` may be a sequence of values (the swept
    setting); every value is combined with every seed. Network ``(i, j)`` has setting ``i``, is
    initialised with ``seeds[j]``, trained on ``splits[seeds[j]]`` with shuffling seed ``seeds[j]``.

    Args:
        batch_norm: with or without BatchNorm before each tanh.
        splits: the data of every seed.
        seeds: the seeds to run.
        lr, weight_std: a number (``weight_std`` also ``'kaiming'`` or None, see ``seed_net``), or a
            sequence (at most one of the two). Defaults: 0.03 and 0.1.
        bias_init, bn_momentum, hidden, depth: as in ``seed_net``.
        dropout: dropout probability (``ParallelMLP``). Default: 0.
        **train_kw: passed to ``train_parallel`` (``epochs``, ``batch_size``, ``noise``, ...).

    Returns:
        ``(run, final)``: the ``ParallelRun`` (rows ordered setting-major) and the final test MSE
        with recalibrated statistics as a ``(settings, seeds)`` tensor.
    """
    swept = [name for name, v in (("lr", lr), ("weight_std", weight_std))
             if v is not None and not isinstance(v, (int, float, str))]
    if len(swept) > 1:
        raise ValueError(f"expected at most one swept setting (got sequences for {swept})")
    if not seeds:
        raise ValueError("expected at least one seed (got none)")
    missing = [s for s in seeds if s not in splits]
    if missing:
        raise ValueError(f"expected a split for every seed (got none for seeds {missing})")
    lrs = list(lr) if swept == ["lr"] else [lr]
    stds = list(weight_std) if swept == ["weight_std"] else [weight_std]
    grid = [(a, b, s) for a in lrs for b in stds for s in seeds]
    nets = [seed_net(batch_norm, s, weight_std=b, bias_init=bias_init, bn_momentum=bn_momentum,
                     hidden=hidden, depth=depth) for _, b, s in grid]
    run = train_parallel(ParallelMLP(nets, dropout=dropout), [splits[s] for *_, s in grid],
                         [a for a, _, _ in grid], [s for *_, s in grid], **train_kw)
    return run, run.test_loss_recalibrated[:, -1].reshape(-1, len(seeds))


def layer_gradient_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Norm of the MSE loss's gradient with respect to each Linear layer's weight, input to output.

    Introduced in lesson 01 (vanishing gradients). One forward/backward pass on ``(x, y)`` in the
    network's current mode; the network's ``.grad`` fields are left as they were.

    Example::

        >>> from coursekit.lab.training import mlp
        >>> len(layer_gradient_norms(mlp(depth=3), torch.randn(8, 1), torch.randn(8, 1)))
        4
    """
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    if not weights:
        raise ValueError("expected a network with at least one nn.Linear layer (got none)")
    if len(x) != len(y):
        raise ValueError(f"expected as many targets as inputs (got {len(x)} inputs, {len(y)} targets)")
    grads = torch.autograd.grad(nn.functional.mse_loss(net(x), y), weights)
    return [float(g.norm()) for g in grads]


def predict_the_mean_mse(split: Split) -> float:
    """Test MSE of the constant model ``y = mean(y_train)``: the level of a model that learned nothing.

    Introduced in lesson 01. On standardized targets it is close to 1 (the test variance of y).
    """
    return float(((split.y_test - split.y_train.mean()) ** 2).mean())


def plot_sweep(values: Sequence[float], results: Mapping[str, torch.Tensor], ax=None, xlabel: str = "",
               ylabel: str = "final test MSE", level: float | None = None, level_label: str = "",
               colors: Mapping[str, str] | None = None, title: str | None = None, logy: bool = True):
    """Final losses against a swept setting: per label, every seed as a dot and the median as a line.

    Introduced in lesson 01 (learning-rate and initialisation sweeps).

    Args:
        values: the swept setting (x axis, drawn on a log scale).
        results: maps a label to a ``(len(values), seeds)`` tensor of final losses.
        level: optional horizontal reference line (e.g. predict-the-mean), with ``level_label``.
        colors: optional colour per label.
        logy: logarithmic y axis. Default: True.

    Returns:
        The ``Axes``.
    """
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("expected at least one result (got none)")
    for label, r in results.items():
        if r.dim() != 2 or r.shape[0] != len(values):
            raise ValueError(f"expected {label!r} results of shape ({len(values)}, seeds) (got {tuple(r.shape)})")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for label, r in results.items():
        color = (colors or {}).get(label)
        med = r.median(dim=1).values
        (line,) = ax.plot(values, med, marker="o", lw=2, color=color, label=f"{label} (median)")
        for j in range(r.shape[1]):
            ax.scatter(values, r[:, j], s=12, alpha=0.5, color=line.get_color())
    if level is not None:
        ax.axhline(level, color="grey", ls="--", lw=1)
        ax.text(values[0], level, level_label, va="bottom", fontsize=8, color="grey")
    ax.set_xscale("log")
    return finish_axes(ax, xlabel, ylabel, title=title, logy=logy)
