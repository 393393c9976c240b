"""What the grader tells an instructor while it runs: a log line per step, a progress line per batch.

Grader side (trusted). Each step of grading a submission (read, scan, assemble, kernel start, run,
each probe and its judging, restarts, trusted-file check) is logged on the ``coursekit.grader``
logger at INFO with its duration, as ``<submission>: <step> took <seconds> s``;
``coursekit grade --verbose`` shows them (on stderr), and the benchmark's profile section reads
them. A batch of several submissions shows a tqdm progress line, only when both stdout and stderr
are terminals: CI logs and redirected reports stay clean.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

__all__ = ["log", "LOG_FORMAT", "configure", "step", "progress_bar"]

log = logging.getLogger("coursekit.grader")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The format of ``--verbose``: a wall-clock time, then the step and its duration."""


def configure(level: int) -> None:
    """Send the grader's log at ``level`` and above to stderr (what ``--verbose`` does; worker processes too).

    Args:
        level: a ``logging`` level, e.g. ``logging.INFO`` for every step. ``logging.WARNING`` shows only
            what went wrong around a kernel (a failed start, a failed stop).
    """
    if not isinstance(level, int):
        raise ValueError(f"expected a logging level (an int such as logging.INFO), got {level!r}")
    log.setLevel(level)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest and Jupyter replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property always answers sys.stderr
        pass


@contextmanager
def step(submission, name: str):
    """Log ``"<submission>: <name> took <s> s"`` at INFO when the block ends (also when it raises)."""
    start = time.monotonic()
    try:
        yield
    finally:
        log.info("%s: %s took %.3f s", submission, name, time.monotonic() - start)


def progress_bar(total: int):
    """A tqdm progress line over ``total`` submissions, disabled unless stdout and stderr are terminals
    and there is more than one submission. Use it as a context manager and call ``update()`` per submission."""
    from tqdm import tqdm

    on_terminal = sys.stdout.isatty() and sys.stderr.isatty()
    return tqdm(total=total, desc="grading", unit="notebook", disable=not on_terminal or total <= 1)
