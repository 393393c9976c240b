"""j. Where one submission's grading time goes: ``coursekit grade -v`` on one solved and one untouched
lesson-02 notebook, each step's duration from the grader's step log, the interpreter start and imports
from when the first step's line arrives."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import REPO, median
from benchmarks.grading import require_options
from benchmarks.submissions import mixed_batch

KEY, NAME = "j", "profile"
TITLE = "j. Profile of one submission (`coursekit grade -v` step log)"
PLAN = (("02", "solved"), ("02", "untouched"))
STARTUP = "interpreter start, imports, options"
EXIT = "after the last step (exit, interpreter shutdown)"
UNACCOUNTED = "between steps (not logged)"
_STEP = re.compile(r"coursekit\.grader: (?P<who>.+?): (?P<step>.+) took (?P<seconds>[0-9.]+) s$")


def parse_step_log(lines: list[tuple[float, str]]) -> list[tuple[float, str, float]]:
    """``(arrival seconds, text)`` lines of ``coursekit grade -v``'s stderr -> ``(arrival, step, seconds)``
    for each step line, in order; other lines are ignored."""
    steps = []
    for arrived, text in lines:
        m = _STEP.search(text.rstrip())
        if m:
            steps.append((arrived, m["step"], float(m["seconds"])))
    return steps


def breakdown(steps: list[tuple[float, str, float]], wall: float) -> dict[str, float]:
    """Seconds per step (repeated steps summed, e.g. every instructor cell), plus the start before the
    first step ended (its line's arrival minus its duration), the exit after the last line arrived, and
    what no step accounts for."""
    if not steps:
        raise ValueError("expected step lines from `coursekit grade -v`, got none")
    out: dict[str, float] = {STARTUP: steps[0][0] - steps[0][2]}
    for _, name, seconds in steps:
        out[name] = out.get(name, 0.0) + seconds
    out[EXIT] = wall - steps[-1][0]
    out[UNACCOUNTED] = wall - sum(out.values())
    return out


def _graded(path: Path, sandbox: str) -> tuple[float, list[tuple[float, str]]]:
    """Run ``coursekit grade -v PATH`` once: (wall seconds, stderr lines with their arrival times)."""
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-profile-") as tmp:
        cmd = [sys.executable, "-m", "coursekit", "grade", str(path), "-v", "--sandbox", sandbox,
               "--json", str(Path(tmp) / "grade.json")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[tuple[float, str]] = []

        def read() -> None:  # stderr is line-buffered: each step's line arrives when the step ends
            for line in proc.stderr:
                lines.append((time.perf_counter() - t0, line))

        reader = threading.Thread(target=read)
        reader.start()
        code = proc.wait()
        wall = time.perf_counter() - t0
        reader.join()
        if code != 0:
            raise RuntimeError(f"coursekit grade -v exited {code}: {' | '.join(t for _, t in lines[-3:])}")
        return wall, lines


def run(quick: bool) -> dict:
    require_options("--verbose")
    sandbox = "require" if shutil.which("bwrap") else "none"
    repeats = 1 if quick else 5
    walls, parts = defaultdict(list), defaultdict(lambda: defaultdict(list))
    order: dict[str, None] = {}
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-profile-") as tmp:
        subs = mixed_batch(Path(tmp), PLAN)
        for _ in range(repeats):
            for sub in subs:  # interleaved: the machine's load falls on both alike
                wall, lines = _graded(sub["path"], sandbox)
                walls[sub["kind"]].append(wall)
                for name, seconds in breakdown(parse_step_log(lines), wall).items():
                    parts[sub["kind"]][name].append(seconds)
                    order.setdefault(name)
    kinds = [kind for _, kind in PLAN]
    return {
        "submissions": [f"{lesson} {kind}" for lesson, kind in PLAN],
        "sandbox": sandbox,
        "repeats": repeats,
        "wall_s": {k: round(median(walls[k]), 2) for k in kinds},
        "steps": [{"step": name, **{k: (round(median(parts[k][name]), 3) if parts[k][name] else None) for k in kinds}}
                  for name in order],
    }


def render(sec: dict) -> list[str]:
    kinds = [s.split(" ", 1)[1] for s in sec["submissions"]]
    lines = [f"`coursekit grade -v --sandbox {sec['sandbox']}` on one lesson-02 notebook per column, "
             f"{sec['repeats']} interleaved repeat(s), medians in seconds (a step that runs several times, "
             "such as the instructor's cells, is summed).", "",
             "| step | " + " | ".join(f"{k} (s)" for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    for row in sec["steps"]:
        cells = ["–" if row.get(k) is None else f"{row[k]:.3f}" for k in kinds]
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    lines.append("| **whole command (wall)** | " + " | ".join(f"**{sec['wall_s'][k]:.2f}**" for k in kinds) + " |")
    lines += ["", f"\"{STARTUP}\": from the start of the process to the first step (the arrival of its log "
              f"line minus its duration). \"{EXIT}\": from the last step's line to the end of the process. "
              f"\"{UNACCOUNTED}\": the wall time minus every row above."]
    return lines
