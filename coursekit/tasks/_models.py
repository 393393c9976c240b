"""The small models of lessons 06 and 07 on the trusted side: random states for the cases, loading for the judges.

Part of :mod:`coursekit.tasks`. The architectures are :mod:`coursekit.kernel_side.models`, the
same code the kernel builds them with; a case carries a model's state as ``STATE_PREFIX + key``
arrays, drawn by :func:`random_state`.
"""

from __future__ import annotations

import numpy as np

from coursekit.kernel_side.models import STATE_PREFIX, build_model

from . import _data as data

__all__ = ["STATE_PREFIX", "model", "random_state", "load", "bn_prefixes"]


def model(architecture: str, dtype: str = "float64"):
    """A fresh model of ``architecture`` (see ``coursekit.kernel_side.models.ARCHITECTURES``)."""
    return build_model(architecture, dtype)


def random_state(rng: np.random.Generator, architecture: str, dtype: str) -> dict:
    """``STATE_PREFIX + key`` arrays for a model: trained-looking BN statistics and affine parameters."""
    arrays = {}
    fresh = model(architecture)
    bn = tuple(bn_prefixes(fresh))
    for k, v in fresh.state_dict().items():
        if k.endswith("num_batches_tracked"):
            arrays[STATE_PREFIX + k] = np.array(int(rng.integers(1, 20)), dtype=np.int64)
        elif k.endswith("running_var") or (k.startswith(bn) and k.endswith("weight")):
            arrays[STATE_PREFIX + k] = rng.uniform(0.5, 2, tuple(v.shape)).astype(dtype)
        elif k.endswith("running_mean") or k.startswith(bn):
            arrays[STATE_PREFIX + k] = rng.uniform(-1, 1, tuple(v.shape)).astype(dtype)
        else:
            bound = 1 / np.sqrt(max(1, v[0].numel() if v.dim() > 1 else 1))
            arrays[STATE_PREFIX + k] = rng.uniform(-bound, bound, tuple(v.shape)).astype(dtype)
    return arrays


def load(architecture: str, arrays: dict, dtype: str = "float64"):
    """The model with the case's state, in float64 on the trusted side."""
    import torch

    m = model(architecture, dtype)
    m.load_state_dict(
        {
            k[len(STATE_PREFIX):]: torch.from_numpy(v.copy()) if v.dtype == np.int64 else data.t(v).to(getattr(torch, dtype))
            for k, v in arrays.items()
            if k.startswith(STATE_PREFIX)
        }
    )
    return m


def bn_prefixes(m) -> list[str]:
    """The ``state_dict`` key prefixes of the BN layers of ``m`` ("1.", "3.1.", ...)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [n + "." for n, mod in m.named_modules() if isinstance(mod, _BatchNorm)]
