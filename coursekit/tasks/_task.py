"""What a graded task is, and how one case's plain result is judged: the framework of ``coursekit.tasks``.

A :class:`Task` is defined once (in ``coursekit/tasks/lessonNN.py``) and both sides run from it:

* ``cases(rng)`` draws the inputs: the check cell draws VISIBLE cases from a generator seeded by the
  task's name, the grader HIDDEN ones from its secret seed (same generator, different rng). A case
  is a :class:`Case`: a description ("shape (2, 3, 4) float32"), JSON parameters and numpy arrays;
* ``body`` is the kernel-side code: a ``run_<task>`` function of ``coursekit.kernel_side`` that
  calls the learner's code on the inputs and returns ``(outputs, meta)``, plain data, declaring the
  keys it writes (``outputs``). ``Task.body`` is its self-contained source, defining
  ``_coursekit_body(case, tensors, arrays, recording)``; it runs in the learner's kernel for the grader
  (``coursekit.grader.in_kernel``) and in-process for the check;
* ``judge(params, inputs, outputs, meta)`` is the trusted comparison against PyTorch, with the
  tolerance and the recognisers of known wrong answers; it returns a :class:`Mismatch` or None;
* ``forbidden_ops`` (dispatcher operators refused at run time), ``forbid_autograd``, ``watch``
  (Python implementations refused at run time, ``coursekit.grader.guard``) and ``forbidden_names``
  (the static scan). The lists are derived from the installed torch (``_library``).

:func:`judge_case` turns one raw case result into a :class:`Verdict`; the check and the grader both
call it, so they cannot disagree on a case.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from coursekit.kernel_side.outputs import Outputs
from coursekit.verdicts import HAND_CALL_HINT, hand_call

from ._kernel_source import kernel_body
from ._library import AUTOGRAD_OPS, describe_op, norm_implementations, norm_ops, reference_implementations

__all__ = [
    "Case",
    "Mismatch",
    "Verdict",
    "Task",
    "Exercise",
    "judge_case",
    "compare",
    "value_type_of",
    "NORM_OPS",
    "NORM_NAMES",
    "AUTOGRAD_NAMES",
    "FUSION_NAMES",
    "FUSION_WATCH",
    "REFERENCE_NORM_WATCH",
    "UPDATE_BN_WATCH",
    "STATS_WATCH",
    "AUTOGRAD_OPS",
    "exception_hint",
    "tolerance",
]


@dataclass
class Case:
    """One case: ``desc`` shown to the learner, ``params`` (JSON) and ``arrays`` (numpy) given to the body."""

    desc: str
    params: dict
    arrays: dict


@dataclass
class Mismatch:
    """What was wrong in one case: the message, and the hint when a known mistake explains it."""

    message: str
    hint: str | None = None
    max_error: float | None = None
    where: tuple | None = None


@dataclass
class Verdict:
    """One case judged: ``status`` pass, fail (wrong result) or error (the learner's code raised)."""

    status: str
    message: str = ""
    hint: str | None = None
    max_error: float | None = None
    where: tuple | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass(frozen=True)
class Task:
    """One graded task, defined once (see the module docstring).

    Args:
        lesson: "02" .. "07".
        name: the name the learner defines (function or class).
        signature: what the learner writes, e.g. ``"channel_stats(x) -> (mean, var)"``.
        cases: ``rng -> list[Case]``.
        body: a ``run_<task>`` function of ``coursekit.kernel_side`` (declared with ``writes``); stored as
            the self-contained source defining ``_coursekit_body(case, tensors, arrays, recording)`` that the kernel receives.
        judge: ``(params, inputs, outputs, meta) -> Mismatch | None`` (trusted).
        kind: ``"function"`` or ``"class"`` (what the check accepts). Default: ``"function"``.
        points: points for passing every hidden case. Default: 1.
        forbidden_ops: operator (``"aten::name"``) -> what the learner called; refused at run time. Default: none.
        forbid_autograd: whether running autograd inside the learner's calls is forbidden. Default: False.
        forbid_nested_autograd: whether a backward started inside the backward the body runs (an
            ``autograd.Function`` differentiating its own forward) is forbidden. Default: False.
        watch: ``"module:qualname"`` Python implementations refused at run time. Default: none.
        forbidden_names: identifiers the static scan rejects. Default: none.
        none_hint: hint for a ``NoneType`` error in the learner's code. Default: None.

    ``outputs`` (set from ``body``) declares the output and meta keys the body writes: the only keys
    the judge may read.
    """

    lesson: str
    name: str
    signature: str = ""
    cases: Callable[[np.random.Generator], list] | None = field(default=None, compare=False, repr=False)
    body: str | Callable = field(default="", compare=False, repr=False)
    judge: Callable | None = field(default=None, compare=False, repr=False)
    kind: str = "function"
    points: int = 1
    forbidden_ops: dict = field(default_factory=dict, compare=False, repr=False)
    forbid_autograd: bool = False
    forbid_nested_autograd: bool = False
    watch: tuple = ()
    forbidden_names: frozenset = frozenset()
    none_hint: str | None = None
    outputs: Outputs | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if callable(self.body):  # frozen: the kernel's source and the declaration are derived once, here
            object.__setattr__(self, "outputs", self.body.outputs)
            object.__setattr__(self, "body", kernel_body(self.body, self.name))

    @property
    def forbids_autodiff(self) -> bool:
        """Autograd of any kind is forbidden (in the learner's calls, or nested in the backward the body runs):
        where autograd nodes called by hand are refused too (``coursekit.grader.handcalls``)."""
        return self.forbid_autograd or self.forbid_nested_autograd

    @property
    def id(self) -> str:
        return f"{self.lesson}.{self.name}"

    @property
    def answer_cell(self) -> str:
        return f"answer-{self.name}"

    @property
    def check_cell(self) -> str:
        return f"check-{self.name}"


@dataclass(frozen=True)
class Exercise:
    """One exercise notebook: ``solutions/<stem>.ipynb`` built into ``exercises/<stem>.ipynb``."""

    lesson: str
    stem: str
    tasks: tuple[Task, ...]

    @property
    def filename(self) -> str:
        return f"{self.stem}.ipynb"


# ------------------------------------------------------------------------------ forbidden operations
class _DerivedOps(Mapping):
    """Operator -> description, derived from the installed torch the first time it is read: importing
    the task definitions does not import torch, so ``coursekit grade`` starts the learner's kernel
    while torch loads in the grader."""

    def __init__(self, derive: Callable[[], dict]):
        self._derive = derive

    @functools.cached_property
    def _ops(self) -> dict:
        return self._derive()

    def __getitem__(self, key):
        return self._ops[key]

    def __iter__(self):
        return iter(self._ops)

    def __len__(self):
        return len(self._ops)

    def __or__(self, other):
        return _DerivedOps(lambda: {**self._ops, **other})

    def __repr__(self):
        return repr(self._ops)


class _DerivedTargets(Sequence):
    """``"module:qualname"`` targets derived the first time they are read (as ``_DerivedOps``)."""

    def __init__(self, derive: Callable[[], tuple]):
        self._derive = derive

    @functools.cached_property
    def _targets(self) -> tuple:
        return tuple(self._derive())

    def __getitem__(self, index):
        return self._targets[index]

    def __len__(self):
        return len(self._targets)

    def __add__(self, other):
        return _DerivedTargets(lambda: self._targets + tuple(other))

    def __radd__(self, other):
        return _DerivedTargets(lambda: tuple(other) + self._targets)

    def __eq__(self, other):
        return isinstance(other, (tuple, Sequence)) and tuple(self) == tuple(other)

    __hash__ = None

    def __repr__(self):
        return repr(self._targets)


# Derived from the installed torch (``_library``): every normalization operator in every namespace
NORM_OPS = _DerivedOps(lambda: {op: describe_op(op) for op in norm_ops()})
# Identifiers of PyTorch's normalization functions, modules and kernels (the static scan).
NORM_NAMES = frozenset(
    {
        "batch_norm",
        "instance_norm",
        "layer_norm",
        "group_norm",
        "rms_norm",
        "native_batch_norm",
        "native_layer_norm",
        "native_group_norm",
        "_native_batch_norm_legit",
        "_native_batch_norm_legit_no_training",
        "batch_norm_stats",
        "batch_norm_elemt",
        "batch_norm_gather_stats",
        "batch_norm_update_stats",
        "_batch_norm_impl_index",
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "LazyBatchNorm1d",
        "LazyBatchNorm2d",
        "LazyBatchNorm3d",
        "SyncBatchNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
        "LayerNorm",
        "GroupNorm",
        "RMSNorm",
        "_BatchNorm",
        "_NormBase",
    }
)
AUTOGRAD_NAMES = frozenset({"grad", "vjp", "jvp", "jacobian", "hessian", "vmap", "backward", "functional"})
FUSION_NAMES = frozenset(
    {
        "fusion",
        "fuse",
        "fuse_conv_bn_eval",
        "fuse_conv_bn_weights",
        "fuse_linear_bn_eval",
        "fuse_linear_bn_weights",
        "fuse_modules",
        "optimization",
    }
)
# Python implementations refused at run time (``coursekit.grader.guard``): their code is replaced by
# code that raises while the learner's code runs, and their source cannot be read from disk
FUSION_WATCH = tuple(f"torch.nn.utils.fusion:{n}" for n in (
    "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights")) + (
    "torch.fx.experimental.optimization:fuse",) + _DerivedTargets(
    lambda: [t for t in reference_implementations() if ".fold:" in t])
# a library normalization used as the whole answer is not the learner's own work either (the exercises say so)
STATS_WATCH = ("scipy.stats:zscore", "scipy.stats:zmap", "sklearn.preprocessing:scale") + tuple(
    f"sklearn.preprocessing:StandardScaler.{m}" for m in ("fit", "partial_fit", "transform", "fit_transform"))
REFERENCE_NORM_WATCH = _DerivedTargets(
    lambda: norm_implementations() + tuple(t for t in reference_implementations() if ".fold:" not in t) + STATS_WATCH)
UPDATE_BN_WATCH = ("torch.optim.swa_utils:update_bn",)


# ------------------------------------------------------------------------------ judging one case
def exception_hint(type_name: str, message: str, none_hint: str | None = None) -> str | None:
    """What a learner's exception most likely means (None when nothing useful can be said)."""
    if type_name == "NotImplementedError":
        return "replace `raise NotImplementedError()` with your code"
    if "NoneType" in message:
        return none_hint or "something is None that your code uses as a tensor (an optional argument or attribute?)"
    if "incorrect number of gradients" in message:
        return "backward must return one gradient per input of forward (None for eps)"
    if "has no len()" in message and "int" in message:
        return "normalized_shape may be an int (the last dim) or a tuple/list of trailing sizes"
    if "Expected more than 1 value per channel" in message:
        return "a batch of one cannot be normalized with batch statistics: switch to eval mode first"
    if "not enough values to unpack" in message or "too many values to unpack" in message:
        return (
            "your code assumes a fixed number of dimensions: handle (N, C) and (N, C, *) input alike (reduce over [0, 2, 3, ...])"
        )
    if "Fusion only for eval" in message:
        return "the conv and bn are handed over in eval mode; this assert fired on a module in training mode"
    return None


_REFUSED = "coursekit refused "  # coursekit.grader.guard.REFUSED (not imported: the grader side stays torch-light)


def refused_verdict(result: dict) -> Verdict | None:
    """The verdict when the guard refused something inside the learner's code (its exception, or what
    the check noticed after the fact); None otherwise. A refusal only ever fails a case, so a learner
    has nothing to gain by forging one."""
    err = result.get("error") or {}
    texts = [str(err.get("message", ""))] + [str(r) for r in result.get("refused", ())]
    for text in texts:
        at = text.find(_REFUSED)
        if at < 0:
            continue
        kind, _, what = text[at + len(_REFUSED):].partition(": ")
        what = what.strip() or "?"
        if kind == "process":
            return Verdict("fail", f"started another process ({what})",
                           hint="compute in this process: no fork, subprocess or multiprocessing inside your code")
        if kind == "thread":  # lesson 04's graded backward runs in one thread (coursekit.grader.guard)
            return Verdict("fail", f"started a thread ({what.split(' (')[0]})",
                           hint="compute in the thread your function is called in: lesson 04's graded backward "
                                "may not start threads")
        if kind == "autograd":  # an autograd node called by hand (coursekit.grader.handcalls)
            return Verdict("fail", hand_call(what), hint=HAND_CALL_HINT)
        if kind == "access":
            return Verdict("fail", f"reached for the library's code ({what})",
                           hint="write the computation yourself: copying the library's code at run time is calling it")
        return Verdict("fail", f"called {what}", hint=f"do not call {what.split(' (')[0]}: the task is to re-implement it")
    return None


def judge_case(task: Task, case: Case, result: dict) -> Verdict:
    """Judge one raw case result (from ``in_kernel._coursekit_run_case``): the same for check and grader."""
    refused = refused_verdict(result)
    if refused is not None:
        return refused
    called = [task.forbidden_ops[op] for op in result.get("ops", ()) if op in task.forbidden_ops]
    if called:
        what = sorted(set(called))[0]
        return Verdict("fail", f"called {what}", hint=f"do not call {what.split(' (')[0]}: the task is to re-implement it")
    if (task.forbid_autograd and result.get("autograd")) or (task.forbid_nested_autograd and result.get("autograd_nested")):
        return Verdict(
            "fail",
            "ran autograd (torch.autograd.grad or .backward()) inside your code",
            hint="derive and compute the gradients yourself: no autograd inside this function",
        )
    if not result.get("ok"):
        err = result.get("error") or {}
        type_name, message = err.get("type", "Exception"), err.get("message", "")
        text = f"raised {type_name}" + (f": {message}" if message.strip() else "")
        if err.get("line"):
            where = "your answer cell" if err.get("cell") else "your code"
            text += f" (line {err['line']} of {where}: {err.get('code') or '?'})"
        return Verdict("error", text, hint=exception_hint(type_name, message, task.none_hint))
    try:
        mismatch = task.judge(case.params, case.arrays, result.get("arrays", {}), result.get("meta", {}))
    except KeyError as exc:  # an output the body records is missing: the answer returned too little
        mismatch = Mismatch(f"missing output {exc}")
    except Exception as exc:  # plain data the judge cannot use (odd shapes, types): the answer's failure
        mismatch = Mismatch(f"unusable output ({type(exc).__name__}: {str(exc)[:200]})")
    if mismatch is None:
        return Verdict("pass")
    return Verdict("fail", mismatch.message, mismatch.hint, mismatch.max_error, mismatch.where)


# ------------------------------------------------------------------------------ comparisons
def tolerance(dtype) -> float:
    """Relative tolerance (to 1 + |expected|): 1e-10 for float64, 1e-5 otherwise."""
    return 1e-10 if str(dtype) == "float64" else 1e-5


def value_type_of(meta: dict, key: str) -> dict:
    """What ``in_kernel`` recorded of output ``key``: ``{"kind": "tensor" | "ndarray" | <type name>, ...}``."""
    return (meta.get("_kinds") or {}).get(key, {"kind": "missing"})


_RECOGNISED = 0.01  # a wrong-answer model must explain the result 100x better than the right answer


def compare(
    label: str,
    got,
    want,
    meta: dict | None = None,
    key: str | None = None,
    *,
    variants=(),
    hint: str | None = None,
    shape_hint: str | None = None,
    value_type: str = "tensor",
    dtype=None,
    tol: float | None = None,
) -> Mismatch | None:
    """None if ``got`` matches ``want``; else a :class:`Mismatch` naming the first problem.

    Checks in order: what the value is (tensor/array), shape (a ``keepdim`` shape is named as
    such), dtype, then values within ``tol`` relative to ``1 + |want|``. A hint from ``variants``
    (``(hint, value or callable)``: models of known wrong answers) is given only when that model
    explains the result far better than the right answer does (error < 1% of the error against
    the right answer); a float64 result off by float32 rounding is named as such. ``value_type``
    ("tensor" or "ndarray") is what the learner must return, checked when ``meta`` and ``key`` are given.
    """
    want = np.asarray(want)
    if meta is not None and key is not None:
        recorded = value_type_of(meta, key)["kind"]
        if recorded != value_type:
            what = {"tensor": "a torch.Tensor", "ndarray": "a numpy array"}[value_type]
            got_kind = {"tensor": "a torch.Tensor", "ndarray": "a numpy array"}.get(recorded, f"a {recorded}")
            fix = ("return torch tensors built from the input with torch operations" if value_type == "tensor"
                   else "return numpy arrays")
            return Mismatch(f"{label} is {got_kind}, expected {what}", hint=fix)
    if got is None:
        return Mismatch(f"{label} is missing")
    got = np.asarray(got)
    if got.shape != want.shape:
        if got.size == want.size and np.squeeze(got).shape == want.shape and got.ndim > want.ndim:
            return Mismatch(
                f"{label} has shape {tuple(got.shape)}, expected {tuple(want.shape)}",
                hint=f"the values may be right but the reduced dims were kept (keepdim=True): return shape {tuple(want.shape)}",
            )
        return Mismatch(f"{label} has shape {tuple(got.shape)}, expected {tuple(want.shape)}", hint=shape_hint)
    want_dtype = want.dtype if dtype is None or dtype is False else np.dtype(str(dtype).replace("torch.", ""))
    if dtype is not False and got.dtype != want_dtype and want_dtype.kind == "f":
        return Mismatch(
            f"{label} has dtype {got.dtype}, expected {want_dtype} (the input's)",
            hint="keep the input's dtype: do not create tensors with a fixed dtype",
        )
    if got.dtype.kind not in "fiub":
        return Mismatch(f"{label} holds {got.dtype} values, expected numbers")
    if dtype is False:
        want_dtype = got.dtype if got.dtype.kind == "f" else want.dtype
    tol = tolerance(want_dtype) if tol is None else tol
    g, w = got.astype(np.float64), want.astype(np.float64)
    diff = np.abs(g - w)
    bad = ~(diff <= tol * (1 + np.abs(w)))  # NaN counts as bad
    if not bad.any():
        return None
    score = np.where(np.isnan(diff), np.inf, diff)
    idx = int(np.argmax(score))
    where = tuple(int(i) for i in np.unravel_index(idx, diff.shape)) if diff.ndim else ()
    has_nan = bool(np.isnan(diff).any())
    err = math.inf if has_nan else float(score.reshape(-1)[idx])
    return Mismatch(
        f"{label}: max error {'nan' if has_nan else f'{err:.3g}'} at {where}",
        hint=recognise(g, w, err, variants, want_dtype) or hint,
        max_error=float("nan") if has_nan else err,
        where=where,
    )


def recognise(got: np.ndarray, want: np.ndarray, err: float, variants, want_dtype) -> str | None:
    """The hint of the wrong-answer model that explains ``got`` clearly better than ``want`` does."""
    best, best_err = None, math.inf
    for hint, value in variants:
        try:
            v = value() if callable(value) else value
        except Exception:  # a model that does not apply to this case
            continue
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float64)
        if v.shape != got.shape:
            continue
        e = float(np.max(np.abs(got - v))) if got.size else 0.0
        if e < best_err:
            best, best_err = hint, e
    if best is not None and best_err <= _RECOGNISED * err:
        return best
    if want_dtype == np.float64 and math.isfinite(err) and err <= 1e-5 * (1 + float(np.max(np.abs(want), initial=0))):
        return "the result has float32 precision: compute in the input's dtype (no .float(), no tensors created as float32)"
    return None


def first_mismatch(*mismatches):
    """The first of ``mismatches`` that is not None (they may be callables, evaluated lazily)."""
    for m in mismatches:
        m = m() if callable(m) else m
        if m is not None:
            return m
    return None


def unchanged(inputs: dict, outputs: dict, pairs, hint: str | None = None) -> Mismatch | None:
    """A Mismatch if an input came back modified (``pairs``: (output key, input key))."""
    for out_key, in_key in pairs:
        if out_key in outputs and in_key in inputs and not np.array_equal(outputs[out_key], inputs[in_key], equal_nan=True):
            return Mismatch(
                f"the input {in_key} was modified",
                hint=hint or f"do not modify {in_key} in place: compute new tensors (every input must come back unchanged)",
            )
    return None

