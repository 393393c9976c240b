"""Executing a notebook in a fresh kernel of this interpreter, timed (sections c, d and e)."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["execute_notebook"]

_KERNEL_DIR: Path | None = None


def _kernel_path() -> None:
    """A private 'python3' kernel spec for this interpreter, first on JUPYTER_PATH (like nbval's
    --nbval-current-env): the timings must be of this environment's kernel."""
    global _KERNEL_DIR
    if _KERNEL_DIR is not None:
        return
    _KERNEL_DIR = Path(tempfile.mkdtemp(prefix="coursekit-bench-kernel-"))
    atexit.register(shutil.rmtree, _KERNEL_DIR, ignore_errors=True)
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
