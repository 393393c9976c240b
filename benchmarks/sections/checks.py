"""e. Latency of each ``coursekit.checks.check_<name>`` called on the solution's implementation,
inside the solution notebook's kernel (target from issue 10: < 0.3 s per call)."""
from __future__ import annotations

import json

from benchmarks.common import REPO, NotAvailable, error_text, yes
from benchmarks.grading import exercise_notebooks
from benchmarks.kernels import execute_notebook

KEY, NAME = "e", "checks"
TITLE = "e. Check-call latency (`coursekit.checks`, solution implementations)"
CHECK_TARGET_MS = 300.0  # issue 10: checks still answer in < 0.3 s per call

# Appended to the executed solution notebook: times each check on the learner-facing object.
_CHECK_TIMER = r"""
import json as _json, time as _time, statistics as _st
from coursekit import checks as _checks
_out = {}
for _name in %(names)r:
    _fn, _obj = getattr(_checks, "check_" + _name, None), globals().get(_name)
    if _fn is None or _obj is None:
        _out[_name] = {"missing": "check" if _fn is None else "solution"}
        continue
    _ts, _res = [], None
    for _ in range(%(repeats)d):
        _t = _time.perf_counter(); _res = _fn(_obj); _ts.append(_time.perf_counter() - _t)
    _out[_name] = {"median_ms": round(1e3 * _st.median(_ts), 1), "passed": bool(getattr(_res, "passed", _res)),
                   "cases": getattr(_res, "cases_total", None)}
print("BENCH-JSON" + _json.dumps(_out))
"""


def run(quick: bool) -> dict:
    try:
        import coursekit.checks  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(f"coursekit.checks: {exc}") from exc
    exercises = exercise_notebooks()
    if not exercises:
        raise NotAvailable("no solution notebook with answer cells in solutions/")
    repeats = 3 if quick else 7
    rows = []
    for stem, names in exercises.items():
        try:
            _s, nb = execute_notebook(REPO / "solutions" / f"{stem}.ipynb",
                                      extra_cell=_CHECK_TIMER % {"names": names, "repeats": repeats})
            text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
            data = json.loads(text.split("BENCH-JSON", 1)[1])
        except Exception as exc:
            rows.append({"exercise": stem, "error": error_text(exc)})
            continue
        for name in names:
            rows.append({"exercise": stem, "check": f"check_{name}", **data.get(name, {"missing": "?"})})
    timed = [r["median_ms"] for r in rows if "median_ms" in r]
    # Solutions are found from solutions/ itself, so none can be missing; the key stays for old readers.
    return {"repeats": repeats, "checks": rows, "missing_solutions": [],
            "slowest_ms": max(timed) if timed else None, "target_ms": CHECK_TARGET_MS,
            "target_met": bool(timed) and max(timed) < CHECK_TARGET_MS}


def render(sec: dict) -> list[str]:
    out = [f"Median of {sec['repeats']} calls inside the solution notebook's kernel.", "",
           "| exercise | check | median (ms) | passed | cases |", "|---|---|---|---|---|"]
    for r in sec["checks"]:
        if "error" in r:
            out.append(f"| {r['exercise']} | – | – | notebook failed: {r['error']} | |")
        elif "missing" in r:
            out.append(f"| {r['exercise']} | {r['check']} | – | missing {r['missing']} | |")
        else:
            out.append(f"| {r['exercise']} | {r['check']} | {r['median_ms']} | {r['passed']} | {r['cases']} |")
    if sec.get("missing_solutions"):
        out += ["", f"Solutions not yet written: {', '.join(sec['missing_solutions'])}."]
    if sec.get("slowest_ms") is not None:
        target = f"; target every check < {sec['target_ms']:.0f} ms: {yes(sec['target_met'])}" if "target_ms" in sec else ""
        out += ["", f"Slowest check: {sec['slowest_ms']} ms{target}."]
    return out
