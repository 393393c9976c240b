"""Shared pytest setup.

Notebook kernels and unit tests run with one torch/OpenMP thread: two pytest-xdist workers on a
2-core machine would otherwise oversubscribe it (30-130x slower), and stored notebook outputs were
produced with one thread. Set before any kernel is started so the kernels inherit it.
"""
import os

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
