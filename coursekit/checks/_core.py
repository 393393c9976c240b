"""The machinery every check shares: the result, forbidden calls, the runner, comparisons.

Part of :mod:`coursekit.checks` (introduced in lesson 02's exercise notebook). A check is a list of
``(description, case)`` pairs handed to :func:`_run`; a case raises :class:`_Failure` to fail. The
learner's code is only ever called through a :class:`_Runner`, which forbids the library functions
the task re-implements and turns the learner's exceptions into failures; :func:`_compare` checks a
tensor against the expected one and names a recognised wrong answer; :class:`_Unchanged` fails a
case whose inputs were modified.
"""
from __future__ import annotations

import contextlib
import copy
import html
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Besides CheckResult, the package's internal interface: what the lesson modules import.
__all__ = [
    "CheckResult",
    "_F32", "_F64",
    "_Failure", "_ForbiddenCall", "_forbidden_targets", "_forbid", "_exception_hint", "_Runner",
    "_dtname", "_desc", "_tol", "_typename", "_close", "_MATCH_TOL", "_match", "_compare",
    "_snapshot", "_same", "_Unchanged", "_unpack", "_require_callable", "_require_class",
    "_returned_model", "_run",
]

_F32, _F64 = torch.float32, torch.float64


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """The verdict of one check: one line in a terminal, a small block in Jupyter.

    Attributes:
        task: the task name, e.g. ``"batch_norm_train"``.
        passed: every case agreed with PyTorch.
        cases_run: cases run (up to and including the first failing one).
        cases_total: cases the check has.
        failing_case: e.g. ``"case 3 shape (2, 3, 4, 5) float64"``, or None when passed.
        message: what was wrong in that case (max error and where, a wrong shape, an exception).
        max_error: largest absolute difference from the expected value, when values were compared.
        where: index of that largest difference.
        hint: what the mistake most likely is (recognised wrong answers), or None.
    """

    task: str
    passed: bool
    cases_run: int
    cases_total: int
    failing_case: str | None = None
    message: str | None = None
    max_error: float | None = None
    where: tuple[int, ...] | None = None
    hint: str | None = None

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """The one-line verdict."""
        if self.passed:
            return f"✔ {self.task}: {self.cases_run}/{self.cases_total} cases passed"
        line = f"✘ {self.task}: {self.failing_case}: {self.message}"
        if self.hint:
            line += f" — hint: {self.hint}"
        return line

    __str__ = summary

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        esc = html.escape
        if self.passed:
            return ('<div style="border-left:4px solid #2e7d32;padding:2px 8px;margin:2px 0">'
                    f'<span style="color:#2e7d32">✔</span> <code>{esc(self.task)}</code>: '
                    f'{self.cases_run}/{self.cases_total} cases passed</div>')
        hint = (f'<br><b>hint:</b> {esc(self.hint)}' if self.hint else "")
        return ('<div style="border-left:4px solid #c62828;padding:2px 8px;margin:2px 0">'
                f'<span style="color:#c62828">✘</span> <code>{esc(self.task)}</code>: '
                f'{esc(str(self.failing_case))}<br>{esc(str(self.message))}{hint}</div>')


# --------------------------------------------------------------------------------------------
# Machinery: failures, forbidden calls, comparisons
# --------------------------------------------------------------------------------------------
class _Failure(Exception):
    """A case failed; carries what the result shows."""

    def __init__(self, message: str, hint: str | None = None, max_error: float | None = None,
                 where: tuple[int, ...] | None = None) -> None:
        super().__init__(message)
        self.message, self.hint, self.max_error, self.where = message, hint, max_error, where


class _ForbiddenCall(Exception):
    pass


