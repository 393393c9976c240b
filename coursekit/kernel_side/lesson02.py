"""Kernel side of lesson 02's tasks (``channel_stats``, ``batch_norm_train``): see :mod:`coursekit.kernel_side`."""

from __future__ import annotations

from coursekit.kernel_side.describe import tuple_outputs
from coursekit.kernel_side.outputs import writes

__all__ = ["run_channel_stats", "run_batch_norm_train"]


@writes("mean", "var", "x_after", meta=("returned",))
def run_channel_stats(channel_stats, case, tensors, arrays, recording):
    x = tensors["x"]
    with recording:
        out = channel_stats(x)
    return tuple_outputs(out, ("mean", "var"), {"x_after": x})


@writes("y", "x_grad", "gamma_grad", "beta_grad", "x_after", "gamma_after", "beta_after")
def run_batch_norm_train(batch_norm_train, case, tensors, arrays, recording):
    x, gamma, beta = tensors["x"], tensors["gamma"], tensors["beta"]
    args = (x, gamma, beta) if case["eps"] is None else (x, gamma, beta, case["eps"])
    keep = {"x_after": x, "gamma_after": gamma, "beta_after": beta}
    if case["grad"]:
        for t in (x, gamma, beta):
            t.requires_grad_(True)
    with recording:
        y = batch_norm_train(*args)
    if not case["grad"] or not isinstance(y, type(x)) or not y.requires_grad or y.shape != x.shape:
        return {"y": y, **keep}, {}
    with recording:
        y.backward(tensors["dy"])
    return {"y": y, "x_grad": x.grad, "gamma_grad": gamma.grad, "beta_grad": beta.grad, **keep}, {}
