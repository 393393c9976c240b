"""Shared pytest setup.

Notebook kernels and unit tests run with one torch/OpenMP thread: two pytest-xdist workers on a
2-core machine would otherwise oversubscribe it (30-130x slower), and stored notebook outputs were
produced with one thread. Set before any kernel is started so the kernels inherit it.
"""
import gc
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# Fixture notebooks (grader submissions) are data, not notebooks for nbval to run.
collect_ignore_glob = ["fixtures/*"]

# Hypothesis: a fixed, reproducible set of examples by default (CI must not flake); explore more
# with HYPOTHESIS_PROFILE=explore. No example database is written into the repo.
try:
    from hypothesis import settings

    settings.register_profile("course", max_examples=40, deadline=None, derandomize=True, database=None)
    settings.register_profile("explore", max_examples=500, deadline=None, database=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "course"))
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):  # noqa: ARG001
    """Collect now and freeze what survives, so pytest's closing garbage collections are quick.

    After this hook an xdist worker reports "finished"; the controller then closes its gateway, and
    execnet sends the worker a SIGINT if it has not exited 5 s later. pytest's cleanup runs five full
    ``gc.collect()`` passes to find unraisable exceptions; over a worker's heap at the end of the
    suite (600k objects, ~1 s per pass on two busy cores) that took longer than 5 s, and the
    KeyboardInterrupt surfaced in the first Python code the collector called: Hypothesis's gc
    callback (an "unraisable KeyboardInterrupt" warning printed after the summary). Collected here,
    before the worker reports, the garbage of the session is still found (its finalizers' exceptions
    are still reported), and the closing passes only visit objects made after this point.
    """
    gc.collect()
    gc.freeze()