def _forbidden_targets(kind: str) -> list[tuple[Any, str, str]]:
    """(owner, attribute, label) of the library functions a family of tasks re-implements."""
    import coursekit.reference as ref
    import coursekit.reference.functional as ref_f

    if kind == "norm":
        targets = [(F, n, f"F.{n}") for n in ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm")]
        targets += [(torch, n, f"torch.{n}") for n in (
            "batch_norm", "native_batch_norm", "layer_norm", "native_layer_norm", "group_norm",
            "native_group_norm", "instance_norm", "rms_norm", "batch_norm_stats")]
        targets += [(m, n, f"coursekit.reference.{n}") for m in (ref, ref_f) for n in (
            "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm")]
        targets += [(ref, "batch_norm_backward", "coursekit.reference.batch_norm_backward")]
        import coursekit.reference.backward as ref_b
        targets += [(ref_b, "batch_norm_backward", "coursekit.reference.batch_norm_backward")]
        return targets
    if kind == "fold":
        import warnings

        import torch.nn.utils.fusion as fusion

        with warnings.catch_warnings():  # its torch.jit imports warn about deprecations not ours
            warnings.simplefilter("ignore", DeprecationWarning)
            import torch.fx.experimental.optimization as fx_opt

        targets = [(fusion, n, f"torch.nn.utils.fusion.{n}") for n in (
            "fuse_conv_bn_eval", "fuse_conv_bn_weights", "fuse_linear_bn_eval", "fuse_linear_bn_weights")]
        targets += [(fx_opt, "fuse", "torch.fx.experimental.optimization.fuse")]
        try:
            import coursekit.reference.fold as ref_fold
        except ImportError:  # pragma: no cover - written in parallel
            ref_fold = None
        for owner in (ref, ref_fold):
            if owner is not None:
                targets += [(owner, n, f"coursekit.reference.{n}") for n in (
                    "fold_conv_bn", "fold_linear_bn", "fold_conv_bn_weights", "fold_linear_bn_weights", "fold_model")]
        return targets
    if kind == "update_bn":
        import torch.optim.swa_utils as swa

        return [(swa, "update_bn", "torch.optim.swa_utils.update_bn")]
    return []


@contextlib.contextmanager
def _forbid(targets: Sequence[tuple[Any, str, str]]):
    """Replace each target by a sentinel that records the call and raises, for the duration."""
    calls: list[str] = []
    saved = []
    for owner, attr, label in targets:
        if owner is None or not hasattr(owner, attr):
            continue

        def sentinel(*args, _label=label, **kwargs):
            calls.append(_label)
            raise _ForbiddenCall(f"{_label} is not allowed here")

        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, sentinel)
    try:
        yield calls
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def _exception_hint(exc: BaseException) -> str | None:
    text = str(exc)
    if isinstance(exc, NotImplementedError):
        return "replace `raise NotImplementedError()` with your code"
    if "NoneType" in text:
        return "something is None that your code uses as a tensor (an optional argument or attribute?)"
    if "incorrect number of gradients" in text:
        return "backward must return one gradient per input of forward (None for eps)"
    if "has no len()" in text and "int" in text:
        return "normalized_shape may be an int (the last dim) or a tuple/list of trailing sizes"
    if "Expected more than 1 value per channel" in text:
        return "a batch of one cannot be normalized with batch statistics: switch to eval mode first"
    return None


class _Runner:
    """Calls the learner's code with the library shortcuts forbidden and exceptions captured."""

    def __init__(self, targets: Sequence[tuple[Any, str, str]], none_hint: str | None = None) -> None:
        self.targets = targets
        self.none_hint = none_hint  # what "None" most likely is for this task

    def __call__(self, fn: Callable, *args, **kwargs):
        calls: list[str] = []
        error: BaseException | None = None
        out = None
        with _forbid(self.targets) as calls:
            try:
                out = fn(*args, **kwargs)
            except Exception as exc:  # any learner error is feedback, not a crash
                error = exc
        if calls:
            name = calls[0]
            raise _Failure(f"called {name}", hint=f"do not call {name}: the task is to re-implement it")
        if error is not None:
            if isinstance(error, _Failure):
                raise error
            msg = str(error).strip().splitlines()[0] if str(error).strip() else ""
            hint = self.none_hint if self.none_hint and "NoneType" in str(error) else _exception_hint(error)
            raise _Failure(f"raised {type(error).__name__}" + (f": {msg}" if msg else ""), hint=hint)
        return out


