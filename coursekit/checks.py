"""Instant feedback for the exercise notebooks: one ``check_<task>`` per graded task.

Introduced in lesson 02's exercise notebook; every check cell of ``exercises/`` calls one of these.

A check runs the learner's function (or class) on several randomized cases (shapes from 2D to 5D,
batch size 2, float32 and float64, train/eval, momentum incl. None, groups, dilation, padding
modes, ...) and compares it with PyTorch. It returns a :class:`CheckResult` that prints one line,
and renders a small coloured block in Jupyter::

    ✔ channel_stats: 6/6 cases passed
    ✘ batch_norm_train: case 3 shape (2, 3, 4, 5) float32, eps=0.1: output: max error 0.11 at (1, 2, 0, 3) — hint: ...

How the feedback teaches:

* **Known wrong answers are recognised**: when the output is wrong, the check recomputes the classic
  mistakes (unbiased variance used to normalize, eps outside the square root, statistics over the
  wrong axes, the momentum convention reversed, statistics detached from the graph, a conv's
  dilation dropped, ...) on the same inputs and, if the learner's output matches one, names it.
* **Inputs must not change**: every tensor/array/module passed in is compared before and after.
* **No shortcuts**: while the learner's code runs, the library function the task re-implements
  (``F.batch_norm``, ``torch.batch_norm``, ``F.layer_norm``, ``fuse_conv_bn_eval``, ``update_bn``,
  the course's own ``coursekit.reference``, ...) is replaced by a sentinel that raises; a call is
  reported as "do not call F.batch_norm: the task is to re-implement it".
* **Never crashes the cell**: an exception raised by the learner's code (``NotImplementedError``
  from an unfinished stub, a shape error, ...) becomes a failed result showing the exception.

Checks draw their inputs from their own seed inside :func:`torch.random.fork_rng`, so they are
deterministic and leave the notebook's random state untouched. Tolerances: ``1e-5`` (float32) and
``1e-10`` (float64), relative to ``1 + |expected|``. The grader (``coursekit grade``) does not use
these checks: it compares plain outputs for its own secret inputs.

Example::

    >>> from coursekit import checks
    >>> def channel_stats(x):
    ...     dims = [0, *range(2, x.dim())]
    ...     return x.mean(dims), x.var(dims, unbiased=False)
    >>> print(checks.check_channel_stats(channel_stats))
    ✔ channel_stats: 6/6 cases passed
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

__all__ = [
    "CheckResult",
    "check_channel_stats", "check_batch_norm_train",
    "check_update_running_stats", "check_MyBatchNorm2d", "check_bn_process",
    "check_batch_norm_backward", "check_BatchNormFunction",
    "check_layer_norm", "check_instance_norm", "check_group_norm",
    "check_freeze_batchnorm", "check_predict", "check_recalibrate",
    "check_fold_conv_bn", "check_fold_linear_bn", "check_fold_model",
    "CHECKS",
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


# --------------------------------------------------------------------------------------------
# Inputs and reference maths (float64 where it matters)
# --------------------------------------------------------------------------------------------
_SHAPES = {2: (4, 3), 3: (2, 3, 5), 4: (2, 3, 4, 5), 5: (2, 2, 3, 2, 3)}


def _view(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (dim - 2))


def _x(shape, dtype) -> torch.Tensor:
    """Input whose channels and samples have different spreads and offsets, so wrong axes show."""
    c = shape[1]
    x = torch.randn(shape, dtype=_F64)
    x = x * _view(torch.linspace(0.5, 2.5, c, dtype=_F64), len(shape)) + _view(torch.linspace(-1, 2, c, dtype=_F64), len(shape))
    x = x + torch.randn((shape[0],) + (1,) * (len(shape) - 1), dtype=_F64) * 0.7
    return x.to(dtype)


def _affine_params(c: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.rand(c, dtype=dtype) + 0.5), torch.randn(c, dtype=dtype)


def _bn_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _norm(x, dims, weight=None, bias=None, eps=1e-5, unbiased=False, eps_outside=False, wview=None):
    """Normalize over ``dims``: the right answer and, through its switches, the classic wrong ones."""
    dims = list(dims)
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=unbiased, keepdim=True)
    y = (x - mean) / (var.sqrt() + eps) if eps_outside else (x - mean) / torch.sqrt(var + eps)
    wview = wview or (lambda t: _view(t, x.dim()))
    if weight is not None:
        y = y * wview(weight)
    if bias is not None:
        y = y + wview(bias)
    return y


def _norm_variants(x, dims, weight, bias, eps, wrong_axes=()) -> list:
    """(hint, lazy value) for the classic mistakes of a normalization over ``dims``."""
    v = [
        ("normalize with the biased variance (divide by n, unbiased=False); the unbiased one is only for running_var",
         lambda: _norm(x, dims, weight, bias, eps, unbiased=True)),
        ("eps goes inside the square root: divide by sqrt(var + eps), not sqrt(var) + eps",
         lambda: _norm(x, dims, weight, bias, eps, eps_outside=True)),
    ]
    for axes, hint in wrong_axes:
        v.append((hint, lambda axes=axes: _norm(x, axes, weight, bias, eps)))
    if weight is not None and bias is not None:
        v.append(("gamma scales and beta shifts: y = x_hat * gamma + beta (they are swapped)",
                  lambda: _norm(x, dims, bias, weight, eps)))
    if weight is not None or bias is not None:
        v.append(("apply the affine parameters: y = x_hat * gamma + beta", lambda: _norm(x, dims, eps=eps)))
    return v


def _bn_wrong_axes(x) -> list:
    d = x.dim()
    axes = []
    if d > 2:
        axes.append(((0,), "statistics over the wrong axes: you reduced over N only; reduce over N and every spatial dim (all dims but the channel dim 1)"))
        axes.append((tuple(range(2, d)), "statistics over the wrong axes: you used per-sample statistics; batch norm shares them across the batch (reduce over N and all spatial dims)"))
    axes.append((tuple(range(1, d)), "statistics over the wrong axes: you normalized each sample over its channels (that is layer norm); reduce over N and all spatial dims, per channel"))
    axes.append((tuple(range(d)), "statistics over the wrong axes: you used one mean/variance for everything; batch norm keeps one per channel"))
    return axes


# --------------------------------------------------------------------------------------------
# 02: channel_stats, batch_norm_train
# --------------------------------------------------------------------------------------------
_AXES_HINT = "reduce over N and every spatial dim (all dims but the channel dim 1): one value per channel, shape (C,)"


def check_channel_stats(channel_stats) -> CheckResult:
    """Check ``channel_stats(x) -> (mean, var)``: per-channel mean and biased variance, each (C,).

    Introduced in exercise notebook 02. Cases: 2D to 5D input, float32 and float64; mean and var compared separately.

    Args:
        channel_stats: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``channel_stats`` is not callable.
    """
    _require_callable(channel_stats, "a function channel_stats(x) -> (mean, var)")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype):
        def body():
            x = _x(shape, dtype)
            with _Unchanged(x=x):
                out = run(channel_stats, x)
            mean, var = _unpack(out, 2, "(mean, var)")
            dims = _bn_dims(x)
            _compare(mean, x.mean(dims), "mean", shape_hint=_AXES_HINT)
            per_sample = lambda: x.var(list(range(2, x.dim())), unbiased=False).mean(0)  # noqa: E731
            _compare(var, x.var(dims, unbiased=False), "var", shape_hint=_AXES_HINT, variants=[
                ("return the biased variance (divide by n, unbiased=False), the one that normalizes",
                 lambda: x.var(dims, unbiased=True)),
                ("return the variance, not the standard deviation", lambda: x.var(dims, unbiased=False).sqrt()),
                ("compute the variance over all N x spatial values of a channel at once, not per sample then averaged",
                 per_sample),
            ], hint="var = mean over N and spatial dims of (x - mean)**2, per channel")
        return _desc(shape, dtype), body

    cases = [case(s, d) for s, d in [((4, 3), _F32), ((2, 3, 5), _F64), ((2, 3, 4, 5), _F32),
                                      ((2, 3, 4, 5), _F64), ((2, 2, 3, 2, 3), _F32), ((2, 2, 3, 2, 3), _F64)]]
    return _run("channel_stats", cases)


def check_batch_norm_train(batch_norm_train) -> CheckResult:
    """Check ``batch_norm_train(x, gamma, beta, eps=1e-5) -> y`` (training-mode BN, batch statistics).

    Introduced in exercise notebook 02. Cases: 2D to 5D, float32/float64, eps 1e-5/1e-3/0.1, and gradients of x, gamma, beta against autograd.

    Args:
        batch_norm_train: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``batch_norm_train`` is not callable.
    """
    _require_callable(batch_norm_train, "a function batch_norm_train(x, gamma, beta, eps=1e-5) -> y")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype, eps=None, grad=False):
        extra = {} if eps is None else {"eps": eps}
        if grad:
            extra["gradients"] = "autograd"

        def body():
            x = _x(shape, dtype)
            gamma, beta = _affine_params(shape[1], dtype)
            e = 1e-5 if eps is None else eps
            expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=e)
            dims = _bn_dims(x)
            variants = _norm_variants(x, dims, gamma, beta, e, _bn_wrong_axes(x))
            if grad:
                x.requires_grad_(True)
                gamma.requires_grad_(True)
                beta.requires_grad_(True)
            args = (x, gamma, beta) if eps is None else (x, gamma, beta, eps)
            with _Unchanged(x=x, gamma=gamma, beta=beta):
                y = run(batch_norm_train, *args)
            _compare(y, expected.detach(), "output", variants=variants,
                     shape_hint="return a tensor of the input's shape",
                     hint="y = (x - mean) / sqrt(var + eps) * gamma + beta with per-channel batch mean and biased var, broadcast as (1, C, 1, ...)")
            if not grad:
                return
            if not y.requires_grad:
                raise _Failure("the output does not require grad: it is cut from the autograd graph",
                               hint="use torch operations on x only (no .detach(), .data, .numpy() or torch.no_grad())")
            dy = torch.randn_like(expected)
            run(lambda: y.backward(dy))
            xr, gr, br = (t.detach().clone().requires_grad_(True) for t in (x, gamma, beta))
            F.batch_norm(xr, None, None, gr, br, training=True, eps=e).backward(dy)
            xd = x.detach().clone().requires_grad_(True)
            mean = xd.mean(dims, keepdim=True).detach()
            var = xd.var(dims, unbiased=False, keepdim=True).detach()
            (((xd - mean) / torch.sqrt(var + e)) * _view(gamma.detach(), x.dim()) + _view(beta.detach(), x.dim())).backward(dy)
            if x.grad is None:
                raise _Failure("x.grad is None after backward", hint="compute the output from x with torch operations")
            _compare(x.grad, xr.grad, "x.grad", variants=[
                ("the statistics are detached from the graph (.detach(), .item() or .data): the gradient must flow through the batch mean and variance",
                 xd.grad)])
            _compare(gamma.grad, gr.grad, "gamma.grad")
            _compare(beta.grad, br.grad, "beta.grad")
        return _desc(shape, dtype, **extra), body

    cases = [case((4, 3), _F32), case((2, 3, 5), _F64), case((2, 3, 4, 5), _F32, eps=0.1),
             case((2, 3, 4, 5), _F64), case((2, 2, 3, 2, 3), _F64, eps=1e-3),
             case((2, 3, 4, 4), _F64, grad=True)]
    return _run("batch_norm_train", cases)


# --------------------------------------------------------------------------------------------
# 03: update_running_stats, MyBatchNorm2d, bn_process
# --------------------------------------------------------------------------------------------
_REVERSED_HINT = ("momentum convention reversed: in PyTorch momentum weights the NEW batch, "
                  "new = (1 - momentum) * old + momentum * batch (Keras/TF's momentum weights the old value)")
_RUNNING_VAR_HINT = "running_var tracks the UNBIASED batch variance (divide by n - 1), although the biased one normalizes"


def _running_update(rm, rv, x, factor, unbiased=True):
    dims = _bn_dims(x)
    mean = x.mean(dims)
    var = x.var(dims, unbiased=unbiased)
    return (1 - factor) * rm + factor * mean, (1 - factor) * rv + factor * var


def check_update_running_stats(update_running_stats) -> CheckResult:
    """Check ``update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0)``.

    Introduced in exercise notebook 03. Cases: momentum 0.1, 0.3, 0.25 and None with num_batches_tracked 0, 1, 4; inputs must come back unchanged.

    Args:
        update_running_stats: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``update_running_stats`` is not callable.
    """
    _require_callable(update_running_stats, "a function update_running_stats(running_mean, running_var, x, "
                                            "momentum=0.1, num_batches_tracked=0) -> (mean, var)")
    run = _Runner(_forbidden_targets("norm"))
    default = object()

    def case(shape, dtype, momentum=default, nbt=default):
        extra = {}
        if momentum is not default:
            extra["momentum"] = momentum
        if nbt is not default:
            extra["num_batches_tracked"] = nbt

        def body():
            c = shape[1]
            x = _x(shape, dtype)
            rm = torch.randn(c, dtype=dtype)
            rv = torch.rand(c, dtype=dtype) + 0.5
            m = 0.1 if momentum is default else momentum
            n = 0 if nbt is default else nbt
            factor = 1.0 / (n + 1) if m is None else m
            em, ev = _running_update(rm, rv, x, factor)
            with _Unchanged(running_mean=rm, running_var=rv, x=x,
                            hint="do not update running_mean/running_var (or x) in place: return new tensors"):
                out = run(update_running_stats, rm, rv, x, **extra)
            new_m, new_v = _unpack(out, 2, "(new_running_mean, new_running_var)")
            variants = []
            if m is None:
                variants.append(("num_batches_tracked counts the batches BEFORE x: the cumulative factor is 1 / (num_batches_tracked + 1)",
                                 lambda: _running_update(rm, rv, x, 1.0 / n if n else 1.0)))
                variants.append(("momentum=None means the cumulative average (factor 1 / (num_batches_tracked + 1)), not the default momentum",
                                 lambda: _running_update(rm, rv, x, 0.1)))
            else:
                variants.append((_REVERSED_HINT, lambda: _running_update(rm, rv, x, 1 - factor)))
            mean_variants = [(h, (lambda f=f: f()[0])) for h, f in variants]
            var_variants = [(h, (lambda f=f: f()[1])) for h, f in variants]
            var_variants.append((_RUNNING_VAR_HINT, lambda: _running_update(rm, rv, x, factor, unbiased=False)[1]))
            _compare(new_m, em, "new running_mean", variants=mean_variants, shape_hint=_AXES_HINT)
            _compare(new_v, ev, "new running_var", variants=var_variants, shape_hint=_AXES_HINT)
        return _desc(shape, dtype, **extra), body

    cases = [case((4, 3), _F32), case((2, 3, 4, 5), _F64, momentum=0.3),
             case((2, 3, 5), _F32, momentum=None, nbt=0), case((2, 2, 3, 2, 3), _F64, momentum=None, nbt=4),
             case((2, 3, 4, 4), _F64, momentum=0.25, nbt=7), case((8, 3), _F64, momentum=None, nbt=1)]
    return _run("update_running_stats", cases)


def _randomize_bn(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        if getattr(bn, "weight", None) is not None:
            bn.weight.copy_(torch.rand_like(bn.weight) + 0.5)
            bn.bias.copy_(torch.randn_like(bn.bias))
        if getattr(bn, "running_mean", None) is not None:
            bn.running_mean.copy_(torch.randn_like(bn.running_mean))
            bn.running_var.copy_(torch.rand_like(bn.running_var) + 0.5)
            bn.num_batches_tracked.fill_(5)
    return bn


def check_MyBatchNorm2d(MyBatchNorm2d) -> CheckResult:
    """Check the class ``MyBatchNorm2d``: state_dict interchangeable with ``nn.BatchNorm2d``, same forward.

    Introduced in exercise notebook 03. Cases: state_dict keys/initial values/round trip, 3 training batches (momentum 0.1 and None), eval mode, affine=False with track_running_stats=False, gradients.

    Args:
        MyBatchNorm2d: the learner's class.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``MyBatchNorm2d`` is not a class.
    """
    _require_class(MyBatchNorm2d, nn.Module, "a class MyBatchNorm2d(nn.Module)")
    run = _Runner(_forbidden_targets("norm"))
    from torch.nn.modules.batchnorm import _NormBase

    def make(*args, **kwargs) -> nn.Module:
        if not issubclass(MyBatchNorm2d, nn.Module):
            raise _Failure("MyBatchNorm2d is not an nn.Module", hint="write class MyBatchNorm2d(nn.Module)")
        if issubclass(MyBatchNorm2d, _NormBase):
            raise _Failure("MyBatchNorm2d subclasses PyTorch's batch norm",
                           hint="do not subclass nn.BatchNorm2d: the task is to re-implement it from nn.Module")
        m = run(MyBatchNorm2d, *args, **kwargs)
        if not isinstance(m, nn.Module):
            raise _Failure(f"MyBatchNorm2d(...) gave a {_typename(m)}", hint="write class MyBatchNorm2d(nn.Module)")
        return m

    def state_case():
        m = make(3)
        ref = nn.BatchNorm2d(3)
        sd, rsd = m.state_dict(), ref.state_dict()
        if set(sd) != set(rsd):
            raise _Failure(f"state_dict keys {sorted(sd)}, expected {sorted(rsd)}",
                           hint="register weight and bias as nn.Parameter and running_mean, running_var, num_batches_tracked as buffers, with these names")
        params = {n for n, _ in m.named_parameters()}
        if params != {"weight", "bias"}:
            raise _Failure(f"parameters {sorted(params)}, expected ['bias', 'weight']",
                           hint="only weight and bias are nn.Parameter; running statistics are buffers (register_buffer)")
        for k in rsd:
            if not isinstance(sd[k], torch.Tensor) or sd[k].shape != rsd[k].shape or sd[k].dtype != rsd[k].dtype:
                got = f"{tuple(sd[k].shape)} {sd[k].dtype}" if isinstance(sd[k], torch.Tensor) else _typename(sd[k])
                raise _Failure(f"{k} is {got}, expected {tuple(rsd[k].shape)} {rsd[k].dtype}",
                               hint="num_batches_tracked is a 0-dim torch.long tensor; the others have shape (C,)")
            _compare(sd[k].double(), rsd[k].double(), f"initial {k}",
                     hint="initial values: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0")
        ref2 = _randomize_bn(nn.BatchNorm2d(3))
        run(m.load_state_dict, ref2.state_dict())
        back = nn.BatchNorm2d(3)
        back.load_state_dict(m.state_dict())
        for k, v in ref2.state_dict().items():
            _compare(back.state_dict()[k].double(), v.double(), f"{k} after a round trip through load_state_dict")

    def train_case(shape, dtype, momentum, eps, steps=3):
        def body():
            c = shape[1]
            m = make(c, eps=eps, momentum=momentum)
            ref = _randomize_bn(nn.BatchNorm2d(c, eps=eps, momentum=momentum))
            if momentum is None:
                with torch.no_grad():
                    ref.num_batches_tracked.fill_(2)
            m.to(dtype)
            ref.to(dtype)
            run(m.load_state_dict, ref.state_dict())
            m.train()
            ref.train()
            for step in range(steps):
                x = _x(shape, dtype)
                prev_m, prev_v = ref.running_mean.clone(), ref.running_var.clone()
                prev_n = int(ref.num_batches_tracked)
                y = run(m, x)
                with torch.no_grad():
                    expected = ref(x)
                _compare(y, expected, f"output of batch {step + 1}",
                         variants=_norm_variants(x, _bn_dims(x), ref.weight.detach(), ref.bias.detach(), eps, _bn_wrong_axes(x)),
                         hint="in training mode normalize with the batch's mean and biased variance")
                factor = 1.0 / (prev_n + 1) if momentum is None else momentum
                variants = [(_REVERSED_HINT, lambda: _running_update(prev_m, prev_v, x, 1 - factor))] if momentum is not None else [
                    ("momentum=None: cumulative average, factor 1 / num_batches_tracked after counting this batch",
                     lambda: _running_update(prev_m, prev_v, x, 0.1))]
                state = m.state_dict()
                _compare(state.get("running_mean"), ref.running_mean, f"running_mean after batch {step + 1}",
                         variants=[(h, lambda f=f: f()[0]) for h, f in variants],
                         hint="update running_mean in training mode: (1 - momentum) * old + momentum * batch mean")
                _compare(state.get("running_var"), ref.running_var, f"running_var after batch {step + 1}",
                         variants=[(h, lambda f=f: f()[1]) for h, f in variants]
                         + [(_RUNNING_VAR_HINT, lambda: _running_update(prev_m, prev_v, x, factor, unbiased=False)[1])])
                nbt = state.get("num_batches_tracked")
                if not isinstance(nbt, torch.Tensor) or int(nbt) != int(ref.num_batches_tracked):
                    raise _Failure(f"num_batches_tracked is {nbt if not isinstance(nbt, torch.Tensor) else int(nbt)}, "
                                   f"expected {int(ref.num_batches_tracked)}",
                                   hint="add 1 to num_batches_tracked (in place) at each training-mode forward")
        return _desc(shape, dtype, mode="train", momentum=momentum, eps=eps), body

    def eval_case(shape, dtype):
        def body():
            c = shape[1]
            ref = _randomize_bn(nn.BatchNorm2d(c)).to(dtype).eval()
            m = make(c).to(dtype)
            run(m.load_state_dict, ref.state_dict())
            m.eval()
            x = _x(shape, dtype)
            with _Unchanged(running_stats=m, message="the module's state changed in eval mode",
                            hint="in eval mode the running statistics (and num_batches_tracked) must not change"):
                y = run(m, x)
            with torch.no_grad():
                expected = ref(x)
            _compare(y, expected, "output", variants=[
                ("in eval mode normalize with running_mean and running_var, not the batch statistics",
                 lambda: _norm(x, _bn_dims(x), ref.weight.detach(), ref.bias.detach(), ref.eps))],
                hint="eval mode: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias")
        return _desc(shape, dtype, mode="eval"), body

    def plain_case(shape, dtype):
        def body():
            c = shape[1]
            m = make(c, affine=False, track_running_stats=False).to(dtype)
            keys = set(m.state_dict())
            if keys:
                raise _Failure(f"state_dict keys {sorted(keys)}, expected none",
                               hint="affine=False: no weight/bias; track_running_stats=False: no running buffers (register them as None)")
            x = _x(shape, dtype)
            for mode in ("train", "eval"):
                m.train(mode == "train")
                y = run(m, x)
                _compare(y, F.batch_norm(x, None, None, training=True), f"{mode}-mode output",
                         hint="without running statistics, batch statistics normalize in both modes")
        return _desc(shape, dtype, affine=False, track_running_stats=False), body

    def grad_case(shape, dtype):
        def body():
            c = shape[1]
            ref = _randomize_bn(nn.BatchNorm2d(c)).to(dtype).train()
            m = make(c).to(dtype).train()
            run(m.load_state_dict, ref.state_dict())
            x = _x(shape, dtype)
            xm = x.clone().requires_grad_(True)
            xr = x.clone().requires_grad_(True)
            dy = torch.randn(shape, dtype=dtype)
            y = run(m, xm)
            if not isinstance(y, torch.Tensor) or not y.requires_grad:
                raise _Failure("the output does not require grad", hint="compute the forward with torch operations on x")
            run(lambda: y.backward(dy))
            ref(xr).backward(dy)
            params = dict(m.named_parameters())
            _compare(xm.grad, xr.grad, "x.grad", hint="do not detach the batch statistics: gradients flow through them")
            for name in ("weight", "bias"):
                _compare(params[name].grad, getattr(ref, name).grad, f"{name}.grad")
        return _desc(shape, dtype, gradients="autograd"), body

    cases = [("state_dict keys, initial values, load to and from nn.BatchNorm2d", state_case),
             train_case((2, 3, 4, 5), _F32, 0.1, 1e-5), train_case((2, 4, 3, 3), _F64, None, 0.1),
             eval_case((2, 3, 4, 5), _F64), plain_case((2, 3, 3, 4), _F32), grad_case((2, 3, 4, 4), _F64)]
    return _run("MyBatchNorm2d", cases)


def check_bn_process(bn_process) -> CheckResult:
    """Check ``bn_process(feature, mean, var, momentum=0.1, eps=1e-5) -> (out, new_mean, new_var)`` (numpy).

    Introduced in exercise notebook 03. Cases: numpy float32/float64, momentum and eps varied; the arrays passed in must come back unchanged.

    Args:
        bn_process: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``bn_process`` is not callable.
    """
    _require_callable(bn_process, "a function bn_process(feature, mean, var, momentum=0.1, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype, momentum=None, eps=None):
        extra = {k: v for k, v in (("momentum", momentum), ("eps", eps)) if v is not None}
        np_dtype = np.float64 if dtype == _F64 else np.float32

        def body():
            c = shape[1]
            x = _x(shape, _F64)
            feature = x.numpy().astype(np_dtype)
            mean = np.random.default_rng(c).normal(size=c).astype(np_dtype)
            var = (np.random.default_rng(c + 1).random(c) + 0.5).astype(np_dtype)
            m = 0.1 if momentum is None else momentum
            e = 1e-5 if eps is None else eps
            x = torch.from_numpy(feature).double()
            rm, rv = torch.from_numpy(mean).double(), torch.from_numpy(var).double()
            with _Unchanged(feature=feature, mean=mean, var=var,
                            hint="bn_process overwrote its input (the seed's bug): work on copies and return new arrays"):
                out = run(bn_process, feature, mean, var, **extra)
            out = _unpack(out, 3, "(out, new_mean, new_var)")
            got = []
            for name, value in zip(("out", "new_mean", "new_var"), out):
                if isinstance(value, torch.Tensor):
                    raise _Failure(f"{name} is a torch.Tensor", hint="bn_process works on numpy arrays: return numpy arrays")
                if not isinstance(value, np.ndarray):
                    raise _Failure(f"{name} is a {_typename(value)}, expected a numpy array",
                                   hint="return numpy arrays (not lists)")
                got.append(torch.from_numpy(np.asarray(value, dtype=np.float64)))
            tol = _tol(dtype)
            dims = _bn_dims(x)
            _compare(got[0], _norm(x, dims, eps=e), "out", tol=tol, variants=[
                ("normalize with the population variance (numpy's default ddof=0); ddof=1 (torch's default for .std/.var) is for the running var",
                 lambda: _norm(x, dims, eps=e, unbiased=True)),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: _norm(x, dims, eps=e, eps_outside=True))],
                shape_hint="out has the feature's shape (N, C, H, W)")
            em, ev = _running_update(rm, rv, x, m)
            _compare(got[1], em, "new_mean", tol=tol, variants=[(_REVERSED_HINT, lambda: _running_update(rm, rv, x, 1 - m)[0])])
            _compare(got[2], ev, "new_var", tol=tol, variants=[
                (_REVERSED_HINT, lambda: _running_update(rm, rv, x, 1 - m)[1]),
                ("the running var uses the sample variance (ddof=1), torch's unbiased estimate",
                 lambda: _running_update(rm, rv, x, m, unbiased=False)[1])])
        return _desc(shape, dtype, **extra).replace("float", "numpy float"), body

    cases = [case((2, 2, 2, 2), _F32), case((4, 3, 5, 5), _F64, momentum=0.3),
             case((2, 3, 4, 4), _F64, eps=0.1), case((3, 2, 3, 3), _F32, momentum=0.5, eps=1e-3)]
    return _run("bn_process", cases)


# --------------------------------------------------------------------------------------------
# 04: batch_norm_backward, BatchNormFunction
# --------------------------------------------------------------------------------------------
def _bn_grads(x, gamma, beta, eps, dy):
    """dx, dgamma, dbeta of training-mode BN by autograd, in float64, cast back to x's dtype."""
    xs = [t.detach().double().requires_grad_(True) for t in (x, gamma, beta)]
    F.batch_norm(xs[0], None, None, xs[1], xs[2], training=True, eps=eps).backward(dy.double())
    return tuple(t.grad.to(x.dtype) for t in xs)


