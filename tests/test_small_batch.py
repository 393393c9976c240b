"""Lesson 06 (c) and (g): the small-batch verdicts hold on seeds the notebook does not show.

The notebook checks its verdicts on seeds 0-4; these tests re-run the same experiments on seeds 5-9
with the same rules, so a verdict that held by luck on the shown seeds fails here. The accuracy rules
of (c) are ``coursekit.lab.experiments.small_batch_verdicts``, called here; the other rules are
restated from the notebook's checked cells. When the
thresholds were set, seeds 0-9 were run with the default arithmetic and with
``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41`` (20 runs of each experiment); the worst
value seen over those runs, against the rule's threshold:

=====================================================================  =========  ==========
rule (MLP on the digits, 2400 training images per run; CNN for (g))    threshold  worst seen
=====================================================================  =========  ==========
GN - BN test accuracy at batch 2, minimum over seeds                    > 0.05     0.136
GN median - BN median at batch 2                                        > 0.15     0.236
BN median, batch 4 minus batch 2                                        > 0.15     0.244
GN median, batch 4 minus batch 2                                        < 0.1      0.047
BN median - GN median, minimum over batch sizes >= 4                    > -0.03    0.000
share of training-mode normalized values within 0.01 of +-1 (batch 2)  > 0.9      0.965
share of eval-mode normalized values within 0.01 of +-1 (batch 2)      < 0.05     0.011
log running-var spread: min over seeds at b2 / max at b32               > 1.5      2.89
share of the GN gap that update_bn recovers at batch 2, max             < 0.5      0.217
GN - recalibrated BN at batch 2, min                                    > 0.05     0.107
abs(train mode - eval mode accuracy) at batch 32, max                   < 0.08     0.034
eval mode - train mode (test pairs) accuracy at batch 2, min            > 0.1      0.176
batch-mean spread at b2 / at b32, every BN layer (CNN and MLP), min     > 3        3.85
batch-mean spread at b2 / at b32, every BN layer (CNN and MLP), max     < 5.5      4.27
noisiest CNN layer at b2 / steadiest MLP layer at b4, spread ratio      < 0.8      0.695
CNN, 150 steps at batch 32: mean clean gain of update_bn                > 0.05     0.104
CNN: smallest clean gain of update_bn                                   > -0.01    0.020
CNN: spread over seeds after / before update_bn                         < 0.5      0.187
CNN: smallest gain of update_bn on shifted images                       > 0.2      0.500
=====================================================================  =========  ==========

The tightest rule is "BN median not more than 0.03 below GN's at batch >= 4": BN is level with GN
or ahead there, so the margin is the 0.03 tolerance itself.
"""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import update_bn

from coursekit.lab.data import digits_data
from coursekit.lab.experiments import (
    SweepResult,
    batch_schedule,
    batch_size_sweep,
    fit_parallel,
    small_batch_margins,
    small_batch_verdicts,
)
from coursekit.lab.training import accuracy, layer_outputs, small_cnn

SEEDS = (5, 6, 7, 8, 9)


@pytest.fixture(scope="module")
def data():
    return digits_data()


@pytest.fixture(scope="module")
def sweep(data):
    return batch_size_sweep(data, arch="mlp", norms=("bn", "gn"), batch_sizes=(2, 4, 8, 16, 32), seeds=SEEDS,
                            images=2400, lr=1e-2, hidden=64, depth=2, groups=8, keep_models=True)


def _loader(x, batch_size=200):
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


def _share_near_pm1(t, tol=0.01):
    return float(((t.abs() - 1).abs() < tol).float().mean())


def _normalized(net, x, batch_size, batches=150):
    idx = batch_schedule(len(x), batch_size, batches, seed=0)
    with torch.no_grad():
        z = net[1](net[0](x[idx.flatten()]))
        per_batch = z.view(batches, batch_size, -1).transpose(0, 1).reshape(batch_size, -1)
        train = F.batch_norm(per_batch, None, None, training=True, eps=net[2].eps)
        evl = F.batch_norm(z, net[2].running_mean, net[2].running_var, training=False, eps=net[2].eps)
    return train.flatten(), evl.flatten()


def _train_mode_accuracy(net, x, y, batch_size):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    order = order[: len(x) - len(x) % batch_size]
    probe = copy.deepcopy(net).train()
    with torch.no_grad():
        pred = torch.cat([probe(x[idx]).argmax(1) for idx in order.view(-1, batch_size)])
    return float((pred == y[order]).double().mean())


