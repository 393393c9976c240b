"""g. Sandbox overhead: ``coursekit grade --sandbox require`` vs ``--sandbox none`` on the same solved
submissions (lessons 02 and 03, ``--jobs 1``), interleaved; target: median per-repeat ratio <= 1.15x."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks.common import NotAvailable, iqr, median, ratios, yes
from benchmarks.grading import isolation, require_options, run_grade, scores
from benchmarks.submissions import solved_set

KEY, NAME = "g", "sandbox"
TITLE = "g. Sandbox overhead (`coursekit grade --sandbox require` vs `none`)"
SANDBOX_TARGET = 1.15  # issue 11


def run(quick: bool) -> dict:
    require_options("--sandbox")
    if shutil.which("bwrap") is None:
        raise NotAvailable("bubblewrap (bwrap) is not installed, so `--sandbox require` refuses to grade")
    repeats = 1 if quick else 6  # even: each mode runs first equally often (the first run meets cold caches)
    times = {"none": [], "require": []}
    got, reported = {}, {}
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-sandbox-") as tmp:
        subs = solved_set(Path(tmp))
        paths = [s["path"] for s in subs]
        for rep in range(repeats):
            for mode in (("none", "require") if rep % 2 == 0 else ("require", "none")):
                dt, payload = run_grade(paths, jobs=1, extra=["--sandbox", mode])
                times[mode].append(dt)
                got[mode], reported[mode] = scores(payload), isolation(payload)
    r = ratios(times["require"], times["none"])
    return {
        "submissions": [f"{s['learner']}/{s['path'].name} ({s['kind']})" for s in subs],
        "jobs": 1,
        "repeats": repeats,
        "none_s": round(median(times["none"]), 2),
        "require_s": round(median(times["require"]), 2),
        "times_none_s": [round(t, 2) for t in times["none"]],
        "times_require_s": [round(t, 2) for t in times["require"]],
        "ratio_require_over_none": round(median(r), 3),
        "ratio_iqr": iqr(r),
        "same_scores": got["none"] == got["require"],
        "reported_isolation": reported,  # what the grader says it did in each mode (its JSON "sandbox" field)
        "scores": got["require"],
        "target": SANDBOX_TARGET,
        "target_met": median(r) <= SANDBOX_TARGET,
    }


def render(sec: dict) -> list[str]:
    return [
        f"Submissions: {', '.join(sec['submissions'])}; `--jobs {sec['jobs']}`; whole command timed.", "",
        "| `--sandbox none` (s) | `--sandbox require` (s) | ratio require/none (median) | IQR | same scores | target | met |",
        "|---|---|---|---|---|---|---|",
        f"| {sec['none_s']} | {sec['require_s']} | {sec['ratio_require_over_none']} | "
        f"{sec['ratio_iqr'][0]}–{sec['ratio_iqr'][1]} | {sec['same_scores']} | ≤ {sec['target']}× | {yes(sec['target_met'])} |",
        "",
        f"{sec['repeats']} interleaved repeat(s), order alternating; ratio = median of per-repeat ratios. "
        f"Isolation the grader reported: {sec.get('reported_isolation', '–')}.",
    ]
