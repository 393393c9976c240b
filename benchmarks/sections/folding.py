"""b. ``coursekit.reference.fold_model`` on a conv-BN-ReLU CNN (3 blocks, 64 channels, 32x32, batch 32,
``torch.inference_mode``) vs the unfused model and vs ``torch.fx.experimental.optimization.fuse``;
targets: folded >= 1.15x faster than unfused, and within 5 % of PyTorch's fused model."""
from __future__ import annotations

from benchmarks.common import NotAvailable, interleaved, iqr, median, ratios, yes

KEY, NAME = "b", "folding"
TITLE = "b. Folding BN into the convs (`fold_model`)"
FOLD_SPEEDUP_TARGET = 1.15
FOLD_VS_FX_TOLERANCE = 0.05


def _cnn():
    from torch import nn

    layers, c_in = [], 3
    for _ in range(3):
        layers += [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()]
        c_in = 64
    return nn.Sequential(*layers)


def run(quick: bool) -> dict:
    import torch
    from torch import nn

    try:
        from coursekit.reference import fold_model
    except ImportError as exc:
        raise NotAvailable(f"coursekit.reference.fold_model: {exc}") from exc
    from torch.fx.experimental.optimization import fuse as fx_fuse

    torch.manual_seed(0)
    model = _cnn()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters, so folding matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    folded = fold_model(model)
    fused = fx_fuse(model)
    x = torch.randn(32, 3, 32, 32)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_inputs = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: bn_inputs.append(args[0])) for m in bns]
    with torch.inference_mode():
        ref = model(x)
        for h in hooks:
            h.remove()
        err_folded = (folded(x) - ref).abs().max().item()
        err_fx = (fused(x) - ref).abs().max().item()

        def bn_only():  # what folding can save at most: the BN passes alone, on their real inputs
            for m, inp in zip(bns, bn_inputs):
                m(inp)

        fns = {"unfused": lambda: model(x), "folded": lambda: folded(x), "torch_fx_fused": lambda: fused(x),
               "bn_layers_only": bn_only}
        repeats, number = (15, 1) if quick else (41, 2)
        interleaved(fns, 1, 1)  # warm-up
        t = interleaved(fns, repeats, number)
    speedup = ratios(t["unfused"], t["folded"])
    vs_fx = ratios(t["folded"], t["torch_fx_fused"])
    fx_speedup = ratios(t["unfused"], t["torch_fx_fused"])
    med_speedup, med_vs_fx = median(speedup), median(vs_fx)
    n_bn_left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    return {
        "model": "3 x (Conv2d 3x3 -> BatchNorm2d -> ReLU), 64 channels, input (32, 3, 32, 32), eval, inference_mode",
        "repeats": repeats,
        "calls_per_repeat": number,
        "unfused_ms": round(median(t["unfused"]) * 1e3, 2),
        "folded_ms": round(median(t["folded"]) * 1e3, 2),
        "torch_fx_fused_ms": round(median(t["torch_fx_fused"]) * 1e3, 2),
        "speedup_folded_vs_unfused": round(med_speedup, 3),
        "speedup_fx_fused_vs_unfused": round(median(fx_speedup), 3),
        "speedup_iqr": iqr(speedup),
        # Under bursty load the median of per-repeat ratios and the ratio of median times can
        # disagree; both are shown so a reader can see how noisy the run was.
        "speedup_ratio_of_medians": round(median(t["unfused"]) / median(t["folded"]), 3),
        # The least-disturbed call of each (timeit's advice on a busy machine); secondary to the medians.
        "speedup_ratio_of_minima": round(min(t["unfused"]) / min(t["folded"]), 3),
        "folded_over_fx_ratio_of_minima": round(min(t["folded"]) / min(t["torch_fx_fused"]), 3),
        "time_folded_over_fx_fused": round(med_vs_fx, 3),
        "batchnorm_layers_left_after_fold": n_bn_left,
        "bn_layers_only_ms": round(median(t["bn_layers_only"]) * 1e3, 2),
        # The speed-up if folding saved exactly the BN layers' stand-alone time. Not a bound: inside
        # the model a BN pass also costs a fresh output allocation and memory traffic.
        "speedup_from_bn_share": round(
            median(ratios(t["unfused"], [u - b for u, b in zip(t["unfused"], t["bn_layers_only"])])), 3),
        "max_abs_diff_folded": err_folded,
        "max_abs_diff_fx_fused": err_fx,
        "target_speedup": FOLD_SPEEDUP_TARGET,
        "target_speedup_met": med_speedup >= FOLD_SPEEDUP_TARGET,
        "target_within_5pct_of_fx_met": med_vs_fx <= 1 + FOLD_VS_FX_TOLERANCE,
    }


def render(sec: dict) -> list[str]:
    return [
        sec["model"], "",
        "| model | median time (ms) | speed-up vs unfused | max abs diff vs unfused |",
        "|---|---|---|---|",
        f"| unfused | {sec['unfused_ms']} | 1.00 | 0 |",
        f"| `fold_model` | {sec['folded_ms']} | {sec['speedup_folded_vs_unfused']} | {sec['max_abs_diff_folded']:.2e} |",
        f"| `torch.fx` `fuse` | {sec['torch_fx_fused_ms']} | {sec['speedup_fx_fused_vs_unfused']} | "
        f"{sec['max_abs_diff_fx_fused']:.2e} |",
        "",
        f"- Target folded ≥ {sec['target_speedup']}× faster than unfused: {yes(sec['target_speedup_met'])} "
        f"(median of per-repeat ratios {sec['speedup_folded_vs_unfused']}×, IQR {sec['speedup_iqr'][0]}–"
        f"{sec['speedup_iqr'][1]}; ratio of median times {sec.get('speedup_ratio_of_medians', '–')}×; "
        f"ratio of fastest calls {sec.get('speedup_ratio_of_minima', '–')}×).",
        f"- Target folded within 5 % of PyTorch's fused model: {yes(sec['target_within_5pct_of_fx_met'])} "
        f"(folded / fx time, median of per-repeat ratios = {sec['time_folded_over_fx_fused']}; "
        f"fastest calls {sec.get('folded_over_fx_ratio_of_minima', '–')}).",
        f"- For scale: the three BN layers alone, on their real inputs, take {sec.get('bn_layers_only_ms', '–')} ms; "
        f"saving exactly that would be a {sec.get('speedup_from_bn_share', '–')}× speed-up. The convolutions dominate, "
        "so the gain from folding is modest on this CPU and sits close to the measurement noise.",
        f"- BatchNorm layers left after folding: {sec['batchnorm_layers_left_after_fold']}. "
        f"{sec['repeats']} interleaved repeats of {sec['calls_per_repeat']} calls.",
    ]