def _dtname(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _desc(shape, dtype, **extra) -> str:
    text = f"shape {tuple(shape)} {_dtname(dtype)}"
    for key, value in extra.items():
        text += f", {key}={value}"
    return text


def _tol(dtype) -> float:
    return 1e-10 if dtype == _F64 else 1e-5


def _typename(obj) -> str:
    return type(obj).__name__


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    a, b = a.detach().double(), b.detach().double()
    return bool(((a - b).abs() <= tol * (1 + b.abs())).all())


_MATCH_TOL = 1e-4  # recognising a known wrong answer: its effect is far larger than rounding


def _match(got: torch.Tensor, variants) -> str | None:
    for hint, value in variants:
        try:
            v = value() if callable(value) else value
        except Exception:  # a variant that does not apply to this case
            continue
        if v is not None and _close(got, v, _MATCH_TOL):
            return hint
    return None


def _compare(got, expected: torch.Tensor, name: str, *, variants=(), hint: str | None = None,
             shape_hint: str | None = None, tol: float | None = None, check_dtype: bool = True) -> None:
    """Fail unless ``got`` is a tensor of ``expected``'s shape/dtype and values within tolerance."""
    if not isinstance(got, torch.Tensor):
        raise _Failure(f"{name} is a {_typename(got)}, expected a torch.Tensor",
                       hint="return torch tensors built from the input with torch operations")
    if tuple(got.shape) != tuple(expected.shape):
        raise _Failure(f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}", hint=shape_hint)
    if check_dtype and got.dtype != expected.dtype:
        raise _Failure(f"{name} has dtype {_dtname(got.dtype)}, expected {_dtname(expected.dtype)}",
                       hint="keep the input's dtype: do not create tensors with a fixed dtype")
    tol = tol if tol is not None else _tol(expected.dtype)
    g, e = got.detach().double(), expected.detach().double()
    diff = (g - e).abs()
    bad = ~(diff <= tol * (1 + e.abs()))  # NaN counts as bad
    if not bool(bad.any()):
        return
    nan = torch.isnan(diff)
    score = torch.where(nan, torch.full_like(diff, math.inf), diff)
    idx = int(torch.argmax(score.reshape(-1)))
    where = tuple(int(i) for i in np.unravel_index(idx, tuple(diff.shape))) if diff.dim() else ()
    err = float(score.reshape(-1)[idx])
    err_text = "nan" if bool(nan.any()) else f"{err:.3g}"
    raise _Failure(f"{name}: max error {err_text} at {where}", hint=_match(got, variants) or hint,
                   max_error=float("nan") if bool(nan.any()) else err, where=where)


def _snapshot(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in obj):
        return [t.detach().clone() for t in obj]
    if isinstance(obj, nn.Module):
        return ({k: v.detach().clone() for k, v in obj.state_dict().items()},
                [m.training for m in obj.modules()], repr(obj))
    return copy.deepcopy(obj)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b) or (torch.isnan(a) & torch.isnan(b) | (a == b)).all())
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, tuple) and len(a) == 3 and isinstance(a[0], dict):  # a module snapshot
        sa, ta, ra = a
        sb, tb, rb = b
        return (ra == rb and ta == tb and sa.keys() == sb.keys()
                and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa))
    return a == b


class _Unchanged:
    """``with _Unchanged(x=x, gamma=gamma):`` fails if the learner's code modified an input."""

    def __init__(self, hint: str | None = None, message: str | None = None, **inputs) -> None:
        self.inputs = inputs
        self.hint = hint
        self.message = message

    def __enter__(self):
        self.before = {k: _snapshot(v) for k, v in self.inputs.items()}
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            return False
        for name, value in self.inputs.items():
            if not _same(_snapshot(value), self.before[name]):
                raise _Failure(self.message or f"the input {name} was modified",
                               hint=self.hint or f"do not modify {name} in place: compute new tensors (every input must come back unchanged)")
        return False


def _unpack(out, n: int, what: str) -> tuple:
    if not isinstance(out, (tuple, list)) or len(out) != n:
        got = f"a {_typename(out)}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise _Failure(f"returned {got}, expected a tuple {what}", hint=f"return the tuple {what}")
    return tuple(out)


def _require_callable(obj, what: str) -> None:
    if not callable(obj):
        raise TypeError(f"expected {what} (got {_typename(obj)}: {obj!r:.60})")


def _require_class(obj, base: type, what: str) -> None:
    if not isinstance(obj, type):
        raise TypeError(f"expected {what}, the class itself (got {_typename(obj)}: {obj!r:.60})")


def _returned_model(out, what: str) -> nn.Module:
    if not isinstance(out, nn.Module):
        raise _Failure(f"{what} returned a {_typename(out)}, expected the model (an nn.Module)", hint="return the model")
    return out


def _run(task: str, cases: Sequence[tuple[str, Callable[[], None]]]) -> CheckResult:
    """Run the cases in order under the check's own seed; stop at the first failure."""
    seed = zlib.crc32(task.encode())
    n = len(cases)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        for i, (desc, case) in enumerate(cases, 1):
            torch.manual_seed(seed + i)
            try:
                case()
            except _Failure as f:
                return CheckResult(task, False, i, n, f"case {i} {desc}", f.message, f.max_error, f.where, f.hint)
            except Exception as exc:  # a learner object misbehaving outside a guarded call
                return CheckResult(task, False, i, n, f"case {i} {desc}",
                                   f"raised {type(exc).__name__}: {exc}", hint=_exception_hint(exc))
    return CheckResult(task, True, n, n)
