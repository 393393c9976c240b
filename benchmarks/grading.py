"""``coursekit grade`` as the benchmark sees it: a command with options that may or may not exist yet.

Sections d, g and h time the real command (interpreter start, imports and kernels included, as an
instructor runs it). Options are detected from ``coursekit grade --help`` so that a section whose
option is missing says "not available (reason)" instead of failing or faking a number.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

from benchmarks.common import REPO, NotAvailable

__all__ = ["grade_options", "require_options", "run_grade", "scores", "isolation", "exercise_notebooks"]


def parse_options(help_text: str) -> frozenset[str]:
    """The long options (``--name``) that a ``--help`` text lists."""
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text))


@cache
def grade_options() -> frozenset[str]:
    """Options of ``python -m coursekit grade`` on this checkout; NotAvailable if the command is missing."""
    proc = subprocess.run([sys.executable, "-m", "coursekit", "grade", "--help"], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise NotAvailable(f"`coursekit grade --help` exited {proc.returncode}: {' '.join(tail)}")
    return parse_options(proc.stdout)


def require_options(*options: str) -> None:
    """NotAvailable naming every option in ``options`` that ``coursekit grade`` does not have."""
    missing = [o for o in options if o not in grade_options()]
    if missing:
        raise NotAvailable(f"`coursekit grade` has no {', '.join(missing)} option (yet)")


def run_grade(paths: list[Path], jobs: int = 1, extra: list[str] | tuple[str, ...] = ()) -> tuple[float, object]:
    """Run ``coursekit grade PATHS --jobs N --json FILE *extra``; return (wall seconds, the JSON).

    A non-zero exit, or no JSON written, raises RuntimeError with the command's last lines.
    """
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-grade-") as tmp:
        out = Path(tmp) / "grade.json"
        cmd = [sys.executable, "-m", "coursekit", "grade", *map(str, paths), "--jobs", str(jobs),
               "--json", str(out), *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            # Exit 1 means a submission could not be graded: its "NOT GRADED" line says why.
            lines = (proc.stdout + "\n" + proc.stderr).strip().splitlines()
            tail = [ln.strip() for ln in lines if "NOT GRADED" in ln][:2] or lines[-3:]
            opts = " ".join(a for a in extra if a.startswith("--"))  # option names; temp paths are noise
            raise RuntimeError(f"coursekit grade --jobs {jobs} --json {opts} exited {proc.returncode}: {' | '.join(tail)}")
        return dt, json.loads(out.read_text())


def scores(payload) -> list[tuple[float, float]]:
    """(score, max_score) of each submission in a ``--json`` report (its ``notebooks``; or one object or a list)."""
    items = payload.get("notebooks", [payload]) if isinstance(payload, dict) else payload
    return [(r.get("score"), r.get("max_score")) for r in items]


def isolation(payload) -> list[str]:
    """The isolation the grader reports per submission (its ``sandbox`` field, e.g. "bwrap"), distinct values;
    empty when the report has no such field."""
    items = payload.get("notebooks", [payload]) if isinstance(payload, dict) else payload
    return sorted({str(r["sandbox"]) for r in items if r.get("sandbox") is not None})


def exercise_notebooks() -> dict[str, list[str]]:
    """``{stem: [task names]}`` of every ``solutions/*.ipynb`` that has answer cells (``answer-<name>``).

    Read from the notebooks (the exercise interface) rather than from ``coursekit.tasks``, so the
    benchmark does not depend on how task definitions are organised in Python.
    """
    out = {}
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        names = [c["id"][len("answer-"):] for c in cells
                 if c.get("cell_type") == "code" and str(c.get("id", "")).startswith("answer-")]
        if names:
            out[path.stem] = names
    return out
