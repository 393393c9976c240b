"""Runs a task in-process for a check cell and renders the verdict.

Part of :mod:`coursekit.checks`. The check runs the task's own definition (``coursekit.tasks``):
its VISIBLE cases (the case generator seeded by the task's name), its kernel-side body executed
here by the same code the grader ships into the learner's kernel (``coursekit.grader.in_kernel``,
which records the aten ops the dispatcher runs), and its trusted judge. Every case runs; the
verdict names the first failing case, its message and hint, and which cases passed and failed.
"""

from __future__ import annotations

import ast
import contextlib
import html
import inspect
import json
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from coursekit.grader import handcalls
from coursekit.i18n import _
from coursekit.tasks._task import AUTOGRAD_NAMES
from coursekit.verdicts import case_label, case_summary, hint_text, static_feedback, with_hint

__all__ = ["CheckResult", "run_check", "run_cases", "static_findings", "static_hint"]


@dataclass
class CheckResult:
    """The verdict of one check: one line in a terminal, a small block in Jupyter.

    Attributes:
        task: the task name, e.g. ``"batch_norm_train"``.
        passed: every case agreed with PyTorch.
        cases_run: cases run (all of them).
        cases_total: cases the check has.
        failing_case: e.g. ``"case 3 shape (2, 3, 4, 5) float64"``, or None when passed.
        message: what was wrong in that case (max error and where, a wrong shape, an exception).
        max_error: largest absolute difference from the expected value, when values were compared.
        where: index of that largest difference.
        hint: what the mistake most likely is (recognised wrong answers), or None.
        passed_cases / failed_cases: the descriptions of the cases that passed / failed.
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
    passed_cases: list = field(default_factory=list)
    failed_cases: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def _which(self) -> str:
        return case_summary(self.passed_cases, self.failed_cases)

    def summary(self) -> str:
        """The one-line verdict (``coursekit.verdicts`` words it as the grader does)."""
        if self.passed:
            return _("✔ {task}: {passed}/{total} cases passed").format(task=self.task, passed=self.cases_run,
                                                                       total=self.cases_total)
        line = with_hint(_("✘ {task}: {case}: {message}").format(task=self.task, case=self.failing_case,
                                                                 message=self.message), self.hint)
        if self.cases_total > 1:
            line += f" [{self._which()}]"
        return line

    __str__ = summary

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        esc = html.escape
        if self.passed:
            return (
                '<div style="border-left:4px solid #2e7d32;padding:2px 8px;margin:2px 0">'
                f'<span style="color:#2e7d32">✔</span> <code>{esc(self.task)}</code>: '
                + esc(_("{passed}/{total} cases passed").format(passed=self.cases_run, total=self.cases_total))
                + "</div>"
            )
        hint = f"<br><b>{esc(_('hint:'))}</b> {esc(hint_text(self.hint))}" if self.hint else ""
        which = f"<br><small>{esc(self._which())}</small>" if self.cases_total > 1 else ""
        return (
            '<div style="border-left:4px solid #c62828;padding:2px 8px;margin:2px 0">'
            f'<span style="color:#c62828">✘</span> <code>{esc(self.task)}</code>: '
            f"{esc(str(self.failing_case))}<br>{esc(str(self.message))}{hint}{which}</div>"
        )


def _require(task, obj) -> None:
    if task.kind == "class":
        if not isinstance(obj, type):
            raise TypeError(f"expected {task.signature}, the class itself (got {type(obj).__name__}: {obj!r:.60})")
    elif not callable(obj):
        raise TypeError(f"expected a function {task.signature} (got {type(obj).__name__}: {obj!r:.60})")


def static_findings(task, obj) -> list[str]:
    """Forbidden names in the source of ``obj`` (the grader's static scan), [] when its source is unknown."""
    from coursekit.grader.scan import forbidden_uses

    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return []
    source = inspect.cleandoc("\n" + source) if source[:1].isspace() else source
    try:  # the answer's own code, without decorators (what registers it is not what it runs)
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                node.decorator_list = []
        source = ast.unparse(tree)
    except SyntaxError:
        pass
    glb = getattr(obj, "__globals__", None) or vars(inspect.getmodule(obj) or object)
    module = getattr(obj, "__module__", None)
    own = {n for n, v in dict(glb).items() if callable(v) and getattr(v, "__module__", None) == module} | {task.name}
    return forbidden_uses(source, task.forbidden_names, frozenset(own))


def _plain_json(value):
    return json.loads(json.dumps(value, default=str))


def run_cases(task, namespace: dict, cases, guard: bool = True) -> list:
    """Run the task's body on ``cases`` in this process with ``namespace``'s names: raw plain results.

    With ``guard`` (the default) what the task forbids is refused while the cases run
    (``coursekit.grader.guard.Scope``: every thread of this process); without it only this thread's
    operators are recorded (what the tests use to show that a shortcut needs the guard to fail).
    """
    from coursekit.grader import in_kernel
    from coursekit.grader.guard import Scope, refusal

    ns = dict(vars(in_kernel))
    ns.update(namespace)
    exec(compile(task.body, f"<coursekit-body-{task.name}>", "exec"), ns)
    scope = Scope(task.forbidden_ops, task.watch)
    noticed = handcalls.counter() if guard and task.forbids_autodiff else None
    results = []
    with scope if guard else contextlib.nullcontext():
        for case in cases:
            res = in_kernel._coursekit_run_case(ns["_coursekit_body"], _plain_json(case.params), case.arrays)
            res["meta"] = _plain_json(res["meta"])  # as the grader reads it back from JSON
            res["error"] = _plain_json(res["error"])
            node = noticed() if noticed else None
            results.append((res, [refusal("autograd", node)] if node else []))
    if noticed:
        handcalls.disarm()
    for res, own in results:  # noticed after the fact (a child process): every case ran with it
        res["refused"] = list(scope.refused) + own
    return [res for res, _ in results]


def run_check(task, obj, guard: bool = True) -> CheckResult:
    """Check ``obj`` against ``task`` on its visible cases (see the module docstring; ``guard``: :func:`run_cases`)."""
    from coursekit.tasks import judge_case

    _require(task, obj)
    seed = zlib.crc32(task.name.encode())
    with torch.random.fork_rng(devices=[]):  # case generators and judges build modules: their init draws
        torch.manual_seed(seed)
        cases = task.cases(np.random.default_rng(seed))
        raw = run_cases(task, {task.name: obj}, cases, guard)
        verdicts = [judge_case(task, c, r) for c, r in zip(cases, raw)]
    descs = [case_label(i, c.desc) for i, c in enumerate(cases, 1)]
    n = len(cases)
    passed = [c.desc for c, v in zip(cases, verdicts) if v.passed]
    failed = [c.desc for c, v in zip(cases, verdicts) if not v.passed]
    found = static_findings(task, obj)
    if found:  # as the grader: the static scan decides before any case
        static = static_feedback(found, AUTOGRAD_NAMES)
        return CheckResult(task.name, False, n, n, static.case, static.message, hint=static.hint,
                           passed_cases=passed, failed_cases=failed)
    if failed:
        i = next(i for i, v in enumerate(verdicts) if not v.passed)
        v = verdicts[i]
        return CheckResult(task.name, False, n, n, descs[i], v.message, v.max_error, v.where, v.hint, passed, failed)
    return CheckResult(task.name, True, n, n, passed_cases=passed)


def static_hint(found: list[str]) -> str:
    """The hint for names the static scan found (``coursekit.verdicts.static_feedback``'s)."""
    return static_feedback(found, AUTOGRAD_NAMES).hint