def check_batch_norm_backward(batch_norm_backward) -> CheckResult:
    """Check ``batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)`` with ``cache = (x_hat, inv_std, gamma)``.

    Introduced in exercise notebook 04. Cases: 2D to 5D, float32/float64; dx, dgamma, dbeta against autograd of F.batch_norm in float64.

    Args:
        batch_norm_backward: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``batch_norm_backward`` is not callable.
    """
    _require_callable(batch_norm_backward, "a function batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)")
    run = _Runner(_forbidden_targets("norm"))

    def case(shape, dtype, eps=1e-5):
        def body():
            c = shape[1]
            x = _x(shape, dtype)
            gamma, beta = _affine_params(c, dtype)
            dims = _bn_dims(x)
            v = lambda t: _view(t, x.dim())  # noqa: E731
            mean = x.mean(dims)
            inv_std = 1 / torch.sqrt(x.var(dims, unbiased=False) + eps)
            x_hat = (x - v(mean)) * v(inv_std)
            dy = torch.randn(shape, dtype=dtype)
            with _Unchanged(dy=dy, x_hat=x_hat, inv_std=inv_std, gamma=gamma):
                out = run(batch_norm_backward, dy, (x_hat, inv_std, gamma))
            dx, dgamma, dbeta = _unpack(out, 3, "(dx, dgamma, dbeta)")
            edx, edgamma, edbeta = _bn_grads(x, gamma, beta, eps, dy)
            m = x.numel() // c
            g = v(gamma) * dy
            n_only = x.shape[0]
            sum_hint = "dgamma and dbeta have shape (C,): sum over N and every spatial dim"
            _compare(dgamma, edgamma, "dgamma", shape_hint=sum_hint, variants=[
                ("dgamma = sum(dy * x_hat) and dbeta = sum(dy) (they are swapped)", dy.sum(dims))],
                hint="dgamma = sum of dy * x_hat over N and spatial dims")
            _compare(dbeta, edbeta, "dbeta", shape_hint=sum_hint, variants=[
                ("dgamma = sum(dy * x_hat) and dbeta = sum(dy) (they are swapped)", (dy * x_hat).sum(dims))])
            _compare(dx, edx, "dx", shape_hint="dx has the shape of x", variants=[
                ("dx misses the paths through the batch mean and variance (they depend on x): dx = gamma * inv_std * dy holds only in eval mode",
                 g * v(inv_std)),
                ("dx has the mean path but misses the variance path: also subtract x_hat * mean(gamma * dy * x_hat)",
                 v(inv_std) * (g - v(g.sum(dims)) / m)),
                ("the means in dx are over all m = N x spatial values of a channel, not over N only",
                 (lambda: v(inv_std) / n_only * (n_only * g - v(g.sum(dims)) - x_hat * v((g * x_hat).sum(dims))))
                 if x.dim() > 2 else None),
                ("gamma scales dx: dx_hat = gamma * dy", lambda: v(inv_std) / m * (m * dy - v(dy.sum(dims)) - x_hat * v((dy * x_hat).sum(dims)))),
            ], hint="dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat)), dx_hat = gamma * dy, sums per channel")
        return _desc(shape, dtype), body

    cases = [case((4, 3), _F64), case((2, 3, 5), _F64), case((2, 3, 4, 5), _F32),
             case((2, 3, 4, 5), _F64, eps=0.1), case((2, 2, 3, 2, 3), _F64), case((8, 5), _F32)]
    return _run("batch_norm_backward", cases)


