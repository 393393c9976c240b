"""The course's timed claims, measured: ``python benchmarks/run.py [--quick] [--suite] [--only a,c]``.

Writes ``benchmarks/results.json`` (everything, machine-readable) and ``benchmarks/RESULTS.md``
(the same as tables). Timed claims live here and never in tests: timings on a shared CPU swing by
a factor of several, so every ratio below comes from *interleaved* runs (the contenders take turns
inside each repeat, so a burst of load hits both) and is reported as a median over repeats.

Sections (each degrades to "not available (reason)" when the component it measures is missing):

a. ``coursekit.reference.batch_norm`` vs ``torch.nn.functional.batch_norm``, training mode,
   (32, 64, 32, 32) float32: time ratio, median of interleaved repeats.
b. ``coursekit.reference.fold_model`` on a conv-BN-ReLU CNN (3 blocks, 64 channels, 32x32, batch 32,
   ``torch.inference_mode``) vs the unfused model and vs ``torch.fx.experimental.optimization.fuse``;
   targets: folded >= 1.15x faster than unfused, and within 5 % of PyTorch's fused model.
c. Wall time of every ``notebooks/*.ipynb`` and ``solutions/*.ipynb`` executed with nbclient in a
   fresh kernel with ``OMP_NUM_THREADS=1`` (as CI does), kernel start included; flagged at >= 30 s.
d. Grader overhead: ``coursekit grade`` on a solution notebook vs a plain execution of it as a command
   (``jupyter nbconvert --execute``; target: grade <= 1.3 x plain + 2 s), also vs in-process nbclient, and ``--jobs 2`` vs ``--jobs 1`` on 10 copies.
e. Latency of each ``coursekit.checks.check_*`` called on the solution's implementation.
f. (``--suite`` only) wall time of ``python -m pytest``, the whole suite.

``--only`` re-measures some sections and keeps the others from the existing results.json; each
section records when it was measured and the machine's load average at the time.
"""
from __future__ import annotations

import os

# Before torch is imported anywhere (here or in kernels started from here): one thread, as CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import datetime as _dt
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = Path(__file__).resolve().parent
SECTIONS = {
    "a": "batch_norm",
    "b": "folding",
    "c": "notebooks",
    "d": "grader",
    "e": "checks",
    "f": "suite",
}
FOLD_SPEEDUP_TARGET = 1.15
FOLD_VS_FX_TOLERANCE = 0.05
NOTEBOOK_LIMIT_S = 30.0
GRADER_FACTOR, GRADER_SLACK_S = 1.3, 2.0


class NotAvailable(Exception):
    """A component a section needs does not exist (yet): the section says so instead of a number."""


# --- small utilities -----------------------------------------------------------------------------

def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def median(xs) -> float:
    return statistics.median(xs)


def machine() -> dict:
    info = {
        "cores": os.cpu_count(),
        "cpu_model": None,
        "ram_gb": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except Exception:
        info["git_commit"] = None
    return info


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, number: int) -> dict[str, list[float]]:
    """Seconds per call of each function, per repeat; the order rotates every repeat."""
    names = list(fns)
    times = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            fn = fns[n]
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[n].append((time.perf_counter() - t0) / number)
    return times


def ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


# --- a. reference batch_norm vs F.batch_norm ------------------------------------------------------

def bench_batch_norm(quick: bool) -> dict:
    import torch
    import torch.nn.functional as F

    try:
        from coursekit.reference import batch_norm as ref_batch_norm
    except ImportError as exc:
        raise NotAvailable(f"coursekit.reference.batch_norm: {exc}") from exc
    torch.manual_seed(0)
    shape = (32, 64, 32, 32)
    x = torch.randn(shape)
    w, b = torch.rand(64) + 0.5, torch.randn(64)
    stats = {k: (torch.zeros(64), torch.ones(64)) for k in ("ref", "torch")}

    def ref():
        rm, rv = stats["ref"]
        return ref_batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

    def tor():
        rm, rv = stats["torch"]
        return F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)

    with torch.no_grad():
        max_err = (ref() - tor()).abs().max().item()
        stats_err = max((stats["ref"][i] - stats["torch"][i]).abs().max().item() for i in range(2))
        repeats, number = (15, 3) if quick else (31, 5)
        interleaved({"ref": ref, "torch": tor}, 2, 1)  # warm-up (allocator, first-call costs)
        t = interleaved({"ref": ref, "torch": tor}, repeats, number)
    r = ratios(t["ref"], t["torch"])
    return {
        "input": f"{tuple(shape)} float32, training=True",
        "repeats": repeats,
        "calls_per_repeat": number,
        "reference_ms": round(median(t["ref"]) * 1e3, 3),
        "torch_ms": round(median(t["torch"]) * 1e3, 3),
        "ratio_reference_over_torch": round(median(r), 3),
        "ratio_iqr": [round(q, 3) for q in statistics.quantiles(r, n=4)[::2]],
        "max_abs_diff_output": max_err,
        "max_abs_diff_running_stats": stats_err,
    }


