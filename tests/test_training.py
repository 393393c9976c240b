"""Tests of coursekit.lab.training: model builders, the training loop, metrics, layer_outputs."""
import copy

import pytest
import torch
from torch import nn

from coursekit.lab.training import History, accuracy, fit, layer_outputs, mlp, mse, small_cnn


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_mlp_structure():
    net = mlp(depth=8, hidden=10)
    assert _count(net, nn.Linear) == 9 and _count(net, nn.Tanh) == 8 and _count(net, nn.BatchNorm1d) == 0
    bn = mlp(depth=3, batch_norm=True, bn_momentum=0.5)
    kinds = [type(m) for m in bn]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.Tanh] * 3 + [nn.Linear]
    assert all(m.momentum == 0.5 for m in bn if isinstance(m, nn.BatchNorm1d))
    assert net(torch.randn(7, 1)).shape == (7, 1)


def test_mlp_init():
    torch.manual_seed(0)
    net = mlp(hidden=200, depth=3, weight_std=0.1, bias_init=-0.2)
    hidden_weights = torch.cat([m.weight.flatten() for m in net if isinstance(m, nn.Linear)][1:-1])
    assert abs(hidden_weights.std().item() - 0.1) < 0.005  # std 0.1, not variance 0.1
    assert all(torch.all(m.bias == -0.2) for m in net if isinstance(m, nn.Linear))
    default = mlp(hidden=200, depth=3)
    assert not all(torch.all(m.bias == -0.2) for m in default if isinstance(m, nn.Linear))


def test_mlp_errors():
    with pytest.raises(ValueError, match="depth"):
        mlp(depth=0)


@pytest.mark.parametrize("norm,cls", [("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm), (None, None)])
def test_small_cnn(norm, cls):
    net = small_cnn(norm=norm, channels=8, groups=4)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2
    # a conv bias before a normalization is cancelled by it, so only the plain CNN has one
    assert all((c.bias is None) == (norm is not None) for c in convs)
    if cls is not None:
        assert _count(net, cls) == 2


def test_small_cnn_errors():
    with pytest.raises(ValueError, match="norm"):
        small_cnn(norm="ln")
    with pytest.raises(ValueError, match="divide"):
        small_cnn(norm="gn", channels=6, groups=4)


def _linear_problem(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def test_fit_learns_and_records_history():
    x, y = _linear_problem()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    hist = fit(model, x, y, epochs=30, batch_size=32, lr=0.05, x_test=x, y_test=y)
    assert isinstance(hist, History)
    assert len(hist.train_loss) == len(hist.test_loss) == 30
    assert hist.test_loss[-1] < 1e-3 < hist.test_loss[0]
    assert not model.training  # evaluated in eval mode after the last epoch


def test_fit_is_deterministic_given_seeds():
    x, y = _linear_problem()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = mlp(in_features=3, depth=2, batch_norm=True)
        runs.append(fit(model, x, y, epochs=3, batch_size=16, lr=0.01, seed=5).train_loss)
    assert runs[0] == runs[1]


def test_fit_drop_last_avoids_batch_of_one_with_bn():
    x, y = _linear_problem(n=65)
    model = mlp(in_features=3, depth=2, batch_norm=True)
    fit(model, x, y, epochs=1, batch_size=64)  # 64 + 1: the single leftover sample is dropped
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fit(model, x, y, epochs=1, batch_size=64, drop_last=False)


def test_fit_classification_metric():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(2, 2)
    hist = fit(model, x, y, epochs=20, batch_size=20, lr=0.05, x_test=x, y_test=y, metric=accuracy)
    assert len(hist.test_metric) == 20 and hist.test_metric[-1] > 0.9


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=1000), "batch_size"),
    (dict(optimizer="rmsprop", batch_size=8), "optimizer"),
])
def test_fit_errors(kwargs, match):
    x, y = _linear_problem(n=32)
    with pytest.raises(ValueError, match=match):
        fit(nn.Linear(3, 1), x, y, **kwargs)
    with pytest.raises(ValueError, match="as many targets"):
        fit(nn.Linear(3, 1), x, y[:5])


def test_mse_and_accuracy_known_values():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(0.0)
    x = torch.tensor([[1.0], [2.0]])
    assert mse(model, x, torch.tensor([[2.0], [6.0]])) == pytest.approx(2.0)  # errors 0 and 2
    clf = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        clf.weight.copy_(torch.eye(2))
    xs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(clf, xs, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)


def test_layer_outputs_matches_a_manual_forward():
    torch.manual_seed(0)
    net = mlp(depth=3, batch_norm=True).eval()
    x = torch.randn(6, 1)
    acts = layer_outputs(net, x, nn.Tanh)
    pre = layer_outputs(net, x, nn.Tanh, inputs=True)
    h, manual_pre, manual_act = x, [], []
    for m in net:
        if isinstance(m, nn.Tanh):
            manual_pre.append(h)
        h = m(h)
        if isinstance(m, nn.Tanh):
            manual_act.append(h)
    assert len(acts) == len(pre) == 3
    assert all(torch.equal(a, b) for a, b in zip(acts, manual_act))
    assert all(torch.equal(a, b) for a, b in zip(pre, manual_pre))
    # inputs and outputs differ, so recording the wrong one would be caught
    assert not torch.equal(acts[0], pre[0])
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed


def test_layer_outputs_tuple_of_types_and_train_mode_updates_running_stats():
    net = mlp(depth=2, batch_norm=True)
    before = copy.deepcopy(net[1].running_mean)
    out = layer_outputs(net, torch.randn(8, 1) + 3, (nn.Linear, nn.BatchNorm1d))
    assert len(out) == 3 + 2
    assert not torch.equal(before, net[1].running_mean)  # documented: train mode updates the stats


def test_layer_outputs_errors():
    net = mlp(depth=2)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        layer_outputs(net, torch.randn(4, 1), nn.BatchNorm1d)
    with pytest.raises(TypeError, match="module_type"):
        layer_outputs(net, torch.randn(4, 1), "tanh")