def check_BatchNormFunction(BatchNormFunction) -> CheckResult:
    """Check ``BatchNormFunction``: a ``torch.autograd.Function``, ``apply(x, gamma, beta, eps)``, analytic backward.

    Introduced in exercise notebook 04. Cases: forward and all three gradients for 2D to 5D, float32/float64, then torch.autograd.gradcheck.

    Args:
        BatchNormFunction: the learner's class.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``BatchNormFunction`` is not a class.
    """
    _require_class(BatchNormFunction, torch.autograd.Function, "a class BatchNormFunction(torch.autograd.Function)")
    # autograd's own machinery may be used; only the batch-norm kernels are forbidden
    run = _Runner(_forbidden_targets("norm"))

    def require_function():
        if not issubclass(BatchNormFunction, torch.autograd.Function):
            raise _Failure("BatchNormFunction is not a torch.autograd.Function",
                           hint="write class BatchNormFunction(torch.autograd.Function) with static forward(ctx, ...) and backward(ctx, dy)")

    def case(shape, dtype, eps=1e-5):
        def body():
            require_function()
            c = shape[1]
            x = _x(shape, dtype).requires_grad_(True)
            gamma, beta = (t.requires_grad_(True) for t in _affine_params(c, dtype))
            with _Unchanged(x=x, gamma=gamma, beta=beta):
                y = run(BatchNormFunction.apply, x, gamma, beta, eps)
            expected = F.batch_norm(x.detach(), None, None, gamma.detach(), beta.detach(), training=True, eps=eps)
            _compare(y, expected, "forward output",
                     variants=_norm_variants(x.detach(), _bn_dims(x), gamma.detach(), beta.detach(), eps, _bn_wrong_axes(x)),
                     shape_hint="forward returns a tensor of the input's shape")
            if not y.requires_grad:
                raise _Failure("the output does not require grad", hint="return the output tensor from forward; autograd connects it")
            dy = torch.randn(shape, dtype=dtype)
            run(lambda: y.backward(dy))
            edx, edgamma, edbeta = _bn_grads(x, gamma, beta, eps, dy)
            v = lambda t: _view(t, x.dim())  # noqa: E731
            dims = _bn_dims(x)
            inv_std = 1 / torch.sqrt(x.detach().var(dims, unbiased=False) + eps)
            x_hat = (x.detach() - v(x.detach().mean(dims))) * v(inv_std)
            for name, t, e, variants in (
                    ("x.grad", x, edx, [("dx misses the paths through the batch mean and variance: "
                                         "dx = gamma * inv_std * dy holds only in eval mode", v(gamma.detach() * inv_std) * dy)]),
                    ("gamma.grad", gamma, edgamma, [("dgamma = sum(dy * x_hat), dbeta = sum(dy) (swapped)", dy.sum(dims))]),
                    ("beta.grad", beta, edbeta, [("dgamma = sum(dy * x_hat), dbeta = sum(dy) (swapped)", (dy * x_hat).sum(dims))])):
                if t.grad is None:
                    raise _Failure(f"{name} is None after backward",
                                   hint="backward returns (dx, dgamma, dbeta, None): one gradient per forward input")
                _compare(t.grad, e, name, variants=variants)
        return _desc(shape, dtype, eps=eps), body

    def gradcheck_case():
        require_function()
        x = _x((2, 3, 4), _F64).requires_grad_(True)
        gamma, beta = (t.requires_grad_(True) for t in _affine_params(3, _F64))
        ok = run(torch.autograd.gradcheck, lambda a, b, c: BatchNormFunction.apply(a, b, c, 1e-5),
                 (x, gamma, beta), eps=1e-6, atol=1e-6, raise_exception=False)
        if not ok:
            raise _Failure("torch.autograd.gradcheck failed", hint="the analytic backward disagrees with finite differences")

    cases = [case((4, 3), _F32), case((2, 3, 4, 5), _F64, eps=0.1), case((2, 2, 3, 2, 3), _F32),
             case((2, 3, 5), _F64), ("gradcheck, shape (2, 3, 4) float64", gradcheck_case)]
    return _run("BatchNormFunction", cases)


