"""Shared by every section: paths, the "not available" signal, timing and machine facts.

Timing rule of the whole benchmark: contenders are measured *interleaved* (they take turns inside
each repeat, so a burst of load on the shared CPU hits all of them) and reported as medians of
per-repeat values; ratios are medians of per-repeat ratios.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["REPO", "OUT_DIR", "NotAvailable", "now", "loadavg", "median", "iqr", "machine", "interleaved",
           "ratios", "error_text", "yes"]

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = Path(__file__).resolve().parent


class NotAvailable(Exception):
    """A component a section needs does not exist (yet): the section says so instead of a number."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def median(xs) -> float:
    return statistics.median(xs)


def iqr(xs, digits: int = 3) -> list[float]:
    """[first quartile, third quartile]; a single value is its own range (quick runs)."""
    xs = list(xs)
    if len(xs) < 2:
        return [round(xs[0], digits)] * 2
    return [round(q, digits) for q in statistics.quantiles(xs, n=4)[::2]]


def _first_line(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    mem = _first_line("/proc/meminfo", "MemTotal")
    info = {
        "cores": os.cpu_count(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "ram_gb": round(int(mem.split()[0]) / 1024**2, 1) if mem else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
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


def error_text(exc: BaseException) -> str:
    """One line naming an exception (last line of its message, ANSI colours of tracebacks removed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return (type(exc).__name__ + ": " + (text[-1] if text else "")).strip()[:300]


def yes(flag: bool) -> str:
    """A target's verdict as RESULTS.md shows it."""
    return "**met**" if flag else "**not met**"
