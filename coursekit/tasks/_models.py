"""Small models of lessons 06 and 07's tasks, built identically in the kernel (body) and in the judge.

Part of :mod:`coursekit.tasks`. ``MODELS`` is source shared by both sides; the weights and
statistics come from the case's arrays (``sd_<state_dict key>``), drawn by :func:`random_state`.
"""

from __future__ import annotations

import numpy as np

from . import _data as D

__all__ = ["MODELS", "model", "random_state", "load", "bn_prefixes"]

MODELS = r"""
def _coursekit_model(kind, dtype):
    import torch
    from torch import nn
    if kind in ("conv", "conv_dropout"):
        layers = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                  nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
                  nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6)]
        if kind == "conv_dropout":
            layers.append(nn.Dropout(0.5))
        m = nn.Sequential(*layers, nn.Linear(6, 3))
    elif kind == "mixed":
        m = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(), nn.Flatten(2),
                          nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4)), nn.Flatten(), nn.Linear(4 * 27, 2))
    elif kind == "mlp":
        m = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    elif kind == "fold_a":
        m = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU()),
            nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    elif kind == "fold_b":
        m = nn.Sequential(
            nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm1d(4),
            nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4),
            nn.Sequential(nn.Sequential(nn.Conv1d(4, 2, 3, dilation=2, padding=2, bias=False), nn.BatchNorm1d(2))),
            nn.Flatten(), nn.Linear(2 * 6, 2))
    else:
        raise ValueError(kind)
    return m.to(getattr(torch, dtype))

def _coursekit_load(kind, dtype, T):
    import torch
    m = _coursekit_model(kind, dtype)
    m.load_state_dict({k[3:]: v for k, v in T.items() if k.startswith("sd_")})
    return m
"""


def model(kind: str, dtype: str = "float64"):
    return D.exec_source(MODELS, "_coursekit_model")(kind, dtype)


def random_state(rng: np.random.Generator, kind: str, dtype: str) -> dict:
    """``sd_<key>`` arrays for a model: trained-looking BN statistics and affine parameters."""
    arrays = {}
    bn = tuple(bn_prefixes(model(kind)))
    for k, v in model(kind).state_dict().items():
        if k.endswith("num_batches_tracked"):
            arrays["sd_" + k] = np.array(int(rng.integers(1, 20)), dtype=np.int64)
        elif k.endswith("running_var") or (k.startswith(bn) and k.endswith("weight")):
            arrays["sd_" + k] = rng.uniform(0.5, 2, tuple(v.shape)).astype(dtype)
        elif k.endswith("running_mean") or k.startswith(bn):
            arrays["sd_" + k] = rng.uniform(-1, 1, tuple(v.shape)).astype(dtype)
        else:
            bound = 1 / np.sqrt(max(1, v[0].numel() if v.dim() > 1 else 1))
            arrays["sd_" + k] = rng.uniform(-bound, bound, tuple(v.shape)).astype(dtype)
    return arrays


def load(kind: str, arrays: dict, dtype: str = "float64"):
    """The model with the case's state, in float64 on the trusted side."""
    import torch

    m = model(kind, dtype)
    m.load_state_dict(
        {
            k[3:]: torch.from_numpy(v.copy()) if v.dtype == np.int64 else D.t(v).to(getattr(torch, dtype))
            for k, v in arrays.items()
            if k.startswith("sd_")
        }
    )
    return m


def bn_prefixes(m) -> list[str]:
    from torch.nn.modules.batchnorm import _BatchNorm

    return [n + "." for n, mod in m.named_modules() if isinstance(mod, _BatchNorm)]
