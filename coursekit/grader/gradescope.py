"""Gradescope: its autograder ``results.json`` and the autograder zip (``coursekit gradescope-bundle``).

Grader side (trusted). Gradescope runs one container per submission: ``setup.sh`` (from the zip's
root) once when it builds the image, then ``run_autograder`` for every submission, with the upload
in ``/autograder/submission/``; it reads ``/autograder/results/results.json``:
``{"score", "output", "visibility", "tests": [{"name", "score", "max_score", "status":
"passed"|"failed", "output", "visibility"}]}``.

The zip holds this repository's ``coursekit`` (installed with ``requirements/constraints.txt`` and
the CPU build of torch 2.13.0) and the built exercises as the trusted notebooks to grade against:
the grader only needs the instructor's cells around the answers, and leaving ``solutions/`` out
means no answer cell can read a solution from the container's disk.
"""
from __future__ import annotations

import argparse
import stat
import sys
import zipfile
from pathlib import Path

from coursekit.grader.assignment import LearnerGrade
from coursekit.grader.reports import feedback_text, format_points

__all__ = ["gradescope_report", "write_bundle", "SETUP_SH", "RUN_AUTOGRADER", "add_arguments", "run"]


def gradescope_report(grade: LearnerGrade, note: str = "") -> dict:
    """Gradescope's results object for one upload (one learner, any number of notebooks).

    One test per task of the assignment: ``score``/``max_score`` are the task's points, ``status`` is
    ``passed`` only for a task that passed, ``output`` is coursekit's status and feedback (the failing
    case and the hint); a task of a notebook that was not uploaded is ``missing`` with 0 points, so the
    tests' maximum is always the assignment's. Everything is ``visible``: the hidden inputs are drawn
    afresh for each run, so showing the failing case gives nothing away. The top-level ``output`` gives
    ``note`` (e.g. "no notebook found"), the score per exercise and the notebooks that did not count.
    """
    tests = []
    for e in grade.exercises:
        for t in e.tasks:
            ok = t.status == "pass"
            tests.append({"name": t.id, "score": t.points, "max_score": t.max_points, "status": "passed" if ok else "failed",
                          "output": "pass" if ok else f"{t.status}: {feedback_text(t)}", "visibility": "visible"})
    summary = [note] if note else []
    for e in grade.exercises:
        got = f"{format_points(e.score)}/{format_points(e.max_score)}"
        summary.append(f"lesson {e.exercise.lesson} ({e.notebook or 'no notebook'}): {got}" + (f", {e.error}" if e.error else ""))
    summary += [f"not counted: {n}: {why}" for n, why in grade.not_counted]
    summary.append(f"total: {format_points(grade.score)}/{format_points(grade.max_score)} ({grade.assignment.describe()})")
    return {"score": grade.score, "output": "\n".join(summary), "visibility": "visible", "tests": tests}


SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (its default Ubuntu 22.04
# with Python 3.10, or a newer one). Installs bubblewrap (the sandbox of every learner's kernel), g++
# (the grader's native layer, built once by `coursekit doctor`) and the course's pinned environment
# in /autograder/venv (the constraints hold pins for each Python).
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
apt-get update -qq
apt-get install -y -qq --no-install-recommends bubblewrap g++ python3 python3-venv python3-pip
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else
    "coursekit needs Python >= 3.10 (got %s): choose a newer base image" % sys.version.split()[0])'
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install -q --upgrade pip  # Ubuntu 22.04 ships pip 22.0
# the CPU build of torch first: from PyPI, torch==2.13.0 would pull several GB of CUDA packages
/autograder/venv/bin/pip install -q --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
/autograder/venv/bin/pip install -q -c requirements/constraints.txt .
/autograder/venv/bin/python -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
/autograder/venv/bin/python -m coursekit doctor || true
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission: grade each notebook under the submission directory
# against the trusted built exercises, in bubblewrap sandboxes, into Gradescope's results.json.
# Paths can be overridden (for testing the bundle outside Gradescope); COURSEKIT_SANDBOX set to
# the empty string leaves the choice to coursekit's default.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="${COURSEKIT_SOURCE:-$ROOT/source}"
SUBMISSION="${COURSEKIT_SUBMISSION:-$ROOT/submission}"
RESULTS="${COURSEKIT_RESULTS:-$ROOT/results/results.json}"
PYTHON="${COURSEKIT_PYTHON:-$ROOT/venv/bin/python}"
SANDBOX="${COURSEKIT_SANDBOX-require}"
export OMP_NUM_THREADS=1
mkdir -p "$(dirname "$RESULTS")"
rm -f "$RESULTS"
cd "$SOURCE" || exit 1
"$PYTHON" -m coursekit grade "$SUBMISSION" --solutions "$SOURCE/exercises" ${SANDBOX:+--sandbox "$SANDBOX"} \
    --timeout 60 --total-timeout 600 --gradescope "$RESULTS"
