"""Reports for instructors: the plain-text table, JSON, GitHub Classroom's result form, the gradebook CSV.

Grader side (trusted). Reads ``NotebookResult`` objects only. Gradescope's format lives in
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
import re
from pathlib import Path

from coursekit.grader.results import NotebookResult, TaskResult

__all__ = ["format_table", "format_points", "classroom_report", "classroom_base64", "display_names", "learner_id",
           "gradebook_rows", "write_gradebook", "hint_of", "feedback_text", "expected_max", "emit"]


def format_points(x) -> str:
    """Points as the reports print them: 1, 0.5 (no trailing .0)."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def format_table(results: list[NotebookResult]) -> str:
    """A plain-text table: one block per notebook, one row per task (points earned/possible, status, feedback)."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.notebook}: NOT GRADED: {r.error}")
            continue
        lines.append(f"{r.notebook} (lesson {r.lesson}): {format_points(r.score)}/{format_points(r.max_score)}")
        width = max((len(t.id) for t in r.tasks), default=0)
        for t in r.tasks:
            points = f"{format_points(t.points)}/{format_points(t.max_points)}"
            lines.append(f"  {t.id:<{width}}  {points}  {t.status:<7}  {t.message}".rstrip())
    total = f"{format_points(sum(r.score for r in results))}/{format_points(sum(r.max_score for r in results))}"
    lines.append(f"total: {total} over {len(results)} notebook(s)")
    return "\n".join(lines)


def display_names(results: list[NotebookResult]) -> list[str]:
    """How reports name each submission: its file name, or ``folder/file name`` when several
    submissions in the run share a file name (``alice/02_....ipynb``, ``bob/02_....ipynb``)."""
    names = [Path(r.notebook).name for r in results]
    return [f"{Path(r.notebook).parent.name}/{n}" if names.count(n) > 1 else n for r, n in zip(results, names)]


_HINT_SEP = re.compile(r"(?:;| —) hint: ")


def hint_of(task: TaskResult) -> tuple[str, str]:
    """(what failed, hint) of a task's feedback: the message without its hint, and the hint (the
    result's ``hint`` field, else what follows ``"; hint: "`` or ``" — hint: "`` in the message)."""
    parts = _HINT_SEP.split(task.message, maxsplit=1)
    hint = getattr(task, "hint", None) or (parts[1] if len(parts) > 1 else "")
    return parts[0], hint


def feedback_text(task: TaskResult) -> str:
    """A task's whole feedback on one line: the message, and the hint if the result keeps it apart."""
    what, hint = hint_of(task)
    text = task.message or what
    if hint and hint not in text:
        text = f"{text}; hint: {hint}"
    return text or "no feedback"


def expected_max(result: NotebookResult):
    """The points a submission was worth: its ``max_score``, or for one that could not be graded, the
    points of the exercise its file name names (0 when the name names none)."""
    if not result.error or result.max_score:
        return result.max_score
    from coursekit.tasks import EXERCISES

    stem = Path(result.notebook).stem
    for ex in EXERCISES:
        if ex.stem in stem or stem.startswith(ex.lesson + "_"):
            return sum(t.points for t in ex.tasks)
    return 0


def classroom_report(results: list[NotebookResult], note: str = "") -> dict:
    """GitHub Classroom's result object, as ``autograding-grading-reporter`` parses it.

    ``{"version": 1, "status": "pass"|"fail", "max_score", "tests": [{"name", "status", "score",
    "max_score", "message", "line_no"}]}``, one test per task. The reporter prints a test's ``message``
    only when its status is ``error``, so every task that did not pass is reported as ``error`` and its
    message starts with coursekit's own status (``fail``, ``error``, ``timeout``, ``missing``) followed
    by the feedback and hint: that is how a learner sees the hint of a failed task. ``line_no`` is the
    line of the learner's answer cell an exception came from when the grader knows it, else 0.
    A notebook that could not be graded is one ``error`` test worth the exercise's points.
    ``note`` (e.g. "no notebook found") becomes an ``error`` test of its own.
    The reporter reads the object base64-encoded (``classroom_base64``).
    """
    tests = [{"name": "submission", "status": "error", "score": 0, "max_score": 0, "message": note, "line_no": 0}] if note else []
    for r, name in zip(results, display_names(results)):
        if r.error:
            tests.append({"name": f"{name} (not graded)", "status": "error", "score": 0, "max_score": expected_max(r),
                          "message": f"not graded: {r.error}", "line_no": 0})
        for t in r.tasks:
            ok = t.status == "pass"
            tests.append({"name": f"{t.id} ({name})", "status": "pass" if ok else "error", "score": t.points,
                          "max_score": t.max_points,
                          "message": "pass" if ok else f"{t.status}: {feedback_text(t)}",
                          "line_no": int(getattr(t, "line", None) or 0)})
    max_score = sum(expected_max(r) for r in results)
    ok = bool(results) and all(not r.error and r.score == r.max_score for r in results)
    return {"version": 1, "status": "pass" if ok else "fail", "max_score": max_score, "tests": tests}


