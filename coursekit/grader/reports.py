"""Reports for instructors: the plain-text table, JSON, GitHub Classroom's result form, the gradebook CSV.

Grader side (trusted). Reads each learner's grade on the assignment (``coursekit.grader.assignment``):
every due task appears, a missing one with 0 of its points. Gradescope's format lives in
``coursekit.grader.gradescope``, the per-learner feedback files in ``coursekit.grader.feedback``.

Points come from the task definitions (``coursekit.tasks.Task.points``, default 1). A task earns
all its points when every hidden case passes and none otherwise: there is no partial credit per
case, because the cases are drawn afresh from a secret seed on every run and a per-case score would
make a regrade of the same notebook change its grade. Weight a task by giving it more points.
"""
from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from coursekit.grader.assignment import Assignment, LearnerGrade
from coursekit.grader.results import NotebookResult, TaskResult
from coursekit.verdicts import with_hint

__all__ = ["format_table", "format_points", "grades_json", "classroom_report", "classroom_base64",
           "gradebook_rows", "write_gradebook", "feedback_text", "emit"]


def format_points(x) -> str:
    """Points as the reports print them: 1, 0.5 (no trailing .0)."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def format_table(grades: list[LearnerGrade]) -> str:
    """A plain-text table: per learner the score on the assignment, then per due exercise the counted
    notebook and one row per task (points earned/possible, status, feedback), then what did not count."""
    lines = []
    for g in grades:
        lines.append(f"{g.learner}: {format_points(g.score)}/{format_points(g.max_score)} ({g.assignment.describe()})")
        for e in g.exercises:
            where = e.notebook or "no notebook"
            lines.append(f"  lesson {e.exercise.lesson}, {where}: {format_points(e.score)}/{format_points(e.max_score)}"
                         + (f"  NOT GRADED: {e.error}" if e.error else ""))
            width = max((len(t.id) for t in e.tasks), default=0)
            for t in e.tasks:
                points = f"{format_points(t.points)}/{format_points(t.max_points)}"
                lines.append(f"    {t.id:<{width}}  {points}  {t.status:<7}  {with_hint(t.message, t.hint)}".rstrip())
        for notebook, why in g.not_counted:
            lines.append(f"  not counted: {notebook}: {why}")
    lines.append(f"{len(grades)} learner(s), each out of {format_points(grades[0].max_score) if grades else 0} points")
    return "\n".join(lines)


def grades_json(grades: list[LearnerGrade], results: list[NotebookResult], assignment: Assignment) -> dict:
    """``--json``: the assignment, each learner's grade on it, and every notebook's own result."""
    return {"assignment": assignment.lessons, "max_score": assignment.max_points,
            "learners": [g.to_json() for g in grades], "notebooks": [r.to_json() for r in results]}


def feedback_text(task: TaskResult) -> str:
    """A task's whole feedback on one line: its message and hint (``coursekit.verdicts.with_hint``)."""
    return with_hint(task.message, task.hint) or "no feedback"


def classroom_report(grade: LearnerGrade) -> dict:
    """GitHub Classroom's result object for one learner's repository, as ``autograding-grading-reporter`` reads it.

    ``{"version": 1, "status": "pass"|"fail", "max_score", "tests": [{"name", "status", "score",
    "max_score", "message", "line_no"}]}``, one test per task of the assignment. The reporter prints a
    ``pass`` as ``✅ <name>`` and any other test only as ``Error: <message>``; so a task that passed is
    ``pass`` named ``<task id> (<points>/<max>)``, and every other task is ``error`` with a message that
    starts with ``❌ <task id> (0/<max>) <status>:`` then the feedback and hint: each printed line names
    its task and verdict. ``line_no`` is 0 (no line): the reporter shows a line only for ``pass`` and
    ``fail`` tests, so the line of the answer cell an exception came from, when known, is in the
    message (``raised ValueError: ... (line 3 of your answer cell: ...)``).
    Classroom records the sum of the tests' scores over ``max_score``, the assignment's total (a missing
    notebook's tasks are in ``tests`` with 0 points), so a missing or empty ``exercises/`` records 0 of
    it. A notebook that did not count is an ``error`` test worth 0. The reporter reads the object
    base64-encoded (``classroom_base64``).
    """
    tests = []
    for e in grade.exercises:
        for t in e.tasks:
            head = f"{t.id} ({format_points(t.points)}/{format_points(t.max_points)})"
            if t.status == "pass":
                tests.append({"name": head, "status": "pass", "score": t.points, "max_score": t.max_points,
                              "message": "pass", "line_no": 0})
            else:
                tests.append({"name": head, "status": "error", "score": t.points, "max_score": t.max_points,
                              "message": f"❌ {head} {t.status}: {feedback_text(t)}", "line_no": 0})
    for notebook, why in grade.not_counted:
        tests.append({"name": f"not counted: {notebook}", "status": "error", "score": 0, "max_score": 0,
                      "message": f"❌ not counted: {notebook}: {why}", "line_no": 0})
    return {"version": 1, "status": "pass" if grade.complete else "fail", "max_score": grade.max_score, "tests": tests}


def classroom_base64(report: dict) -> str:
    """The value the reporter expects in ``<RUNNER_ID>_RESULTS``: base64 of the JSON text (one line)."""
    return base64.b64encode(json.dumps(report).encode("utf-8")).decode("ascii")


def _cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``= + - @`` (a formula) gets a ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def gradebook_rows(grades: list[LearnerGrade]) -> list[dict]:
    """One dict per learner: ``learner``, one key per task id of the assignment (points earned; 0 when
    missing or not graded), ``total``, ``max`` (the assignment's), ``notebooks`` (the counted files) and
    ``error`` (what was not graded or did not count; empty when nothing)."""
    rows = []
    for g in grades:
        row = {"learner": g.learner}
        row.update({t.id: t.points for e in g.exercises for t in e.tasks})
        problems = [f"lesson {e.exercise.lesson}: {e.error}" for e in g.exercises if e.error]
        problems += [f"not counted: {n}: {why}" for n, why in g.not_counted]
        row.update({"total": g.score, "max": g.max_score,
                    "notebooks": "; ".join(e.notebook for e in g.exercises if e.notebook), "error": "; ".join(problems)})
        rows.append(row)
    return rows


def write_gradebook(grades: list[LearnerGrade], dest) -> None:
    """The gradebook CSV (UTF-8, comma-separated, one header row, one row per learner).

    Columns: ``learner``, then one column per task of the assignment, named ``<task id> (max <points>)``
    in the course's order, then ``total, max, notebooks, error``. A task whose notebook is missing or
    could not be graded has 0; ``error`` says why.
    """
    tasks = grades[0].assignment.tasks if grades else []
    header = ["learner", *(f"{t.id} (max {format_points(t.points)})" for t in tasks), "total", "max", "notebooks", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in gradebook_rows(grades):
        w.writerow([_cell(row["learner"]), *(format_points(row[t.id]) for t in tasks),
                    format_points(row["total"]), format_points(row["max"]), _cell(row["notebooks"]), _cell(row["error"])])
    if str(dest) == "-":
        print(buf.getvalue(), end="")
    else:
        Path(dest).write_text(buf.getvalue(), encoding="utf-8")


def emit(payload: dict | list, dest) -> None:
    """Write JSON to a file, or to stdout for ``-``."""
    text = json.dumps(payload, indent=2)
    if str(dest) == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n", encoding="utf-8")
