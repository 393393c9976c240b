"""Kernel side of lesson 04's tasks (``batch_norm_backward``, ``BatchNormFunction``): see :mod:`coursekit.kernel_side`."""

from __future__ import annotations

from coursekit.kernel_side.describe import tuple_outputs
from coursekit.kernel_side.outputs import writes

__all__ = ["run_batch_norm_backward", "run_batch_norm_function"]


@writes("dx", "dgamma", "dbeta", "dy_after", "x_hat_after", "inv_std_after", "gamma_after", meta=("returned",))
def run_batch_norm_backward(batch_norm_backward, case, tensors, arrays, recording):
    dy, x_hat, inv_std, gamma = tensors["dy"], tensors["x_hat"], tensors["inv_std"], tensors["gamma"]
    with recording:
        out = batch_norm_backward(dy, (x_hat, inv_std, gamma))
    inputs_after = {"dy_after": dy, "x_hat_after": x_hat, "inv_std_after": inv_std, "gamma_after": gamma}
    return tuple_outputs(out, ("dx", "dgamma", "dbeta"), inputs_after)


def _directional_gradients(function, x, gamma, beta, eps, tensors, recording):
    """The gradient along each direction ``dy<i>`` of the case (a gradcheck-style case)."""
    import torch
    with recording:
        y = function.apply(x, gamma, beta, eps)
    if not isinstance(y, torch.Tensor) or not y.requires_grad or y.shape != x.shape:
        return {"y": y}, {}
    out = {"y": y}
    for i in range(len([k for k in tensors if k.startswith("dy")])):
        with recording:
            dx, dg, db = torch.autograd.grad(y, (x, gamma, beta), tensors[f"dy{i}"], retain_graph=True, allow_unused=True)
        out.update({f"dx{i}": dx, f"dgamma{i}": dg, f"dbeta{i}": db})
    return out, {}


@writes("y", "dx*", "dgamma*", "dbeta*", "x_after", "gamma_after", "beta_after", meta=("not_function",))
def run_batch_norm_function(batch_norm_function, case, tensors, arrays, recording):
    import torch
    function = batch_norm_function
    if not (isinstance(function, type) and issubclass(function, torch.autograd.Function)):
        return {}, {"not_function": True}
    x, gamma, beta = (tensors[k].requires_grad_(True) for k in ("x", "gamma", "beta"))
    eps = case["eps"]
    if case["gradcheck"]:
        return _directional_gradients(function, x, gamma, beta, eps, tensors, recording)
    keep = {"x_after": x, "gamma_after": gamma, "beta_after": beta}
    with recording:
        y = function.apply(x, gamma, beta, eps)
    if not isinstance(y, torch.Tensor) or not y.requires_grad or y.shape != x.shape:
        return {"y": y, **keep}, {}
    with recording:
        y.backward(tensors["dy"])
    return {"y": y, "dx": x.grad, "dgamma": gamma.grad, "dbeta": beta.grad, **keep}, {}