# --- b. folding ---------------------------------------------------------------------------------

def _cnn():
    from torch import nn

    layers, c_in = [], 3
    for _ in range(3):
        layers += [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU()]
        c_in = 64
    return nn.Sequential(*layers)


def bench_folding(quick: bool) -> dict:
    import torch
    from torch import nn

    try:
        from coursekit.reference import fold_model
    except ImportError as exc:
        raise NotAvailable(f"coursekit.reference.fold_model: {exc}") from exc
    from torch.fx.experimental.optimization import fuse as fx_fuse

    torch.manual_seed(0)
    model = _cnn()
    with torch.no_grad():  # non-trivial BN statistics and affine parameters, so folding matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.eval()
    folded = fold_model(model)
    fused = fx_fuse(model)
    x = torch.randn(32, 3, 32, 32)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_inputs = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: bn_inputs.append(args[0])) for m in bns]
    with torch.inference_mode():
        ref = model(x)
        for h in hooks:
            h.remove()
        err_folded = (folded(x) - ref).abs().max().item()
        err_fx = (fused(x) - ref).abs().max().item()

        def bn_only():  # what folding can save at most: the BN passes alone, on their real inputs
            for m, inp in zip(bns, bn_inputs):
                m(inp)

        fns = {"unfused": lambda: model(x), "folded": lambda: folded(x), "torch_fx_fused": lambda: fused(x),
               "bn_layers_only": bn_only}
        repeats, number = (15, 1) if quick else (41, 2)
        interleaved(fns, 1, 1)  # warm-up
        t = interleaved(fns, repeats, number)
    speedup = ratios(t["unfused"], t["folded"])
    vs_fx = ratios(t["folded"], t["torch_fx_fused"])
    fx_speedup = ratios(t["unfused"], t["torch_fx_fused"])
    med_speedup, med_vs_fx = median(speedup), median(vs_fx)
    n_bn_left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    return {
        "model": "3 x (Conv2d 3x3 -> BatchNorm2d -> ReLU), 64 channels, input (32, 3, 32, 32), eval, inference_mode",
        "repeats": repeats,
        "calls_per_repeat": number,
        "unfused_ms": round(median(t["unfused"]) * 1e3, 2),
        "folded_ms": round(median(t["folded"]) * 1e3, 2),
        "torch_fx_fused_ms": round(median(t["torch_fx_fused"]) * 1e3, 2),
        "speedup_folded_vs_unfused": round(med_speedup, 3),
        "speedup_fx_fused_vs_unfused": round(median(fx_speedup), 3),
        "speedup_iqr": [round(q, 3) for q in statistics.quantiles(speedup, n=4)[::2]],
        # Under bursty load the median of per-repeat ratios and the ratio of median times can
        # disagree; both are shown so a reader can see how noisy the run was.
        "speedup_ratio_of_medians": round(median(t["unfused"]) / median(t["folded"]), 3),
        # The least-disturbed call of each (timeit's advice on a busy machine); secondary to the medians.
        "speedup_ratio_of_minima": round(min(t["unfused"]) / min(t["folded"]), 3),
        "folded_over_fx_ratio_of_minima": round(min(t["folded"]) / min(t["torch_fx_fused"]), 3),
        "time_folded_over_fx_fused": round(med_vs_fx, 3),
        "batchnorm_layers_left_after_fold": n_bn_left,
        "bn_layers_only_ms": round(median(t["bn_layers_only"]) * 1e3, 2),
        # The speed-up if folding saved exactly the BN layers' stand-alone time. Not a bound: inside
        # the model a BN pass also costs a fresh output allocation and memory traffic.
        "speedup_from_bn_share": round(
            median(ratios(t["unfused"], [u - b for u, b in zip(t["unfused"], t["bn_layers_only"])])), 3),
        "max_abs_diff_folded": err_folded,
        "max_abs_diff_fx_fused": err_fx,
        "target_speedup": FOLD_SPEEDUP_TARGET,
        "target_speedup_met": med_speedup >= FOLD_SPEEDUP_TARGET,
        "target_within_5pct_of_fx_met": med_vs_fx <= 1 + FOLD_VS_FX_TOLERANCE,
    }