def classroom_base64(report: dict) -> str:
    """The value the reporter expects in ``<RUNNER_ID>_RESULTS``: base64 of the JSON text (one line)."""
    return base64.b64encode(json.dumps(report).encode("utf-8")).decode("ascii")


_EXERCISE_NAME = re.compile(r"(?:^|[_\-. ])(0[2-9])_[A-Za-z0-9_]*$")


def learner_id(notebook: str | Path, roots=()) -> str:
    """The learner a submission belongs to, from its folder or file name.

    Rule (first that applies):

    1. a notebook in a sub-folder of a directory given on the command line belongs to that
       sub-folder: ``submissions/alice/02_bn_forward_exercises.ipynb`` (and
       ``submissions/alice/any/depth/x.ipynb``) -> ``alice``;
    2. a file name with text before the exercise's name: that text, ``alice_02_bn_forward_exercises.ipynb``
       -> ``alice`` (also with ``-``, ``.`` or a space as separator);
    3. a file name that is not an exercise name: its stem, ``alice.ipynb`` -> ``alice``;
    4. a file named exactly like the exercise: the folder it is in, ``alice/02_bn_forward_exercises.ipynb`` -> ``alice``.
    """
    path = Path(notebook)
    for root in map(Path, roots):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if len(rel.parts) > 1:
            return rel.parts[0]
    stem = path.stem
    m = _EXERCISE_NAME.search(stem)
    if m is None:
        return stem
    if m.start() > 0:
        return stem[:m.start()]
    return path.parent.name or stem


def _cell(value) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``= + - @`` (a formula) gets a ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def gradebook_rows(results: list[NotebookResult], roots=()) -> list[dict]:
    """One dict per submission: ``learner``, ``notebook``, ``lesson``, one key per task id (points
    earned, empty if the task is not in that notebook's lesson or it was not graded), ``total``,
    ``max`` and ``error`` (empty when graded)."""
    rows = []
    for r in results:
        row = {"learner": learner_id(r.notebook, roots), "notebook": Path(r.notebook).name, "lesson": r.lesson or ""}
        row.update({t.id: t.points for t in r.tasks})
        row.update({"total": r.score, "max": expected_max(r), "error": r.error or ""})
        rows.append(row)
    return rows


def write_gradebook(results: list[NotebookResult], dest, roots=()) -> None:
    """The gradebook CSV (UTF-8, comma-separated, one header row, one row per submission).

    Columns: ``learner, notebook, lesson``, then one column per task of the lessons present, named
    ``<task id> (max <points>)`` in the course's order, then ``total, max, error``. A submission that
    could not be graded has empty task cells, ``total`` 0 and the reason in ``error``.
    """
    from coursekit.tasks import EXERCISES

    lessons = {r.lesson for r in results if r.lesson}
    tasks = [t for ex in EXERCISES if ex.lesson in lessons for t in ex.tasks]
    seen = {t.id for r in results for t in r.tasks}
    tasks = [t for t in tasks if t.id in seen]
    max_of = {t.id: t.max_points for r in results for t in r.tasks}
    header = ["learner", "notebook", "lesson", *(f"{t.id} (max {format_points(max_of[t.id])})" for t in tasks),
              "total", "max", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in gradebook_rows(results, roots):
        w.writerow([_cell(row["learner"]), _cell(row["notebook"]), row["lesson"],
                    *(format_points(row[t.id]) if t.id in row else "" for t in tasks),
                    format_points(row["total"]), format_points(row["max"]), _cell(row["error"])])
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
