"""Kernel side of lesson 06's tasks (``freeze_batchnorm``, ``predict``, ``recalibrate``): see :mod:`coursekit.kernel_side`.

The verdicts rest on data the judges recompute, never on flags this side reports: each body
returns outputs and the model's full state after what it ran.
"""

from __future__ import annotations

from coursekit.kernel_side.models import STATE_PREFIX, load_model
from coursekit.kernel_side.outputs import writes

__all__ = ["run_freeze_batchnorm", "run_predict", "run_recalibrate"]

# the two training steps after freezing: model.train(), or model.eval() then model.train()
FREEZE_TOGGLES = (("train",), ("eval", "train"))


@writes("y*", "state*", meta=("returned",))
def run_freeze_batchnorm(freeze_batchnorm, case, tensors, arrays, recording):
    import torch
    model = load_model(case["model"], case["dtype"], tensors)
    model.train(case["mode"] == "train")
    with recording:
        frozen = freeze_batchnorm(model)
    if not isinstance(frozen, torch.nn.Module):
        return {}, {"returned": type(frozen).__name__}
    out = {}
    for i, toggles in enumerate(FREEZE_TOGGLES):
        with recording:
            for toggle in toggles:
                getattr(frozen, toggle)()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(case["seeds"][i])
                y = frozen(tensors[f"x{i}"])
            opt = torch.optim.SGD(frozen.parameters(), lr=case["lr"])
            opt.zero_grad()
            loss = (y * tensors[f"dy{i}"]).sum()
            if loss.requires_grad:  # else nothing trains: the state shows it (the judge compares it)
                loss.backward()
            opt.step()
        out[f"y{i}"] = y
        out.update({f"state{i}_" + k: v.clone() for k, v in frozen.state_dict().items()})
    return out, {}


@writes("y", "y_again", "state_*", "y_next", "next_*")
def run_predict(predict, case, tensors, arrays, recording):
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    model = load_model(case["model"], case["dtype"], tensors)
    model.train(case["mode"] != "eval")
    if case["mode"] == "mixed":
        next(m for m in model.modules() if isinstance(m, _BatchNorm)).eval()
    x, out = tensors["x"], {}
    if case["raises"]:
        try:
            with recording:
                predict(model, x)
        except Exception:  # expected: the shape error propagates (or is handled); the flags must be back
            pass
    else:
        with recording:
            out["y"] = predict(model, x)
        out.update({"state_" + k: v.clone() for k, v in model.state_dict().items()})
        with recording:
            out["y_again"] = predict(model, x)
    # the model's mode after predict, as data: one forward in whatever mode it is now
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(case["seed"])
        out["y_next"] = model(tensors["x_next"])
    out.update({"next_" + k: v.clone() for k, v in model.state_dict().items()})
    return out, {}


def _loader(case, tensors):
    """The case's batches as a list, or as a DataLoader over them."""
    import torch
    batches = [tensors[f"batch{i}"] for i in range(case["n"])]
    if case["loader"] != "DataLoader":
        return batches
    dataset = torch.utils.data.TensorDataset(torch.cat(batches), torch.zeros(sum(len(b) for b in batches)))
    return torch.utils.data.DataLoader(dataset, batch_size=len(batches[0]), shuffle=False)


@writes(STATE_PREFIX + "*", "y_next", "next_*", "mom_*", meta=("returned", "n_bn"))
def run_recalibrate(recalibrate, case, tensors, arrays, recording):
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm
    model = load_model("conv", case["dtype"], tensors)
    model.train(case["mode"] == "train")
    loader = _loader(case, tensors)
    with recording:
        recalibrated = recalibrate(model, loader)
    if not isinstance(recalibrated, torch.nn.Module):
        return {}, {"returned": type(recalibrated).__name__}
    meta = {"n_bn": len([m for m in recalibrated.modules() if isinstance(m, _BatchNorm)])}
    out = {STATE_PREFIX + k: v.clone() for k, v in recalibrated.state_dict().items()}
    # the mode and momenta left behind, as data: a forward in the CURRENT mode, then one with every
    # flag set by nn.Module.train itself (a training-mode forward's update shows each momentum)
    with torch.no_grad():
        out["y_next"] = recalibrated(tensors["x_next"])
        out.update({"next_" + k: v.clone() for k, v in recalibrated.state_dict().items()})
        torch.nn.Module.train(recalibrated, True)
        recalibrated(tensors["x_next"])
        out.update({"mom_" + k: v.clone() for k, v in recalibrated.state_dict().items()})
    return out, meta