# --- notebook execution (c, d, e) ------------------------------------------------------------------

_KERNEL_DIR: Path | None = None


def _kernel_path() -> None:
    """A private 'python3' kernel spec for this interpreter, first on JUPYTER_PATH (like nbval's
    --nbval-current-env): the timings must be of this environment's kernel."""
    global _KERNEL_DIR
    if _KERNEL_DIR is not None:
        return
    _KERNEL_DIR = Path(tempfile.mkdtemp(prefix="coursekit-bench-kernel-"))
    spec = _KERNEL_DIR / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (benchmark)",
        "language": "python",
    }))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(_KERNEL_DIR), os.environ.get("JUPYTER_PATH")]))


def execute_notebook(path: Path, extra_cell: str | None = None, timeout: int = 600):
    """Execute a copy of ``path`` in a fresh kernel (cwd: its folder); return (seconds, notebook).

    The seconds run from starting the kernel to the end of the last cell: what "run top to
    bottom" costs a learner. Kernel shutdown (about 3 s on a loaded machine, spent waiting for
    the kernel process to exit) is left out. Cells tagged ``raises-exception`` may raise
    (nbclient honours the tag); any other error raises.
    """
    import nbformat
    from nbclient import NotebookClient

    _kernel_path()
    nb = nbformat.read(str(path), as_version=4)
    if extra_cell is not None:
        nb.cells.append(nbformat.v4.new_code_cell(extra_cell))
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.reset_execution_trackers()
    t0 = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        dt = time.perf_counter() - t0
    return dt, nb


