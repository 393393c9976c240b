"""coursekit.grader.handcalls: the native layer that refuses autograd nodes called by hand.

What it proves: the library is built once per source and torch (a changed source is rebuilt, never a
stale library loaded); without a compiler the layer is missing and says why; loaded, the engine still
runs while a node called by hand (top level, in another thread, inside a custom Function's backward) is
counted, and in the grader's mode stops the process after naming the node, with torch's switches that
would silence it removed; and a lesson-04 answer that walks its own graph by hand (``tests/fixtures/
handcall_shortcut.py.txt``, right to 1e-15) earns nothing from ``coursekit grade --sandbox require``, while
the same answer passes with the layer removed (so this test can fail) and the honest solution keeps
its points.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursekit.grader import handcalls
from coursekit.grader import sandbox as sandbox_mod
from coursekit.verdicts import HAND_CALL_HINT

ROOT = Path(__file__).resolve().parents[1]
STEM = "04_bn_backward_exercises"
SHORTCUT = (ROOT / "tests" / "fixtures" / "handcall_shortcut.py.txt").read_text()
needs_bwrap = pytest.mark.skipif(sandbox_mod.check() is not None and not os.environ.get("COURSEKIT_REQUIRE_SANDBOX"),
                                 reason=f"bubblewrap unusable here: {sandbox_mod.check()}")


@pytest.fixture(scope="module")
def library():
    path, why = handcalls.library()
    if path is None:  # CI (like the sandbox tests): a missing compiler is a failure there
        (pytest.fail if os.environ.get("COURSEKIT_REQUIRE_SANDBOX") else pytest.skip)(why)
    return path


def test_the_library_is_keyed_by_its_source_and_rebuilt_when_it_changes(tmp_path, monkeypatch, library):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    assert handcalls.cached() is None
    built, why = handcalls.library()
    assert why is None and built.is_file() and handcalls.cached() == built
    changed = tmp_path / "handcalls.cpp"
    changed.write_text(handcalls.SOURCE.read_text() + "\n// another version\n")
    monkeypatch.setattr(handcalls, "SOURCE", changed)
    assert handcalls.cached() is None  # the old build is not this source's


def test_without_a_compiler_the_layer_is_missing_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    path, why = handcalls.library()
    assert path is None and "no C++ compiler" in why


_PROBE = """
import sys, threading, torch
from coursekit.grader import handcalls
handcalls.arm(sys.argv[1], int(sys.argv[2]), sys.argv[3])
x = torch.randn(4, 3, requires_grad=True)
(x * 2).sum().backward(); torch.autograd.grad((x * x).sum(), x)
print("engine", handcalls.hand_calls(), flush=True)
if int(sys.argv[2]) == handcalls.STOP:
    handcalls.disarm()
    print("switches", hasattr(torch.autograd, "_enable_record_function"), hasattr(torch._C._autograd, "_clear_callbacks"),
          flush=True)
(x * 3).grad_fn(torch.ones(4, 3))
print("top", handcalls.hand_calls(), flush=True)
t = threading.Thread(target=lambda: (x * 5).grad_fn(torch.ones(4, 3))); t.start(); t.join()
print("thread", handcalls.hand_calls(), flush=True)

class F(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        return a * 2

    @staticmethod
    def backward(ctx, g):
        with torch.enable_grad():
            inner = torch.ones(3, requires_grad=True) * 2
        return inner.grad_fn(g)[0]

F.apply(torch.ones(3, requires_grad=True)).sum().backward()
print("nested", handcalls.hand_calls(), flush=True)
"""


def _probe(library, mode, marker=""):
    return subprocess.run([sys.executable, "-c", _PROBE, str(library), str(mode), str(marker)],
                          capture_output=True, text=True, timeout=120)


def test_counting_sees_hand_calls_in_every_thread_and_not_the_engine(library):
    proc = _probe(library, handcalls.COUNT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:4] == ["engine 0", "top 1", "thread 2", "nested 3"], proc.stdout


def test_the_graders_mode_stops_the_process_at_the_first_hand_call_and_names_it(library, tmp_path):
    marker = tmp_path / "handcall"
    proc = _probe(library, handcalls.STOP, marker)
    assert proc.stdout.split("\n")[:2] == ["engine 0", "switches False False"], proc.stdout
    assert "top" not in proc.stdout and proc.returncode == -9
    assert marker.read_text() == "MulBackward0"


def _notebook(answer: str | None):
    nb = nbformat.read(ROOT / "solutions" / f"{STEM}.ipynb", as_version=4)
    if answer is not None:
        nb = copy.deepcopy(nb)
        next(c for c in nb.cells if c.get("id") == "answer-batch_norm_backward").source = answer
    return nb


@needs_bwrap
def test_a_graph_walked_by_hand_earns_nothing_and_passes_without_the_layer(tmp_path, monkeypatch, library):
    from coursekit.grader.grade import grade_notebook

    path = tmp_path / f"{STEM}.ipynb"
    nbformat.write(_notebook(SHORTCUT), path)
    refused = {t.id.split(".")[-1]: t for t in grade_notebook(path, ROOT / "solutions", sandbox="require").tasks}
    assert refused["batch_norm_backward"].points == 0
    assert "called an autograd node by hand" in refused["batch_norm_backward"].message
    assert refused["batch_norm_backward"].hint == HAND_CALL_HINT
    monkeypatch.setattr(handcalls, "library", lambda: (None, "hand-called autograd nodes not refused: removed by the test"))
    unguarded = grade_notebook(path, ROOT / "solutions", sandbox="require")
    by_name = {t.id.split(".")[-1]: t for t in unguarded.tasks}
    assert by_name["batch_norm_backward"].status == "pass", by_name["batch_norm_backward"]
    assert "removed by the test" in unguarded.sandbox
    honest = tmp_path / "honest" / f"{STEM}.ipynb"
    honest.parent.mkdir()
    nbformat.write(_notebook(None), honest)
    monkeypatch.undo()
    solved = grade_notebook(honest, ROOT / "solutions", sandbox="require")
    assert solved.score == solved.max_score > 0, solved.tasks


def test_the_check_counts_a_graph_walked_by_hand_once_the_library_is_built(library):
    """The check cell (advisory) reports the same verdict as the grade when ``coursekit doctor`` has built
    the library; with the guard off (``guard=False``) the shortcut passes, so the count is what fails it."""
    from coursekit.checks._core import run_check
    from coursekit.tasks import task_named

    task = task_named("batch_norm_backward")
    ns: dict = {}
    for cell in _notebook(SHORTCUT).cells:
        if cell.get("id") in ("setup", "given-batch_norm_forward", "answer-batch_norm_backward"):
            exec(cell.source, ns)
    refused = run_check(task, ns["batch_norm_backward"])
    assert not refused.passed and "called an autograd node by hand" in str(refused)
    assert run_check(task, ns["batch_norm_backward"], guard=False).passed
