"""Bounded I/O with the learner's kernel: read back what it wrote without trusting it, write inputs safely.

Grader side (trusted). The kernel can write anything into its task directory, so every file the
grader reads from there may be a symlink (to a secret, to ``/dev/zero``), a FIFO, a huge file, a
zip bomb, or JSON nested 200 000 deep; and every file the grader writes there may have been
planted in advance. Here every read is

* of a *regular file* (``O_NOFOLLOW | O_NONBLOCK``, then ``fstat``): no symlink, FIFO or device;
* capped in bytes before parsing, and ``.npz`` archives are checked member by member (count,
  names, declared sizes, each array's header: dtype without objects, ``prod(shape) * itemsize``
  within budget) before a single array is loaded, so a 4 MB archive cannot unpack into gigabytes;
* parsed into plain data only (``allow_pickle=False``; JSON depth errors caught);

and every failure raises ``OutputError`` with a message that quotes nothing from the file, which
the grader turns into *that task's* error. Every write creates a new file (``O_CREAT | O_EXCL |
O_NOFOLLOW``) in a directory the grader has just created with ``new_dir`` (``mkdtemp``: fresh,
unguessable, mode 0700), so nothing the kernel planted is followed or overwritten.

Used by ``coursekit.grader.grade``; tests in ``tests/test_bounded.py``.
"""
from __future__ import annotations

import io
import json
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["OutputError", "read_regular", "load_json", "load_npz", "write_json", "save_npz", "new_dir",
           "MAX_JSON_BYTES", "MAX_NPZ_BYTES", "MAX_ARRAY_BYTES", "MAX_MEMBERS"]

MAX_JSON_BYTES = 2**20  # a probe's result: a status, a message, a little metadata
MAX_NPZ_BYTES = 64 * 2**20  # compressed, on disk
MAX_ARRAY_BYTES = 64 * 2**20  # uncompressed, all arrays of one archive together (probes return KBs)
MAX_MEMBERS = 256


class OutputError(ValueError):
    """A file the kernel wrote (or planted) is unusable: the task's error, never the grader's."""


def read_regular(path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (not a symlink, FIFO or device), at most ``max_bytes``.

    Raises:
        OutputError: missing, not a regular file, or larger than ``max_bytes``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise OutputError(f"{Path(path).name} was not written") from None
    except OSError as exc:  # ELOOP: a symlink; ENXIO: a FIFO without writer
        raise OutputError(f"{Path(path).name} is not a regular file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{Path(path).name} is not a regular file")
        if st.st_size > max_bytes:
            raise OutputError(f"{Path(path).name} is too large ({st.st_size} bytes, at most {max_bytes})")
        chunks, left = [], max_bytes + 1  # the file may grow after fstat: never read past the cap
        while left > 0:
            chunk = os.read(fd, min(left, 2**20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise OutputError(f"{Path(path).name} is too large (more than {max_bytes} bytes)")
    return data


def load_json(path, max_bytes: int = MAX_JSON_BYTES):
    """Plain data from a JSON file the kernel wrote (bounded in size; deep nesting is an ``OutputError``)."""
    data = read_regular(path, max_bytes)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise OutputError(f"{Path(path).name} is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise OutputError(f"{Path(path).name} is not valid JSON ({type(exc).__name__})") from None


def load_npz(path, max_bytes: int = MAX_NPZ_BYTES, max_array_bytes: int = MAX_ARRAY_BYTES,
             max_members: int = MAX_MEMBERS) -> dict:
    """``{name: ndarray}`` from an ``.npz`` the kernel wrote, checked before anything is decompressed.

    Args:
        path: the archive.
        max_bytes: cap on the archive's size on disk. Default: 64 MiB.
        max_array_bytes: cap on the arrays' total size once loaded. Default: 64 MiB.
        max_members: cap on the number of arrays. Default: 256.

    Raises:
        OutputError: any violation, or an archive numpy cannot read.
    """
    import zipfile

    import numpy as np
    from numpy.lib import format as npformat

    name = Path(path).name
    data = read_regular(path, max_bytes)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise OutputError(f"{name} is not an .npz archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise OutputError(f"{name} holds {len(infos)} arrays (at most {max_members})")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
            raise OutputError(f"{name}: expected distinct .npy members")
        if sum(i.file_size for i in infos) > max_array_bytes + 4096 * len(infos):
            raise OutputError(f"{name} unpacks to more than {max_array_bytes} bytes")
        out, budget = {}, max_array_bytes
        for info in infos:
            try:
                with zf.open(info) as f:  # zipfile stops at the declared size: a lying header cannot grow it
                    version = npformat.read_magic(f)
                    if version not in ((1, 0), (2, 0)):
                        raise ValueError("unknown .npy version")
                    reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
                    shape, _, dtype = reader(f, max_header_size=10_000)
                    if dtype.hasobject:
                        raise OutputError(f"{name}: {info.filename[:-4]} holds Python objects (expected numbers)")
                    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if nbytes > budget or nbytes > info.file_size:
                        raise OutputError(f"{name}: {info.filename[:-4]} is too large or truncated")
                    budget -= nbytes
                with zf.open(info) as f:
                    out[info.filename[:-4]] = npformat.read_array(f, allow_pickle=False)
            except OutputError:
                raise
            except Exception as exc:  # bad header, CRC error, truncated data, ...
                raise OutputError(f"{name}: array {info.filename[:-4][:50]!r} is unreadable ({type(exc).__name__})") from None
    return out


def new_dir(parent, prefix: str) -> Path:
    """A fresh directory under ``parent`` (``mkdtemp``: unguessable name, mode 0700, never pre-existing)."""
    return Path(tempfile.mkdtemp(prefix=prefix + "-", dir=parent))


def _create(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    return os.fdopen(fd, "wb")


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON to a *new* file ``path`` (an existing file or symlink there is an error)."""
    with _create(path) as f:
        f.write(json.dumps(obj).encode("utf-8"))


def save_npz(path, arrays: dict) -> None:
    """``np.savez`` to a *new* file ``path`` (an existing file or symlink there is an error)."""
    import numpy as np

    with _create(path) as f:
        np.savez(f, **arrays)