def _error_text(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()  # tracebacks carry ANSI colours
    return (type(exc).__name__ + ": " + (text[-1] if text else "")).strip()[:300]


def bench_notebooks(quick: bool) -> dict:
    try:
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(f"nbclient/nbformat: {exc}") from exc
    paths = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*.ipynb"))
    if not paths:
        raise NotAvailable("no notebooks in notebooks/ or solutions/")
    repeats = 1 if quick else 3
    rows = []
    for path in paths:
        rel = str(path.relative_to(REPO))
        times, error = [], None
        for _ in range(repeats):
            try:
                dt, _nb = execute_notebook(path)
            except Exception as exc:  # a failing notebook is a result, not a crash of the benchmark
                error = _error_text(exc)
                break
            times.append(dt)
        row = {"notebook": rel, "runs": len(times)}
        if times:
            row.update(median_s=round(median(times), 2), times_s=[round(t, 2) for t in times],
                       over_limit=median(times) >= NOTEBOOK_LIMIT_S)
        if error:
            row["error"] = error
        print(f"  {rel}: {row.get('median_s', '-')} s {('ERROR ' + error) if error else ''}", flush=True)
        rows.append(row)
    ok = [r for r in rows if "median_s" in r and "error" not in r]
    return {
        "repeats": repeats,
        "limit_s": NOTEBOOK_LIMIT_S,
        "notebooks": rows,
        "total_median_s": round(sum(r["median_s"] for r in ok), 1),
        "over_limit": [r["notebook"] for r in rows if r.get("over_limit")],
        "failed": [r["notebook"] for r in rows if "error" in r],
    }


# --- d. grader overhead ---------------------------------------------------------------------------

def _grade(paths: list[Path], jobs: int = 1) -> tuple[float, object]:
    with tempfile.TemporaryDirectory(prefix="coursekit-bench-grade-") as tmp:
        out = Path(tmp) / "grade.json"
        cmd = [sys.executable, "-m", "coursekit", "grade", *map(str, paths), "--jobs", str(jobs), "--json", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"coursekit grade exited {proc.returncode}: {' | '.join(tail)}")
        return dt, json.loads(out.read_text())


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


def _scores(payload) -> list[tuple[float, float]]:
    items = payload if isinstance(payload, list) else [payload]
    return [(r.get("score"), r.get("max_score")) for r in items]


def bench_grader(quick: bool) -> dict:
    try:
        import coursekit.grader  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(f"coursekit.grader: {exc}") from exc
    from coursekit.tasks import EXERCISES

    solution = next((REPO / "solutions" / ex.filename for ex in EXERCISES
                     if (REPO / "solutions" / ex.filename).exists()), None)
    if solution is None:
        raise NotAvailable("no solution notebook in solutions/")
    repeats = 1 if quick else 3
    plain, command, graded, score = [], [], [], None
    for _ in range(repeats):  # interleaved: the plain executions, then grading, each repeat
        plain.append(execute_notebook(solution)[0])
        command.append(_plain_command(solution))
        dt, payload = _grade([solution])
        graded.append(dt)
        score = _scores(payload)[0]
    p, c, g = median(plain), median(command), median(graded)
    # Like for like: both commands start a Python process and a kernel. The in-process nbclient
    # time (no interpreter start, imports already paid) is reported too, as the stricter baseline.
    result = {
        "notebook": str(solution.relative_to(REPO)),
        "repeats": repeats,
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
        lesson = solution.name.split("_", 1)[0]
        for i in range(10):
            shutil.copy(solution, copies / f"{lesson}_copy{i:02d}.ipynb")
        jobs = {}
        for n in (1, 2):
            dt, payload = _grade([copies], jobs=n)
            scores = _scores(payload)
            jobs[n] = {"seconds": round(dt, 2), "graded": len(scores),
                       "all_full_score": all(s == m for s, m in scores)}
        result["copies"] = 10
        result["jobs_1"] = jobs[1]
        result["jobs_2"] = jobs[2]
        result["jobs_speedup"] = round(jobs[1]["seconds"] / jobs[2]["seconds"], 2)
        result["jobs_repeats"] = 1
    return result


# --- e. check latency -----------------------------------------------------------------------------

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


def bench_checks(quick: bool) -> dict:
    try:
        import coursekit.checks  # noqa: F401
    except ImportError as exc:
        raise NotAvailable(f"coursekit.checks: {exc}") from exc
    from coursekit.tasks import EXERCISES

    repeats = 3 if quick else 7
    rows, missing = [], []
    for ex in EXERCISES:
        path = REPO / "solutions" / ex.filename
        if not path.exists():
            missing.append(ex.filename)
            continue
        names = [t.name for t in ex.tasks]
        try:
            _dt_, nb = execute_notebook(path, extra_cell=_CHECK_TIMER % {"names": names, "repeats": repeats})
            text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
            data = json.loads(text.split("BENCH-JSON", 1)[1])
        except Exception as exc:
            rows.append({"exercise": ex.stem, "error": _error_text(exc)})
            continue
        for name in names:
            rows.append({"exercise": ex.stem, "check": f"check_{name}", **data.get(name, {"missing": "?"})})
    if not rows:
        raise NotAvailable(f"no solution notebooks ({', '.join(missing)})")
    timed = [r["median_ms"] for r in rows if "median_ms" in r]
    return {"repeats": repeats, "checks": rows, "missing_solutions": missing,
            "slowest_ms": max(timed) if timed else None}


# --- f. whole suite -------------------------------------------------------------------------------

def bench_suite(quick: bool) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return {"command": "python -m pytest -q", "wall_s": round(dt, 1), "exit_code": proc.returncode,
            "summary": lines[-1] if lines else ""}


RUNNERS = {"a": bench_batch_norm, "b": bench_folding, "c": bench_notebooks, "d": bench_grader,
           "e": bench_checks, "f": bench_suite}


# --- report ---------------------------------------------------------------------------------------

def _status(sec: dict | None) -> str | None:
    if sec is None:
        return "not measured yet"
    if sec.get("status") != "ok":
        return f"{sec.get('status')} ({sec.get('reason')})"
    return None


def _measured(sec: dict) -> str:
    return f"_Measured {sec['measured_at']}, load average {sec.get('loadavg')}, quick={sec.get('quick')}._"


def _yes(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def render_markdown(results: dict) -> str:
    m = results["machine"]
    s = results["sections"]
    out = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/run.py` (see its docstring); raw numbers in `results.json`.",
        "Ratios are medians over interleaved repeats (contenders take turns inside each repeat).",
        "",
        f"- Machine: {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('ram_gb')} GB RAM; {m.get('platform')}",
        f"- Python {m.get('python')}, torch {m.get('torch')}, torch threads {m.get('torch_threads')}, "
        f"OMP_NUM_THREADS={m.get('OMP_NUM_THREADS')}; git {m.get('git_commit')}",
        f"- Report written {results['written_at']}.",
    ]
    if results.get("note"):
        out += ["", f"> {results['note']}"]

    out += ["", "## a. Reference `batch_norm` vs `F.batch_norm`", ""]
    sec = s.get("a")
    if _status(sec):
        out.append(f"Not available: {_status(sec)}.")
    else:
        out += [
            _measured(sec), "",
            "| input | reference (ms) | torch (ms) | ratio ref/torch (median) | IQR | max abs diff |",
            "|---|---|---|---|---|---|",
            f"| {sec['input']} | {sec['reference_ms']} | {sec['torch_ms']} | {sec['ratio_reference_over_torch']} | "
            f"{sec['ratio_iqr'][0]}–{sec['ratio_iqr'][1]} | {sec['max_abs_diff_output']:.2e} |",
            "", f"{sec['repeats']} interleaved repeats of {sec['calls_per_repeat']} calls each.",
        ]

    out += ["", "## b. Folding BN into the convs (`fold_model`)", ""]
    sec = s.get("b")
    if _status(sec):
        out.append(f"Not available: {_status(sec)}.")
    else:
        out += [
            _measured(sec), "", sec["model"], "",
            "| model | median time (ms) | speed-up vs unfused | max abs diff vs unfused |",
            "|---|---|---|---|",
            f"| unfused | {sec['unfused_ms']} | 1.00 | 0 |",
            f"| `fold_model` | {sec['folded_ms']} | {sec['speedup_folded_vs_unfused']} | {sec['max_abs_diff_folded']:.2e} |",
            f"| `torch.fx` `fuse` | {sec['torch_fx_fused_ms']} | {sec['speedup_fx_fused_vs_unfused']} | {sec['max_abs_diff_fx_fused']:.2e} |",
            "",
            f"- Target folded ≥ {sec['target_speedup']}× faster than unfused: {_yes(sec['target_speedup_met'])} "
            f"(median of per-repeat ratios {sec['speedup_folded_vs_unfused']}×, IQR {sec['speedup_iqr'][0]}–"
            f"{sec['speedup_iqr'][1]}; ratio of median times {sec.get('speedup_ratio_of_medians', '–')}×; "
            f"ratio of fastest calls {sec.get('speedup_ratio_of_minima', '–')}×).",
            f"- Target folded within 5 % of PyTorch's fused model: {_yes(sec['target_within_5pct_of_fx_met'])} "
            f"(folded / fx time, median of per-repeat ratios = {sec['time_folded_over_fx_fused']}; "
            f"fastest calls {sec.get('folded_over_fx_ratio_of_minima', '–')}).",
            f"- For scale: the three BN layers alone, on their real inputs, take {sec.get('bn_layers_only_ms', '–')} ms; "
            f"saving exactly that would be a {sec.get('speedup_from_bn_share', '–')}× speed-up. The convolutions dominate, "
            "so the gain from folding is modest on this CPU and sits close to the measurement noise.",
            f"- BatchNorm layers left after folding: {sec['batchnorm_layers_left_after_fold']}. "
            f"{sec['repeats']} interleaved repeats of {sec['calls_per_repeat']} calls.",
        ]

    out += ["", "## c. Notebook execution time (nbclient, fresh kernel, OMP_NUM_THREADS=1)", ""]
    sec = s.get("c")
    if _status(sec):
        out.append(f"Not available: {_status(sec)}.")
    else:
        out += [_measured(sec), "", f"Median of {sec['repeats']} run(s), from kernel start to the end of the last cell "
                "(kernel shutdown excluded); "
                f"flag at ≥ {sec['limit_s']:.0f} s.", "", "| notebook | median (s) | runs (s) | verdict |", "|---|---|---|---|"]
        for r in sec["notebooks"]:
            if "error" in r:
                verdict = f"FAILED: {r['error']}"
            else:
                verdict = "**≥ 30 s**" if r.get("over_limit") else "ok"
            out.append(f"| {r['notebook']} | {r.get('median_s', '–')} | {', '.join(map(str, r.get('times_s', [])))} | {verdict} |")
        out += ["", f"Sum of medians: {sec['total_median_s']} s. Over the limit: {sec['over_limit'] or 'none'}. "
                f"Failed: {sec['failed'] or 'none'}."]

    out += ["", "## d. Grader overhead (`coursekit grade`)", ""]
    sec = s.get("d")
    if _status(sec):
        out.append(f"Not available: {_status(sec)}.")
    else:
        out += [
            _measured(sec), "",
            "| notebook | plain `jupyter nbconvert --execute` (s) | plain in-process nbclient (s) | coursekit grade (s) | ratio vs command | score | target | met |",
            "|---|---|---|---|---|---|---|---|",
            f"| {sec['notebook']} | {sec.get('plain_command_s', '-')} | {sec['plain_nbclient_s']} | {sec['coursekit_grade_s']} | {sec['ratio']} | "
            f"{sec['score'][0]}/{sec['score'][1]} | {sec['target']} | {_yes(sec['target_met'])} |",
            "",
            f"Median of {sec['repeats']} interleaved run(s). `coursekit grade` and the plain command are both timed as "
            "commands (interpreter, imports and kernel start included). Against the in-process nbclient time, which "
            f"pays none of that, grading is {sec.get('ratio_vs_in_process', '-')}x "
            f"(target met on that stricter baseline: {_yes(sec.get('target_met_vs_in_process', False))}).",
            "",
            f"{sec['copies']} copies: `--jobs 1` {sec['jobs_1']['seconds']} s, `--jobs 2` {sec['jobs_2']['seconds']} s "
            f"(speed-up {sec['jobs_speedup']}×, one run each; all full score: "
            f"{sec['jobs_1']['all_full_score'] and sec['jobs_2']['all_full_score']}).",
        ]

    out += ["", "## e. Check-call latency (`coursekit.checks`, solution implementations)", ""]
    sec = s.get("e")
    if _status(sec):
        out.append(f"Not available: {_status(sec)}.")
    else:
        out += [_measured(sec), "", f"Median of {sec['repeats']} calls inside the solution notebook's kernel.", "",
                "| exercise | check | median (ms) | passed | cases |", "|---|---|---|---|---|"]
        for r in sec["checks"]:
            if "error" in r:
                out.append(f"| {r['exercise']} | – | – | notebook failed: {r['error']} | |")
            elif "missing" in r:
                out.append(f"| {r['exercise']} | {r['check']} | – | missing {r['missing']} | |")
            else:
                out.append(f"| {r['exercise']} | {r['check']} | {r['median_ms']} | {r['passed']} | {r['cases']} |")
        if sec["missing_solutions"]:
            out += ["", f"Solutions not yet written: {', '.join(sec['missing_solutions'])}."]

    out += ["", "## f. Whole test suite", ""]
    sec = s.get("f")
    if sec is None:
        out.append("Not measured (run with `--suite`).")
    elif _status(sec):
        out.append(f"Not available: {_status(sec)}.")
    else:
        out += [_measured(sec), "", f"`{sec['command']}`: {sec['wall_s']} s wall, exit code {sec['exit_code']}: "
                f"`{sec['summary']}`"]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (notebooks run once)")
    parser.add_argument("--suite", action="store_true", help="also time the whole test suite (section f)")
    parser.add_argument("--only", default=None, metavar="LETTERS",
                        help="comma-separated sections to (re-)measure, e.g. 'a,b'; others are kept from results.json")
    parser.add_argument("--note", default=None, help="a sentence shown at the top of RESULTS.md")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where results.json and RESULTS.md go")
    args = parser.parse_args(argv)

    wanted = ["a", "b", "c", "d", "e"] + (["f"] if args.suite else [])
    if args.only:
        wanted = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in RUNNERS]
        if unknown:
            parser.error(f"expected sections among {', '.join(RUNNERS)} (got {', '.join(unknown)})")

    json_path = args.out_dir / "results.json"
    previous = {}
    if args.only and json_path.exists():
        previous = json.loads(json_path.read_text()).get("sections", {})

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sections = dict(previous)
    for key in wanted:
        print(f"[{key}] {SECTIONS[key]} ...", flush=True)
        started = now()
        t0 = time.perf_counter()
        try:
            data = {"status": "ok", **RUNNERS[key](args.quick)}
        except NotAvailable as exc:
            data = {"status": "not available", "reason": str(exc)}
        except Exception as exc:  # report, never fake a number
            traceback.print_exc()
            data = {"status": "failed", "reason": _error_text(exc)}
        data.update(measured_at=started, loadavg=loadavg(), quick=args.quick,
                    section_seconds=round(time.perf_counter() - t0, 1))
        sections[key] = data
        print(f"[{key}] {data['status']} in {data['section_seconds']} s", flush=True)
        # Written after every section: a long run that is interrupted keeps what it measured.
        write_results(args.out_dir, sections, args.note)
    print(f"wrote {json_path} and {args.out_dir / 'RESULTS.md'}")
    return 0


def write_results(out_dir: Path, sections: dict, note: str | None) -> None:
    results = {
        "written_at": now(),
        "machine": machine(),
        "note": note,
        "sections": dict(sorted(sections.items())),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "RESULTS.md").write_text(render_markdown(results))


if __name__ == "__main__":
    raise SystemExit(main())