# --------------------------------------------------------------------------------------------
# 05: layer_norm, instance_norm, group_norm
# --------------------------------------------------------------------------------------------
_AFFINE_NONE = "weight and bias are optional: apply each one only when it is not None"


def check_layer_norm(layer_norm) -> CheckResult:
    """Check ``layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)`` against ``F.layer_norm``.

    Introduced in exercise notebook 05. Cases: int/tuple/list normalized_shape over 1 to 3 trailing dims, weight/bias given or None, eps varied.

    Args:
        layer_norm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``layer_norm`` is not callable.
    """
    _require_callable(layer_norm, "a function layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"), none_hint=_AFFINE_NONE)

    def case(shape, dtype, ns, weight=False, bias=False, eps=None):
        extra = {"normalized_shape": ns}
        if weight:
            extra["weight"] = "given"
        if bias:
            extra["bias"] = "given"
        if eps is not None:
            extra["eps"] = eps

        def body():
            x = _x(shape, dtype)
            nshape = (ns,) if isinstance(ns, int) else tuple(ns)
            w = torch.rand(nshape, dtype=dtype) + 0.5 if weight else None
            b = torch.randn(nshape, dtype=dtype) if bias else None
            e = 1e-5 if eps is None else eps
            kwargs = {}
            if weight:
                kwargs["weight"] = w
            if bias:
                kwargs["bias"] = b
            if eps is not None:
                kwargs["eps"] = eps
            with _Unchanged(x=x, weight=w, bias=b):
                y = run(layer_norm, x, ns, **kwargs)
            expected = F.layer_norm(x, nshape, w, b, e)
            k = len(nshape)
            dims = tuple(range(x.dim() - k, x.dim()))
            ident = lambda t: t  # noqa: E731
            variants = [
                ("normalize with the biased variance (unbiased=False)", lambda: _norm(x, dims, w, b, e, unbiased=True, wview=ident)),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: _norm(x, dims, w, b, e, eps_outside=True, wview=ident)),
                ("layer norm statistics are per sample over the trailing normalized_shape dims, not across the batch",
                 lambda: _norm(x, (0,), w, b, e, wview=ident)),
            ]
            if k > 1:
                variants.append(("normalize over ALL the trailing normalized_shape dims, not the last one only",
                                 lambda: _norm(x, (x.dim() - 1,), w, b, e, wview=ident)))
            if k < x.dim() - 1:
                variants.append(("normalize over the trailing normalized_shape dims only, not every dim but the first",
                                 lambda: _norm(x, tuple(range(1, x.dim())), w, b, e, wview=ident)))
            _compare(y, expected, "output", variants=variants, shape_hint="return a tensor of the input's shape",
                     hint="per sample: mean and biased variance over the trailing normalized_shape dims; weight/bias have shape normalized_shape")
        return _desc(shape, dtype, **extra), body

    cases = [case((4, 10), _F32, 10), case((2, 3, 5), _F64, (3, 5), weight=True, bias=True),
             case((2, 3, 4, 4), _F32, [4, 4], weight=True), case((2, 3, 4, 4), _F64, (3, 4, 4), bias=True, eps=0.1),
             case((2, 2, 3, 2, 3), _F64, (3,), weight=True, bias=True), case((3, 5), _F32, 5, weight=True, bias=True, eps=1e-3)]
    return _run("layer_norm", cases)


