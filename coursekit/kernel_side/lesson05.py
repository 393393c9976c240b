"""Kernel side of lesson 05's tasks (``layer_norm``, ``instance_norm``, ``group_norm``): see :mod:`coursekit.kernel_side`.

The three share one body: each is called like its ``torch.nn.functional`` namesake.
"""

from __future__ import annotations

from coursekit.kernel_side.outputs import writes

__all__ = ["run_functional_norm"]


@writes("y", "x_after", "weight_after", "bias_after")
def run_functional_norm(norm, case, tensors, arrays, recording):
    x = tensors["x"]
    kwargs = {k: tensors[k] for k in ("weight", "bias") if k in tensors}
    if "eps" in case:
        kwargs["eps"] = case["eps"]
    args = [x]
    if "ns" in case:  # normalized_shape, as an int, a list or a tuple
        args.append(tuple(case["ns"]) if isinstance(case["ns"], list) and case.get("ns_kind") == "tuple" else case["ns"])
    if "num_groups" in case:
        args.append(case["num_groups"])
    with recording:
        y = norm(*args, **kwargs)
    return {"y": y, "x_after": x, **{k + "_after": v for k, v in kwargs.items() if k != "eps"}}, {}