status=$?
if [ ! -s "$RESULTS" ]; then
  # the grader itself failed: still give Gradescope a result that says so
  printf '%s\n' '{"score": 0, "tests": [], "output": "The autograder failed before it could grade' \
    '(see the autograder output); please tell your instructor."}' | tr '\n' ' ' > "$RESULTS"
  exit 1
fi
# 0: graded; 1: a notebook could not be graded (reported in results.json); 2: no notebook found (idem);
# 3: --sandbox require refused (no working bubblewrap in this container): the fallback above reported it
[ "$status" -le 2 ] && exit 0 || exit "$status"
"""

_PACKAGE_FILES = ("pyproject.toml", "README.md", "requirements/constraints.txt")


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed date: the same repo gives the same zip
    mode = 0o755 if executable else 0o644
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def write_bundle(out, repo: Path | None = None) -> list[str]:
    """Write Gradescope's autograder zip to ``out``; return the member names.

    Members: ``setup.sh`` and ``run_autograder`` (mode 755) at the root, this repository's
    ``coursekit/`` package, ``pyproject.toml``, ``README.md``, ``requirements/constraints.txt``, and
    ``exercises/<stem>.ipynb`` for every exercise, built from ``solutions/`` exactly as ``coursekit
    build`` writes it (so the trusted copy is never a learner-edited file).

    Args:
        out: path of the zip to write.
        repo: the course repository. Default: the one around the current directory.
    """
    from coursekit.build import build_source, find_repo_root
    from coursekit.tasks import EXERCISES

    repo = Path(repo) if repo is not None else find_repo_root()
    missing = [p for p in (*_PACKAGE_FILES, "coursekit/__init__.py") if not (repo / p).is_file()]
    missing += [f"solutions/{ex.filename}" for ex in EXERCISES if not (repo / "solutions" / ex.filename).is_file()]
    if missing:
        raise FileNotFoundError(f"expected the course repository at {repo} (missing: {', '.join(missing)})")
    names = []
    with zipfile.ZipFile(out, "w") as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            _add(zf, name, text.encode(), executable=True)
            names.append(name)
        for rel in _PACKAGE_FILES:
            _add(zf, rel, (repo / rel).read_bytes())
            names.append(rel)
        for f in sorted((repo / "coursekit").rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                rel = f.relative_to(repo).as_posix()
                _add(zf, rel, f.read_bytes())
                names.append(rel)
        for ex in EXERCISES:
            rel = f"exercises/{ex.filename}"
            _add(zf, rel, build_source(repo / "solutions" / ex.filename).encode())
            names.append(rel)
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``coursekit gradescope-bundle``."""
    parser.add_argument("out", type=Path, metavar="OUT.zip", help="where to write the autograder zip")
    parser.add_argument("--repo", type=Path, default=None, help="the course repository (default: the one around the cwd)")


def run(args: argparse.Namespace) -> int:
    """``coursekit gradescope-bundle OUT.zip``: 0 when written, 1 when the repository is incomplete."""
    if args.out.suffix != ".zip":
        print(f"coursekit gradescope-bundle: expected an output name ending in .zip (got {args.out})", file=sys.stderr)
        return 2
    try:
        names = write_bundle(args.out, args.repo)
    except FileNotFoundError as exc:
        print(f"coursekit gradescope-bundle: {exc}", file=sys.stderr)
        return 1
    n = sum(1 for m in names if m.startswith("exercises/"))
    print(f"wrote {args.out}: setup.sh, run_autograder, coursekit and {n} trusted exercise notebooks. "
          "Upload it as the assignment's autograder (Gradescope's default Ubuntu 22.04 image or newer).")
    return 0