def check_instance_norm(instance_norm) -> CheckResult:
    """Check ``instance_norm(x, weight=None, bias=None, eps=1e-5)`` against ``F.instance_norm``.

    Introduced in exercise notebook 05. Cases: 3D to 5D input (batch of one included), weight/bias given or None, eps varied.

    Args:
        instance_norm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``instance_norm`` is not callable.
    """
    _require_callable(instance_norm, "a function instance_norm(x, weight=None, bias=None, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"), none_hint=_AFFINE_NONE)

    def case(shape, dtype, weight=False, bias=False, eps=None):
        extra = {k: "given" for k, on in (("weight", weight), ("bias", bias)) if on}
        if eps is not None:
            extra["eps"] = eps

        def body():
            c = shape[1]
            x = _x(shape, dtype)
            w = torch.rand(c, dtype=dtype) + 0.5 if weight else None
            b = torch.randn(c, dtype=dtype) if bias else None
            e = 1e-5 if eps is None else eps
            kwargs = {k: v for k, v, on in (("weight", w, weight), ("bias", b, bias), ("eps", eps, eps is not None)) if on}
            with _Unchanged(x=x, weight=w, bias=b):
                y = run(instance_norm, x, **kwargs)
            expected = F.instance_norm(x, weight=w, bias=b, eps=e)
            dims = tuple(range(2, x.dim()))
            wrong = [(_bn_dims(x), "statistics over the wrong axes: that is batch norm; instance norm uses each sample's own statistics per channel (spatial dims only)"),
                     (tuple(range(1, x.dim())), "statistics over the wrong axes: that is layer norm; instance norm keeps one mean/variance per sample AND channel")]
            _compare(y, expected, "output", variants=_norm_variants(x, dims, w, b, e, wrong),
                     shape_hint="return a tensor of the input's shape",
                     hint="per (sample, channel): mean and biased variance over the spatial dims; weight/bias per channel")
        return _desc(shape, dtype, **extra), body

    cases = [case((2, 3, 5), _F32), case((2, 3, 4, 5), _F64, weight=True, bias=True),
             case((2, 2, 3, 2, 3), _F32, weight=True), case((2, 3, 4, 4), _F64, bias=True, eps=0.1),
             case((1, 3, 6), _F64, weight=True, bias=True, eps=1e-3)]
    return _run("instance_norm", cases)


