"""Counter-settings for notebooks/00_start_here.ipynb (see tests/counter_support.py)."""
from counter_support import Counter

COUNTERS = [
    Counter("c05", setup="""
import types
from unittest import mock
import coursekit.env as _env
with mock.patch.object(_env, "_REQUIRED", _env._REQUIRED + ("a-distribution-that-is-not-installed",)):
    report = _env.environment_report()
torch = types.SimpleNamespace(__version__="1.13.1+cpu", get_num_threads=lambda: 2)
""", why="a required package missing from the report, and a torch 1.13 running torch's default 2 threads "
         "(substituted: another torch cannot be installed into the kernel)"),
    Counter("c07", setup="""
import types

def _statistics_only(name):
    class Layer(torch.nn.Module):
        def __init__(self, num_features):
            super().__init__()

        def forward(self, x):   # the per-channel means BN computes, not the normalized input
            return x.transpose(0, 1).reshape(x.shape[1], -1).mean(dim=1)
    Layer.__name__ = name      # same name, so the printed lines stay comparable
    return Layer

nn = types.SimpleNamespace(**{name: _statistics_only(name) for name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")})
""", why="layers that return the per-channel statistics (one value per channel) instead of the normalized input"),
]
