"""nbgrader and otter-grader on the course's lesson-02 assignment, for section i (``sections/peers.py``).

Each peer is installed into a virtual environment of its own (``python -m venv``, torch pinned by
``requirements/constraints.txt``), cached under ``~/.cache/coursekit-bench/peers``. The assignment
is built for each tool from ``solutions/02_bn_forward_exercises.ipynb``: its setup cell, its task
text and its two answer cells (the solution markers ``### BEGIN SOLUTION`` / ``### END SOLUTION`` are
nbgrader's own), and one hidden test per task, :data:`HIDDEN_TESTS`. The hidden tests draw fresh
random inputs on every run, with the shapes, dtypes, eps values, the gradient case and the tolerance
of coursekit's task definitions (``coursekit/tasks/lesson02.py``), and compare with PyTorch in
float64. Learner submissions are the same three kinds as coursekit's batch: solved, untouched, one
wrong answer (the unbiased variance of ``benchmarks.submissions.WRONG_ANSWERS``).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, NotAvailable
from benchmarks.submissions import WRONG_ANSWERS

__all__ = ["PEERS", "HIDDEN_TESTS", "ensure_env", "Assignment", "NbgraderAssignment", "OtterAssignment"]

CACHE = Path(os.environ.get("COURSEKIT_BENCH_CACHE", Path.home() / ".cache" / "coursekit-bench")) / "peers"
STEM = "02_bn_forward_exercises"
TASKS = ("channel_stats", "batch_norm_train")
PEERS = {"nbgrader": "nbgrader==0.9.6", "otter": "otter-grader==7.0.0"}

# The hidden tests, one per task: plain Python each tool runs after the learner's cells. Shapes,
# dtypes, eps values, the gradient case and the tolerance are coursekit's (tasks/lesson02.py,
# tasks/_task.tolerance: relative to 1 + |expected|, 1e-5 for float32 and 1e-10 for float64).
_COMMON = '''
import torch as _t
import torch.nn.functional as _F

def _bench_close(got, want):
    tol = 1e-10 if want.dtype == _t.float64 else 1e-5
    got, want = _t.as_tensor(got).double(), want.double()
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert ((got - want).abs() <= tol * (1 + want.abs())).all(), "values differ"

def _bench_x(shape, dtype):
    return (_t.randn(shape, dtype=_t.float64) * 2 + 0.5).to(dtype)
'''
HIDDEN_TESTS = {
    "channel_stats": _COMMON + '''
for _shape, _dt in [((4, 3), _t.float32), ((2, 3, 5), _t.float64), ((2, 3, 4, 5), _t.float32),
                    ((2, 3, 4, 5), _t.float64), ((2, 2, 3, 2, 3), _t.float32), ((2, 2, 3, 2, 3), _t.float64)]:
    _x = _bench_x(_shape, _dt)
    _dims = [0, *range(2, _x.dim())]
    _mean, _var = channel_stats(_x.clone())
    _bench_close(_mean, _x.double().mean(_dims).to(_dt))
    _bench_close(_var, _x.double().var(_dims, unbiased=False).to(_dt))
''',
    "batch_norm_train": _COMMON + '''
for _shape, _dt, _eps, _grad in [((4, 3), _t.float32, 1e-5, False), ((2, 3, 5), _t.float64, 1e-5, False),
                                 ((2, 3, 4, 5), _t.float32, 0.1, False), ((2, 3, 4, 5), _t.float64, 1e-5, False),
                                 ((2, 2, 3, 2, 3), _t.float64, 1e-3, False), ((2, 3, 4, 4), _t.float64, 1e-5, True)]:
    _x = _bench_x(_shape, _dt)
    _g, _b = _bench_x((_shape[1],), _dt), _bench_x((_shape[1],), _dt)
    _want = _F.batch_norm(_x.double(), None, None, _g.double(), _b.double(), training=True, eps=_eps)
    if not _grad:
        _bench_close(batch_norm_train(_x.clone(), _g, _b, eps=_eps), _want.to(_dt))
        continue
    _dy = _bench_x(_shape, _dt)
    _xs = [_x.clone().requires_grad_(True) for _ in range(2)]
    batch_norm_train(_xs[0], _g, _b, eps=_eps).backward(_dy)
    _F.batch_norm(_xs[1], None, None, _g, _b, training=True, eps=_eps).backward(_dy)
    _bench_close(_xs[0].grad, _xs[1].grad)
''',
}


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_env(peer: str, log: list[str]) -> Path:
    """The peer's virtual environment (created and installed on first use); its directory.

    NotAvailable when it cannot be installed (no registry, an unresolvable pin)."""
    spec = PEERS[peer]
    venv = CACHE / f"{peer}-{spec.split('==')[1]}-py{sys.version_info.major}{sys.version_info.minor}"
    done = venv / ".installed"
    if done.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(_python(venv)), "-m", "pip", "install", "-q", "-c", str(REPO / "requirements" / "constraints.txt"),
           spec, "torch", "numpy", "ipykernel"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "is ignored" not in ln][-2:]
        raise NotAvailable(f"could not install {spec} with the course's constraints: {' | '.join(tail)}")
    done.write_text(spec + "\n")
    log.append(f"installed {spec} into its own venv in {time.monotonic() - t0:.0f} s")
    return venv


def _cells(kind: str) -> list[dict]:
    """The assignment's cells from the solution notebook: setup, task text, answer cells (solved),
    with a test cell (empty here) after each answer; the learner's ``try-`` demos and the checks left out."""
    nb = json.loads((REPO / "solutions" / f"{STEM}.ipynb").read_text(encoding="utf-8"))
    keep = []
    for cell in nb["cells"]:
        cid = cell.get("id", "")
        if cid.startswith(("check-", "try-")):
            continue
        cell = copy.deepcopy(cell)
        cell.pop("outputs", None), cell.pop("execution_count", None)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        if cid == "setup":  # the course's setup without coursekit, which the peers' venvs do not have
            cell["source"] = ("import numpy as np\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
                              "torch.manual_seed(0)\ntorch.set_num_threads(1)\n")
        keep.append(cell)
    return keep


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _unsolved(source: str) -> str:
    """An answer cell as the learner receives it (the solution region replaced)."""
    head, _, rest = source.partition("### BEGIN SOLUTION")
    _, _, tail = rest.partition("### END SOLUTION")
    indent = head.splitlines()[-1] if head and not head.endswith("\n") else ""
    return head.rstrip(" ") + f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()" + tail