def check_group_norm(group_norm) -> CheckResult:
    """Check ``group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)`` against ``F.group_norm``.

    Introduced in exercise notebook 05. Cases: 2D to 5D input, num_groups from 1 to C, weight/bias given or None, eps varied.

    Args:
        group_norm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``group_norm`` is not callable.
    """
    _require_callable(group_norm, "a function group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)")
    run = _Runner(_forbidden_targets("norm"), none_hint=_AFFINE_NONE)

    def grouped(x, g, w, b, e, strided=False, dims=(2,), **kw):
        n, c = x.shape[:2]
        xs = x
        if strided:  # channel k in group k % g: the classic reshape mistake
            xs = x.reshape(n, c // g, g, *x.shape[2:]).transpose(1, 2)
        y = _norm(xs.reshape(n, g, -1), dims, eps=e, **kw).reshape(xs.shape)
        if strided:
            y = y.transpose(1, 2).reshape(x.shape)
        if w is not None:
            y = y * _view(w, x.dim())
        if b is not None:
            y = y + _view(b, x.dim())
        return y

    def case(shape, dtype, groups, weight=False, bias=False, eps=None):
        extra = {"num_groups": groups}
        extra.update({k: "given" for k, on in (("weight", weight), ("bias", bias)) if on})
        if eps is not None:
            extra["eps"] = eps

        def body():
            c = shape[1]
            x = _x(shape, dtype)
            w = torch.rand(c, dtype=dtype) + 0.5 if weight else None
            b = torch.randn(c, dtype=dtype) if bias else None
            e = 1e-5 if eps is None else eps
            kwargs = {k: v for k, v, on in (("weight", w, weight), ("bias", b, bias), ("eps", eps, eps is not None)) if on}
            with _Unchanged(x=x, weight=w, bias=b):
                y = run(group_norm, x, groups, **kwargs)
            expected = F.group_norm(x, groups, w, b, e)
            variants = [
                ("a group is C/G CONSECUTIVE channels (channels 0..C/G-1 form group 0), not every G-th channel",
                 lambda: grouped(x, groups, w, b, e, strided=True)),
                ("normalize with the biased variance (unbiased=False)", lambda: grouped(x, groups, w, b, e, unbiased=True)),
                ("eps goes inside the square root: sqrt(var + eps)", lambda: grouped(x, groups, w, b, e, eps_outside=True)),
                ("statistics over the wrong axes: that is instance norm (one group per channel); use num_groups groups of C/G channels",
                 lambda: _norm(x, tuple(range(2, x.dim())), w, b, e) if x.dim() > 2 else grouped(x, x.shape[1], w, b, e)),
                ("statistics over the wrong axes: per sample and group, not across the batch",
                 lambda: grouped(x, groups, w, b, e, dims=(0, 2))),
            ]
            _compare(y, expected, "output", variants=variants, shape_hint="return a tensor of the input's shape",
                     hint="reshape to (N, G, -1), normalize each row with its mean and biased variance, reshape back, then the per-channel affine")
        return _desc(shape, dtype, **extra), body

    cases = [case((2, 6), _F32, 3), case((2, 6, 5), _F64, 2, weight=True, bias=True),
             case((2, 4, 3, 3), _F32, 1), case((2, 4, 3, 3), _F64, 4, weight=True),
             case((2, 6, 2, 3, 2), _F64, 3, weight=True, bias=True, eps=0.1), case((2, 8, 3, 3), _F32, 2, bias=True)]
    return _run("group_norm", cases)


# --------------------------------------------------------------------------------------------
# 06: freeze_batchnorm, predict, recalibrate
# --------------------------------------------------------------------------------------------
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _bns(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN_TYPES)]


def _randomized(model: nn.Module, dtype) -> nn.Module:
    for bn in _bns(model):
        _randomize_bn(bn)
    return model.to(dtype)


def _model_2d(dropout: bool = True) -> nn.Module:
    layers = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
              nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
              nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6)]
    if dropout:
        layers.append(nn.Dropout(0.5))
    layers.append(nn.Linear(6, 3))
    return nn.Sequential(*layers)


def _model_mixed() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(), nn.Flatten(2),
                         nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4)), nn.Flatten(), nn.Linear(4 * 27, 2))


def _returned_model(out, what: str) -> nn.Module:
    if not isinstance(out, nn.Module):
        raise _Failure(f"{what} returned a {_typename(out)}, expected the model (an nn.Module)", hint="return the model")
    return out


_TRAIN_SURVIVES = ("model.train() put the BatchNorm layers back into training mode: the freeze must survive it "
                   "(model.train() calls train() on every submodule)")


def check_freeze_batchnorm(freeze_batchnorm) -> CheckResult:
    """Check ``freeze_batchnorm(model) -> model``: BN frozen (statistics and affine), surviving ``model.train()``.

    Introduced in exercise notebook 06. Cases: BatchNorm1d/2d/3d at any depth; flags and requires_grad after model.train(); forward after model.train() and after model.eval() + model.train().

    Args:
        freeze_batchnorm: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``freeze_batchnorm`` is not callable.
    """
    _require_callable(freeze_batchnorm, "a function freeze_batchnorm(model) -> model")
    run = _Runner(())

    def flags_case():
        model = _randomized(_model_2d(), _F32).train()
        model = _returned_model(run(freeze_batchnorm, model), "freeze_batchnorm")
        run(model.train)
        for name, mod in model.named_modules():
            if not isinstance(mod, _BN_TYPES) and not mod.training:
                raise _Failure(f"layer {name or 'model'} ({_typename(mod)}) is in eval mode after model.train()",
                               hint="freeze only the BatchNorm layers: the others (e.g. Dropout) must follow model.train()")
        for bn in _bns(model):
            for p in bn.parameters():
                if p.requires_grad:
                    raise _Failure("a BatchNorm weight/bias still requires grad",
                                   hint="freeze the affine parameters too: requires_grad False for BN weight and bias")
        for name, p in model.named_parameters():
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if not isinstance(owner, _BN_TYPES) and not p.requires_grad:
                raise _Failure(f"parameter {name} no longer requires grad",
                               hint="freeze only the BatchNorm layers' parameters; the rest keeps training")

    def forward_case(make, label, shape, dtype, start_mode):
        def body():
            model = _randomized(make(), dtype).train(start_mode == "train")
            reference = copy.deepcopy(model).eval()
            model = _returned_model(run(freeze_batchnorm, model), "freeze_batchnorm")
            before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
            for toggles, when in (((model.train,), "after model.train()"),
                                  ((model.eval, model.train), "after model.eval() then model.train()")):
                for toggle in toggles:
                    run(toggle)
                x = torch.randn(shape, dtype=dtype)
                y = run(model, x)
                after = model.state_dict()
                for k, v in before.items():
                    if not torch.equal(after[k], v):
                        raise _Failure(f"{k} changed during a forward {when}", hint=_TRAIN_SURVIVES)
                with torch.no_grad():
                    expected = reference(x)
                _compare(y, expected, f"output {when}",
                         hint="a frozen BatchNorm normalizes with its running statistics (eval behaviour), not the batch's")
                run(lambda: y.sum().backward())
                for bn in _bns(model):
                    if bn.weight.grad is not None and bool(bn.weight.grad.abs().sum() > 0):
                        raise _Failure("a BatchNorm weight received a gradient",
                                       hint="freeze the affine parameters too: requires_grad False for BN weight and bias")
        return f"{label} frozen in {start_mode} mode, input {tuple(shape)} {_dtname(dtype)}", body

    conv_net = lambda: _model_2d(dropout=False)  # noqa: E731
    cases = [("flags after model.train(): Dropout trains, BN parameters frozen, the rest trainable", flags_case),
             forward_case(conv_net, "Conv2d/BatchNorm2d/BatchNorm1d net", (4, 2, 4, 4), _F32, "train"),
             forward_case(_model_mixed, "BatchNorm3d/BatchNorm1d net", (2, 1, 3, 3, 3), _F64, "eval"),
             forward_case(conv_net, "Conv2d/BatchNorm2d/BatchNorm1d net", (3, 2, 4, 4), _F64, "train")]
    return _run("freeze_batchnorm", cases)


