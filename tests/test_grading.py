"""coursekit grade: full marks for the solutions, zero for untouched exercises, and the attack suite.

Attack submissions are generated here from the solution notebooks (so they stay in sync); only the
truncated file is a static fixture (stored as .txt so notebook tooling leaves it alone). All submissions are
graded once per module, two at a time.
"""
import argparse
import copy
import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from coursekit.build import build_notebook
from coursekit.grader import cli as grading_cli
from coursekit.grader import grade as grading
from coursekit.grader.grade import grade_paths
from coursekit.grader.scan import forbidden_uses
from coursekit.tasks import EXERCISES
from coursekit.tasks._task import NORM_NAMES

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
FIXTURES = ROOT / "tests" / "fixtures"
TIMEOUT = 8.0  # per learner cell: short, so the infinite-loop attacks cost little


def _solution(stem):
    return nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)


def _cell(nb, cid):
    return next(c for c in nb.cells if c.get("id") == cid)


def _solved_02():
    return _solution("02_bn_forward_exercises")


def _with_answer(cid, source, nb=None):
    nb = copy.deepcopy(nb or _solved_02())
    _cell(nb, cid).source = source
    return nb


def _attacks():
    """name -> (notebook or raw bytes, file name). Lesson 02 unless said otherwise."""
    solved = _solved_02()
    exercise = build_notebook(solved)
    bnt = "answer-batch_norm_train"
    garbage = ("def channel_stats(x):\n    print('channel_stats: passed')\n"
               "    return torch.zeros(x.shape[1]), torch.ones(x.shape[1])\n")
    checks_edited = copy.deepcopy(exercise)
    for c in checks_edited.cells:
        if c.get("id", "").startswith("check-"):
            c.source = 'print("passed")'
    other = _solution("03_running_stats_exercises")
    relabelled = copy.deepcopy(other)
    relabelled.metadata["coursekit"]["lesson"] = "02"
    deleted = copy.deepcopy(solved)
    deleted.cells = [c for c in deleted.cells if not c.get("id", "").startswith("answer-")]
    unknown = copy.deepcopy(solved)
    unknown.metadata["coursekit"]["lesson"] = "99"
    return {
        "solved": solved,
        "untouched": exercise,
        "checks_edited": checks_edited,
        "allclose_patched": _with_answer("answer-channel_stats", (
            "import numpy as np\nimport torch\n"
            "torch.allclose = lambda *a, **k: True\ntorch.equal = lambda *a, **k: True\n"
            "np.allclose = lambda *a, **k: True\nnp.testing.assert_allclose = lambda *a, **k: None\n" + garbage)),
        "coursekit_patched": _with_answer("answer-channel_stats", (
            # every function of every loaded coursekit module (checks, reference maths) replaced
            "import sys, importlib\nimportlib.import_module('coursekit.' + 'ref' + 'erence')\n"
            "for name, mod in list(sys.modules.items()):\n    if name.startswith('coursekit'):\n"
            "        for k, v in list(vars(mod).items()):\n            if callable(v) and not k.startswith('_'):\n"
            "                setattr(mod, k, lambda *a, **kw: print('passed') or True)\n" + garbage)),
        "np_load_patched": _with_answer("answer-channel_stats", (
            "import numpy as np\nnp.load = lambda *a, **k: {'x': np.zeros((2, 3))}\n" + garbage)),
        "fake_report": _with_answer("answer-channel_stats", (
            "import json, pathlib\nfor name in ('report.json', 'results.json', '../report.json', 'res0.json'):\n"
            "    pathlib.Path(name).write_text(json.dumps({'ok': True, 'score': 2, 'max_score': 2}))\n"
            "print('02.channel_stats pass 1/1')\n" + garbage)),
        "loop_in_function": _with_answer(bnt, "def batch_norm_train(x, gamma, beta, eps=1e-5):\n    while True:\n        pass\n"),
        "loop_at_top_level": _with_answer(bnt, "while True:\n    pass\n"),
        "exit_in_cell": _with_answer(bnt, "import os\nos._exit(0)\n"),
        "kill_in_function": _with_answer(bnt, (
            "import os, signal\ndef batch_norm_train(x, gamma, beta, eps=1e-5):\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")),
        "library_call": _with_answer(bnt, (
            "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
            "    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n")),
        "env_probe": _with_answer("answer-channel_stats", (
            "import os\n_leak = 'COURSEKIT_TEST_TOKEN' in os.environ\n"
            "def channel_stats(x):\n    if _leak:\n        raise RuntimeError('the grader leaked its environment')\n"
            "    dims = [0, *range(2, x.dim())]\n    return x.mean(dim=dims), x.var(dim=dims, unbiased=False)\n")),
        "answers_deleted": deleted,
        "other_lesson": other,  # a lesson-03 notebook under lesson 02's file name
        "other_lesson_relabelled": relabelled,  # ... claiming to be lesson 02
        "unknown_lesson": unknown,
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every attack (and the static truncated file): name -> NotebookResult; files untouched."""
    root = tmp_path_factory.mktemp("submissions")
    paths = {}
    for name, nb in _attacks().items():
        d = root / name
        d.mkdir()
        paths[name] = d / "02_bn_forward_exercises.ipynb"
        nbformat.write(nb, paths[name])
    paths["truncated"] = root / "truncated" / "02_bn_forward_exercises.ipynb"
    paths["truncated"].parent.mkdir()
    shutil.copy(FIXTURES / "truncated.ipynb.txt", paths["truncated"])
    before = {n: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for n, p in paths.items()}
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSEKIT_TEST_TOKEN", "secret")  # must not reach the learner's kernel
    try:
        results = grade_paths(list(paths.values()), SOLUTIONS, timeout=TIMEOUT, jobs=2)
    finally:
        mp.undo()
    after = {n: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for n, p in paths.items()}
    assert before == after, "the grader wrote to a submission"
    by_path = {r.notebook: r for r in results}
    return {n: by_path[str(p)] for n, p in paths.items()}


def _status(result):
    return {t.id: t.status for t in result.tasks}


def test_solved_notebook_scores_full_marks(graded):
    r = graded["solved"]
    assert (r.score, r.max_score) == (2, 2) and r.error is None, r.tasks


def test_grader_environment_stays_out_of_the_kernel(graded):
    assert _status(graded["env_probe"]) == {"02.channel_stats": "pass", "02.batch_norm_train": "pass"}


def test_untouched_exercise_scores_zero(graded):
    r = graded["untouched"]
    assert r.score == 0 and r.max_score == 2 and r.error is None
    assert set(_status(r).values()) == {"missing"}


@pytest.mark.parametrize("attack", ["checks_edited", "allclose_patched", "coursekit_patched",
                                    "np_load_patched", "fake_report", "answers_deleted"])
def test_attacks_gain_nothing(graded, attack):
    r = graded[attack]
    assert r.error is None
    # the probe's I/O functions are captured before any answer runs (in_kernel.py): patching np.load
    # changes nothing, the honest batch_norm_train keeps its point and the garbage earns nothing
    zero = ("checks_edited", "answers_deleted")
    assert r.score == (0 if attack in zero else 1), r.tasks
    assert _status(r)["02.channel_stats"] != "pass"


@pytest.mark.parametrize("attack,status", [("loop_in_function", "timeout"), ("loop_at_top_level", "timeout"),
                                           ("exit_in_cell", "error"), ("kill_in_function", "error"),
                                           ("library_call", "fail")])
def test_a_broken_task_costs_that_task_only(graded, attack, status):
    r = graded[attack]
    assert _status(r) == {"02.channel_stats": "pass", "02.batch_norm_train": status}, r.tasks
    assert r.score == 1


def test_library_call_is_named(graded):
    msg = graded["library_call"].tasks[1].message
    assert "batch_norm" in msg and "yourself" in msg


def test_another_lessons_notebook_cannot_score_this_lesson(graded):
    r = graded["other_lesson"]
    assert r.lesson == "03" and not any(t.id.startswith("02.") for t in r.tasks)
    r = graded["other_lesson_relabelled"]
    assert r.lesson == "02" and r.score == 0 and set(_status(r).values()) == {"missing"}


def test_unreadable_or_unknown_notebooks_are_not_graded(graded):
    for name in ("truncated", "unknown_lesson"):
        r = graded[name]
        assert r.error and r.score == 0 and r.tasks == []
    assert "not a readable notebook" in graded["truncated"].error
    assert "99" in graded["unknown_lesson"].error


def test_every_solution_scores_full_marks_and_every_exercise_zero(tmp_path):
    stems = [ex.stem for ex in EXERCISES]
    for stem in stems:
        nbformat.write(build_notebook(_solution(stem)), tmp_path / f"{stem}.ipynb")
    untouched = grade_paths([tmp_path], SOLUTIONS)  # nothing attempted: no kernel is started
    assert [r.score for r in untouched] == [0] * len(stems)
    solved = grade_paths([SOLUTIONS / f"{s}.ipynb" for s in stems if s != "02_bn_forward_exercises"],
                         SOLUTIONS, jobs=2)
    for r in solved:
        assert r.score == r.max_score > 0, (r.notebook, r.tasks)


def test_cli_json_classroom_and_exit_codes(tmp_path, capsys):
    sub = tmp_path / "02_bn_forward_exercises.ipynb"
    nbformat.write(build_notebook(_solved_02()), sub)
    trusted = tmp_path / "trusted"  # a pristine built copy can stand in for solutions/ (Classroom)
    trusted.mkdir()
    shutil.copy(sub, trusted)
    args = argparse.Namespace(submissions=[str(sub)], json=tmp_path / "out.json", jobs=1, timeout=30.0,
                              total_timeout=300.0, classroom=str(tmp_path / "classroom.json"), solutions=trusted)
    assert grading_cli.run(args) == 0
    (out,) = json.loads((tmp_path / "out.json").read_text())["notebooks"]
    assert {"notebook", "score", "max_score", "tasks"} <= set(out) and out["score"] == 0
    assert {t["status"] for t in out["tasks"]} == {"missing"}
    assert set(out["tasks"][0]) >= {"id", "points", "max_points", "status", "message"}
    cls = json.loads((tmp_path / "classroom.json").read_text())  # scored against the whole course (assignment.py)
    assert cls["version"] == 1 and cls["status"] == "fail" and cls["max_score"] == 16  # every exercise: 16 points
    assert set(cls["tests"][0]) == {"name", "status", "score", "max_score", "message", "line_no"}
    assert "02.channel_stats" in capsys.readouterr().out
    truncated = tmp_path / "truncated.ipynb"
    shutil.copy(FIXTURES / "truncated.ipynb.txt", truncated)
    args.submissions = [str(sub), str(truncated)]
    args.json = args.classroom = None
    assert grading_cli.run(args) == 1  # one submission could not be graded
    args.submissions = [str(tmp_path / "empty_dir_that_does_not_exist")]
    assert grading_cli.run(args) == 1
    (tmp_path / "empty").mkdir()
    args.submissions = [str(tmp_path / "empty")]
    assert grading_cli.run(args) == 2


def test_forbidden_uses_scans_names_attributes_imports_and_strings():
    assert forbidden_uses("y = F.batch_norm(x, None, None)", NORM_NAMES) == ["batch_norm"]
    assert forbidden_uses("from torch.nn.functional import layer_norm", NORM_NAMES) == ["layer_norm"]
    assert forbidden_uses("m = getattr(nn, 'BatchNorm2d')", NORM_NAMES) == ["BatchNorm2d"]
    assert forbidden_uses("import coursekit.reference as R", frozenset()) == ["coursekit.reference"]
    assert forbidden_uses("y = coursekit.reference.batch_norm", frozenset()) == ["coursekit.reference"]
    assert forbidden_uses("%time y = x.mean()\ny = x.var()", NORM_NAMES) == []
    assert forbidden_uses("def f(x):\n    return x.mean()", NORM_NAMES) == []
    # calling one's own layer_norm from group_norm is fine; calling the library's is not
    own = "def group_norm(x, g):\n    return layer_norm(x, x.shape[1:])"
    assert forbidden_uses(own, NORM_NAMES, frozenset({"layer_norm", "group_norm"})) == []
    assert forbidden_uses(own, NORM_NAMES) == ["layer_norm"]
    assert forbidden_uses("y = F.layer_norm(x, (3,))", NORM_NAMES, frozenset({"layer_norm"})) == ["layer_norm"]


def test_total_time_limit_times_out_the_remaining_tasks(tmp_path):
    sub = tmp_path / "02_bn_forward_exercises.ipynb"
    nbformat.write(_solved_02(), sub)
    r = grading.grade_notebook(sub, SOLUTIONS, timeout=30, total_timeout=0.5)
    assert r.error is None and r.score == 0
    assert set(_status(r).values()) == {"timeout"}


def test_one_at_a_time_the_next_attempted_kernel_is_launched_ahead_in_its_own_sandbox(tmp_path, caplog, monkeypatch):
    """``--jobs 1``, sandboxed: the next attempted submission's kernel is launched while the current one
    runs (each submission still gets its own kernel and work directory), an untouched one gets none,
    and the scores are those of grading each alone."""
    import logging

    from coursekit.grader import sandbox as sandbox_mod

    if sandbox_mod.check() is not None:
        pytest.skip(f"bubblewrap unusable here: {sandbox_mod.check()}")
    subs = {"a": _solved_02(), "b": build_notebook(_solved_02()), "c": _with_answer("answer-channel_stats", "x = 1\n")}
    for name, nb in subs.items():
        (tmp_path / name).mkdir()
        nbformat.write(nb, tmp_path / name / "02_bn_forward_exercises.ipynb")
    scratch = Path(grading.tempfile.mkdtemp(prefix="ck-ahead-"))  # short: kernels' IPC socket paths live there
    monkeypatch.setattr(grading.tempfile, "tempdir", str(scratch))  # where the work directories go
    with caplog.at_level(logging.INFO, logger="coursekit.grader"):
        results = grade_paths([tmp_path], SOLUTIONS, TIMEOUT, jobs=1, sandbox="require")
    assert [r.score for r in results] == [2, 0, 1], [(r.notebook, r.tasks) for r in results]
    ahead = [r.getMessage().split(": ", 1)[0] for r in caplog.records if "kernel launch (ahead)" in r.getMessage()]
    assert ahead == [str(tmp_path / "c" / "02_bn_forward_exercises.ipynb")], ahead  # b is untouched
    started = [r.getMessage() for r in caplog.records if "kernel start took" in r.getMessage()]
    assert len(started) == 2 and len({m.split(": ", 1)[0] for m in started}) == 2
    left = list(scratch.iterdir())
    shutil.rmtree(scratch)
    assert not left  # every work directory removed, the one launched ahead included


def test_a_layer_missing_on_this_machine_is_in_the_report(tmp_path, monkeypatch):
    """Where seccomp cannot be installed (not x86-64 Linux), the grader says so in the result's sandbox line,
    from its own check of the machine (not the kernel's word)."""
    from coursekit.grader import seccomp

    monkeypatch.setattr(seccomp.platform, "machine", lambda: "aarch64")
    path = tmp_path / "02_bn_forward_exercises.ipynb"
    nbformat.write(_solved_02(), path)
    result = grading.grade_notebook(path, SOLUTIONS, TIMEOUT, sandbox="none")
    assert result.score == 2 and "seccomp filter not installed: Linux aarch64 (x86-64 Linux only)" in result.sandbox
