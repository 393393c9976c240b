"""A judge that records the keys it is given and the keys it reads, for checking them against a body's declaration.

Used by tests/test_tasks.py (every catalogue answer through the grader's pipeline) and
tests/test_kernel_side.py (that the record can fail).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Reads", "KeyRecord", "recording_task"]


class Reads(dict):
    """A dict that records the keys read from it (``[]``, ``get``, ``in``); iterating is not reading a key."""

    def __init__(self, data, reads: set):
        super().__init__(data)
        self.reads = reads

    def __getitem__(self, key):
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.reads.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.reads.add(key)
        return super().__contains__(key)


@dataclass
class KeyRecord:
    """Output and meta keys a body wrote (as the judge got them) and the keys the judge read."""

    written_arrays: set = field(default_factory=set)
    written_meta: set = field(default_factory=set)
    read_arrays: set = field(default_factory=set)
    read_meta: set = field(default_factory=set)

    def undeclared(self, outputs) -> dict[str, set]:
        """Every recorded key that ``outputs`` (a body's declaration) does not declare, by what it was."""
        found = {
            "written output": {k for k in self.written_arrays if not outputs.allows_array(k)},
            "written meta": {k for k in self.written_meta if not outputs.allows_meta(k)},
            "read output": {k for k in self.read_arrays if not outputs.allows_array(k)},
            "read meta": {k for k in self.read_meta if not outputs.allows_meta(k)},
        }
        return {what: keys for what, keys in found.items() if keys}


def recording_task(task, record: KeyRecord):
    """``task`` with a judge that records into ``record`` and then judges as ``task.judge`` does."""

    def judge(params, inputs, out, meta):
        record.written_arrays |= set(out)
        record.written_meta |= set(meta)
        meta = dict(meta, _kinds=Reads(meta.get("_kinds", {}), record.read_arrays))
        return task.judge(params, inputs, Reads(out, record.read_arrays), Reads(meta, record.read_meta))

    return replace(task, judge=judge)
