"""What a task body declares it writes: the keys of its outputs and of its meta.

Kernel side (see :mod:`coursekit.kernel_side`), but this module itself never crosses: the
declaration is read on the trusted side, and ``coursekit.tasks._kernel_source`` leaves the
decorator out of the source it sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Outputs", "writes"]


@dataclass(frozen=True)
class Outputs:
    """The keys a body may write. A key ending in ``*`` is a prefix (``"state_*"``: one entry per
    ``state_dict`` key; ``"dx*"``: ``dx0``, ``dx1``, ...).

    Args:
        arrays: keys of the outputs (tensors/arrays, read back as numpy arrays).
        meta: keys of the meta (JSON data). Default: none.
    """

    arrays: tuple[str, ...]
    meta: tuple[str, ...] = ()

    @staticmethod
    def _allows(patterns: tuple[str, ...], key: str) -> bool:
        return any(key.startswith(p[:-1]) if p.endswith("*") else key == p for p in patterns)

    def allows_array(self, key: str) -> bool:
        """Whether ``key`` is a declared output."""
        return self._allows(self.arrays, key)

    def allows_meta(self, key: str) -> bool:
        """Whether ``key`` is a declared meta entry (``_kinds`` is written by ``in_kernel`` for every output)."""
        return key == "_kinds" or self._allows(self.meta, key)


def writes(*arrays: str, meta: tuple[str, ...] = ()) -> Callable:
    """Declare the output keys (``arrays``) and ``meta`` keys a body writes (as :class:`Outputs`).

    Example::

        @writes("mean", "var", "x_after", meta=("returned",))
        def run_channel_stats(channel_stats, case, tensors, arrays, recording): ...
    """

    def declare(body: Callable) -> Callable:
        body.outputs = Outputs(tuple(arrays), tuple(meta))
        return body

    return declare
