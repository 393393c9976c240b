"""The learner's kernel: a fresh IPython kernel of the current Python, one cell at a time.

Grader side (trusted): this module starts and stops the untrusted process; it never imports
anything the kernel produced. With a ``Sandbox`` (``coursekit.grader.sandbox``) the kernel runs in
bubblewrap: it may write only its submission's work directory (the parent of ``cwd``), and the
trusted directories in ``hidden`` are invisible to it. Its home, IPython and matplotlib directories
are private (inside the work directory), so the grader's ``~/.ipython`` startup files never run.
What the grader receives from it is bounded: a cell's output is read and dropped as it arrives
(the grader reads verdicts from files; only an error's name and message are kept, truncated), and
ZeroMQ drops any message over ``MAX_MESSAGE`` bytes (printing 200 MiB costs the learner that cell,
not the grader its memory).

The kernel is driven with ``jupyter_client`` alone: nbclient would import nbformat, whose schema
validator (jsonschema and its IRI grammar) costs ~1 s at every ``coursekit grade``.
"""
from __future__ import annotations

import logging
import os
import queue
import site
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Kernel", "KERNEL_ENV", "MAX_MESSAGE"]

KERNEL_ENV = {"PATH", "USER", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "VIRTUAL_ENV",
              "CONDA_PREFIX", "SYSTEMROOT", "JUPYTER_PATH", "MPLBACKEND"}
MAX_MESSAGE = 32 * 2**20  # bytes per ZeroMQ message from the kernel
_STARTUP_TIMEOUT = 120.0  # seconds for a kernel to answer kernel_info (a loaded machine)
_POLL = 0.5  # seconds between liveness checks while a cell runs
_PRELOAD = "import torch as _coursekit_preload; del _coursekit_preload"
_IDLE_GRACE = 2.0  # seconds to wait for a cell's idle status after its reply has arrived


def _error_text(content: dict) -> str:
    return f"{str(content.get('ename'))[:100]}: {str(content.get('evalue'))[:300]}"

log = logging.getLogger("coursekit.grader")


class Kernel:
    """A fresh IPython kernel of the current Python, driven through jupyter_client, one cell at a time.

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
        self.manager = None
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

    def launch(self) -> None:
        """Start the kernel process without waiting for it (``wait_ready`` waits): the grader's own
        work overlaps the kernel's start."""
        import zmq
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import KernelManager

        # torch loads while the kernel starts, before it answers: a kernel launched ahead (``grade_paths``)
        # does it while another submission runs; nothing of it stays in the learner's namespace
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                f"--IPKernelApp.exec_lines={_PRELOAD}"]
        if self.sandbox is not None:
            argv = self.sandbox.wrap(argv, writable=[self.work], hidden=self.hidden, cwd=self.cwd)

        class _Spec(KernelSpecManager):
            def get_kernel_spec(self, kernel_name):  # noqa: ARG002
                return KernelSpec(argv=argv, display_name="coursekit grader", language="python")

        self.starts += 1
        context = zmq.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)  # default for every socket the client opens
        # IPC sockets and the connection file in the submission's own directory: no TCP port to race
        # other kernels for, nothing in the grader's runtime directory, visible inside the sandbox
        self.manager = KernelManager(kernel_name="coursekit-grader", kernel_spec_manager=_Spec(), context=context,
                                     transport="ipc", ip=str(self.work / f"kernel{self.starts}"),
                                     connection_file=str(self.work / f"kernel{self.starts}.json"))
        # the learner's stderr noise (warnings, crash dumps) would garble the grader's report;
        # independent: no JPY_PARENT_PID, whose process a sandboxed kernel cannot see (it would exit);
        # the kernel still dies with the grader (bwrap --die-with-parent)
        self.manager.start_kernel(cwd=str(self.cwd), env=self.env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, independent=self.sandbox is not None)
        self.process = getattr(self.manager.provisioner, "process", None)

    def wait_ready(self) -> None:
        """Connect to the launched kernel and wait until it answers (``kernel_info``)."""
        client = self.manager.client(context=self.manager.context)
        client.start_channels()
        self.client = client
        client.wait_for_ready(timeout=_STARTUP_TIMEOUT)

    def _start(self) -> None:
        if self.manager is None:  # not launched ahead (or stopped since)
            self.launch()
        self.wait_ready()

    def run(self, source: str, timeout: float) -> tuple[str, str]:
        """Run one cell: ``("ok" | "error" | "timeout" | "dead", message)``.

        Every message the cell publishes is read and dropped but an error's name and message. The cell
        is over when the kernel reports itself idle for it; ZeroMQ drops published messages a slow
        reader did not take (a cell printing without end), so once the cell's reply has come, the idle
        status is awaited ``_IDLE_GRACE`` seconds at most and the reply's status decides.
        """
        client = self.client
        limit = max(1, int(timeout + 0.999))
        deadline = time.monotonic() + limit
        try:
            msg_id = client.execute(source, store_history=False, allow_stdin=False, stop_on_error=False)
        except Exception as exc:  # the channels are gone: the kernel went away
            return "dead" if not self.alive() else "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        error, reply, replied_at = None, None, None
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout", f"time limit of {limit} s exceeded"
            if replied_at is not None and now - replied_at > _IDLE_GRACE:
                break
            try:
                msg = client.get_iopub_msg(timeout=min(deadline - now, _POLL))
            except queue.Empty:
                if reply is None:
                    reply = self._reply(msg_id)
                    replied_at = time.monotonic() if reply is not None else None
                if reply is None and not self.alive():
                    return "dead", "the kernel died (the code exited or crashed the Python process)"
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg.get("msg_type"), msg.get("content", {})
            if kind == "error" and error is None:
                error = _error_text(content)
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if error is None and reply is not None and reply.get("status") == "error":
            error = _error_text(reply)
        return ("error", error) if error is not None else ("ok", "")

    def _reply(self, msg_id: str) -> dict | None:
        """The content of the cell's ``execute_reply`` if it has arrived (replies to earlier cells are dropped)."""
        channel = self.client.shell_channel
        while channel.msg_ready():
            msg = channel.get_msg(timeout=0)
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg.get("content", {})
        return None

    def alive(self) -> bool:
        return self.manager is not None and bool(self.manager.is_alive())

    def stop(self) -> None:
        """Stop the kernel. Sandboxed, killing ``bwrap`` ends every process the kernel started."""
        client, self.client = self.client, None
        manager, self.manager = self.manager, None
        try:
            if client is not None:
                client.stop_channels()
            if manager is not None:
                manager.shutdown_kernel(now=True)
                manager.context.destroy(linger=0)
        except Exception:  # the process is killed below whatever the manager managed
            log.warning("stopping the kernel through its manager failed", exc_info=True)
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:  # the manager gave up on it: make sure
            try:
                proc.kill()
                proc.wait(10)
            except Exception:  # nothing more to try: say so, a stuck kernel may hold a core
                log.warning("killing the kernel process %s failed", proc.pid, exc_info=True)
