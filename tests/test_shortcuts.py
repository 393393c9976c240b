"""Run-time shortcuts earn nothing, in the check and in ``coursekit grade --sandbox require`` alike.

The catalogue's shortcuts (``wrong_answers.SHORTCUTS``: the library reached from another thread or
process, with the dispatch record switched off or edited, through operators a typed list missed,
through PyTorch's Python decompositions, copied at run time from a code object or from source read
from disk, differentiated by forward-mode AD or by autograd inside the backward, in this thread or
another) hide every name
from the static scan. ``tests/test_tasks.py`` proves each fails the check and the grader's judge
alike; here:

* the catalogue covers every class of shortcut in every lesson it applies to;
* with the run-time guard removed (and the operator list typed as it was), each one passes the
  check: the tests can fail, and the guard is what stops them; autograd's engine run in another
  thread passes with every layer but the thread refusal;
* real ``coursekit grade --sandbox require`` runs of notebooks mixing shortcuts and honest answers:
  the shortcuts earn 0, the honest answers beside them keep their points;
* the lists are derived: every operator that ``F.*``/``nn.*`` normalizations reach is refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil

import nbformat
import pytest
import torch
import wrong_answers as W
from wrong_answers import SHORTCUTS, SOLUTIONS_DIR, WRONG

from coursekit.checks._core import run_check
from coursekit.grader.grade import grade_paths
from coursekit.grader.sandbox import check as sandbox_check
from coursekit.tasks import task_named

# the typed operator list the dispatch record judged before the guard (for "the layer removed")
TYPED_OPS = {f"aten::{op}": "the library" for op in (
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "_batch_norm_impl_index", "batch_norm_stats", "batch_norm_elemt",
    "batch_norm_gather_stats", "batch_norm_update_stats", "native_layer_norm", "native_group_norm", "_fused_rms_norm",
    "native_batch_norm_backward", "batch_norm_backward", "native_layer_norm_backward", "native_group_norm_backward")}
ENTRIES = [(t, n) for t in SHORTCUTS for n in SHORTCUTS[t]]


def test_every_class_of_shortcut_is_in_the_catalogue_for_every_lesson_it_applies_to():
    by_lesson: dict[str, set] = {}
    for task, names in SHORTCUTS.items():
        by_lesson.setdefault(task_named(task).lesson, set()).update(names.values())
    assert {"thread", "process"} <= set.intersection(*by_lesson.values())
    assert {"record off", "record edited", "unlisted op", "decomposition", "copied code", "source exec",
            "library normalization"} <= by_lesson["02"]
    assert {"forward AD", "nested autograd", "autograd in a thread", "autograd by hand", "decomposition"} <= by_lesson["04"]
    assert {"copied code", "source exec", "decomposition"} <= by_lesson["05"]
    assert {"copied code", "source exec"} <= by_lesson["06"] & by_lesson["07"]


@pytest.mark.parametrize("task_name,name", ENTRIES, ids=[f"{t}-{n}" for t, n in ENTRIES])
def test_without_the_guard_the_shortcut_passes_the_check(task_name, name):
    """The same answer, checked with the guard off and the typed list: it gets through (so it can fail)."""
    task = task_named(task_name)
    before = dataclasses.replace(task, forbidden_ops=TYPED_OPS if task.forbidden_ops else {}, watch=(),
                                 forbid_nested_autograd=False)
    result = run_check(before, WRONG[task_name][name], guard=False)
    assert result.passed, str(result)


THREADED_AUTOGRAD = [(t, n) for t, n in ENTRIES if SHORTCUTS[t][n] == "autograd in a thread"]


@pytest.mark.parametrize("task_name,name", THREADED_AUTOGRAD, ids=[f"{t}-{n}" for t, n in THREADED_AUTOGRAD])
def test_autograd_in_a_thread_passes_every_layer_but_the_thread_refusal(task_name, name, monkeypatch):
    """The task as it is, the guard armed, threads allowed: the per-thread autograd record misses it."""
    import coursekit.grader.guard as guard

    task = task_named(task_name)
    assert run_check(task, WRONG[task_name][name]).hint.startswith("compute in the thread your function is called in")
    monkeypatch.setattr(guard, "threads_refused", lambda ops: False)
    assert run_check(task, WRONG[task_name][name]).passed


# ------------------------------------------------------------------------------ real grading
_HELPERS = ("_dims", "_v", "_bn", "_lib", "_in_thread", "_in_fork", "_bn_lib", "_stats_lib", "_copied",
            "_source_exec", "_x_from_cache", "_eps_from_cache", "_update_bn", "_fusion", "_bn_decomp_backward",
            "_evading", "_direct",
            "_running_stats_by_library", "_AutogradOfOwnForward", "_autograd_of", "_pool", "_by_hand",
            "_hand_walked")
_HEADER = ("import copy", "import types", "import torch", "import torch.nn.functional as F", "from torch import nn")


def _with_helpers(body: str) -> str:
    """``body`` after the imports and catalogue helpers it reaches (no more: the static scan reads the whole
    cell, and an unused helper's names would fail it before the run-time guard is reached)."""
    defined = {h for h in _HELPERS if re.search(rf"^(def|class) {h}\b", body, re.M)}
    chosen, todo = set(defined), [body]
    while todo:
        text = todo.pop()
        for h in _HELPERS:
            if h not in chosen and re.search(rf"\b{h}\b", text):
                chosen.add(h)
                todo.append(inspect.getsource(getattr(W, h)))
    helpers = "\n\n".join(inspect.getsource(getattr(W, h)) for h in _HELPERS if h in chosen and h not in defined)
    code = helpers + "\n\n" + body
    imports = [line for line in _HEADER if re.search(rf"\b{line.split()[-1]}\b", code)]
    return "\n".join(imports) + "\n\n" + code


def answer_source(task_name: str, name: str) -> str:
    """The shortcut as a learner's answer cell: the catalogue's code with its helpers, under the task's name."""
    obj = WRONG[task_name][name]
    if name in W.EVADING and task_name == "batch_norm_train":
        forward, run = W.EVADING[name]
        parts = {inspect.getsource(f) for f in (forward, run)}
        return _with_helpers("\n\n".join(sorted(parts)) + "\n\n"
                             f"def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
                             f"    return _evading({forward.__name__}, {run.__name__})(x, gamma, beta, eps)\n")
    src = inspect.getsource(obj)
    if isinstance(obj, type):
        base = inspect.getsource(W._BN2d) + "\n\n" if issubclass(obj, W._BN2d) else ""
        return _with_helpers(base + src + f"\n\n{task_name} = {obj.__name__}\n")
    lines = [ln for ln in src.splitlines() if not ln.startswith("@")]
    return _with_helpers("\n".join(lines).replace("def _(", f"def {task_name}(", 1) + "\n")


# one notebook per row: these answers replace the solution's; every other task keeps its honest answer
SUBMISSIONS = {
    "02a": ("02_bn_forward_exercises", {"channel_stats": "stats_in_a_forked_child"}),
    "02b": ("02_bn_forward_exercises", {"batch_norm_train": "recorder_ops_replaced"}),
    "02c": ("02_bn_forward_exercises", {"channel_stats": "stats_from_python_c", "batch_norm_train": "thread_pool"}),
    "02d": ("02_bn_forward_exercises", {"channel_stats": "stats_in_a_thread", "batch_norm_train": "batch_norm_with_update_op"}),
    "03": ("03_running_stats_exercises", {"update_running_stats": "running_stats_in_a_thread",
                                          "MyBatchNorm2d": "batch_norm_with_update_ops"}),
    "04a": ("04_bn_backward_exercises", {"batch_norm_backward": "torch_decomp_backward",
                                         "BatchNormFunction": "library_in_a_thread"}),
    "04b": ("04_bn_backward_exercises", {"batch_norm_backward": "forward_mode_ad",
                                         "BatchNormFunction": "autograd_of_own_forward"}),
    "04c": ("04_bn_backward_exercises", {"batch_norm_backward": "autograd_engine_in_a_thread",
                                         "BatchNormFunction": "autograd_engine_in_a_thread"}),
    "04d": ("04_bn_backward_exercises", {"BatchNormFunction": "autograd_engine_in_a_thread"}),
    "04e": ("04_bn_backward_exercises", {}),  # both answers keep their points in a thread-refusing kernel
    "04f": ("04_bn_backward_exercises", {"batch_norm_backward": "grad_fn_called_by_hand",
                                         "BatchNormFunction": "autograd_of_own_forward"}),
    "05": ("05_normalization_family_exercises", {"layer_norm": "reference_source_exec",
                                                 "group_norm": "torch_refs_code_copied"}),
    "06": ("06_pitfalls_exercises", {"recalibrate": "update_bn_code_copied"}),
    "07": ("07_folding_exercises", {"fold_conv_bn": "fusion_in_a_thread", "fold_model": "reference_code_copied"}),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if sandbox_check() is not None:
        pytest.skip(f"bubblewrap unavailable: {sandbox_check()}")
    root = tmp_path_factory.mktemp("shortcuts")
    paths = {}
    for key, (stem, answers) in SUBMISSIONS.items():
        nb = nbformat.read(SOLUTIONS_DIR / f"{stem}.ipynb", as_version=4)
        for c in nb.cells:
            task = c.get("id", "")[len("answer-"):]
            if c.get("id", "").startswith("answer-") and task in answers:
                c.source = answer_source(task, answers[task])
        (root / key).mkdir()
        paths[key] = root / key / f"{stem}.ipynb"
        nbformat.write(nb, paths[key])
    results = grade_paths(list(paths.values()), SOLUTIONS_DIR, timeout=60.0, jobs=2, sandbox="require")
    shutil.rmtree(root, ignore_errors=True)
    return {key: {t.id.split(".")[1]: t for t in r.tasks} for key, r in zip(paths, results)}


@pytest.mark.parametrize("key", list(SUBMISSIONS))
def test_graded_shortcuts_earn_nothing_and_honest_answers_keep_their_points(graded, key):
    stem, answers = SUBMISSIONS[key]
    tasks = graded[key]
    assert tasks, key
    for name, result in tasks.items():
        if name in answers:
            assert result.points == 0 and result.status in ("fail", "error"), (key, name, result)
            assert "NameError" not in result.message, ("the answer cell lacks a helper", key, name, result)
        else:
            assert result.points == result.max_points and result.status == "pass", (key, name, result)


def test_a_graded_shortcut_is_told_what_it_called(graded):
    assert "F.batch_norm" in graded["02d"]["batch_norm_train"].message
    assert "another process" in graded["02a"]["channel_stats"].message
    assert "torch._refs.native_group_norm" in graded["05"]["group_norm"].message
    assert "threading.Thread.start" in graded["04c"]["batch_norm_backward"].message
    assert "threading.Thread.start" in graded["04d"]["BatchNormFunction"].message
    # the kernel stopped by the native layer
    assert "called an autograd node by hand" in graded["04f"]["batch_norm_backward"].message, graded["04f"]


BY_HAND = [(t, n) for t, n in ENTRIES if SHORTCUTS[t][n] == "autograd by hand"]


@pytest.mark.parametrize("task_name,name", BY_HAND, ids=[f"{t}-{n}" for t, n in BY_HAND])
def test_autograd_by_hand_passes_every_layer_but_the_native_one(task_name, name, monkeypatch):
    """The task as it is, the guard armed, the native count off: nothing else sees nodes called by hand.
    (The grade's side, the kernel stopped, is ``tests/test_handcalls.py`` and row 04f above.)"""
    from coursekit.grader import handcalls

    if handcalls.cached() is None:  # built by `coursekit doctor` (CI runs it before the suite)
        handcalls.library()
    task = task_named(task_name)
    assert run_check(task, WRONG[task_name][name]).hint.startswith("write the backward yourself: calling grad_fn")
    monkeypatch.setattr(handcalls, "counter", lambda: None)
    assert run_check(task, WRONG[task_name][name]).passed


# ------------------------------------------------------------------------------ derived lists
def _reached(fn) -> set[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Trace(TorchDispatchMode):
        ops: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func._schema.name)
            return func(*args, **(kwargs or {}))

    trace = Trace()
    trace.ops = set()
    with trace:
        fn()
    return trace.ops


def _entry_points():
    F = torch.nn.functional
    x = torch.randn(4, 6, 5, requires_grad=True)
    w = torch.ones(6, requires_grad=True)
    rm, rv = torch.zeros(6), torch.ones(6)
    calls = {
        "F.batch_norm train": lambda: F.batch_norm(x, rm.clone(), rv.clone(), w, None, training=True),
        "F.batch_norm eval": lambda: F.batch_norm(x, rm, rv, w, None, training=False),
        "F.batch_norm no stats": lambda: F.batch_norm(x, None, None, training=True),
        "F.instance_norm": lambda: F.instance_norm(x, weight=w),
        "F.layer_norm": lambda: F.layer_norm(x, (5,)),
        "F.group_norm": lambda: F.group_norm(x, 3, w),
        "F.rms_norm": lambda: F.rms_norm(x, (5,)),
        "nn.BatchNorm1d": lambda: torch.nn.BatchNorm1d(6)(x),
        "nn.BatchNorm1d eval": lambda: torch.nn.BatchNorm1d(6).eval()(x),
        "nn.InstanceNorm1d": lambda: torch.nn.InstanceNorm1d(6, track_running_stats=True)(x),
        "nn.LayerNorm": lambda: torch.nn.LayerNorm(5)(x),
        "nn.GroupNorm": lambda: torch.nn.GroupNorm(2, 6)(x),
        "nn.RMSNorm": lambda: torch.nn.RMSNorm(5)(x),
    }
    return {k: (lambda f=f: f().sum().backward()) for k, f in calls.items()}


@pytest.mark.parametrize("label", list(_entry_points()))
def test_every_operator_a_normalization_reaches_is_refused(label):
    """Forward and backward of each ``F.*``/``nn.*`` normalization: every norm operator the dispatch trace
    shows is on the derived list, and with the guard armed over that list the call is refused."""
    from coursekit.grader.guard import REFUSED, Scope
    from coursekit.tasks._library import NORM_PATTERN, norm_ops
    from coursekit.tasks._task import NORM_OPS

    call = _entry_points()[label]
    norm = {op for op in _reached(call) if NORM_PATTERN.search(op.split("::")[-1])}
    assert norm <= set(norm_ops()), norm - set(norm_ops())
    with pytest.raises(RuntimeError, match=REFUSED), Scope(NORM_OPS):
        call()