def mechanism_margins(sweep, data):
    """The values (c)'s batch-2 mechanism verdicts compare with a threshold, for the sweep's seeds."""
    acc = sweep.accuracy
    out = {}
    train2, eval2 = _normalized(sweep.models[("bn", 2)][0], data.x_train, 2)
    out["pm1_train"], out["pm1_eval"] = _share_near_pm1(train2), _share_near_pm1(eval2)
    rows = {}
    for b in (2, 32):
        for trained, gn in zip(sweep.models[("bn", b)], acc["gn"][b]):
            fresh = copy.deepcopy(trained)
            update_bn(_loader(data.x_train), fresh)
            rows.setdefault(b, []).append(dict(
                var=float((trained[2].running_var / fresh[2].running_var).log().std()),
                ev=accuracy(trained, data.x_test, data.y_test), rec=accuracy(fresh, data.x_test, data.y_test),
                tm=_train_mode_accuracy(trained, data.x_test, data.y_test, b), gn=gn))
    out["var_ratio"] = min(r["var"] for r in rows[2]) / max(r["var"] for r in rows[32])
    out["recovered"] = max((r["rec"] - r["ev"]) / (r["gn"] - r["ev"]) for r in rows[2])
    out["gap_after"] = min(r["gn"] - r["rec"] for r in rows[2])
    out["modes32"] = max(abs(r["tm"] - r["ev"]) for r in rows[32])
    out["modes2"] = min(r["ev"] - r["tm"] for r in rows[2])
    return out


def stale_statistics_margins(data, seeds):
    """The values section (g)'s verdicts compare: short CNN runs at batch 32, before/after update_bn."""
    runs = batch_size_sweep(data, arch="cnn", norms=("bn",), batch_sizes=(32,), seeds=seeds, steps=150,
                            lr=1e-2, channels=8, keep_models=True)
    shifted_train, shifted_test = data.x_train * 0.5 + 0.3, data.x_test * 0.5 + 0.3
    before, after, shifted_gain = [], [], []
    for trained in runs.models[("bn", 32)]:
        recal, adapted = copy.deepcopy(trained), copy.deepcopy(trained)
        update_bn(_loader(data.x_train), recal)
        update_bn(_loader(shifted_train), adapted)
        before.append(accuracy(trained, data.x_test, data.y_test))
        after.append(accuracy(recal, data.x_test, data.y_test))
        shifted_gain.append(accuracy(adapted, shifted_test, data.y_test) - accuracy(trained, shifted_test, data.y_test))
    gains = [a - b for a, b in zip(after, before)]
    return {"mean_gain": sum(gains) / len(gains), "min_gain": min(gains),
            "spread_ratio": (max(after) - min(after)) / (max(before) - min(before)),
            "shifted_gain": min(shifted_gain)}


def noise_margins(sweep, data, seeds):
    """The values of (c)'s noise verdicts: CNNs trained as at the top of the lesson, the sweep's batch-32 MLPs."""
    cnns = []
    for s in seeds:
        torch.manual_seed(s)
        cnns.append(small_cnn("bn", channels=8))
    fit_parallel(cnns, data.x_train, data.y_train, batch_size=32, steps=200, lr=1e-2, seeds=list(seeds))
    g = torch.Generator().manual_seed(0)
    ratios, cnn_at_2, mlp_at_4 = [], [], []
    for cnn, mlp in zip(cnns, sweep.models[("bn", 32)]):
        for net, bn_type, out in ((cnn.eval(), torch.nn.BatchNorm2d, cnn_at_2), (mlp, torch.nn.BatchNorm1d, mlp_at_4)):
            for z in layer_outputs(net, data.x_train, bn_type, inputs=True):
                per_image = z.mean(dim=(2, 3)) if z.dim() == 4 else z
                pop_std = z.transpose(0, 1).flatten(1).std(dim=1)
                spread = {}
                for b in (2, 4, 32):
                    idx = torch.stack([torch.randperm(len(z), generator=g)[:b] for _ in range(300)])
                    spread[b] = float((per_image[idx].mean(dim=1).std(dim=0) / pop_std).mean())
                ratios.append(spread[2] / spread[32])
                out.append(spread[2] if bn_type is torch.nn.BatchNorm2d else spread[4])
    return {"min_ratio": min(ratios), "max_ratio": max(ratios),
            "cnn2_over_mlp4": max(cnn_at_2) / min(mlp_at_4)}


def test_bn_breaks_down_at_batch_2_and_gn_does_not(sweep):
    """(c): at batch 2 GN beats BN on every seed; BN falls from batch 4 to 2, GN does not; level from 4 up."""
    verdicts = small_batch_verdicts(sweep)
    assert all(verdicts.values()), (verdicts, small_batch_margins(sweep))


