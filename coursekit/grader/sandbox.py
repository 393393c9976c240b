"""The sandbox around each learner kernel: bubblewrap (``bwrap``) plus resource limits.

Grader side (trusted). ``Sandbox.wrap(argv, ...)`` turns the kernel's command line into::

    bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp
          --tmpfs $HOME (the grader's home hidden; Python's own prefix under it bound back read-only)
          --tmpfs <trusted dir> ... (solutions/ and the --solutions copy hidden altogether)
          --bind <task dir> <task dir> ... (the only writable paths)
          --unshare-all --die-with-parent --new-session --cap-drop ALL
          -- python -S -c <set rlimits> -- <argv>

so the kernel sees a read-only machine, a private ``/tmp`` (no other submission's directory), its
own PID namespace (no other process: not the grader's ``/proc/<pid>/environ``, ``mem`` or
``cmdline``, not another learner's kernel) and its own network namespace (no network). When the
grader kills ``bwrap`` (the kernel manager's process), ``--die-with-parent`` kills the namespace's
init and with it every process of the sandbox, daemons included. The limits (``Limits``) are set
with ``setrlimit`` in the sandbox just before the kernel starts.

Modes (``coursekit grade --sandbox``): ``auto`` (bubblewrap when it works here, else no sandbox and
a warning in the report), ``require`` (refuse to grade without it), ``none`` (no sandbox).
``COURSEKIT_BWRAP`` overrides the ``bwrap`` found on ``PATH`` (an empty value or a missing file
means "not installed"; the tests use it to simulate a machine without bubblewrap).

Known limits: ``RLIMIT_NPROC`` counts the processes of the *real user*, machine-wide, so a non-root
grader sets it to the user's current count plus ``Limits.processes``; it does not bind root (the
kernel exempts uid 0 in the initial user namespace), so a grader run as root relies on the CPU
time limit, the cell timeouts and the namespace kill for fork bombs. Disk use of the task
directory is bounded per file (``RLIMIT_FSIZE``), not in total.

Used by ``coursekit.grader.kernel``; see docs/instructors.md, "Threat model".
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODES", "Limits", "Sandbox", "SandboxUnavailable", "bwrap_path", "check", "resolve", "INSTALL_HINT"]

MODES = ("auto", "require", "none")
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
_GiB = 2**30


class SandboxUnavailable(RuntimeError):
    """``--sandbox require`` on a machine where bubblewrap is missing or does not work."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed kernel (``setrlimit``, soft = hard).

    Args:
        memory: address space in bytes (``RLIMIT_AS``). Default: 4 GiB (a kernel with torch
            loaded maps about 1 GiB).
        processes: processes and threads the kernel may add to the user's current count
            (``RLIMIT_NPROC``; not enforced for root). Default: 256.
        file_size: largest file the kernel may write, in bytes (``RLIMIT_FSIZE``). Default: 256 MiB.
        cpu_seconds: CPU time of each process (``RLIMIT_CPU``). Default: 900.
        tmp_size: size of the private ``/tmp`` (a tmpfs in memory), in bytes. Default: 256 MiB.
    """

    memory: int = 4 * _GiB
    processes: int = 256
    file_size: int = 256 * 2**20
    cpu_seconds: int = 900
    tmp_size: int = 256 * 2**20

    @classmethod
    def from_env(cls) -> Limits:
        """Defaults, overridden by ``COURSEKIT_SANDBOX_MEMORY_MB``, ``..._PROCESSES``, ``..._FILE_SIZE_MB``,
        ``..._CPU_SECONDS`` (e.g. a smaller memory cap in tests, a larger one for a heavy lesson)."""
        scale = {"memory": 2**20, "processes": 1, "file_size": 2**20, "cpu_seconds": 1}
        env = {"memory": "MEMORY_MB", "processes": "PROCESSES", "file_size": "FILE_SIZE_MB", "cpu_seconds": "CPU_SECONDS"}
        kw = {}
        for field_name, suffix in env.items():
            raw = os.environ.get("COURSEKIT_SANDBOX_" + suffix)
            if raw:
                try:
                    kw[field_name] = int(raw) * scale[field_name]
                except ValueError:
                    raise ValueError(f"COURSEKIT_SANDBOX_{suffix}: expected an integer (got {raw!r})") from None
        return cls(**kw)

    def __post_init__(self):
        for name in ("memory", "processes", "file_size", "cpu_seconds", "tmp_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"Limits.{name}: expected a positive int (got {v!r})")


# Runs inside the sandbox (as its first Python, with -S: no site, so nothing from the environment
# is imported before the limits hold), then execs the kernel.
_LAUNCHER = (
    "import os,resource as r,sys\n"
    "a=sys.argv\n"
    "for k,v in ((r.RLIMIT_AS,a[1]),(r.RLIMIT_NPROC,a[2]),(r.RLIMIT_FSIZE,a[3]),(r.RLIMIT_CPU,a[4]),"
    "(r.RLIMIT_CORE,'0')):\n"
    " r.setrlimit(k,(int(v),int(v)))\n"
    "os.execv(a[6],a[6:])\n"
)


def bwrap_path() -> str | None:
    """The ``bwrap`` executable: ``$COURSEKIT_BWRAP`` if set (empty: none), else the one on ``PATH``."""
    override = os.environ.get("COURSEKIT_BWRAP")
    if override is not None:
        return override if override and os.access(override, os.X_OK) else None
    return shutil.which("bwrap")


_CHECKED: dict[str, str | None] = {}


def check() -> str | None:
    """``None`` if bubblewrap is installed *and works* here, else the reason it cannot be used.

    Runs a trivial sandbox once per process: some containers ship ``bwrap`` but forbid the
    namespaces it needs ("No permissions to creating new namespace").
    """
    path = bwrap_path()
    if path is None:
        return "bubblewrap (bwrap) is not installed"
    if path not in _CHECKED:
        argv = Sandbox(path, Limits()).wrap([sys.executable, "-S", "-c", "pass"], writable=[])
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=30, env={"PATH": os.environ.get("PATH", "")})
            _CHECKED[path] = None if r.returncode == 0 else (
                f"bwrap does not work here: {r.stderr.decode(errors='replace').strip()[:200]}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            _CHECKED[path] = f"bwrap does not work here: {type(exc).__name__}: {exc}"
    return _CHECKED[path]


def resolve(mode: str, limits: Limits | None = None) -> tuple[Sandbox | None, str]:
    """The sandbox for a ``--sandbox`` mode: ``(Sandbox or None, description for the report)``.

    The description is ``"bwrap"``, ``"none"`` (asked for), or ``"UNSANDBOXED: <reason>"``
    (``auto`` on a machine without a working bubblewrap).

    Raises:
        ValueError: ``mode`` is not one of ``MODES``.
        SandboxUnavailable: ``mode == "require"`` and bubblewrap is missing or does not work.
    """
    if mode not in MODES:
        raise ValueError(f"sandbox mode: expected one of {', '.join(MODES)} (got {mode!r})")
    if mode == "none":
        return None, "none"
    reason = check()
    if reason is None:
        return Sandbox(bwrap_path(), limits or Limits.from_env()), "bwrap"
    if mode == "require":
        raise SandboxUnavailable(f"{reason}; {INSTALL_HINT}")
    return None, f"UNSANDBOXED: {reason} (the kernel ran with the grader's permissions; {INSTALL_HINT})"


def _under(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def _python_roots() -> list[Path]:
    """Directories the kernel's Python needs to read (interpreter, stdlib, site-packages, coursekit)."""
    import coursekit

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             os.path.dirname(os.path.dirname(os.path.abspath(coursekit.__file__)))}
    roots.update(site.getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str) and os.path.isdir(user_site):
        roots.add(user_site)
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    paths = sorted({Path(os.path.realpath(r)) for r in roots if r and os.path.isdir(r)})
    return [p for p in paths if not any(q != p and _under(p, q) for q in paths)]


