"""Tests of coursekit.lab.diagnostics (lesson 01): the monitors record what their docstrings say,
computed independently here from the model's own tensors, and refuse bad arguments."""
import pytest
import torch
from torch import nn

from coursekit.lab.data import Split, quadratic_data, standardize
from coursekit.lab.diagnostics import LayerMonitor, UnitMonitor
from coursekit.lab.training import mlp
from coursekit.lab.why_normalize import ParallelMLP, seed_net, train_parallel


def _split(seed):
    return standardize(quadratic_data(n=160, seed=seed))


def test_layer_monitor_records_ratios_of_the_step_it_sees():
    """update_ratio is std(W after the step - W before it) / std(W after); grad_ratio uses the step's own gradient."""
    seeds = (0, 1)
    splits = [_split(s) for s in seeds]
    model = ParallelMLP([seed_net(True, s, depth=3) for s in seeds])
    probe = torch.stack([sp.x_train[:32] for sp in splits])
    seen = {}

    class Spy(LayerMonitor):
        def __call__(self, step, model, grads, updates):
            if step == 2:   # the weights after step 2 are the weights before step 3
                seen["before"] = [w.detach().clone() for w in model.weight]
            if step == 3:
                seen["after"] = [w.detach().clone() for w in model.weight]
                seen["grads"] = [g.clone() for g in grads[:len(model.weight)]]
            super().__call__(step, model, grads, updates)

    mon = Spy(probe, every=1)
    train_parallel(model, splits, 0.01, seeds, epochs=1, batch_size=32, monitor=mon)
    stats = mon.stacked()
    assert stats["update_ratio"].shape == (2, 4, 3) and mon.steps == [1, 2, 3, 4]
    for layer in range(3):
        after, before = seen["after"][layer], seen["before"][layer]
        expected = (after - before).flatten(1).std(dim=1) / after.flatten(1).std(dim=1)
        torch.testing.assert_close(stats["update_ratio"][:, 2, layer], expected, rtol=1e-4, atol=0)
        expected_g = seen["grads"][layer].flatten(1).std(dim=1) / after.flatten(1).std(dim=1)
        torch.testing.assert_close(stats["grad_ratio"][:, 2, layer], expected_g)
    assert not torch.allclose(stats["update_ratio"][:, 0], stats["update_ratio"][:, 3])   # it does change over training


def test_layer_monitor_activation_statistics_match_a_plain_forward():
    """act_std and saturated are the std and the share |a| > threshold of each hidden layer's tanh outputs."""
    net = seed_net(False, 0, weight_std=1.0, bias_init=0.0, depth=3)
    model = ParallelMLP([net])
    probe = _split(0).x_train[None, :50]
    mon = LayerMonitor(probe, saturation=0.9)
    mon(1, model, [torch.zeros_like(w) for w in model.parameters()], [torch.zeros_like(w) for w in model.parameters()])
    acts, h = [], probe[0]
    with torch.no_grad():
        for m in net:
            h = m(h)
            if isinstance(m, nn.Tanh):
                acts.append(h)
    stats = mon.stacked()
    torch.testing.assert_close(stats["act_std"][0, 0], torch.stack([a.flatten().std() for a in acts]))
    torch.testing.assert_close(stats["saturated"][0, 0], torch.stack([(a.abs() > 0.9).float().mean() for a in acts]))
    assert float(stats["saturated"].max()) > 0   # weight std 1 saturates some units: the check can see them


def test_unit_monitor_percentiles_and_accuracy():
    """UnitMonitor's accuracy and percentiles equal a direct eval-mode computation on the test set."""
    torch.manual_seed(0)
    nets = [mlp(in_features=4, hidden=6, depth=2, out_features=3, activation=nn.Sigmoid, batch_norm=True) for _ in range(2)]
    model = ParallelMLP(nets)
    x = torch.randn(2, 40, 4)
    y = torch.randint(0, 3, (2, 40))
    mon = UnitMonitor(x, y, layer=1, unit=2, every=1)
    mon(1, model)
    pre = []
    out = model(x, record=pre)
    stats = mon.stacked()
    torch.testing.assert_close(stats["accuracy"][:, 0], (out.argmax(dim=2) == y).float().mean(dim=1))
    q = torch.quantile(pre[1][:, :, 2], torch.tensor([0.15, 0.5, 0.85]), dim=1).t()
    torch.testing.assert_close(stats["quantiles"][:, 0], q)
    mon(2, model)   # every=1: a second record
    assert stats["quantiles"].shape == (2, 1, 3) and len(mon.steps) == 2


def test_monitors_skip_steps_between_records():
    split = Split(torch.randn(64, 4), torch.randint(0, 3, (64,)), torch.randn(20, 4), torch.randint(0, 3, (20,)))
    torch.manual_seed(0)
    model = ParallelMLP([mlp(in_features=4, hidden=5, depth=2, out_features=3, activation=nn.Sigmoid)])
    mon = UnitMonitor(split.x_test[None], split.y_test[None], every=3)
    train_parallel(model, [split], 0.01, [0], epochs=2, batch_size=16, loss="cross_entropy", monitor=mon)
    assert mon.steps == [1, 4, 7]


@pytest.mark.parametrize("call, match", [
    (lambda: LayerMonitor(torch.zeros(4, 1)), r"shape \(K, P, features\)"),
    (lambda: LayerMonitor(torch.zeros(1, 4, 1), every=0), "every >= 1"),
    (lambda: UnitMonitor(torch.zeros(1, 4, 2), torch.zeros(1, 5, dtype=torch.int64)), r"y_test \(K, N\)"),
    (lambda: LayerMonitor(torch.zeros(1, 4, 1)).stacked(), "at least one recorded step"),
    (lambda: UnitMonitor(torch.zeros(1, 4, 2), torch.zeros(1, 4, dtype=torch.int64)).stacked(), "at least one recorded step"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
