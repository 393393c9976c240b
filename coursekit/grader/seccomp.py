"""A seccomp filter that forbids new processes and ``exec`` (and, if asked, new threads) in the calling process.

Runs inside the sandboxed learner kernel (``coursekit.grader.guard.lock``), after the setup cells
and before any answer cell. Installed with ``SECCOMP_FILTER_FLAG_TSYNC`` (all threads at once) after
``PR_SET_NO_NEW_PRIVS``; a seccomp filter cannot be removed or loosened by the process it binds,
Python or not (``ctypes``, a C extension). The filter (classic BPF, x86-64) returns

* ``EPERM`` for ``fork``, ``vfork``, ``execve``, ``execveat``, ``clone`` without ``CLONE_THREAD``
  (``os.fork``, ``subprocess``, ``multiprocessing``, ``_posixsubprocess.fork_exec``, ``posix_spawn``)
  and every x32-ABI system call;
* with ``threads=False``, ``EPERM`` for ``clone`` with ``CLONE_THREAD`` too: ``pthread_create`` fails,
  so ``threading.Thread.start`` raises ``RuntimeError("can't start new thread")`` (lesson 04's graded
  backward, where autograd's engine run in another thread would escape the per-thread record);
* ``ENOSYS`` for ``clone3``, so glibc falls back to ``clone`` (and meets the ``clone`` rule);
* ``ALLOW`` for everything else, and on any other architecture (:func:`install` reports it).

The threads that exist when the filter is installed keep running: the kernel's own (ipykernel's
I/O, heartbeat, control and shell-channel threads) start with it, before any cell.
"""

from __future__ import annotations

import ctypes
import errno
import platform

__all__ = ["install", "program", "unavailable"]

_AUDIT_ARCH_X86_64 = 0xC000003E
_NR = {"clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone3": 435}
_X32_BIT = 0x40000000
_CLONE_THREAD = 0x00010000
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_PR_SET_NO_NEW_PRIVS, _SYS_SECCOMP, _SET_MODE_FILTER, _FLAG_TSYNC = 38, 317, 1, 1


def program(threads: bool = True) -> list[tuple[int, int, int, int]]:
    """The filter as ``(code, jt, jf, k)`` instructions (``struct sock_filter``).

    Args:
        threads: whether ``clone`` with ``CLONE_THREAD`` (a new thread) is allowed. Default: True.
    """
    allow = (_RET_K, 0, 0, _RET_ALLOW)
    denied = (_NR["fork"], _NR["vfork"], _NR["execve"], _NR["execveat"])
    head = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), allow, (_LD_W_ABS, 0, 0, 0)]
    # one test per system call; each jumps (when true) to its verdict in the tail
    tests = [(_JGE_K, "eperm", _X32_BIT)] + [(_JEQ_K, "eperm", nr) for nr in denied] + [
        (_JEQ_K, "enosys", _NR["clone3"]), (_JEQ_K, "clone" if threads else "eperm", _NR["clone"])]
    tail = {"allow": 0, "enosys": 1, "clone": 2, "eperm": 4}  # offsets in the tail below
    tail_code = [allow, (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
                 (_LD_W_ABS, 0, 0, 16), (_JSET_K, 1, 0, _CLONE_THREAD),  # clone: args[0] & CLONE_THREAD
                 (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM), allow]
    start = len(head) + len(tests)
    body = [(code, start + tail[to] - (len(head) + i) - 1, 0, k) for i, (code, to, k) in enumerate(tests)]
    return head + body + tail_code


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def unavailable() -> str | None:
    """Why this machine gets no filter (it is written for x86-64 Linux), or None. The grader asks too, for
    its report: the kernel's own word on it is not needed."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"seccomp filter not installed: {platform.system()} {platform.machine()} (x86-64 Linux only)"
    return None


def install(threads: bool = True) -> str | None:
    """Install the filter (:func:`program`) on every thread of this process: ``None`` on success, else why
    it was not. ``threads``: whether new threads may start. Default: True."""
    missing = unavailable()
    if missing:
        return missing
    libc = ctypes.CDLL(None, use_errno=True)
    insns = program(threads)
    array = (_Filter * len(insns))(*[_Filter(*i) for i in insns])
    prog = _Prog(len(insns), array)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"seccomp filter not installed: prctl(PR_SET_NO_NEW_PRIVS) failed (errno {ctypes.get_errno()})"
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(_SYS_SECCOMP), ctypes.c_long(_SET_MODE_FILTER), ctypes.c_long(_FLAG_TSYNC),
                      ctypes.byref(prog))
    if rc != 0:
        return f"seccomp filter not installed: seccomp() returned {rc} (errno {ctypes.get_errno()})"
    return None
