"""coursekit.verdicts: the one wording of a verdict that the check cell and the grader both render,
and the import arrows it removes (the grader no longer reaches up into the checks)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit import verdicts
from coursekit.checks._core import CheckResult
from coursekit.grader.reports import feedback_text
from coursekit.grader.results import TaskResult
from coursekit.tasks._task import AUTOGRAD_NAMES
from coursekit.verdicts import Feedback, case_summary, returned, static_feedback, unusable, with_hint, with_summary


def test_case_summary_says_which_cases_pass_and_which_fail():
    assert case_summary([], ["a", "b"]) == "all 2 cases fail"
    assert case_summary(["a", "b"], []) == "all 2 cases pass at run time"
    assert case_summary(["a"], ["b", "c"]) == "1/3 cases pass (a), failing: b; c"


def test_a_single_case_gets_no_summary():
    assert with_summary("case 1 x: wrong", [], ["x"]) == "case 1 x: wrong"
    assert with_summary("case 1 x: wrong", ["y"], ["x"]) == "case 1 x: wrong [1/2 cases pass (y), failing: x]"


def test_hint_is_joined_only_when_there_is_one():
    assert with_hint("wrong", None) == "wrong" and with_hint("wrong", "") == "wrong"
    assert with_hint("wrong", "divide by n") == "wrong — hint: divide by n"


def test_static_feedback_names_what_was_found_and_picks_the_hint():
    fb = static_feedback(["F.batch_norm", "torch.var"], AUTOGRAD_NAMES)
    assert fb == Feedback("fail", "uses F.batch_norm, torch.var: the task asks you to implement it yourself",
                          verdicts.STATIC_CASE, "do not use F.batch_norm: the task is to re-implement it")
    assert "derive and compute the gradients yourself" in static_feedback(["grad"], AUTOGRAD_NAMES).hint
    with pytest.raises(ValueError, match="expected at least one forbidden name"):
        static_feedback([], AUTOGRAD_NAMES)


def test_unusable_and_returned_wording():
    assert unusable("output", TypeError("x" * 300)) == f"unusable output (TypeError: {'x' * 200})"
    assert unusable("result", "too large") == "unusable result (too large)"
    assert returned({}, "a Tensor") is None
    assert returned({"returned": "a tuple of length 3"}, "a Tensor") == (
        "returned a tuple of length 3, expected a Tensor", "return a Tensor")


def test_check_cell_and_grader_reports_render_the_same_line():
    """The check cell's one-line verdict and the grader's one-text feedback are the same words,
    from the same parts (message, hint, case summary)."""
    message = with_summary("case 2 shape (4, 3) float64: var: max error 1", ["shape (4, 3) float32"], ["shape (4, 3) float64"])
    task = TaskResult("02.channel_stats", 0, 1, "fail", message, hint="divide by n")
    check = CheckResult("channel_stats", False, 2, 2, "case 2 shape (4, 3) float64", "var: max error 1", hint="divide by n",
                        passed_cases=["shape (4, 3) float32"], failed_cases=["shape (4, 3) float64"])
    assert check.summary() == "✘ channel_stats: case 2 shape (4, 3) float64: var: max error 1 — hint: divide by n " \
                              "[1/2 cases pass (shape (4, 3) float32), failing: shape (4, 3) float64]"
    assert feedback_text(task) == with_hint(message, "divide by n")
    assert case_summary(check.passed_cases, check.failed_cases) in feedback_text(task)


def _coursekit_imports(module) -> list[str]:
    tree = ast.parse(Path(module.__file__).read_text())
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    imported = [getattr(n, "module", None) or n.names[0].name for n in nodes]
    return [m for m in imported if m and m.startswith("coursekit")]


def test_verdicts_imports_nothing_from_coursekit_but_its_message_catalogue():
    """The task definitions may use it: an import of coursekit here would make a cycle. The one exception,
    the message catalogue (``coursekit.i18n``), itself imports nothing from coursekit."""
    from coursekit import i18n

    assert _coursekit_imports(verdicts) == ["coursekit.i18n"]
    assert _coursekit_imports(i18n) == []


def test_the_grader_does_not_import_the_checks():
    """No arrow from grader up to checks: grading a notebook and the CLI load no coursekit.checks module."""
    probe = ("import sys, coursekit.grader.grade, coursekit.grader.cli\n"
             "print(sorted(m for m in sys.modules if m.startswith('coursekit.checks')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