def test_batch_2_mechanism_verdicts(sweep, data):
    """(c): +-1 outputs in training only; noisier running variances; update_bn does not close the gap."""
    m = mechanism_margins(sweep, data)
    assert m["pm1_train"] > 0.9 and m["pm1_eval"] < 0.05, m
    assert m["var_ratio"] > 1.5, m
    assert m["recovered"] < 0.5 and m["gap_after"] > 0.05, m
    assert m["modes32"] < 0.08 and m["modes2"] > 0.1, m


def test_batch_mean_noise_verdicts(sweep, data):
    """(c): the batch mean's spread falls like 1/sqrt(b); the CNN at batch 2 is steadier than the MLP at 4."""
    m = noise_margins(sweep, data, SEEDS)
    assert 3 < m["min_ratio"] and m["max_ratio"] < 5.5, m
    assert m["cnn2_over_mlp4"] < 0.8, m


def test_update_bn_repairs_stale_statistics_of_short_cnn_runs(data):
    """(g): after 150 steps at batch 32, update_bn lifts clean accuracy and shrinks the spread over seeds."""
    m = stale_statistics_margins(data, SEEDS)
    assert m["mean_gain"] > 0.05 and m["min_gain"] > -0.01, m
    assert m["spread_ratio"] < 0.5, m
    assert m["shifted_gain"] > 0.2, m


def _with_accuracy(sweep, **changes):
    """A copy of ``sweep`` where ``bn_2=32`` gives BN at batch 2 the accuracies BN had at batch 32."""
    acc = copy.deepcopy(sweep.accuracy)
    for key, source in changes.items():
        norm, batch = key.split("_")
        acc[norm][int(batch)] = list(acc[norm][source])
    return dataclasses.replace(sweep, accuracy=acc, models={})


def test_the_verdicts_can_fail(sweep):
    """Known-wrong, on the real sweep: if BN at batch 2 had scored like BN at batch 32, the (c) rule says False."""
    verdicts = small_batch_verdicts(_with_accuracy(sweep, bn_2=32))
    assert not verdicts["gn_beats_bn_at_2"] and not verdicts["bn_falls_gn_holds"], verdicts


def _toy_sweep(bn, gn):
    """A sweep over batch sizes 2, 4, 8 with three seeds, from per-batch-size accuracies."""
    acc = {"bn": {b: list(v) for b, v in zip((2, 4, 8), bn)}, "gn": {b: list(v) for b, v in zip((2, 4, 8), gn)}}
    return SweepResult(("bn", "gn"), (2, 4, 8), (0, 1, 2), {2: 8, 4: 4, 8: 2}, acc)


@pytest.mark.parametrize("bn, gn, false", [
    ([(0.5,) * 3, (0.8,) * 3, (0.85,) * 3], [(0.8,) * 3, (0.82,) * 3, (0.85,) * 3], set()),
    ([(0.5, 0.5, 0.79), (0.8,) * 3, (0.85,) * 3], [(0.8,) * 3, (0.82,) * 3, (0.85,) * 3], {"gn_beats_bn_at_2"}),
    ([(0.5,) * 3, (0.8,) * 3, (0.85,) * 3], [(0.7,) * 3, (0.82,) * 3, (0.85,) * 3], {"bn_falls_gn_holds"}),
    ([(0.5,) * 3, (0.6,) * 3, (0.85,) * 3], [(0.8,) * 3, (0.82,) * 3, (0.85,) * 3], {"bn_falls_gn_holds", "level_from_4"}),
    ([(0.5,) * 3, (0.8,) * 3, (0.8,) * 3], [(0.8,) * 3, (0.82,) * 3, (0.85,) * 3], {"level_from_4"}),
], ids=["all-hold", "one-seed-close", "gn-falls-too", "bn-low-at-4", "bn-behind-at-8"])
def test_each_small_batch_rule_says_false_when_its_claim_is(bn, gn, false):
    """Each (c) verdict is False exactly on accuracies where its claim does not hold."""
    verdicts = small_batch_verdicts(_toy_sweep(bn, gn))
    assert {k for k, v in verdicts.items() if not v} == false, (verdicts, small_batch_margins(_toy_sweep(bn, gn)))


def test_small_batch_rules_name_what_a_sweep_lacks():
    """A sweep without GroupNorm or without batch 4 is a ValueError, not a KeyError."""
    sweep = _toy_sweep([(0.5,) * 3] * 3, [(0.8,) * 3] * 3)
    with pytest.raises(ValueError, match="missing \\['gn'\\]"):
        small_batch_verdicts(dataclasses.replace(sweep, norms=("bn",)))
    with pytest.raises(ValueError, match="missing \\[4\\]"):
        small_batch_verdicts(dataclasses.replace(sweep, batch_sizes=(2, 8)))
