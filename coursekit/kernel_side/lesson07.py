"""Kernel side of lesson 07's tasks (``fold_conv_bn``, ``fold_linear_bn``, ``fold_model``): see :mod:`coursekit.kernel_side`.

The layer and its BN are handed over in EVAL mode, as the task says. What was folded comes back
as data (the folded state), never as a claim: the judge folds its own copy.
"""

from __future__ import annotations

from coursekit.kernel_side.models import STATE_PREFIX, load_model
from coursekit.kernel_side.outputs import writes

__all__ = ["LAYER_PREFIX", "BN_PREFIX", "AFTER", "FOLDED_PREFIX", "build_layer_and_bn", "run_fold_layer", "run_fold_model"]

# a case carries the layer's state as LAYER_PREFIX + key and the BN's as BN_PREFIX + key; the body
# returns each state after the learner's call under the same prefix + AFTER
LAYER_PREFIX, BN_PREFIX, AFTER = "layer_", "bn_", "after_"
FOLDED_PREFIX = "folded_"


def build_layer_and_bn(case, tensors):
    """The case's conv/linear layer and its BN, in eval mode, with the states the case carries."""
    import torch
    from torch import nn
    dtype = getattr(torch, case["dtype"])
    layer = getattr(nn, case["layer"])(**case["spec"]).to(dtype)
    bn = getattr(nn, case["bn"])(case["channels"], eps=case["eps"]).to(dtype)
    layer.load_state_dict({k[len(LAYER_PREFIX):]: v for k, v in tensors.items() if k.startswith(LAYER_PREFIX)})
    bn.load_state_dict({k[len(BN_PREFIX):]: v for k, v in tensors.items() if k.startswith(BN_PREFIX)})
    return layer.eval(), bn.eval()


@writes(LAYER_PREFIX + AFTER + "*", BN_PREFIX + AFTER + "*", "y",
        meta=("same", "type", "layer_repr_after", "layer_training", "bn_training", "attrs", "has_bias", "weight_dtype",
              "bias_dtype"))
def run_fold_layer(fold, case, tensors, arrays, recording):
    import torch
    layer, bn = build_layer_and_bn(case, tensors)
    with recording:
        folded = fold(layer, bn)
    out = {LAYER_PREFIX + AFTER + k: v.clone() for k, v in layer.state_dict().items()}
    out.update({BN_PREFIX + AFTER + k: v.clone() for k, v in bn.state_dict().items()})
    meta = {"same": folded is layer, "type": type(folded).__name__, "layer_repr_after": repr(layer),
            "layer_training": layer.training, "bn_training": bn.training}
    if not isinstance(folded, type(layer)):
        return out, meta
    meta["attrs"] = {a: repr(getattr(folded, a, None)) for a in case["attrs"]}
    meta["has_bias"] = folded.bias is not None
    meta["weight_dtype"] = str(folded.weight.dtype).replace("torch.", "")
    if meta["has_bias"] and meta["weight_dtype"] == case["dtype"] and folded.bias.dtype == folded.weight.dtype:
        with torch.no_grad():
            out["y"] = folded(tensors["x"])
    else:
        meta["bias_dtype"] = str(folded.bias.dtype).replace("torch.", "") if folded.bias is not None else None
    return out, meta


@writes(STATE_PREFIX + "*", "y", FOLDED_PREFIX + "*",
        meta=("same", "type", "n_bn", "original_changed", "training", "bn_left", "identities"))
def run_fold_model(fold_model, case, tensors, arrays, recording):
    import torch
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm
    model = load_model(case["model"], case["dtype"], tensors)
    model.train(case["mode"] == "train")
    flags, text = [m.training for m in model.modules()], repr(model)
    n_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())
    with recording:
        folded = fold_model(model)
    meta = {"same": folded is model, "type": type(folded).__name__, "n_bn": n_bn,
            "original_changed": [m.training for m in model.modules()] != flags or repr(model) != text}
    out = {STATE_PREFIX + k: v for k, v in model.state_dict().items()}
    if not isinstance(folded, nn.Module):
        return out, meta
    meta.update(training=any(m.training for m in folded.modules()),
                bn_left=sum(isinstance(m, _BatchNorm) for m in folded.modules()),
                identities=sum(isinstance(m, nn.Identity) for m in folded.modules()))
    with torch.no_grad():
        with recording:
            out["y"] = folded(tensors["x"])
    # the fold itself as data (the grader folds its own copy): counts of BN/Identity layers are only claims
    out.update({FOLDED_PREFIX + k: v.clone() for k, v in folded.state_dict().items()})
    return out, meta
