"""a. ``coursekit.reference.batch_norm`` vs ``torch.nn.functional.batch_norm``, training mode,
(32, 64, 32, 32) float32: time ratio, median of interleaved repeats."""
from __future__ import annotations

from benchmarks.common import NotAvailable, interleaved, iqr, median, ratios

KEY, NAME = "a", "batch_norm"
TITLE = "a. Reference `batch_norm` vs `F.batch_norm`"


def run(quick: bool) -> dict:
    import torch
    import torch.nn.functional as F

    try:
        from coursekit.reference import batch_norm as ref_batch_norm
    except ImportError as exc:
        raise NotAvailable(f"coursekit.reference.batch_norm: {exc}") from exc
    torch.manual_seed(0)
    shape = (32, 64, 32, 32)
    x = torch.randn(shape)
    w, b = torch.rand(64) + 0.5, torch.randn(64)
    stats = {k: (torch.zeros(64), torch.ones(64)) for k in ("ref", "torch")}

    def ref():
        rm, rv = stats["ref"]
        return ref_batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

    def tor():
        rm, rv = stats["torch"]
        return F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

    with torch.no_grad():
        max_err = (ref() - tor()).abs().max().item()
        stats_err = max((stats["ref"][i] - stats["torch"][i]).abs().max().item() for i in range(2))
        repeats, number = (15, 3) if quick else (31, 5)
        interleaved({"ref": ref, "torch": tor}, 2, 1)  # warm-up (allocator, first-call costs)
        t = interleaved({"ref": ref, "torch": tor}, repeats, number)
    r = ratios(t["ref"], t["torch"])
    return {
        "input": f"{tuple(shape)} float32, training=True",
        "repeats": repeats,
        "calls_per_repeat": number,
        "reference_ms": round(median(t["ref"]) * 1e3, 3),
        "torch_ms": round(median(t["torch"]) * 1e3, 3),
        "ratio_reference_over_torch": round(median(r), 3),
        "ratio_iqr": iqr(r),
        "max_abs_diff_output": max_err,
        "max_abs_diff_running_stats": stats_err,
    }


def render(sec: dict) -> list[str]:
    return [
        "| input | reference (ms) | torch (ms) | ratio ref/torch (median) | IQR | max abs diff |",
        "|---|---|---|---|---|---|",
        f"| {sec['input']} | {sec['reference_ms']} | {sec['torch_ms']} | {sec['ratio_reference_over_torch']} | "
        f"{sec['ratio_iqr'][0]}–{sec['ratio_iqr'][1]} | {sec['max_abs_diff_output']:.2e} |",
        "", f"{sec['repeats']} interleaved repeats of {sec['calls_per_repeat']} calls each.",
    ]
