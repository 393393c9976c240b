"""The learner's kernel: a fresh IPython kernel of the current Python, one cell at a time.

Grader side (trusted): this module starts and stops the untrusted process; it never imports
anything the kernel produced.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["Kernel", "KERNEL_ENV"]

KERNEL_ENV = {"PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
               "CONDA_PREFIX", "SYSTEMROOT", "JUPYTER_PATH", "JUPYTER_DATA_DIR", "MPLBACKEND", "MPLCONFIGDIR"}


class Kernel:
    """A fresh IPython kernel of the current Python, driven through nbclient, one cell at a time."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.client = None
        self.starts = 0

    def start(self, attempts: int = 3) -> None:
        """Start the kernel, retrying: a loaded machine occasionally loses a kernel at startup."""
        for attempt in range(attempts):
            try:
                return self._start()
            except Exception:
                self.stop()
                if attempt == attempts - 1:
                    raise

    def _start(self) -> None:
        import nbformat
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        class _CurrentPython(KernelSpecManager):
            def get_kernel_spec(self, kernel_name):  # noqa: ARG002
                return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                  display_name="coursekit grader", language="python")

        # IPC sockets in the grader's temporary directory: no TCP port to race other kernels for
        self.starts += 1
        km = AsyncKernelManager(kernel_name="coursekit-grader", kernel_spec_manager=_CurrentPython(),
                                transport="ipc", ip=str(self.cwd.parent / f"kernel{self.starts}"))
        # only what Python needs: the grader's environment may hold tokens (e.g. in CI)
        env = {k: v for k, v in os.environ.items() if k in KERNEL_ENV}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        self.client = NotebookClient(nbformat.v4.new_notebook(), km=km, allow_errors=True, startup_timeout=120,
                                     shutdown_kernel="immediate", record_timing=False)
        # the learner's stderr noise (warnings, crash dumps) would garble the grader's report
        self.client.start_new_kernel(cwd=str(self.cwd), env=env, stderr=subprocess.DEVNULL)
        self.client.start_new_kernel_client()

    def run(self, source: str, timeout: float) -> tuple[str, str]:
        """Run one cell: ``("ok" | "error" | "timeout" | "dead", message)``."""
        import nbformat
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        cell = nbformat.v4.new_code_cell(source)
        self.client.timeout = max(1, int(timeout + 0.999))
        self.client.nb.cells = [cell]  # nbclient stores the executed cell back at its index
        try:
            self.client.execute_cell(cell, 0)
        except CellTimeoutError:
            return "timeout", f"time limit of {self.client.timeout} s exceeded"
        except DeadKernelError:
            return "dead", "the kernel died (the code exited or crashed the Python process)"
        except Exception as exc:  # e.g. the kernel went away between messages
            if not self.alive():
                return "dead", "the kernel died (the code exited or crashed the Python process)"
            return "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            return "error", f"{errors[0].get('ename')}: {str(errors[0].get('evalue'))[:300]}"
        return "ok", ""

    def alive(self) -> bool:
        from jupyter_core.utils import run_sync

        km = self.client.km if self.client is not None else None
        return km is not None and bool(run_sync(km.is_alive)())

    def stop(self) -> None:
        if self.client is not None and self.client.km is not None:
            try:
                self.client._cleanup_kernel()
            except Exception:
                pass
        self.client = None