def _notebook(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                         "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def submission_cells(kind: str, answer_meta=lambda name: {}) -> list[dict]:
    """A learner's notebook of the given kind (solved, untouched, wrong), without test cells."""
    cells = _cells(kind)
    wrong_name, wrong_source = WRONG_ANSWERS["02"]
    for cell in cells:
        cid = cell.get("id", "")
        if not cid.startswith("answer-"):
            continue
        name = cid[len("answer-"):]
        cell["metadata"] = {**cell.get("metadata", {}), **answer_meta(name)}
        if kind == "untouched":
            cell["source"] = _unsolved(_source(cell))
        elif kind == "wrong" and name == wrong_name:
            cell["source"] = wrong_source
        elif kind not in ("solved", "wrong"):
            raise ValueError(f"expected kind 'solved', 'untouched' or 'wrong' (got {kind!r})")
    return cells


class Assignment:
    """One peer's course directory with the lesson-02 assignment and a set of submissions."""

    peer = ""

    def __init__(self, root: Path, venv: Path):
        self.root, self.venv = root, venv
        self.root.mkdir(parents=True, exist_ok=True)

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self) -> dict:
        # nothing of this process's Python or Jupyter: sections c-e put a kernel spec of coursekit's own
        # interpreter first on JUPYTER_PATH, and otter would then run the learner's notebook in it (and
        # score every submission 0, having no otter runtime there)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER"))}
        env.update(PATH=f"{self.venv / 'bin'}:{env.get('PATH', '')}", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   VIRTUAL_ENV=str(self.venv))
        return env

    def run(self, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=cwd, env=self.env(), capture_output=True, text=True)
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-3:]
            raise RuntimeError(f"{self.peer}: `{' '.join(Path(c).name if '/' in c else c for c in cmd[:3])}` "
                               f"exited {proc.returncode}: {' | '.join(tail)}")
        return proc


