"""Reference maths of the course, mirroring ``torch.nn.functional`` so either can stand in for the other.

* ``functional``: ``batch_norm``, ``layer_norm``, ``instance_norm``, ``group_norm``, ``rms_norm``;
* ``backward``: ``batch_norm_backward`` (analytic dx, dgamma, dbeta);
* ``modules``: ``BatchNorm``, a module whose state_dict loads into ``nn.BatchNorm1d/2d/3d``;
* ``fold``: ``fold_conv_bn``, ``fold_linear_bn`` (modules, never mutating their inputs), the pure
  weight maths ``fold_conv_bn_weights`` / ``fold_linear_bn_weights``, and ``fold_model``.
"""
from coursekit.reference.backward import batch_norm_backward
from coursekit.reference.fold import (
    fold_conv_bn,
    fold_conv_bn_weights,
    fold_linear_bn,
    fold_linear_bn_weights,
    fold_model,
)
from coursekit.reference.functional import batch_norm, group_norm, instance_norm, layer_norm, rms_norm
from coursekit.reference.modules import BatchNorm

__all__ = [
    "batch_norm", "layer_norm", "instance_norm", "group_norm", "rms_norm",
    "batch_norm_backward", "BatchNorm",
    "fold_conv_bn", "fold_linear_bn", "fold_conv_bn_weights", "fold_linear_bn_weights", "fold_model",
]
