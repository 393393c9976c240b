"""The native layer that refuses autograd nodes called by hand: built once, found by the grader.

Lesson 04's graded backward must not use automatic differentiation. The engine is seen by the
dispatch record, forward-mode AD by the dispatcher, but a node called by hand (``y.grad_fn(dy)``,
``next_functions`` walked by hand) runs no operator that tells it apart. A global ``RecordFunction``
callback of torch's C++ side does see it, in every thread: ``native/handcalls.cpp`` refuses a node
that runs while it is not the engine's current node. It is C++ on purpose: a callback registered
from Python would be a Python object the learner's code could reach.

This module (trusted side) compiles ``native/handcalls.cpp`` against the installed torch with the
system's C++ compiler (``$CXX``, else ``g++``; ~8 s once) into a cache keyed by the source, torch's
version and the Python, so a changed source or another torch never loads a stale library. The
learner's kernel loads it (``coursekit.grader.guard``). Without a compiler the layer is missing and
:func:`library` says why.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["SOURCE", "COUNT", "STOP", "cache_dir", "library", "cached", "arm", "hand_calls", "last", "disarm", "counter"]

SOURCE = Path(__file__).with_name("native") / "handcalls.cpp"
_BUILD_TIMEOUT = 300  # seconds: a loaded 2-core machine compiles it in ~8 s
COUNT, STOP = 1, 2  # the library's modes: count hand calls (a check), stop the process at one (the grader)
# torch's switches that would silence the callback (RecordFunction off in a thread, every callback removed)
_SWITCHES = ("_enable_record_function", "_clear_callbacks")


def cache_dir() -> Path:
    """``$COURSEKIT_CACHE/native``, else ``~/.cache/coursekit/native`` (``$XDG_CACHE_HOME`` honoured)."""
    root = os.environ.get("COURSEKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "coursekit"
    return Path(root) / "native"


def _key() -> str:
    import torch

    ident = b"\0".join([SOURCE.read_bytes(), torch.__version__.encode(), sys.version.encode(),
                        str(int(torch._C._GLIBCXX_USE_CXX11_ABI)).encode()])
    return hashlib.sha256(ident).hexdigest()[:16]


def library() -> tuple[Path | None, str | None]:
    """``(path of the compiled library, None)``, building it if it is not cached yet, or
    ``(None, why it is not available)``."""
    found = cached()
    if found is not None:
        return found, None
    target = cache_dir() / _key() / "handcalls.so"
    compiler = shutil.which(os.environ.get("CXX") or "g++")
    if compiler is None:
        return None, "hand-called autograd nodes not refused: no C++ compiler (install g++, or set CXX)"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _compile(compiler, target)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"hand-called autograd nodes not refused: building {SOURCE.name} failed ({exc})"
    return target, None


def cached() -> Path | None:
    """The compiled library if it is already built (a check never compiles: ``coursekit doctor`` does)."""
    try:
        target = cache_dir() / _key() / "handcalls.so"
    except OSError:
        return None
    return target if target.is_file() else None


def arm(path, mode: int, marker: str = "") -> None:
    """Load the library into this process and arm it (kernel side). ``mode``: :data:`COUNT` or :data:`STOP`
    (for the process's life: the node's name goes to ``marker``, then the process is killed).

    Called before ``coursekit.grader.guard`` installs its audit hook (loading a library is ``ctypes``).
    With :data:`STOP`, torch's two Python switches that would silence the callback are removed from every
    loaded module, so the learner's code cannot reach them.
    """
    import torch

    torch.ops.load_library(str(path))
    torch.ops.coursekit_handcalls.arm(int(mode), str(marker))
    if mode >= STOP:
        switches = [getattr(torch._C._autograd, name, None) for name in _SWITCHES]
        for module in list(sys.modules.values()):
            for attr, value in list(getattr(module, "__dict__", {}).items()):
                if any(value is s for s in switches if s is not None):
                    delattr(module, attr)


def hand_calls() -> int:
    """Hand-called nodes seen so far in this process (the library is loaded)."""
    import torch

    return int(torch.ops.coursekit_handcalls.count())


def last() -> str:
    """The name of the last node called by hand (the library is loaded)."""
    import torch

    return str(torch.ops.coursekit_handcalls.last())


def disarm() -> None:
    """Stop counting (a check's scope is over); the grader's :data:`STOP` mode cannot be undone."""
    import torch

    torch.ops.coursekit_handcalls.disarm()


def counter():
    """The check's count of autograd nodes called by hand, from now on: a function that returns the last node
    called by hand since its previous call (or since now), else None. None when the library is not built
    (a check never compiles; ``coursekit doctor`` does). Stop counting with :func:`disarm`."""
    library = cached()
    if library is None:
        return None
    arm(library, COUNT)
    seen = [hand_calls()]

    def since() -> str | None:
        now = hand_calls()
        node = last() if now > seen[0] else None
        seen[0] = now
        return node

    return since


def _compile(compiler: str, target: Path) -> None:
    """Compile into a temporary file beside ``target``, then rename: graders building at the same time
    never load a half-written library."""
    import torch
    from torch.utils.cpp_extension import include_paths, library_paths

    lib = library_paths()[0]
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, "-O2", "-shared", "-fPIC", "-std=c++20", "-w",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
           *(f"-I{p}" for p in include_paths()), str(SOURCE), f"-L{lib}", "-lc10", "-ltorch_cpu",
           f"-Wl,-rpath,{lib}", "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT)
        if proc.returncode != 0:
            raise subprocess.SubprocessError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
