"""What grading produces: one ``TaskResult`` per task, one ``NotebookResult`` per submission.

Grader side (trusted). Every report format (``coursekit.grader.reports``) reads only these.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["STATUSES", "GradingError", "TaskResult", "NotebookResult"]

STATUSES = ("pass", "fail", "error", "timeout", "missing")


class GradingError(Exception):
    """The submission could not be graded at all (unreadable, or not one of the course's exercises)."""


@dataclass
class TaskResult:
    id: str
    points: int
    max_points: int
    status: str
    message: str = ""  # what was wrong (case, then what), without the hint
    hint: str | None = None  # what the mistake most likely is (a recognised wrong answer), when known
    case: str | None = None  # the first failing case, e.g. "case 3 shape (2, 3, 4, 5) float64"


@dataclass
class NotebookResult:
    notebook: str
    score: int
    max_score: int
    tasks: list[TaskResult] = field(default_factory=list)
    lesson: str | None = None
    error: str | None = None  # set when the submission could not be graded
    seconds: float = 0.0
    sandbox: str = ""  # "bwrap", "none" (asked for) or "UNSANDBOXED: <why>" (auto without bubblewrap)
    skipped: str | None = None  # not graded because it cannot count (assignment.plan says why)

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("error", "skipped"):
            if d[key] is None:
                del d[key]
        return d

