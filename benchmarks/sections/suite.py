"""f. (``--suite`` only) wall time of ``python -m pytest``, the whole suite."""
from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.common import REPO

KEY, NAME = "f", "suite"
TITLE = "f. Whole test suite"
DEFAULT = False  # minutes of wall time: only with --suite (or --only f)


def run(quick: bool) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return {"command": "python -m pytest -q", "wall_s": round(dt, 1), "exit_code": proc.returncode,
            "summary": lines[-1] if lines else ""}


def render(sec: dict) -> list[str]:
    return [f"`{sec['command']}`: {sec['wall_s']} s wall, exit code {sec['exit_code']}: `{sec['summary']}`"]
