"""i. coursekit beside nbgrader 0.9.6 and otter-grader 7.0.0 on the same lesson-02 assignment (each peer in
a venv of its own, torch pinned by the constraints file; hidden tests with coursekit's shapes, dtypes, eps
values and tolerance, fresh inputs every run): one correct and one untouched submission, and 10 mixed
submissions per submission, interleaved, every grader's scores checked. Optional: `--only i`."""
from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import median
from benchmarks.grading import require_options, run_grade, scores
from benchmarks.peers import NbgraderAssignment, OtterAssignment, ensure_env
from benchmarks.submissions import mixed_batch

KEY, NAME = "i", "peers"
TITLE = "i. Against nbgrader and otter-grader (lesson 02, same hidden tests)"
DEFAULT = False  # installs two environments (~2.5 GB, a few minutes the first time)

PLAN = (("02", "solved"), ("02", "untouched"), ("02", "wrong"), ("02", "solved"), ("02", "wrong"),
        ("02", "untouched"), ("02", "solved"), ("02", "wrong"), ("02", "solved"), ("02", "untouched"))
EXPECTED = {"solved": 2, "untouched": 0, "wrong": 1}
# Targets (issue 20), as ratios of coursekit's time to nbgrader's (and otter's for a single correct one).
TARGETS = {"single_correct_vs_nbgrader": 0.6, "single_correct_vs_otter": 1.0, "batch_jobs2_vs_nbgrader": 0.5,
           "batch_jobs1_vs_nbgrader": 0.8, "single_untouched_vs_nbgrader": 0.3}


def _coursekit(folder: Path, jobs: int) -> tuple[float, dict]:
    dt, payload = run_grade([folder], jobs=jobs, extra=["--sandbox", "require"])
    items = payload.get("notebooks", [payload]) if isinstance(payload, dict) else payload
    return dt, {Path(str(r.get("notebook", ""))).parent.name: s for r, (s, _) in zip(items, scores(payload))}


def _timed(fn) -> tuple[float, dict]:
    t0 = time.perf_counter()
    got = fn()
    return time.perf_counter() - t0, got


def _otter_parallel(otter: OtterAssignment, jobs: int) -> dict:
    """``otter run`` on every submission, ``jobs`` at a time (otter runs one submission per command)."""
    learners = list(otter.subs)
    if jobs <= 1:
        return otter.grade()
    shards = [learners[i::jobs] for i in range(jobs)]

    def run(shard):
        sub = OtterAssignment.__new__(OtterAssignment)
        sub.__dict__.update(otter.__dict__, subs={k: otter.subs[k] for k in shard})
        return sub.grade()

    out = {}
    with ThreadPoolExecutor(jobs) as pool:
        for part in pool.map(run, shards):
            out.update(part)
    return out


