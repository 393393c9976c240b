"""d. Grader overhead: ``coursekit grade`` on a solution notebook vs a plain execution of it as a
command (``jupyter nbconvert --execute``; target: grade <= 1.3 x plain + 2 s), also vs in-process
nbclient, and ``--jobs 2`` vs ``--jobs 1`` on 10 copies."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, NotAvailable, median, yes
from benchmarks.grading import exercise_notebooks, grade_options, isolation, run_grade, scores
from benchmarks.kernels import execute_notebook

KEY, NAME = "d", "grader"
TITLE = "d. Grader overhead (`coursekit grade`)"
GRADER_FACTOR, GRADER_SLACK_S = 1.3, 2.0


def _plain_command(path: Path) -> float:
    """A plain execution as a learner or CI would start it: ``jupyter nbconvert --execute`` in a new
    process (interpreter start, imports and kernel start included, like the timed grade command)."""
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-plain-") as tmp:
        cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               "--output-dir", tmp, str(path)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=path.parent, capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"nbconvert exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
        return dt


def run(quick: bool) -> dict:
    options = grade_options()
    stems = list(exercise_notebooks())
    if not stems:
        raise NotAvailable("no solution notebook with answer cells in solutions/")
    solution = REPO / "solutions" / f"{stems[0]}.ipynb"
    repeats = 1 if quick else 3
    plain, command, graded, score, reported = [], [], [], None, []
    for _ in range(repeats):  # interleaved: the plain executions, then grading, each repeat
        plain.append(execute_notebook(solution)[0])
        command.append(_plain_command(solution))
        dt, payload = run_grade([solution])
        graded.append(dt)
        score, reported = scores(payload)[0], isolation(payload)
    p, c, g = median(plain), median(command), median(graded)
    # Like for like: both commands start a Python process and a kernel. The in-process nbclient
    # time (no interpreter start, imports already paid) is reported too, as the stricter baseline.
    result = {
        "notebook": str(solution.relative_to(REPO)),
        "repeats": repeats,
        # The grader's default isolation (sandbox overhead itself is section g).
        "sandbox": "grader default (--sandbox not passed)" if "--sandbox" in options else "no --sandbox option",
        "reported_isolation": reported,
        "plain_nbclient_s": round(p, 2),
        "plain_command_s": round(c, 2),
        "coursekit_grade_s": round(g, 2),
        "ratio": round(g / c, 2),
        "ratio_vs_in_process": round(g / p, 2),
        "score": score,
        "target": f"grade <= {GRADER_FACTOR} x plain command + {GRADER_SLACK_S} s = {GRADER_FACTOR * c + GRADER_SLACK_S:.1f} s",
        "target_met": g <= GRADER_FACTOR * c + GRADER_SLACK_S,
        "target_met_vs_in_process": g <= GRADER_FACTOR * p + GRADER_SLACK_S,
    }
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-copies-") as tmp:
        copies = Path(tmp) / "submissions"
        copies.mkdir()
        for i in range(10):  # one learner each: copies of one exercise by one learner count once
            (copies / f"learner{i:02d}").mkdir()
            shutil.copy(solution, copies / f"learner{i:02d}" / solution.name)
        jobs = {}
        for n in (1, 2):
            dt, payload = run_grade([copies], jobs=n)
            got = scores(payload)
            jobs[n] = {"seconds": round(dt, 2), "graded": len(got), "all_full_score": all(s == m for s, m in got)}
        result["copies"] = 10
        result["jobs_1"] = jobs[1]
        result["jobs_2"] = jobs[2]
        result["jobs_speedup"] = round(jobs[1]["seconds"] / jobs[2]["seconds"], 2)
        result["jobs_repeats"] = 1
    return result


def render(sec: dict) -> list[str]:
    return [
        "| notebook | plain `jupyter nbconvert --execute` (s) | plain in-process nbclient (s) | coursekit grade (s) "
        "| ratio vs command | score | target | met |",
        "|---|---|---|---|---|---|---|---|",
        f"| {sec['notebook']} | {sec.get('plain_command_s', '-')} | {sec['plain_nbclient_s']} | "
        f"{sec['coursekit_grade_s']} | {sec['ratio']} | "
        f"{sec['score'][0]}/{sec['score'][1]} | {sec['target']} | {yes(sec['target_met'])} |",
        "",
        f"Median of {sec['repeats']} interleaved run(s). `coursekit grade` and the plain command are both timed as "
        "commands (interpreter, imports and kernel start included). Against the in-process nbclient time, which "
        f"pays none of that, grading is {sec.get('ratio_vs_in_process', '-')}x "
        f"(target met on that stricter baseline: {yes(sec.get('target_met_vs_in_process', False))}). "
        f"Isolation: {sec.get('sandbox', 'no --sandbox option')}"
        f"{', reported by the grader: ' + ', '.join(sec['reported_isolation']) if sec.get('reported_isolation') else ''}.",
        "",
        f"{sec['copies']} copies: `--jobs 1` {sec['jobs_1']['seconds']} s, `--jobs 2` {sec['jobs_2']['seconds']} s "
        f"(speed-up {sec['jobs_speedup']}×, one run each; all full score: "
        f"{sec['jobs_1']['all_full_score'] and sec['jobs_2']['all_full_score']}).",
    ]
