"""The learner's kernel: a fresh IPython kernel of the current Python, one cell at a time.

Grader side (trusted): this module starts and stops the untrusted process; it never imports
anything the kernel produced. With a ``Sandbox`` (``coursekit.grader.sandbox``) the kernel runs in
bubblewrap: it may write only its submission's work directory (the parent of ``cwd``), and the
trusted directories in ``hidden`` are invisible to it. Its home, IPython and matplotlib directories
are private (inside the work directory), so the grader's ``~/.ipython`` startup files never run.
What the grader receives from it is bounded: at most ``MAX_CELL_OUTPUT`` bytes of output per cell
are kept and ZeroMQ drops any message over ``MAX_MESSAGE`` bytes (printing 200 MiB costs the
learner that cell, not the grader its memory).
"""
from __future__ import annotations

import logging
import os
import site
import subprocess
import sys
from pathlib import Path

__all__ = ["Kernel", "KERNEL_ENV", "MAX_CELL_OUTPUT", "MAX_MESSAGE"]

KERNEL_ENV = {"PATH", "USER", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV",
              "CONDA_PREFIX", "SYSTEMROOT", "JUPYTER_PATH", "MPLBACKEND"}
MAX_CELL_OUTPUT = 2**20  # bytes of text/data kept per cell: the grader reads verdicts from files, not output
MAX_MESSAGE = 32 * 2**20  # bytes per ZeroMQ message from the kernel

log = logging.getLogger("coursekit.grader")


def _client_class():
    from nbclient import NotebookClient

    class _BoundedClient(NotebookClient):
        """nbclient, keeping at most ``MAX_CELL_OUTPUT`` bytes of each cell's outputs (errors always)."""

        _kept = 0

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            size = len(str(content.get("text", ""))) + sum(len(str(v)) for v in content.get("data", {}).values())
            if msg.get("msg_type") != "error":
                if self._kept + size > MAX_CELL_OUTPUT:
                    return None
                self._kept += size
            return super().output(outs, msg, display_id, cell_index)

    return _BoundedClient


class Kernel:
    """A fresh IPython kernel of the current Python, driven through nbclient, one cell at a time.

    Args:
        cwd: the kernel's working directory; its parent is the submission's private work directory
            (``mkdtemp``, mode 0700) and the only place a sandboxed kernel may write.
        sandbox: a ``coursekit.grader.sandbox.Sandbox``, or ``None`` to run unsandboxed.
        hidden: directories the sandboxed kernel must not see (the trusted notebooks).
    """

    def __init__(self, cwd: Path, sandbox=None, hidden=()):
        self.cwd = Path(cwd)
        self.work = self.cwd.parent
        self.sandbox = sandbox
        self.hidden = [Path(h) for h in hidden]
        self.client = None
        self.process = None
        self.starts = 0
        self.home = self.work / "home"
        for d in (self.home, self.home / ".ipython", self.home / ".config" / "matplotlib", self.home / ".cache"):
            d.mkdir(parents=True, exist_ok=True)

    def start(self, attempts: int = 3) -> None:
        """Start the kernel, retrying: a loaded machine occasionally loses a kernel at startup."""
        for attempt in range(attempts):
            try:
                return self._start()
            except Exception as exc:
                log.warning("kernel start failed (attempt %d of %d): %s: %s", attempt + 1, attempts, type(exc).__name__, exc)
                self.stop()
                if attempt == attempts - 1:
                    raise

    def env(self) -> dict[str, str]:
        """The kernel's environment: only what Python needs (the grader's may hold tokens), private dirs."""
        env = {k: v for k, v in os.environ.items() if k in KERNEL_ENV}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1",
                   HOME=str(self.home), IPYTHONDIR=str(self.home / ".ipython"),
                   MPLCONFIGDIR=str(self.home / ".config" / "matplotlib"), XDG_CACHE_HOME=str(self.home / ".cache"),
                   JUPYTER_DATA_DIR=str(self.home / ".jupyter"), TMPDIR="/tmp" if self.sandbox else str(self.work),
                   PYTHONDONTWRITEBYTECODE="1")
        if os.path.isdir(site.getusersitepackages()):  # HOME moved: keep packages installed with --user
            env["PYTHONUSERBASE"] = site.getuserbase()
        env.setdefault("USER", "learner")
        return env

    def _start(self) -> None:
        import nbformat
        import zmq.asyncio
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if self.sandbox is not None:
            argv = self.sandbox.wrap(argv, writable=[self.work], hidden=self.hidden, cwd=self.cwd)

        class _Spec(KernelSpecManager):
            def get_kernel_spec(self, kernel_name):  # noqa: ARG002
                return KernelSpec(argv=argv, display_name="coursekit grader", language="python")

        self.starts += 1
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)  # default for every socket the client opens
        # IPC sockets and the connection file in the submission's own directory: no TCP port to race
        # other kernels for, nothing in the grader's runtime directory, visible inside the sandbox
        class _Manager(AsyncKernelManager):
            def client(self, **kw):  # jupyter_client gives the client a fresh context otherwise
                kw.setdefault("context", self.context)
                return super().client(**kw)

        km = _Manager(kernel_name="coursekit-grader", kernel_spec_manager=_Spec(), context=context,
                                transport="ipc", ip=str(self.work / f"kernel{self.starts}"),
                                connection_file=str(self.work / f"kernel{self.starts}.json"))
        self.client = _client_class()(nbformat.v4.new_notebook(), km=km, allow_errors=True, startup_timeout=120,
                                      shutdown_kernel="immediate", record_timing=False)
        # the learner's stderr noise (warnings, crash dumps) would garble the grader's report
        # independent: no JPY_PARENT_PID, whose process a sandboxed kernel cannot see (it would exit);
        # the kernel still dies with the grader (bwrap --die-with-parent)
        self.client.start_new_kernel(cwd=str(self.cwd), env=self.env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     independent=self.sandbox is not None)
        self.process = getattr(km.provisioner, "process", None)
        self.client.start_new_kernel_client()

    def run(self, source: str, timeout: float) -> tuple[str, str]:
        """Run one cell: ``("ok" | "error" | "timeout" | "dead", message)``."""
        import nbformat
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        cell = nbformat.v4.new_code_cell(source)
        self.client.timeout = max(1, int(timeout + 0.999))
        self.client.nb.cells = [cell]  # nbclient stores the executed cell back at its index
        self.client._kept = 0
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
        finally:
            outputs, cell.outputs = cell.outputs, []
        errors = [o for o in outputs if o.get("output_type") == "error"]
        if errors:
            return "error", f"{str(errors[0].get('ename'))[:100]}: {str(errors[0].get('evalue'))[:300]}"
        return "ok", ""

    def alive(self) -> bool:
        from jupyter_core.utils import run_sync

        km = self.client.km if self.client is not None else None
        return km is not None and bool(run_sync(km.is_alive)())

    def stop(self) -> None:
        """Stop the kernel. Sandboxed, killing ``bwrap`` ends every process the kernel started."""
        if self.client is not None and self.client.km is not None:
            try:
                self.client._cleanup_kernel()
            except Exception:  # the process is killed below whatever the manager managed
                log.warning("stopping the kernel through its manager failed", exc_info=True)
        self.client = None
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:  # the manager gave up on it: make sure
            try:
                proc.kill()
                proc.wait(10)
            except Exception:  # nothing more to try: say so, a stuck kernel may hold a core
                log.warning("killing the kernel process %s failed", proc.pid, exc_info=True)
