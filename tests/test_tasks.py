"""coursekit.tasks: one definition per task, so the check cell and the grader agree on every answer.

For every entry of the ONE catalogue of answers (tests/wrong_answers.py: known-wrong answers with
the hint they must get, other correct answers, the solutions, the unfinished stubs), the check
verdict (visible cases, in this process) and the grader's status (hidden cases from another seed,
the kernel-side body run in this process through the grader's own file I/O and judge) agree on
pass vs not pass, and give the same hint; on the way, the body writes and the judge reads only the
keys the body declares. A few real ``coursekit grade`` runs close the loop.
"""

from __future__ import annotations

import contextlib

import nbformat
import numpy as np
import pytest
import torch
from declared_keys import KeyRecord, recording_task
from wrong_answers import HINTS, RIGHT, SOLUTIONS_DIR, STUBS, WRONG, solutions

from coursekit.checks import CHECKS
from coursekit.checks._core import static_findings, static_hint
from coursekit.grader import handcalls, in_kernel
from coursekit.grader.grade import _judge_outputs, _write_inputs, grade_paths
from coursekit.grader.guard import Scope
from coursekit.tasks import EXERCISES, TASKS, task_named
from coursekit.verdicts import HAND_CALL_HINT, hand_call

ENTRIES = (
    [(t, n, "wrong") for t in WRONG for n in WRONG[t]]
    + [(t, n, "right") for t in RIGHT for n in RIGHT[t]]
    + [(t, "stub", "stub") for t in STUBS]
)


@pytest.fixture(scope="module")
def solved():
    return solutions()


def grade_in_process(task, obj, tmp_path, seed=12345, guard=True):
    """The grader's verdict without a kernel: hidden cases, in_kernel's probe, the grader's reader and judge."""
    found = static_findings(task, obj)
    if found:
        return "fail", f"uses {', '.join(found)}", static_hint(found)
    cases = task.cases(np.random.default_rng(seed))
    task_dir = tmp_path / task.name
    task_dir.mkdir()
    _write_inputs(task_dir, [(c.params, c.arrays) for c in cases])
    ns = dict(vars(in_kernel))
    ns[task.name] = obj
    exec(compile(task.body, "<coursekit-body>", "exec"), ns)
    # the grader's kernel is locked for its whole life (guard.lock); here the same layers are armed
    # around the probe (no seccomp: this is the test process)
    # and where the grader's kernel would be stopped at an autograd node called by hand, its verdict
    noticed = handcalls.counter() if guard and task.forbids_autodiff else None
    with torch.random.fork_rng(devices=[]), (Scope(task.forbidden_ops, task.watch) if guard else contextlib.nullcontext()):
        ns["_coursekit_probe"](str(task_dir), ns["_coursekit_body"])
    if noticed:
        node = noticed()
        handcalls.disarm()
        if node:
            return "fail", hand_call(node), HAND_CALL_HINT
    verdict = _judge_outputs(task_dir, task, cases)
    return verdict.status, verdict.message, verdict.hint


def _obj(task_name, name, kind, solved):
    return {"wrong": lambda: WRONG[task_name][name], "right": lambda: RIGHT[task_name][name], "stub": lambda: STUBS[task_name]}[
        kind
    ]()


@pytest.mark.parametrize("task_name,name,kind", ENTRIES, ids=[f"{t}-{n}" for t, n, _ in ENTRIES])
def test_check_and_grader_agree(task_name, name, kind, solved, tmp_path):
    """Same pass/not-pass and the same hint from the check cell and the grader, for every catalogue entry;
    the body wrote and the judge read only keys the body declares (``Task.outputs``)."""
    task = task_named(task_name)
    obj = _obj(task_name, name, kind, solved)
    check = CHECKS[task_name](obj)
    keys = KeyRecord()
    status, message, hint = grade_in_process(recording_task(task, keys), obj, tmp_path)
    assert not keys.undeclared(task.outputs), keys.undeclared(task.outputs)
    assert check.passed == (status == "pass"), (str(check), status, message)
    assert check.hint == hint, (str(check), message, hint)
    if kind == "right":
        assert check.passed, str(check)
    else:
        assert not check.passed and status in ("fail", "error"), (str(check), status)
    if kind == "wrong" and HINTS[task_name][name] is not None:
        assert hint and HINTS[task_name][name] in hint, (name, message, hint)


@pytest.mark.parametrize("task_name", [t.name for t in TASKS.values()])
def test_solutions_pass_both(task_name, solved, tmp_path):
    """The solution passes the check and the grader, writing and reading only declared keys."""
    obj = solved[task_name]
    task = task_named(task_name)
    assert CHECKS[task_name](obj).passed
    keys = KeyRecord()
    assert grade_in_process(recording_task(task, keys), obj, tmp_path)[0] == "pass"
    assert not keys.undeclared(task.outputs), keys.undeclared(task.outputs)


def test_every_task_is_defined_once_with_all_its_facts():
    """One exercise per solution notebook, one task per answer cell, each with every field set."""
    notebooks = sorted(SOLUTIONS_DIR.glob("*.ipynb"))
    answer_cells = [c.id for nb in notebooks for c in nbformat.read(nb, as_version=4).cells
                    if c.get("id", "").startswith("answer-")]
    assert len(EXERCISES) == len(notebooks) and len(TASKS) == len(answer_cells)
    for t in TASKS.values():
        assert t.signature and t.body and callable(t.cases) and callable(t.judge) and t.points >= 1
        assert "_coursekit_body" in t.body and t.outputs is not None
        assert t.answer_cell == f"answer-{t.name}" and t.check_cell == f"check-{t.name}"
        visible, hidden = t.cases(np.random.default_rng(1)), t.cases(np.random.default_rng(2))
        assert [c.desc for c in visible] == [c.desc for c in hidden]  # same generator, different values
        diff = [k for c, d in zip(visible, hidden) for k in c.arrays if not np.array_equal(c.arrays[k], d.arrays[k])]
        assert diff, t.name