class NbgraderAssignment(Assignment):
    """nbgrader 0.9: ``source/lesson02`` with solution cells and hidden autograder tests,
    ``generate_assignment``, submissions in ``submitted/<learner>/lesson02``, ``autograde``."""

    peer = "nbgrader"

    def __init__(self, root: Path, venv: Path):
        super().__init__(root, venv)
        (root / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"c.CourseDirectory.root = {str(root)!r}\n"
            "c.CourseDirectory.course_id = 'bn'\n"
            "c.Autograde.create_student = True\n"
            "c.ExecutePreprocessor.timeout = 300\n")
        cells = []
        for cell in submission_cells("solved", self._solution_meta):
            cells.append(cell)
            cid = cell.get("id", "")
            if cid.startswith("answer-"):
                name = cid[len("answer-"):]
                cells.append({"cell_type": "code", "id": f"test-{name}", "execution_count": None, "outputs": [],
                              "metadata": {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1,
                                                        "grade_id": f"test-{name}", "schema_version": 3}},
                              "source": f"# hidden tests of {name}\n### BEGIN HIDDEN TESTS\n{HIDDEN_TESTS[name]}"
                                        "### END HIDDEN TESTS\n"})
        source = root / "source" / "lesson02"
        source.mkdir(parents=True, exist_ok=True)
        (source / f"{STEM}.ipynb").write_text(json.dumps(_notebook(cells), indent=1))
        self.run([self.bin("nbgrader"), "generate_assignment", "lesson02", "--force"], root)
        shutil.copy(root / "gradebook.db", root / "gradebook.base.db")  # the assignment, no grades yet
        self.release = json.loads((root / "release" / "lesson02" / f"{STEM}.ipynb").read_text())

    @staticmethod
    def _solution_meta(name: str) -> dict:
        return {"nbgrader": {"grade": False, "solution": True, "locked": False, "grade_id": f"answer-{name}",
                             "schema_version": 3}}

    def submit(self, learner: str, kind: str) -> None:
        """The released notebook with the learner's answer cells in place (as a learner would save it)."""
        nb = copy.deepcopy(self.release)
        answers = {c["id"]: c["source"] for c in submission_cells(kind)}
        for cell in nb["cells"]:
            if cell.get("id", "") in answers:
                cell["source"] = answers[cell["id"]]
        folder = self.root / "submitted" / learner / "lesson02"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{STEM}.ipynb").write_text(json.dumps(nb, indent=1))
        (folder / "timestamp.txt").write_text("2026-12-01 12:00:00.000000 UTC")

    def grade(self) -> dict[str, float]:
        """Autograde every submission; {learner: score}."""
        shutil.rmtree(self.root / "autograded", ignore_errors=True)
        shutil.copy(self.root / "gradebook.base.db", self.root / "gradebook.db")
        self.run([self.bin("nbgrader"), "autograde", "lesson02", "--force"], self.root)
        code = ("from nbgrader.api import Gradebook\n"
                f"gb = Gradebook('sqlite:///{self.root / 'gradebook.db'}')\n"
                "import json\n"
                "print(json.dumps({s.student.id: s.score for s in gb.assignment_submissions('lesson02')}))\n"
                "gb.close()\n")
        return json.loads(self.run([self.bin("python"), "-c", code], self.root).stdout.strip().splitlines()[-1])


class OtterAssignment(Assignment):
    """otter-grader 7: an autograder zip made by ``otter generate`` from exception-based test files
    (hidden), then ``otter run`` per submission (no container, as its documentation describes)."""

    peer = "otter"

    def __init__(self, root: Path, venv: Path):
        super().__init__(root, venv)
        tests = root / "tests"
        tests.mkdir(parents=True, exist_ok=True)
        for name, code in HIDDEN_TESTS.items():
            body = "\n".join("    " + ln if ln else ln for ln in code.splitlines())
            (tests / f"{name}.py").write_text(
                "from otter.test_files import test_case\n\nOK_FORMAT = False\n"
                f"name = {name!r}\npoints = 1\n\n\n@test_case(points=1, hidden=True)\n"
                f"def test_{name}({name}):\n{body}\n")
        (root / "requirements.txt").write_text("")
        self.zip = root / "autograder.zip"
        self.run([self.bin("otter"), "generate", "-t", "tests", "-o", str(self.zip), "-r", "requirements.txt"], root)
        self.subs: dict[str, Path] = {}

    def submit(self, learner: str, kind: str) -> None:
        folder = self.root / "submissions" / learner
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{STEM}.ipynb"
        path.write_text(json.dumps(_notebook(submission_cells(kind)), indent=1))
        self.subs[learner] = path

    def grade(self) -> dict[str, float]:
        """``otter run`` on each submission, one after the other; {learner: score}."""
        out = {}
        for learner, path in self.subs.items():
            res = path.parent / "out"
            shutil.rmtree(res, ignore_errors=True)
            res.mkdir()
            self.run([self.bin("otter"), "run", "-a", str(self.zip), "-o", str(res), "--no-logo", str(path)], path.parent)
            data = json.loads((res / "results.json").read_text())
            out[learner] = sum(t.get("score", 0) or 0 for t in data.get("tests", []))
        return out
