"""coursekit.grader.kernel: a cell's end and its error come from the kernel's messages, and a cell whose
idle status ZeroMQ dropped still ends with its reply's status (not at its time limit)."""
from __future__ import annotations

import queue
import time

from coursekit.grader import kernel as kernel_mod
from coursekit.grader.kernel import Kernel


class _Shell:
    def __init__(self, replies):
        self.replies = list(replies)

    def msg_ready(self):
        return bool(self.replies)

    def get_msg(self, timeout=None):
        return self.replies.pop(0)


class _Client:
    """Publishes ``iopub`` (then nothing) and answers on the shell channel with ``reply``."""

    def __init__(self, iopub, reply):
        self.iopub, self.reply = list(iopub), reply
        self.shell_channel = _Shell([])

    def execute(self, source, **kw):
        self.shell_channel.replies = [{"parent_header": {"msg_id": "earlier"}, "content": {"status": "ok"}},
                                      {"parent_header": {"msg_id": "m1"}, "content": self.reply}]
        return "m1"

    def get_iopub_msg(self, timeout=None):
        if self.iopub:
            return self.iopub.pop(0)
        time.sleep(min(timeout, 0.01))
        raise queue.Empty


def _kernel(tmp_path, client) -> Kernel:
    (tmp_path / "cwd").mkdir(exist_ok=True)
    k = Kernel(tmp_path / "cwd")
    k.client = client
    k.alive = lambda: True
    return k


def _msg(kind, content, parent="m1"):
    return {"parent_header": {"msg_id": parent}, "msg_type": kind, "content": content}


def test_a_cell_ends_at_its_idle_status_with_its_first_error(tmp_path):
    idle = _msg("status", {"execution_state": "idle"})
    error = _msg("error", {"ename": "ZeroDivisionError", "evalue": "division by zero"})
    other = _msg("error", {"ename": "KeyError", "evalue": "from an earlier cell"}, parent="m0")
    k = _kernel(tmp_path, _Client([other, error, idle], {"status": "error"}))
    assert k.run("1/0", 30) == ("error", "ZeroDivisionError: division by zero")
    k = _kernel(tmp_path, _Client([idle], {"status": "ok"}))
    assert k.run("x = 1", 30) == ("ok", "")


def test_a_dropped_idle_status_ends_the_cell_with_its_reply_after_a_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_mod, "_IDLE_GRACE", 0.2)
    monkeypatch.setattr(kernel_mod, "_POLL", 0.02)
    k = _kernel(tmp_path, _Client([], {"status": "error", "ename": "ValueError", "evalue": "bad"}))
    t0 = time.monotonic()
    assert k.run("raise ValueError('bad')", 30) == ("error", "ValueError: bad")
    assert time.monotonic() - t0 < 5  # not the 30 s limit


def test_without_reply_or_idle_the_cell_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_mod, "_POLL", 0.02)
    client = _Client([], {})
    client.execute = lambda source, **kw: "m1"  # no reply ever comes
    k = _kernel(tmp_path, client)
    assert k.run("while True: pass", 1) == ("timeout", "time limit of 1 s exceeded")
