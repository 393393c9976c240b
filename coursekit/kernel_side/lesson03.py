"""Kernel side of lesson 03's tasks (``update_running_stats``, ``MyBatchNorm2d``, ``bn_process``).

See :mod:`coursekit.kernel_side`.
"""

from __future__ import annotations

from coursekit.kernel_side.describe import tuple_outputs
from coursekit.kernel_side.outputs import writes

__all__ = ["SAVED_STATE_PREFIX", "run_update_running_stats", "run_my_batch_norm_2d", "run_bn_process"]


# a case carries the nn.BatchNorm2d state the learner's module loads as SAVED_STATE_PREFIX + key
SAVED_STATE_PREFIX = "load_"


@writes("new_mean", "new_var", "rm_after", "rv_after", "x_after", meta=("returned",))
def run_update_running_stats(update_running_stats, case, tensors, arrays, recording):
    rm, rv, x = tensors["running_mean"], tensors["running_var"], tensors["x"]
    with recording:
        out = update_running_stats(rm, rv, x, **case["kwargs"])
    return tuple_outputs(out, ("new_mean", "new_var"), {"rm_after": rm, "rv_after": rv, "x_after": x})


def _load_state(module, loaded, tensors, recording, out):
    """Scenario "state": the learner's module loads a saved ``nn.BatchNorm2d`` state."""
    with recording:
        module.load_state_dict(loaded)
    out.update({"loaded_" + k: v for k, v in module.state_dict().items()})


def _train_three_batches(module, loaded, tensors, recording, out):
    """Scenario "train": three training-mode forwards, the output and the state after each."""
    module.train()
    for i in range(3):
        with recording:
            out[f"y{i}"] = module(tensors[f"x{i}"])
        out.update({f"step{i}_" + k: v.clone() for k, v in module.state_dict().items()})


def _eval_forward(module, loaded, tensors, recording, out):
    """Scenario "eval": one eval-mode forward and the state after it."""
    module.eval()
    with recording:
        out["y0"] = module(tensors["x0"])
    out.update({"after_" + k: v.clone() for k, v in module.state_dict().items()})


def _both_modes_stateless(module, loaded, tensors, recording, out):
    """Scenario "plain" (affine=False, track_running_stats=False): a forward in each mode."""
    for mode in (True, False):
        module.train(mode)
        with recording:
            out["y_train" if mode else "y_eval"] = module(tensors["x0"])


def _gradients(module, loaded, tensors, recording, out):
    """Scenario "grad": a training-mode forward and autograd's backward through it."""
    import torch
    module.train()
    x = tensors["x0"].clone().requires_grad_(True)
    with recording:
        y = module(x)
    out["y0"] = y
    if isinstance(y, torch.Tensor) and y.requires_grad:
        with recording:
            y.backward(tensors["dy"])
        params = dict(module.named_parameters())
        out.update(x_grad=x.grad, weight_grad=params["weight"].grad, bias_grad=params["bias"].grad)


_SCENARIOS = {
    "state": _load_state,
    "train": _train_three_batches,
    "eval": _eval_forward,
    "plain": _both_modes_stateless,
    "grad": _gradients,
}


@writes("init_*", "loaded_*", "y0", "y1", "y2", "step*", "after_*", "y_train", "y_eval", "x_grad", "weight_grad",
        "bias_grad", meta=("not_module", "subclasses", "instance", "keys", "params", "kinds"))
def run_my_batch_norm_2d(my_batch_norm_2d, case, tensors, arrays, recording):
    import torch
    from torch.nn.modules.batchnorm import _NormBase
    cls = my_batch_norm_2d
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        return {}, {"not_module": True}
    if issubclass(cls, _NormBase):
        return {}, {"subclasses": True}
    with recording:
        module = cls(case["C"], **case["kwargs"])
    if not isinstance(module, torch.nn.Module):
        return {}, {"instance": type(module).__name__}
    sd = module.state_dict()
    meta = {"keys": sorted(sd), "params": sorted(n for n, _ in module.named_parameters()),
            "kinds": {k: [str(v.dtype).replace("torch.", ""), list(v.shape)] if isinstance(v, torch.Tensor) else type(v).__name__
                      for k, v in sd.items()}}
    out = {"init_" + k: v.clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    loaded = {k[len(SAVED_STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(SAVED_STATE_PREFIX)}
    scenario = case["scenario"]
    if scenario != "plain" and meta["keys"] != sorted(loaded):
        return out, meta
    if scenario != "state":  # "state" loads the saved state itself, in the module's own dtype
        module = module.to(tensors["x0"].dtype)
    if scenario not in ("state", "plain"):
        with recording:
            module.load_state_dict(loaded)
    _SCENARIOS[scenario](module, loaded, tensors, recording, out)
    return out, meta


@writes("out", "new_mean", "new_var", "feature_after", "mean_after", "var_after", meta=("returned",))
def run_bn_process(bn_process, case, tensors, arrays, recording):
    feature, mean, var = arrays["feature"], arrays["mean"], arrays["var"]
    with recording:
        out = bn_process(feature, mean, var, **case["kwargs"])
    return tuple_outputs(out, ("out", "new_mean", "new_var"), {"feature_after": feature, "mean_after": mean, "var_after": var})