def run(quick: bool) -> dict:
    require_options("--sandbox", "--json")
    log: list[str] = []
    venvs = {peer: ensure_env(peer, log) for peer in ("nbgrader", "otter")}
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-peers-") as tmp:
        tmp = Path(tmp)
        subs = mixed_batch(tmp / "coursekit" / "batch", plan=PLAN)
        kinds = {s["learner"]: s["kind"] for s in subs}
        singles = {kind: mixed_batch(tmp / "coursekit" / kind, plan=(("02", kind),))[0]["path"].parent
                   for kind in ("solved", "untouched")}
        builders = {"nbgrader": NbgraderAssignment, "otter": OtterAssignment}
        batch, single = {}, {}
        for peer, cls in builders.items():
            batch[peer] = cls(tmp / peer / "batch", venvs[peer])
            for learner, kind in kinds.items():
                batch[peer].submit(learner, kind)
            for kind in ("solved", "untouched"):
                single[(peer, kind)] = cls(tmp / peer / kind, venvs[peer])
                single[(peer, kind)].submit("learner01", kind)
        contenders = {
            "coursekit --jobs 2": lambda: _coursekit(tmp / "coursekit" / "batch", 2),
            "coursekit --jobs 1": lambda: _coursekit(tmp / "coursekit" / "batch", 1),
            "nbgrader": lambda: _timed(batch["nbgrader"].grade),
            "otter": lambda: _timed(lambda: _otter_parallel(batch["otter"], 1)),
            "otter, two at a time": lambda: _timed(lambda: _otter_parallel(batch["otter"], 2)),
        }
        for kind, folder in singles.items():
            contenders[f"coursekit {kind}"] = lambda folder=folder: _coursekit(folder, 1)
            for peer in builders:
                contenders[f"{peer} {kind}"] = lambda a=single[(peer, kind)]: _timed(a.grade)
        times = {name: [] for name in contenders}
        got: dict[str, dict] = {}
        names = list(contenders)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                dt, result = contenders[name]()
                n = len(result) or 1
                times[name].append(dt / n)
                got[name] = result
    correct = {}
    for name, result in got.items():
        if name.endswith(("solved", "untouched")):
            kind = name.rsplit(" ", 1)[1]
            correct[name] = list(result.values()) == [EXPECTED[kind]]
        else:
            correct[name] = len(result) == len(kinds) and all(result.get(k) == EXPECTED[v] for k, v in kinds.items())
    med = {name: round(median(ts), 2) for name, ts in times.items()}
    ratio = {
        "single_correct_vs_nbgrader": med["coursekit solved"] / med["nbgrader solved"],
        "single_correct_vs_otter": med["coursekit solved"] / med["otter solved"],
        "batch_jobs2_vs_nbgrader": med["coursekit --jobs 2"] / med["nbgrader"],
        "batch_jobs1_vs_nbgrader": med["coursekit --jobs 1"] / med["nbgrader"],
        "single_untouched_vs_nbgrader": med["coursekit untouched"] / med["nbgrader untouched"],
    }
    return {
        "submissions": len(kinds), "mix": {k: list(kinds.values()).count(k) for k in EXPECTED}, "repeats": repeats,
        "install_log": log, "seconds_per_submission": med, "runs": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "scores_correct": correct, "all_scores_correct": all(correct.values()),
        "scores": {name: {str(k): v for k, v in result.items()} for name, result in got.items()},
        "ratios": {k: round(v, 3) for k, v in ratio.items()},
        "targets": TARGETS, "targets_met": {k: ratio[k] <= TARGETS[k] for k in TARGETS},
    }


def render(sec: dict) -> list[str]:
    med = sec["seconds_per_submission"]
    mix = ", ".join(f"{n} {k}" for k, n in sec["mix"].items())
    out = [f"Lesson 02 (2 tasks), {sec['submissions']} mixed submissions ({mix}); coursekit with `--sandbox require`; "
           f"{sec['repeats']} interleaved repeat(s), medians of seconds per submission (whole commands timed).", "",
           "| grader | 10 mixed, s/submission | one correct (s) | one untouched (s) |", "|---|---|---|---|",
           f"| coursekit | {med['coursekit --jobs 1']} (`--jobs 1`), {med['coursekit --jobs 2']} (`--jobs 2`) | "
           f"{med['coursekit solved']} | {med['coursekit untouched']} |",
           f"| nbgrader 0.9.6 `autograde` | {med['nbgrader']} | {med['nbgrader solved']} | {med['nbgrader untouched']} |",
           f"| otter-grader 7.0.0 `otter run` | {med['otter']} (one at a time), {med['otter, two at a time']} (two) | "
           f"{med['otter solved']} | {med['otter untouched']} |", ""]
    for key, target in sec["targets"].items():
        met = "**met**" if sec["targets_met"][key] else "**not met**"
        out.append(f"- {key.replace('_', ' ')}: {sec['ratios'][key]} (target ≤ {target}): {met}")
    wrong = {k: sec.get("scores", {}).get(k) for k, v in sec["scores_correct"].items() if not v}
    out.append(f"- Every grader scored every submission as expected (solved 2, wrong 1, untouched 0): "
               f"{sec['all_scores_correct']}" + ("" if sec["all_scores_correct"] else f" (got: {wrong})"))
    return out
