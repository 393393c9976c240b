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