def check_predict(predict) -> CheckResult:
    """Check ``predict(model, x) -> y``: eval-mode forward without autograd, every training flag restored.

    Introduced in exercise notebook 06. Cases: model in train, eval and mixed modes, a batch of one, float32/float64.

    Args:
        predict: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``predict`` is not callable.
    """
    _require_callable(predict, "a function predict(model, x) -> y")
    run = _Runner(())

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))

    def case(make, shape, dtype, mode):
        label = "MLP with BatchNorm1d and Dropout" if make is mlp else "CNN with BatchNorm2d/1d and Dropout"

        def body():
            model = _randomized(make(), dtype).train(mode != "eval")
            if mode == "mixed":
                _bns(model)[0].eval()
            flags = [m.training for m in model.modules()]
            reference = copy.deepcopy(model).eval()
            x = torch.randn(shape, dtype=dtype)
            with _Unchanged(x=x):
                with _Unchanged(running_statistics=[v for k, v in model.state_dict().items() if "running" in k],
                                message="the BatchNorm running statistics changed",
                                hint="predict changed the running statistics: the forward ran in training mode (call eval first)"):
                    y = run(predict, model, x)
            with torch.no_grad():
                expected = reference(x)
            _compare(y, expected, "output", hint="predict must run the model in eval mode (running statistics, no dropout)")
            if y.requires_grad:
                raise _Failure("the output requires grad", hint="run the forward without autograd (torch.no_grad() or torch.inference_mode())")
            now = [m.training for m in model.modules()]
            if now != flags:
                names = [n or "model" for (n, _), a, b in zip(model.named_modules(), flags, now) if a != b]
                raise _Failure(f"training flags changed for {', '.join(names)}",
                               hint="restore each submodule's OWN previous flag (a model can be partly in eval, e.g. a frozen BN), also if the forward raises")
        return f"{label}, input {tuple(shape)} {_dtname(dtype)}, model in {mode} mode", body

    def raising_case():
        model = _randomized(mlp(), _F32).train()
        _bns(model)[0].eval()
        flags = [m.training for m in model.modules()]
        try:
            predict(model, torch.randn(4, 7))  # 7 features for a Linear(5, ...): the forward raises
        except Exception:  # expected: the shape error propagates (or is handled), flags must be back
            pass
        if [m.training for m in model.modules()] != flags:
            raise _Failure("training flags not restored after a forward that raised",
                           hint="restore the flags in a finally: block, so they come back even if the forward raises")

    cases = [case(mlp, (6, 5), _F32, "train"), case(mlp, (6, 5), _F64, "eval"), case(mlp, (6, 5), _F32, "mixed"),
             case(mlp, (1, 5), _F32, "train"), case(lambda: _model_2d(dropout=True), (2, 2, 4, 4), _F64, "mixed"),
             ("MLP in mixed mode, an input of the wrong size (the forward raises)", raising_case)]
    return _run("predict", cases)


def _bn_stats(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _bns(model)]


def _estimate(model: nn.Module, batches, reset: bool, momentum) -> list:
    model = copy.deepcopy(model).train()
    for bn in _bns(model):
        if reset:
            bn.reset_running_stats()
        bn.momentum = momentum
    with torch.no_grad():
        for b in batches:
            model(b[0] if isinstance(b, (list, tuple)) else b)
    return _bn_stats(model)


def check_recalibrate(recalibrate) -> CheckResult:
    """Check ``recalibrate(model, loader) -> model`` against ``torch.optim.swa_utils.update_bn``.

    Introduced in exercise notebook 06. Cases: list of tensors and DataLoader of (x, y) batches, unequal batch sizes, model in train and eval mode; compared with torch.optim.swa_utils.update_bn.

    Args:
        recalibrate: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``recalibrate`` is not callable.
    """
    _require_callable(recalibrate, "a function recalibrate(model, loader) -> model")
    run = _Runner(_forbidden_targets("update_bn"))

    def case(dtype, sizes, mode, loader_kind):
        def body():
            model = _randomized(_model_2d(dropout=False), dtype).train(mode == "train")
            with torch.no_grad():
                for bn in _bns(model):
                    bn.running_mean.add_(3.0)
                    bn.running_var.mul_(5.0)
                    bn.num_batches_tracked.fill_(10)
            xs = [torch.randn(n, 2, 4, 4, dtype=dtype) for n in sizes]
            if loader_kind == "DataLoader":
                ds = torch.utils.data.TensorDataset(torch.cat(xs), torch.zeros(sum(sizes)))
                loader = torch.utils.data.DataLoader(ds, batch_size=sizes[0], shuffle=False)
                batches = [[x, None] for x in torch.cat(xs).split(sizes[0])]
            else:
                loader = xs
                batches = xs
            weights = {k: v.clone() for k, v in model.named_parameters()}
            momenta = [bn.momentum for bn in _bns(model)]
            pre = copy.deepcopy(model)
            torch.optim.swa_utils.update_bn(loader, pre_expected := copy.deepcopy(model))
            expected = _bn_stats(pre_expected)
            out = _returned_model(run(recalibrate, model, loader), "recalibrate")
            got = _bn_stats(out)
            if len(got) != len(expected):
                raise _Failure(f"the returned model has {len(got)} BatchNorm layers, expected {len(expected)}",
                               hint="return the model you were given, with re-estimated statistics")
            for i, ((gm, gv), (em, ev)) in enumerate(zip(got, expected)):
                variants = [(hint, lambda reset=reset, mom=mom: _estimate(pre, batches, reset, mom)[i])
                            for hint, reset, mom in (
                                ("reset the running statistics first: the estimate still includes the old statistics", False, None),
                                ("use the cumulative average over the batches (momentum=None), not the exponential moving average", True, 0.1))]
                _compare(gm, em, f"running_mean of BN layer {i}", variants=[(h, lambda f=f: f()[0]) for h, f in variants],
                         hint="re-estimate: reset the statistics, then a training-mode forward per batch with momentum=None, no gradients")
                _compare(gv, ev, f"running_var of BN layer {i}", variants=[(h, lambda f=f: f()[1]) for h, f in variants])
            for k, v in out.named_parameters():
                if k in weights and not torch.equal(v, weights[k]):
                    raise _Failure(f"parameter {k} changed", hint="recalibrate only re-estimates statistics: run the forwards under torch.no_grad() and never step an optimizer")
            if [bn.momentum for bn in _bns(out)] != momenta:
                raise _Failure(f"BN momenta are {[bn.momentum for bn in _bns(out)]}, expected {momenta}",
                               hint="restore each BN layer's momentum after re-estimating")
            if out.training != (mode == "train"):
                raise _Failure(f"the model is in {'train' if out.training else 'eval'} mode, it was in {mode} mode",
                               hint="restore the model's previous mode at the end")
        return f"model in {mode} mode, {_dtname(dtype)}, {loader_kind} of batch sizes {list(sizes)}", body

    cases = [case(_F32, (4, 4, 4), "eval", "list"), case(_F64, (3, 3, 3, 3), "train", "DataLoader"),
             case(_F64, (5, 3, 2), "eval", "list")]
    return _run("recalibrate", cases)


# --------------------------------------------------------------------------------------------
# 07: fold_conv_bn, fold_linear_bn, fold_model
# --------------------------------------------------------------------------------------------
def _fold_expected(layer: nn.Module, bn: nn.Module, eps_outside=False, drop_layer_bias=False):
    """Folded (weight, bias) by the algebra, with switches for the classic mistakes."""
    w = layer.weight.detach()
    b = layer.bias.detach() if layer.bias is not None and not drop_layer_bias else torch.zeros(w.shape[0], dtype=w.dtype)
    std = bn.running_var.sqrt() + bn.eps if eps_outside else torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight.detach() / std
    return w * scale.reshape((-1,) + (1,) * (w.dim() - 1)), (b - bn.running_mean) * scale + bn.bias.detach()


def _bn_for(c: int, dtype, eps=1e-5, kind=nn.BatchNorm2d) -> nn.Module:
    return _randomize_bn(kind(c, eps=eps)).to(dtype).eval()


def _check_folded(folded, layer, bn, x, what, attrs):
    cls = type(layer)
    if not isinstance(folded, cls):
        raise _Failure(f"{what} returned a {_typename(folded)}, expected an {cls.__module__.split('.')[0]}.nn.{cls.__name__}",
                       hint=f"return a new nn.{cls.__name__} with the folded weight and bias")
    for attr, hint in attrs:
        if getattr(folded, attr) != getattr(layer, attr):
            raise _Failure(f"the folded layer has {attr}={getattr(folded, attr)!r}, the original {getattr(layer, attr)!r}",
                           hint=hint)
    if folded.bias is None:
        raise _Failure("the folded layer has no bias", hint="the fold always produces a bias: (b - running_mean) * gamma / sqrt(running_var + eps) + beta")
    with torch.no_grad():
        expected = bn(layer(x))
        y = folded(x)

    def with_params(wb):
        alt = copy.deepcopy(layer)
        with torch.no_grad():
            alt.weight.copy_(wb[0])
            if alt.bias is None:
                alt.bias = nn.Parameter(wb[1].clone())
            else:
                alt.bias.copy_(wb[1])
            return alt(x)

    _compare(y, expected, "output", variants=[
        ("eps goes inside the square root: gamma / sqrt(running_var + eps)", lambda: with_params(_fold_expected(layer, bn, eps_outside=True))),
        ("include the layer's own bias: b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta",
         lambda: with_params(_fold_expected(layer, bn, drop_layer_bias=True)) if layer.bias is not None else None),
    ], hint="W' = W * gamma / sqrt(running_var + eps) per output channel; b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta")


_CONV_ATTRS = [(a, f"the folded conv lost {a}: copy every setting of the original conv (stride, padding, dilation, groups, padding_mode)")
               for a in ("stride", "padding", "dilation", "groups", "padding_mode", "in_channels", "out_channels", "kernel_size")]


