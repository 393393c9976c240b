"""Counter-settings of lesson 01 (notebooks/01_why_normalize.ipynb): for every checked verdict, a
setting in which its claim is false, run with the checked cell's own source (tests/counter_support.py).

Most counters re-run the experiment the other way (the other network, raw data, more data, another
learning rate); where that would cost a whole sweep, measured results of the notebook's other
networks are put in the claimed network's place, and ``why`` says so.
"""
from counter_support import Counter

_DIAG_REDEFINE = """
def late_deep(name, key):
    return median(diag[name][key][late][:, 1:])
"""

COUNTERS = [
    # the architecture printout is an exact-value check, not a verdict, but its repr prints "bias=True" etc.
    Counter("0afbe91e", setup="""
def seed_net(batch_norm, seed):
    layers = []
    for i in range(8):
        layers += [nn.Linear(1 if i == 0 else 10, 10, bias=False),
                   nn.BatchNorm1d(10, momentum=0.5, affine=False, bias=False, track_running_stats=False), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(10, 1, bias=False))
""", why="a network without biases, BN affine parameters and running statistics: every printed setting reads False"),
    Counter("6404bdb7", setup="init = {False: init[True], True: init[False]}",
            why="the BN network's snapshots in the plain network's place and vice versa: the plain spread does "
                "not shrink 10x, the BN spread does not stay",
            lines=("no BN: spread", "with BN: spread")),
    Counter("6404bdb7", setup="""
def _gamma5(s):
    net = seed_net(True, s)
    for m in net:
        if isinstance(m, nn.BatchNorm1d):
            nn.init.constant_(m.weight, 5.0)
    return tanh_snapshots(net, data[s].x_train)
init = {False: init[False], True: {s: _gamma5(s) for s in SEEDS}}
""", why="BN networks whose scale gamma is 5 instead of 1: tanh inputs of std 5 saturate", lines=("under 5%",)),
    Counter("6404bdb7", setup="""
def _plain64(s, bias):
    return layer_outputs(seed_net(False, s, bias_init=bias).double().train(), data[s].x_train.double(), nn.Tanh,
                         inputs=True)
bias_effect = max(float((a - b).abs().max()) for s in SEEDS for a, b in zip(_plain64(s, -0.2), _plain64(s, 0.0)))
""", why="the plain network (no BN to cancel it): the bias changes every tanh input", lines=("identical for bias",)),
    Counter("7ec3fc04", setup="lr_final = {False: lr_final[False], True: lr_final[False]}",
            why="the plain network's measured results (same sweep) in the BN network's place"),
    Counter("raw-verdict", setup="raw_final = train_grid(False, data, SEEDS, lr=0.03, epochs=EPOCHS)[1][0] / baseline",
            why="the plain network trained on standardized instead of raw data: it learns"),
    Counter("2d6e44da", setup="at = {**at, False: dict(zip(LRS, train_grid(False, raw, SEEDS, lr=LRS, epochs=EPOCHS)[1]"
                              " / raw_base))}",
            why="the plain network swept over the learning rates on raw data: it learns at no rate",
            lines=("no BN learns at lr 0.003",)),
    Counter("2d6e44da", setup="at = {**at, True: at[False]}",
            why="the plain network's measured results (same sweep) in the BN network's place: it fails at lr 0.1",
            lines=("with BN learns at every lr",)),
    Counter("2d6e44da", setup="kaiming_final = lr_final[True]",
            why="the BN network's measured results in the Kaiming network's place: no better than BN, no worse",
            lines=("Kaiming init",)),
    Counter("6c81c382", setup="init_median = {False: init_median[True], True: init_median[False]}",
            why="the two networks' measured weight-scale sweeps swapped: the plain network's is the sensitive one"),
    Counter("d7e5f9c7", setup="grad_norms = {False: grad_norms[True], True: grad_norms[False]}",
            why="the two networks' measured gradient norms swapped: BN's do not vanish, the plain ones do"),
    Counter("c37f3a4d", setup='reg = {**reg, "no BN": train_grid(False, small, REG_SEEDS, '
                              '**{**REG, "epochs": 3, "eval_every": 3})[0]}',
            why="the plain network stopped after 3 epochs: it does not yet fit the noise (train MSE above the floor)",
            lines=("no BN overfits",)),
    Counter("c37f3a4d", setup='reg = {**reg, "with BN": reg["no BN"]}',
            why="the plain network in BN's place: its training error is not above its own",
            lines=("median train MSE above",)),
    Counter("c37f3a4d", setup="""
_big_raw = {s: quadratic_data(n=992, noise=20.0, test_fraction=480 / 992, seed=s) for s in REG_SEEDS}   # 512 train
_big_floor = torch.tensor([20.0**2 / float(_big_raw[s].y_train.var()) for s in REG_SEEDS])
_more_data = train_grid(False, {s: standardize(_big_raw[s]) for s in REG_SEEDS}, REG_SEEDS,
                        **{**REG, "epochs": 40, "eval_every": 40, "batch_size": 64})[0]
reg = {**reg, "with BN": _more_data}
def vs_floor(run):
    floor = _big_floor if run is _more_data else small_floor
    return run.train_loss / floor, run.test_loss_recalibrated[:, -1] / floor
""", why="the plain network trained on 16x more points in BN's place: a change that really removes most of the "
         "excess test error over the floor", lines=("median excess test error",)),
    Counter("b76a2d1a", setup='ics = {**ics, "noisy BN": ics["no BN"]}',
            why="the plain network's run in the noisy-BN network's place: no injected shift, and it fails at lr 0.1",
            lines=("noisy BN shifts", "noisy BN still learns")),
    Counter("b76a2d1a", setup='ics = {**ics, "no BN": ics["with BN"], "with BN": ics["no BN"]}\n'
                              "lr_runs = {False: lr_runs[True], True: lr_runs[False]}",
            why="the two networks' measured paths swapped (the shift and smoothness comparisons reversed)",
            lines=("per-step shift", "gradient changes less", "gradient changes more")),
    Counter("b76a2d1a", setup="bn_weight_norm = {0.1: median(torch.stack([w[rows_of(0.003)].flatten(1).norm(dim=1) "
                              "for w in lr_runs[True].model.weight[1:-1]])), 0.01: bn_weight_norm[0.01]}",
            why="the BN network trained at lr 0.003 in place of lr 0.1: a smaller rate does not grow the weights more",
            lines=("hidden weights end",)),
    Counter("diag-verdict", setup="diag = {name: {k: v[rows_of(0.01)].median(dim=0).values "
                                  "for k, v in monitors[key].stacked().items()} for name, key in DIAG.items()}" + _DIAG_REDEFINE,
            why="the diagnostics of the lr-0.01 runs, where the plain networks do not saturate",
            lines=("most tanh outputs saturated",)),
    Counter("diag-verdict", setup='diag = {**diag, "with BN": diag["no BN (std 0.1)"]}' + _DIAG_REDEFINE,
            why="the plain network's measured diagnostics in BN's place: saturated, gradients collapsed",
            lines=("with BN, under 25", "gradient-to-data ratio")),
    Counter("fig1-verdict", setup="fig1_stats = {False: fig1_stats[True], True: fig1_stats[False]}",
            why="the two digit networks' measured records swapped: the plain network in BN's place is the slow, drifting one"),
    Counter("eff97cf6", setup="after = gaussian",
            why="a real N(0, 1) sample in place of BN's output: not exactly standardized, and not skewed like the input"),
]
