"""The small models of lessons 06 and 07, built the same way in the learner's kernel and by the judges.

Kernel side (see :mod:`coursekit.kernel_side`); ``coursekit.tasks._models`` imports it for the
trusted side. A case carries a model's state as arrays named ``STATE_PREFIX + <state_dict key>``.
"""

from __future__ import annotations

__all__ = ["STATE_PREFIX", "ARCHITECTURES", "build_model", "load_model"]

STATE_PREFIX = "sd_"


def _conv(dropout):
    from torch import nn
    layers = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
              nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
              nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6)]
    return nn.Sequential(*layers, *([nn.Dropout(0.5)] if dropout else []), nn.Linear(6, 3))


def _mixed():
    from torch import nn
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(), nn.Flatten(2),
                         nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4)), nn.Flatten(), nn.Linear(4 * 27, 2))


def _mlp():
    from torch import nn
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


def _conv2d_nested():
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _conv1d_bn_after_relu():
    from torch import nn
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm1d(4),
        nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4),
        nn.Sequential(nn.Sequential(nn.Conv1d(4, 2, 3, dilation=2, padding=2, bias=False), nn.BatchNorm1d(2))),
        nn.Flatten(), nn.Linear(2 * 6, 2))


# architecture name (a case's "model") -> builder
ARCHITECTURES = {
    "conv": lambda: _conv(dropout=False),
    "conv_dropout": lambda: _conv(dropout=True),
    "mixed": _mixed,
    "mlp": _mlp,
    "conv2d_nested": _conv2d_nested,
    "conv1d_bn_after_relu": _conv1d_bn_after_relu,
}


def build_model(architecture, dtype):
    """A fresh model of ``architecture`` (a key of ``ARCHITECTURES``) in ``dtype`` ("float32", ...)."""
    import torch
    if architecture not in ARCHITECTURES:
        raise ValueError(f"expected a model architecture of {sorted(ARCHITECTURES)} (got {architecture!r})")
    return ARCHITECTURES[architecture]().to(getattr(torch, dtype))


def load_model(architecture, dtype, tensors):
    """The model with the state a case carries (``STATE_PREFIX`` tensors)."""
    model = build_model(architecture, dtype)
    model.load_state_dict({k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)})
    return model
