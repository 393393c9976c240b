"""Reports for instructors: the plain-text table, JSON, GitHub Classroom's result form.

Grader side (trusted). Reads ``NotebookResult`` objects only.
"""
from __future__ import annotations

import json
from pathlib import Path

from coursekit.grader.results import NotebookResult

__all__ = ["format_table", "classroom_report", "emit"]


def format_table(results: list[NotebookResult]) -> str:
    """A plain-text table: one block per notebook, one row per task."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.notebook}: NOT GRADED: {r.error}")
            continue
        lines.append(f"{r.notebook} (lesson {r.lesson}): {r.score}/{r.max_score}")
        width = max(len(t.id) for t in r.tasks)
        for t in r.tasks:
            lines.append(f"  {t.id:<{width}}  {t.points}/{t.max_points}  {t.status:<7}  {t.message}".rstrip())
    total = sum(r.score for r in results)
    lines.append(f"total: {total}/{sum(r.max_score for r in results)} over {len(results)} notebook(s)")
    return "\n".join(lines)


def classroom_report(results: list[NotebookResult]) -> dict:
    """GitHub Classroom's autograding result shape (``autograding-grading-reporter``)."""
    tests = []
    for r in results:
        if r.error:
            tests.append({"name": Path(r.notebook).name, "status": "error", "score": 0, "max_score": 0,
                          "message": r.error})
        for t in r.tasks:
            status = {"pass": "pass", "error": "error", "timeout": "error"}.get(t.status, "fail")
            tests.append({"name": f"{Path(r.notebook).name} {t.id}", "status": status, "score": t.points,
                          "max_score": t.max_points, "message": t.message or t.status})
    max_score = sum(r.max_score for r in results)
    ok = all(not r.error and r.score == r.max_score for r in results)
    return {"version": 1, "status": "pass" if ok else "fail", "max_score": max_score, "tests": tests}



def emit(payload: dict | list, dest) -> None:
    text = json.dumps(payload, indent=2)
    if str(dest) == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n", encoding="utf-8")