def check_fold_conv_bn(fold_conv_bn) -> CheckResult:
    """Check ``fold_conv_bn(conv, bn) -> conv`` against conv followed by bn in eval mode.

    Introduced in exercise notebook 07. Cases: Conv1d/2d/3d, bias None, stride, groups, dilation, padding='same', every padding_mode, float32/float64, BN eps 0.1.

    Args:
        fold_conv_bn: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``fold_conv_bn`` is not callable.
    """
    _require_callable(fold_conv_bn, "a function fold_conv_bn(conv, bn) -> conv")
    run = _Runner(_forbidden_targets("fold"), none_hint="conv.bias is None when the layer was built with bias=False: use zeros for it")

    def case(make_conv, x_shape, dtype, eps=1e-5, label=""):
        def body():
            conv = make_conv().to(dtype)
            kind = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[len(x_shape) - 2]
            bn = _bn_for(conv.out_channels, dtype, eps, kind)
            x = torch.randn(x_shape, dtype=dtype)
            with _Unchanged(conv=conv, bn=bn, hint="fold_conv_bn modified conv or bn: build a new conv (e.g. from a deep copy)"):
                folded = run(fold_conv_bn, conv, bn)
            _check_folded(folded, conv, bn, x, "fold_conv_bn", _CONV_ATTRS)
            if folded is conv:
                raise _Failure("fold_conv_bn returned the conv it was given", hint="return a new conv")
        return f"{label}, input {tuple(x_shape)} {_dtname(dtype)}" + (f", bn eps={eps}" if eps != 1e-5 else ""), body

    cases = [
        case(lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5), _F32, label="Conv2d(3, 4, 3, padding=1)"),
        case(lambda: nn.Conv2d(3, 4, 3, padding=1, bias=False), (2, 3, 5, 5), _F64, label="Conv2d(3, 4, 3, padding=1, bias=False)"),
        case(lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), (2, 4, 7, 7), _F64,
             label="Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)"),
        case(lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 5, 5), _F32, eps=0.1,
             label="Conv2d(3, 4, 3, padding=1, padding_mode='reflect')"),
        case(lambda: nn.Conv1d(3, 4, 3, padding=1, padding_mode="circular", bias=False), (2, 3, 6), _F64,
             label="Conv1d(3, 4, 3, padding=1, padding_mode='circular', bias=False)"),
        case(lambda: nn.Conv3d(2, 4, 3, padding=1, padding_mode="replicate"), (2, 2, 3, 4, 3), _F32,
             label="Conv3d(2, 4, 3, padding=1, padding_mode='replicate')"),
        case(lambda: nn.Conv2d(3, 4, 3, padding="same", dilation=2, bias=False), (2, 3, 6, 6), _F64,
             label="Conv2d(3, 4, 3, padding='same', dilation=2, bias=False)"),
    ]
    return _run("fold_conv_bn", cases)


def check_fold_linear_bn(fold_linear_bn) -> CheckResult:
    """Check ``fold_linear_bn(linear, bn) -> linear`` against linear followed by ``nn.BatchNorm1d`` in eval mode.

    Introduced in exercise notebook 07. Cases: bias True/False, float32/float64, BN eps 0.1.

    Args:
        fold_linear_bn: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``fold_linear_bn`` is not callable.
    """
    _require_callable(fold_linear_bn, "a function fold_linear_bn(linear, bn) -> linear")
    run = _Runner(_forbidden_targets("fold"), none_hint="linear.bias is None when the layer was built with bias=False: use zeros for it")

    def case(i, o, bias, dtype, eps=1e-5):
        def body():
            linear = nn.Linear(i, o, bias=bias).to(dtype)
            bn = _bn_for(o, dtype, eps, nn.BatchNorm1d)
            x = torch.randn(4, i, dtype=dtype)
            with _Unchanged(linear=linear, bn=bn, hint="fold_linear_bn modified linear or bn: build a new nn.Linear"):
                folded = run(fold_linear_bn, linear, bn)
            _check_folded(folded, linear, bn, x, "fold_linear_bn",
                          [(a, "keep the linear layer's sizes") for a in ("in_features", "out_features")])
            if folded is linear:
                raise _Failure("fold_linear_bn returned the layer it was given", hint="return a new nn.Linear")
        return f"Linear({i}, {o}, bias={bias}) {_dtname(dtype)}" + (f", bn eps={eps}" if eps != 1e-5 else ""), body

    cases = [case(5, 4, True, _F32), case(5, 4, False, _F64), case(6, 3, True, _F32, eps=0.1), case(3, 7, True, _F64)]
    return _run("fold_linear_bn", cases)


def _fold_model_a() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU()),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def _fold_model_b() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm1d(4),  # BN after ReLU: does not fold
        nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4),
        nn.Sequential(nn.Sequential(nn.Conv1d(4, 2, 3, dilation=2, padding=2, bias=False), nn.BatchNorm1d(2))),
        nn.Flatten(), nn.Linear(2 * 6, 2))


def check_fold_model(fold_model) -> CheckResult:
    """Check ``fold_model(model) -> model``: every conv/linear -> BN pair in ``nn.Sequential`` folded, eval mode.

    Introduced in exercise notebook 07. Cases: nested nn.Sequential, a BN after ReLU that must stay, models handed over in train and eval mode.

    Args:
        fold_model: the learner's function.

    Returns:
        a :class:`CheckResult` (never raises for a wrong or unfinished answer).

    Raises:
        TypeError: if ``fold_model`` is not callable.
    """
    _require_callable(fold_model, "a function fold_model(model) -> model")
    run = _Runner(_forbidden_targets("fold"))

    def case(make, shape, dtype, mode, remaining):
        def body():
            model = _randomized(make(), dtype).train(mode == "train")
            x = torch.randn(shape, dtype=dtype)
            n_bn = len(_bns(model))
            with _Unchanged(model=model, hint="fold_model changed the original model: fold a deep copy"):
                out = _returned_model(run(fold_model, model), "fold_model")
            if out is model:
                raise _Failure("fold_model returned the model it was given", hint="return a new model (fold a deep copy)")
            if any(m.training for m in out.modules()):
                raise _Failure("the folded model is in training mode", hint="return the folded model in eval mode")
            left = len(_bns(out))
            if left > remaining:
                raise _Failure(f"{left} BatchNorm layers left, expected {remaining}",
                               hint="fold every conv/linear -> BN pair, also inside nested nn.Sequential containers (recurse)")
            if left < remaining:
                raise _Failure(f"{left} BatchNorm layers left, expected {remaining}",
                               hint="only a BN directly after a conv/linear folds; a BN after e.g. ReLU must stay")
            identities = sum(isinstance(m, nn.Identity) for m in out.modules())
            if identities != n_bn - remaining:
                raise _Failure(f"{identities} nn.Identity layers, expected {n_bn - remaining}",
                               hint="replace each folded BN by nn.Identity (keeps the container's indices)")
            with torch.no_grad():
                expected = copy.deepcopy(model).eval()(x)
                y = run(out, x)
            _compare(y, expected, "output", hint="the folded model must compute what the original does in eval mode")
        label = "conv net" if make is _fold_model_a else "1d net with a BN after ReLU"
        return f"{label} in {mode} mode, input {tuple(shape)} {_dtname(dtype)}", body

    cases = [case(_fold_model_a, (2, 2, 4, 4), _F32, "eval", 0), case(_fold_model_b, (2, 3, 6), _F64, "train", 1),
             case(_fold_model_a, (3, 2, 4, 4), _F64, "train", 0)]
    return _run("fold_model", cases)


CHECKS: dict[str, Callable[[Any], CheckResult]] = {
    "channel_stats": check_channel_stats, "batch_norm_train": check_batch_norm_train,
    "update_running_stats": check_update_running_stats, "MyBatchNorm2d": check_MyBatchNorm2d,
    "bn_process": check_bn_process, "batch_norm_backward": check_batch_norm_backward,
    "BatchNormFunction": check_BatchNormFunction, "layer_norm": check_layer_norm,
    "instance_norm": check_instance_norm, "group_norm": check_group_norm,
    "freeze_batchnorm": check_freeze_batchnorm, "predict": check_predict, "recalibrate": check_recalibrate,
    "fold_conv_bn": check_fold_conv_bn, "fold_linear_bn": check_fold_linear_bn, "fold_model": check_fold_model,
}
"""Task name -> its check, for every task of ``coursekit.tasks.TASKS``."""
