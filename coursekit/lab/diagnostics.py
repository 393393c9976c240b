"""Training-time diagnostics of lesson 01, in the style of Karpathy's "makemore" lectures.

While a ``ParallelMLP`` trains (``why_normalize.train_parallel(..., monitor=...)``), these monitors
record per-layer statistics over the steps, for every network at once:

* ``LayerMonitor``: per hidden layer, the spread (std) and saturated share of the activations on
  a fixed probe batch, the gradient-to-data ratio ``std(dL/dW) / std(W)`` and the update-to-data
  ratio ``std(delta W) / std(W)`` of the layer's weights (Karpathy's rule of thumb: about 1e-3
  for SGD);
* ``UnitMonitor``: test accuracy and the 15th, 50th and 85th percentiles of one unit's input
  over training (Ioffe & Szegedy, 2015, Figure 1).
"""
from __future__ import annotations

import torch

__all__ = ["LayerMonitor", "UnitMonitor"]


def _check_every(every: int) -> None:
    if every < 1:
        raise ValueError(f"expected every >= 1 (got {every})")


class LayerMonitor:
    """Per-layer activation, gradient and update statistics of every network, every ``every`` steps.

    Introduced in lesson 01. At the monitored steps the probe batch goes through the networks in
    training mode (running statistics untouched) and, for each hidden layer ``l`` of network ``k``,
    the monitor appends

    * ``act_std``: the std of the layer's activations over probe points and units;
    * ``saturated``: the share of activations with ``|a| > saturation``;
    * ``grad_ratio``: ``std(g) / std(W)`` of the weight gradient of the step;
    * ``update_ratio``: ``std(delta W) / std(W)``, the change the optimizer just made, relative to
      the weights (``delta W`` is the whole step, learning rate included).

    Args:
        probe: ``(K, P, in_features)`` fixed points, one batch per network.
        every: record at steps ``1, 1 + every, ...``. Default: 1.
        saturation: threshold of ``|activation|`` counted as saturated. Default: 0.97 (tanh).

    Shape:
        each attribute, after ``stacked()``: ``(K, records, hidden layers)``.

    Example::

        >>> from coursekit.lab.why_normalize import ParallelMLP, seed_net, train_parallel
        >>> from coursekit.lab.data import quadratic_data, standardize
        >>> d = standardize(quadratic_data(n=200))
        >>> mon = LayerMonitor(d.x_train[None, :64], every=2)
        >>> _ = train_parallel(ParallelMLP([seed_net(True, 0)]), [d], 0.01, [0], epochs=1, monitor=mon)
        >>> mon.stacked()["update_ratio"].shape
        torch.Size([1, 1, 8])
    """

    def __init__(self, probe: torch.Tensor, every: int = 1, saturation: float = 0.97):
        if probe.dim() != 3:
            raise ValueError(f"expected a probe of shape (K, P, features) (got {tuple(probe.shape)})")
        _check_every(every)
        self.probe, self.every, self.saturation = probe, every, saturation
        self.steps: list[int] = []
        self.records: dict[str, list[torch.Tensor]] = {k: [] for k in ("act_std", "saturated", "grad_ratio", "update_ratio")}

    def __call__(self, step: int, model, grads, updates) -> None:
        if (step - 1) % self.every:
            return
        pre: list[torch.Tensor] = []
        with torch.no_grad():
            model(self.probe, training=True, update_stats=False, record=pre)
            acts = [model.activation(p) for p in pre]
            weights = model.weight[:model.depth]
            data_std = [w.flatten(1).std(dim=1) for w in weights]
            self.records["act_std"].append(torch.stack([a.flatten(1).std(dim=1) for a in acts], dim=1))
            self.records["saturated"].append(torch.stack(
                [(a.abs() > self.saturation).float().flatten(1).mean(dim=1) for a in acts], dim=1))
            self.records["grad_ratio"].append(torch.stack(
                [g.flatten(1).std(dim=1) / s for g, s in zip(grads, data_std)], dim=1))
            self.records["update_ratio"].append(torch.stack(
                [u.flatten(1).std(dim=1) / s for u, s in zip(updates, data_std)], dim=1))
        self.steps.append(step)

    def stacked(self) -> dict[str, torch.Tensor]:
        """Every statistic as a ``(K, records, layers)`` tensor."""
        if not self.steps:
            raise ValueError("expected at least one recorded step (got none: was the monitor passed to training?)")
        return {k: torch.stack(v, dim=1) for k, v in self.records.items()}


class UnitMonitor:
    """Test accuracy and the percentiles of one hidden unit's input, every ``every`` steps.

    Introduced in lesson 01 (Ioffe & Szegedy's Figure 1 on the digits). At the monitored steps the
    test set goes through the networks in eval mode (running statistics, no batch dependence) and
    the monitor appends the accuracy and, for unit ``unit`` of hidden layer ``layer``, the
    ``quantiles`` of its activation input (after BN where there is one) over the test points.

    Args:
        x_test: ``(K, N, in_features)``; y_test: ``(K, N)`` int64 class labels.
        layer, unit: which activation input to follow. Defaults: the last hidden layer, unit 0.
        quantiles: Default: ``(0.15, 0.5, 0.85)``.
        every: record at steps ``1, 1 + every, ...``. Default: 1.

    Shape:
        after ``stacked()``: ``accuracy`` ``(K, records)``, ``quantiles`` ``(K, records, len(quantiles))``.
    """

    def __init__(self, x_test: torch.Tensor, y_test: torch.Tensor, layer: int = -1, unit: int = 0,
                 quantiles=(0.15, 0.5, 0.85), every: int = 1):
        if x_test.dim() != 3 or y_test.shape != x_test.shape[:2]:
            raise ValueError(f"expected x_test (K, N, features) and y_test (K, N) "
                             f"(got {tuple(x_test.shape)} and {tuple(y_test.shape)})")
        _check_every(every)
        self.x_test, self.y_test, self.layer, self.unit, self.every = x_test, y_test, layer, unit, every
        self.q = torch.tensor(quantiles, dtype=x_test.dtype)
        self.steps: list[int] = []
        self.accuracy: list[torch.Tensor] = []
        self.quantiles: list[torch.Tensor] = []

    def __call__(self, step: int, model, grads=None, updates=None) -> None:
        if (step - 1) % self.every:
            return
        pre: list[torch.Tensor] = []
        with torch.no_grad():
            out = model(self.x_test, record=pre)
            self.accuracy.append((out.argmax(dim=2) == self.y_test).float().mean(dim=1))
            self.quantiles.append(torch.quantile(pre[self.layer][:, :, self.unit], self.q, dim=1).t())
        self.steps.append(step)

    def stacked(self) -> dict[str, torch.Tensor]:
        """``accuracy`` ``(K, records)`` and ``quantiles`` ``(K, records, len(quantiles))``."""
        if not self.steps:
            raise ValueError("expected at least one recorded step (got none: was the monitor passed to training?)")
        return {"accuracy": torch.stack(self.accuracy, dim=1), "quantiles": torch.stack(self.quantiles, dim=1)}