def _user_tasks() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts them all, machine-wide."""
    uid, n = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return n


@dataclass(frozen=True)
class Sandbox:
    """A working bubblewrap and the limits to apply (see the module docstring); build with ``resolve``."""

    bwrap: str
    limits: Limits

    def wrap(self, argv: list[str], writable: list[Path], hidden: list[Path] = (), cwd: Path | None = None) -> list[str]:
        """``argv`` run inside the sandbox; ``writable`` directories are the only ones it may write.

        Args:
            argv: the command (its executable must be readable in the sandbox).
            writable: directories bound read-write (the kernel's task directory, its IPC sockets).
            hidden: directories replaced by an empty tmpfs (the trusted notebooks).
            cwd: working directory inside the sandbox. Default: the first writable directory.
        """
        lim = self.limits
        args = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--size", str(lim.tmp_size), "--tmpfs", "/tmp"]
        home = Path(os.path.realpath(os.path.expanduser("~")))
        masked = [Path("/tmp")]
        if home != Path("/") and home.is_dir():
            # the grader's home holds its credentials and ~/.ipython startup files: hide it
            args += ["--perms", "0755", "--size", str(2**20), "--tmpfs", str(home)]
            masked.append(home)
        for root in _python_roots():  # bind back read-only what Python needs (e.g. a pyenv interpreter)
            if any(root != m and _under(root, m) for m in masked) and not any(_under(root, Path(w)) for w in writable):
                args += ["--ro-bind", str(root), str(root)]
        if len(masked) > 1:
            args += ["--remount-ro", str(home)]  # after the binds below it: nothing writable there
        for h in hidden:
            h = Path(os.path.realpath(h))
            if h.is_dir() and h != Path("/") and not any(_under(Path(w).resolve(), h) for w in writable):
                args += ["--size", str(2**20), "--tmpfs", str(h), "--remount-ro", str(h)]
        for w in writable:
            w = os.path.realpath(w)
            args += ["--bind", w, w]
        args += ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                 "--chdir", os.path.realpath(cwd or (writable[0] if writable else "/")), "--"]
        # RLIMIT_NPROC counts every process of the user (not only the sandbox's): a headroom over what
        # the user runs now, so a desktop session with many threads can still start the kernel
        nproc = lim.processes + (_user_tasks() if os.getuid() != 0 else 0)
        args += [sys.executable, "-S", "-c", _LAUNCHER, str(lim.memory), str(nproc), str(lim.file_size),
                 str(lim.cpu_seconds), "--", *argv]
        return args
