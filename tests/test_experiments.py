"""coursekit.lab.experiments: batch schedules, stacked training equal to one-by-one training, BN snapshots."""
import copy

import pytest
import torch
from torch import nn

from coursekit.lab.data import digits_data
from coursekit.lab.experiments import (
    SweepResult, batch_schedule, batch_size_sweep, bn_changes, bn_state, fit_parallel, fit_steps,
)
from coursekit.lab.training import small_cnn


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def _models(norm, seeds, channels=8):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(small_cnn(norm, channels=channels))
    return out


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


# --- batch_schedule -------------------------------------------------------------------------

def test_batch_schedule_covers_each_epoch_once_without_repeats():
    sched = batch_schedule(10, 3, steps=7, seed=1)
    assert sched.shape == (7, 3) and sched.dtype == torch.int64
    first_epoch = sched[:3].flatten()  # 10 // 3 = 3 full batches per epoch, one sample dropped
    assert len(set(first_epoch.tolist())) == 9
    for batch in sched:
        assert len(set(batch.tolist())) == 3


def test_batch_schedule_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b = batch_schedule(50, 4, 20, seed=3), batch_schedule(50, 4, 20, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, batch_schedule(50, 4, 20, seed=4))
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.mark.parametrize("kwargs, match", [
    (dict(n=5, batch_size=6, steps=1), "batch_size <= n=5"),
    (dict(n=5, batch_size=0, steps=1), "batch_size to be a positive int"),
    (dict(n=5, batch_size=2, steps=0), "steps to be a positive int"),
])
def test_batch_schedule_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        batch_schedule(**kwargs)


# --- fit_parallel == fit_steps ----------------------------------------------------------------

@pytest.mark.parametrize("norm", ["bn", "gn", None])
def test_fit_parallel_equals_training_one_by_one(digits, norm):
    """Weights, running statistics and num_batches_tracked all match sequential training."""
    seeds = [0, 1, 2]
    parallel = _models(norm, seeds)
    single = [copy.deepcopy(m) for m in parallel]
    x, y = digits.x_train[:200], digits.y_train[:200]
    fit_parallel(parallel, x, y, batch_size=4, steps=12, lr=1e-2, seeds=seeds)
    for m, r, s in zip(parallel, single, seeds):
        fit_steps(r, x, y, batch_size=4, steps=12, lr=1e-2, seed=s)
        assert _max_diff(m, r) < 1e-4
        assert m.training


def test_fit_parallel_check_can_fail_with_wrong_batches(digits):
    """Known-wrong: feeding model 0 the batches of seed 1 is detected by the comparison above."""
    parallel = _models("bn", [0, 1])
    single = copy.deepcopy(parallel[0])
    x, y = digits.x_train[:200], digits.y_train[:200]
    fit_parallel(parallel, x, y, batch_size=4, steps=12, seeds=[1, 0])
    fit_steps(single, x, y, batch_size=4, steps=12, seed=0)
    assert _max_diff(parallel[0], single) > 1e-3


def test_fit_parallel_models_do_not_interact(digits):
    """Model A trains the same whether its neighbour is B or C (no statistics shared across models)."""
    x, y = digits.x_train[:200], digits.y_train[:200]
    a1, b = _models("gn", [0, 1])
    a2, c = _models("gn", [0, 5])
    fit_parallel([a1, b], x, y, batch_size=2, steps=8, seeds=[0, 1])
    fit_parallel([a2, c], x, y, batch_size=2, steps=8, seeds=[0, 7])
    assert _max_diff(a1, a2) < 1e-5


def test_fit_parallel_rejects_mixed_or_foreign_models(digits):
    x, y = digits.x_train[:20], digits.y_train[:20]
    with pytest.raises(ValueError, match="one architecture"):
        fit_parallel([small_cnn("bn"), small_cnn("gn")], x, y, batch_size=2, steps=1)
    with pytest.raises(ValueError, match="small_cnn"):
        fit_parallel([nn.Sequential(nn.Flatten(), nn.Linear(64, 10))], x, y, batch_size=2, steps=1)
    with pytest.raises(ValueError, match="one seed per model"):
        fit_parallel([small_cnn("bn")], x, y, batch_size=2, steps=1, seeds=[0, 1])
    with pytest.raises(ValueError, match="optimizer"):
        fit_parallel([small_cnn("bn")], x, y, batch_size=2, steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="as many labels"):
        fit_steps(small_cnn("bn"), x, y[:5], batch_size=2, steps=1)


# --- batch_size_sweep --------------------------------------------------------------------------

def test_batch_size_sweep_structure(digits):
    r = batch_size_sweep(digits, batch_sizes=(2, 8), seeds=(0, 1), steps=3, keep_models=True)
    assert isinstance(r, SweepResult)
    assert set(r.accuracy) == {"bn", "gn"} and set(r.accuracy["bn"]) == {2, 8}
    assert all(len(v) == 2 and all(0.0 <= a <= 1.0 for a in v) for d in r.accuracy.values() for v in d.values())
    assert len(r.models[("gn", 8)]) == 2 and not r.models[("gn", 8)][0].training
    lines = r.table().splitlines()
    assert len(lines) == 3 and "BN" in lines[0] and lines[1].split()[0] == "2"
    with pytest.raises(ValueError, match="norms"):
        batch_size_sweep(digits, norms=("ln",))


def test_sweep_learns_something(digits):
    """A few dozen steps at batch 32 beat chance (0.1) clearly: the sweep trains, not just evaluates."""
    r = batch_size_sweep(digits, norms=("bn",), batch_sizes=(32,), seeds=(0,), steps=40)
    assert r.mean("bn", 32) > 0.3


# --- bn_state / bn_changes ---------------------------------------------------------------------

def test_bn_changes_tells_statistics_from_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    s0 = bn_state(model)
    model.eval()
    model(torch.randn(8, 3))
    assert bn_changes(s0, bn_state(model)) == {"running stats changed": False, "gamma/beta changed": False}
    model.train()
    model(torch.randn(8, 3))
    s1 = bn_state(model)
    assert bn_changes(s0, s1) == {"running stats changed": True, "gamma/beta changed": False}
    with torch.no_grad():
        model[1].weight.add_(0.5)
    assert bn_changes(s1, bn_state(model)) == {"running stats changed": False, "gamma/beta changed": True}


def test_bn_state_is_a_copy_and_errors():
    model = nn.Sequential(nn.BatchNorm1d(2))
    s = bn_state(model)
    model(torch.randn(4, 2))
    assert torch.equal(s["0"]["running_mean"], torch.zeros(2))
    with pytest.raises(TypeError, match="nn.Module"):
        bn_state("model")
    with pytest.raises(ValueError, match="same model"):
        bn_changes(s, {})
