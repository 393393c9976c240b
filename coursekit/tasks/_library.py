"""What counts as "the library" in a graded task: derived from the installed PyTorch, never typed.

Part of :mod:`coursekit.tasks`. Every task asks the learner to re-implement something PyTorch
(or the course's own reference) already has; these functions list what a run-time shortcut would
reach, so the enforcement layers (``coursekit.grader.guard``) can refuse it:

* :func:`norm_ops`: every operator registered with PyTorch's dispatcher, in every namespace
  (``aten``, ``quantized``, ``onednn``, ...), whose name says it computes a batch, layer, group,
  instance or RMS normalization or its backward (``native_batch_norm``, ``_batch_norm_with_update``,
  ``native_layer_norm_backward``, ``quantized::batch_norm2d``, ...). A torch that adds such an
  operator adds it here; ``tests/test_library.py`` traces every ``F.*``/``nn.*`` normalization entry
  point and fails if one reaches an operator this list misses;
* :func:`norm_implementations`: PyTorch's own Python implementations of those operators
  (``torch._decomp``, ``torch._refs``, ``torch._prims``), found by the name of their code, and the
  course's reference (``coursekit.reference``): ``"module:qualname"`` targets;
* :func:`describe_op`: what a learner called, in their words ("F.batch_norm (...)").

Example::

    >>> "aten::_batch_norm_with_update" in norm_ops()
    True
"""

from __future__ import annotations

import functools
import re
import sys
import types

__all__ = [
    "NORM_PATTERN",
    "AUTOGRAD_OPS",
    "LIBRARY_PACKAGES",
    "REFERENCE_MODULES",
    "norm_ops",
    "describe_op",
    "norm_implementations",
    "reference_implementations",
    "functions_of",
]

# an operator or function computing a normalization: the five families, their backwards and fused
# variants (``_fused_rms_norm``, ``batch_norm_elemt``, ``_native_batch_norm_legit_functional``, ...)
NORM_PATTERN = re.compile(r"(batch_norm|layer_norm|group_norm|instance_norm|rms_norm)")
# torch's Python helper that computes (x - mean) * rsqrt(var + eps) for the refs of layer/group norm
_NORM_HELPERS = frozenset({"_normalize"})
# forward-mode AD: dual tensors are made by this operator (torch.autograd.forward_ad, torch.func.jvp)
AUTOGRAD_OPS = {"aten::_make_dual": "forward-mode AD (torch.autograd.forward_ad, torch.func.jvp)"}
LIBRARY_PACKAGES = ("torch._decomp", "torch._refs", "torch._prims")
REFERENCE_MODULES = ("coursekit.reference.functional", "coursekit.reference.backward", "coursekit.reference.fold",
                     "coursekit.reference.modules")

_BN = "F.batch_norm (the library's batch-norm kernel, also behind torch.batch_norm, nn.BatchNorm*, F.instance_norm)"
_FAMILY = {
    "batch_norm": _BN,
    "instance_norm": "F.instance_norm (the library's instance-norm kernel, also behind nn.InstanceNorm*)",
    "layer_norm": "F.layer_norm (the library's layer-norm kernel, also behind nn.LayerNorm)",
    "group_norm": "F.group_norm (the library's group-norm kernel, also behind nn.GroupNorm)",
    "rms_norm": "F.rms_norm (the library's RMS-norm kernel)",
}


@functools.cache
def norm_ops() -> tuple[str, ...]:
    """Every dispatcher operator (``"namespace::name"``, overloads folded) computing a normalization."""
    import torch

    names = {n.split(".")[0] for n in torch._C._dispatch_get_all_op_names()}
    return tuple(sorted(n for n in names if NORM_PATTERN.search(n.split("::")[-1])))


def describe_op(name: str) -> str:
    """What the learner called, e.g. ``"aten::native_layer_norm"`` -> ``"F.layer_norm (...)"``."""
    if name in AUTOGRAD_OPS:
        return AUTOGRAD_OPS[name]
    base = name.split("::")[-1]
    family = NORM_PATTERN.search(base)
    if family is None:
        return f"the library's {base}"
    what = family.group(1)
    if "backward" in base:
        return f"the library's {what.replace('_', '-')} backward kernel ({name})"
    return _FAMILY[what]


def functions_of(module: types.ModuleType):
    """``(qualname, function)`` for the Python functions a module defines, methods of its classes included."""
    for attr, value in vars(module).items():
        if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            yield attr, value
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for meth, fn in vars(value).items():
                fn = getattr(fn, "__func__", fn)
                if isinstance(fn, types.FunctionType):
                    yield f"{attr}.{meth}", fn


def _unwrapped(fn):
    """``fn`` and every function it wraps (``__wrapped__`` chains of torch's decorators)."""
    seen = []
    while fn is not None and not any(fn is s for s in seen):
        seen.append(fn)
        fn = getattr(fn, "__wrapped__", None)
    return [f for f in seen if isinstance(f, types.FunctionType)]


@functools.cache
def norm_implementations() -> tuple[str, ...]:
    """PyTorch's Python implementations of a normalization (``"module:attr"``), in the loaded ``torch``.

    A function of ``torch._decomp``, ``torch._refs`` or ``torch._prims`` (any submodule ``import
    torch`` loaded) counts when the name of its *code* names a normalization: wrappers shared by
    every decomposition (``out_wrapper``'s ``_fn``) are left alone, the function they wrap is listed.
    """
    import torch  # noqa: F401  (loads the packages)

    found: dict[int, str] = {}
    for modname, module in sorted(sys.modules.items()):
        if module is None or not modname.startswith(LIBRARY_PACKAGES):
            continue
        for value in list(vars(module).values()):
            if not callable(value):
                continue
            for fn in _unwrapped(value):
                name = fn.__code__.co_name
                inside = fn.__code__.co_filename.replace("\\", "/")
                if (NORM_PATTERN.search(name) or name in _NORM_HELPERS) and any(
                        f"/{p.replace('.', '/')}/" in inside for p in LIBRARY_PACKAGES):
                    found.setdefault(id(fn.__code__), f"{fn.__module__}:{fn.__qualname__}")
    return tuple(sorted(set(found.values())))


@functools.cache
def reference_implementations() -> tuple[str, ...]:
    """Every function and method of the course's reference (``coursekit.reference``), as targets."""
    import importlib

    out = []
    for modname in REFERENCE_MODULES:
        module = importlib.import_module(modname)
        out += [f"{modname}:{qual}" for qual, _ in functions_of(module)]
    return tuple(out)