def test_a_task_name_defined_twice_is_refused():
    """Registering two tasks with one name raises instead of one silently replacing the other."""
    from dataclasses import replace

    from coursekit.tasks import _collect

    assert _collect(EXERCISES) == TASKS
    with pytest.raises(ValueError, match="'channel_stats' in lesson 02 and again in lesson 02"):
        _collect((EXERCISES[0], EXERCISES[0]))
    elsewhere = replace(EXERCISES[1], tasks=EXERCISES[1].tasks + (replace(EXERCISES[0].tasks[0], lesson="03"),))
    with pytest.raises(ValueError, match="'channel_stats' in lesson 02 and again in lesson 03"):
        _collect((EXERCISES[0], elsewhere))


def test_dispatcher_sees_the_kernel_through_a_captured_reference_and_a_built_name():
    """aten.native_batch_norm is recorded however F.batch_norm is reached, and judged as a call of it."""
    import torch.nn.functional as F

    bn = F.batch_norm
    x, g, b = torch.randn(4, 3, 5), torch.ones(3), torch.zeros(3)
    for call in (
        lambda: bn(x, None, None, g, b, training=True),
        lambda: getattr(F, "batch" + "_norm")(x, None, None, g, b, training=True),
        lambda: torch.nn.BatchNorm1d(3)(x),
        lambda: F.instance_norm(x),
    ):
        rec = in_kernel._CoursekitRecorder()
        with rec:
            call()
        assert "aten::native_batch_norm" in rec.ops


def test_autograd_inside_the_backward_is_seen_at_run_time():
    rec = in_kernel._CoursekitRecorder()
    x = torch.randn(3, requires_grad=True)
    y = (x * 2).sum()
    with rec:
        torch.autograd.grad(y, x)
    assert rec.autograd
    rec = in_kernel._CoursekitRecorder()
    with rec:
        (x.detach() * 2).sum()
    assert not rec.autograd


def test_hint_only_when_the_model_explains_the_result_far_better():
    """A float32-precision error in float64 gets the precision hint, never "eps inside the sqrt"."""
    result = CHECKS["batch_norm_train"](WRONG["batch_norm_train"]["stats_in_float32"])
    assert not result.passed and "eps" not in result.hint and "float32 precision" in result.hint


def test_verdict_names_passing_and_failing_cases_and_the_line():
    result = CHECKS["batch_norm_train"](WRONG["batch_norm_train"]["assumes_4d_input"])
    assert not result.passed
    assert "not enough values to unpack" in result.message and "n, c, h, w = x.shape" in result.message
    assert any("(2, 3, 4, 5)" in d for d in result.passed_cases)
    assert any("(4, 3)" in d for d in result.failed_cases)
    assert "cases pass" in str(result) and "failing:" in str(result)


def test_returned_input_and_dtype_errors_are_worded_as_the_learners_object():
    r = CHECKS["fold_conv_bn"](WRONG["fold_conv_bn"]["swallows_error_returns_input"])
    assert "you returned the original Conv2d" in r.message
    r = CHECKS["fold_conv_bn"](WRONG["fold_conv_bn"]["float32_layer"])
    assert "the folded conv2d has dtype float32" in r.message.lower() and "float64" in r.message


@pytest.mark.parametrize(
    "stem,answers",
    [
        (
            "02_bn_forward_exercises",
            {
                "answer-batch_norm_train": (
                    "import torch.nn.functional as F\n"
                    "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
                    "    return vars(F)['batch' + '_norm'](x, None, None, gamma, beta, training=True, eps=eps)\n"
                )
            },
        ),
        (
            "07_folding_exercises",
            {
                "answer-fold_conv_bn": (
                    __import__("inspect").getsource(__import__("torch.nn.utils.fusion", fromlist=["x"]))
                    + "\ndef fold_conv_bn(conv, bn):\n    return fuse_conv_bn_eval(conv, bn)\n"
                )
            },
        ),
    ],
)
def test_end_to_end_grade_agrees_with_the_check(stem, answers, tmp_path):
    """Real `coursekit grade` runs: an obfuscated library call fails, PyTorch's fusion code copied verbatim passes."""
    nb = nbformat.read(SOLUTIONS_DIR / f"{stem}.ipynb", as_version=4)
    for c in nb.cells:
        if c.get("id") in answers:
            c.source = answers[c.get("id")]
    path = tmp_path / f"{stem}.ipynb"
    nbformat.write(nb, path)
    (result,) = grade_paths([path], SOLUTIONS_DIR, timeout=60)
    status = {t.id.split(".")[1]: t for t in result.tasks}
    name = next(iter(answers))[len("answer-") :]
    ns: dict = {}
    exec(answers[f"answer-{name}"], ns)
    check = CHECKS[name](ns[name])
    assert check.passed == (status[name].status == "pass"), (str(check), status[name])
    if stem.startswith("02"):
        assert status[name].status == "fail"
    else:
        assert status[name].status == "pass", status[name]
