"""Notebook setup and the environment report (``coursekit doctor``, lesson 00)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass, field

__all__ = ["setup_notebook", "EnvironmentReport", "environment_report", "NOTEBOOK_THREADS"]

# One thread everywhere a notebook runs: results depend on the thread count (reductions are
# summed in a different order), and stored outputs were produced with one thread. It also keeps
# two notebooks running side by side in CI from oversubscribing a 2-core machine.
NOTEBOOK_THREADS = 1


def setup_notebook(seed: int = 0, threads: int = NOTEBOOK_THREADS) -> None:
    """Make a lesson reproducible: seed Python, NumPy and torch, fix the thread count, tidy printing.

    Introduced in lesson 00; every lesson's setup cell calls it.

    Args:
        seed: seed for ``random``, ``numpy.random`` and ``torch``. Default: 0.
        threads: torch intra-op threads. Default: 1 (see ``NOTEBOOK_THREADS``).

    Example::

        >>> import coursekit
        >>> coursekit.setup_notebook(seed=0)
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"expected threads to be a positive int (got {threads!r})")
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.set_printoptions(precision=4, sci_mode=False)
    np.set_printoptions(precision=4, suppress=True)
    _inline_figures_as_png()


def _inline_figures_as_png() -> None:
    """Inline figures are PNG so they are stored in the notebook and render on GitHub (whatever a
    user's IPython profile says). Importing matplotlib costs ~0.5 s, so when it is not loaded yet the
    setting goes into the shell's configuration, which the inline backend reads when it is created."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if shell is None:  # not in IPython: nothing to configure
        return
    if "matplotlib_inline.backend_inline" in sys.modules:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    else:
        shell.config.InlineBackend.figure_formats = {"png"}


def _version(distribution: str) -> str | None:
    """Installed version of a distribution, read from its metadata: importing jupyterlab just to
    ask would cost seconds (it pulls in jupyter_server)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass
class EnvironmentReport:
    """What ``coursekit doctor`` prints: versions, threads, kernel, and the problems found."""

    python: str
    versions: dict[str, str | None]
    torch_threads: int | None
    kernel: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"python        {self.python} ({sys.executable})", f"platform      {platform.platform()}"]
        for name, ver in self.versions.items():
            out.append(f"{name:<13} {ver or 'MISSING'}")
        out.append(f"torch threads {self.torch_threads}")
        out.append(f"kernel        {self.kernel or 'MISSING'}")
        out += [f"PROBLEM: {p}" for p in self.problems]
        out.append("all good: open the course with `jupyter lab`" if self.ok else "fix the problems above")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


_REQUIRED = ("torch", "numpy", "matplotlib", "jupyterlab", "ipykernel", "nbformat", "nbclient",
             "nbval", "scikit-learn")
INSTALL_HINT = 'python -m pip install -c requirements/constraints.txt -e ".[test]"'


def _kernel_for_this_python() -> str | None:
    """Name of a Jupyter kernelspec that runs this very interpreter (or ipykernel's native one)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except Exception:
        return None
    try:
        specs = KernelSpecManager().get_all_specs()
    except Exception:
        return None
    exe = os.path.realpath(sys.executable)
    for name, info in specs.items():
        argv = info.get("spec", {}).get("argv", [])
        if argv and argv[0] in ("python", "python3", "{python}"):
            # ipykernel's bundled spec runs whatever python is first on PATH when launched from
            # this environment's jupyter; that is this interpreter.
            if _version("ipykernel"):
                return f"{name} (ipykernel's own, runs this Python)"
        elif argv and os.path.realpath(argv[0]) == exe:
            return name
    return None


def environment_report() -> EnvironmentReport:
    """Collect versions, threads and kernel availability; introduced in lesson 00."""
    versions = {name: _version(name) for name in _REQUIRED}
    problems = [f"{label} is not installed: run {INSTALL_HINT}" for label, v in versions.items() if v is None]
    threads = None
    if versions["torch"]:
        import torch

        threads = torch.get_num_threads()
        if not str(torch.__version__).startswith("2."):
            problems.append(f"expected torch 2.x (got {torch.__version__}): run {INSTALL_HINT}")
    kernel = _kernel_for_this_python()
    if kernel is None:
        problems.append(
            "no Jupyter kernel runs this Python: run "
            f"`{sys.executable} -m ipykernel install --user --name coursekit`"
        )
    return EnvironmentReport(platform.python_version(), versions, threads, kernel, problems)
