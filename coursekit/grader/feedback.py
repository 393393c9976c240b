"""Feedback for each learner: one Markdown or HTML file per learner (``coursekit grade --feedback DIR``).

Grader side (trusted). Each file shows the learner's score on the assignment, then per due task its
notebook, points and verdict, then the failing case and the hint of each task that did not pass,
what could not be graded and what did not count, built from the learner's grade
(``coursekit.grader.assignment``) only. The seed of the hidden inputs
is not one of them (the grader never records it), so no feedback file can reveal it. Everything the
submission can influence (messages quote the learner's exceptions, file names are the learner's) is
escaped: HTML-escaped in HTML, and in Markdown kept inside code spans and fenced blocks, where
Markdown renders neither HTML nor links.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from coursekit.grader.assignment import LearnerGrade
from coursekit.grader.reports import format_points

__all__ = ["FORMATS", "feedback_markdown", "feedback_html", "write_feedback"]

FORMATS = ("md", "html")

_VERDICT = {"pass": "passed", "fail": "wrong result", "error": "your code raised an error",
            "timeout": "took too long", "missing": "not answered"}


def _fence(text: str) -> str:
    """A fenced code block that ``text`` cannot close (the fence is longer than any backtick run in it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _code(text: str) -> str:
    """An inline code span for one line of text (newlines folded to spaces)."""
    text = " ".join(str(text).split())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    tick = "`" * (longest + 1)
    return f"{tick} {text} {tick}"


def _verdict(e, t) -> str:
    """A task's verdict in words; a task of a notebook that was not submitted says so."""
    return "not submitted" if t.status == "missing" and not e.notebook else _VERDICT.get(t.status, t.status)


def _title(g: LearnerGrade) -> str:
    return f"learner {g.learner}"


def _failed(g: LearnerGrade):
    """(exercise grade, task) of every task that did not pass."""
    return [(e, t) for e in g.exercises for t in e.tasks if t.status != "pass"]


def feedback_markdown(g: LearnerGrade) -> str:
    """The Markdown feedback of one learner: the assignment's score, every due task, then what went wrong."""
    lines = [f"# Feedback: {_code(_title(g))}", "",
             f"**{format_points(g.score)}/{format_points(g.max_score)} points** ({_code(g.assignment.describe())}). "
             "A task earns its points when every hidden test case passes.", "",
             "| task | notebook | points | verdict |", "|---|---|---|---|"]
    for e in g.exercises:
        for t in e.tasks:
            points = f"{format_points(t.points)}/{format_points(t.max_points)}"
            lines.append(f"| {_code(t.id)} | {_code(e.notebook or 'none submitted')} | {points} | {_verdict(e, t)} |")
    for e in g.exercises:
        if e.error:
            lines += ["", f"## Lesson {e.exercise.lesson}: not graded", "", _fence(e.error), "",
                      "Fix the file and submit again."]
    for e, t in _failed(g):
        if e.error or (t.status == "missing" and not e.notebook):
            continue
        what, hint = t.message, t.hint
        lines += ["", f"## {_code(t.id)}: {_VERDICT.get(t.status, t.status)}", ""]
        case = t.case
        if case and case not in what:
            lines += [f"Failing case: {_code(case)}", ""]
        lines.append(_fence(what or t.status))
        if hint:
            lines += ["", "**Hint:**", "", _fence(hint)]
    if g.not_counted:
        lines += ["", "## Not counted", ""] + [f"- {_code(n)}: {_code(why)}" for n, why in g.not_counted]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em;text-align:left}"
        ".pass{color:#060}.notpass{color:#a00}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}")


def feedback_html(g: LearnerGrade) -> str:
    """The HTML feedback of one learner (a standalone page; every dynamic text is escaped)."""
    e = html.escape
    title = e(_title(g))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>Feedback: {title}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>Feedback: {title}</h1>",
           f"<p><strong>{e(format_points(g.score))}/{e(format_points(g.max_score))} points</strong> "
           f"({e(g.assignment.describe())}). A task earns its points when every hidden test case passes.</p>",
           "<table><tr><th>task</th><th>notebook</th><th>points</th><th>verdict</th></tr>"]
    for ex in g.exercises:
        for t in ex.tasks:
            cls = "pass" if t.status == "pass" else "notpass"
            out.append(f'<tr><td><code>{e(t.id)}</code></td><td><code>{e(ex.notebook or "none submitted")}</code></td>'
                       f'<td>{e(format_points(t.points))}/{e(format_points(t.max_points))}</td>'
                       f'<td class="{cls}">{e(_verdict(ex, t))}</td></tr>')
    out.append("</table>")
    for ex in g.exercises:
        if ex.error:
            out += [f"<h2>Lesson {e(ex.exercise.lesson)}: not graded</h2>", f"<pre>{e(ex.error)}</pre>",
                    "<p>Fix the file and submit again.</p>"]
    for ex, t in _failed(g):
        if ex.error or (t.status == "missing" and not ex.notebook):
            continue
        what, hint = t.message, t.hint
        out.append(f"<h2><code>{e(t.id)}</code>: {e(_VERDICT.get(t.status, t.status))}</h2>")
        case = t.case
        if case and case not in what:
            out.append(f"<p>Failing case: <code>{e(case)}</code></p>")
        out.append(f"<pre>{e(what or t.status)}</pre>")
        if hint:
            out.append(f"<p><strong>Hint:</strong></p><pre>{e(hint)}</pre>")
    if g.not_counted:
        out.append("<h2>Not counted</h2>")
        out += [f"<p><code>{e(n)}</code>: {e(why)}</p>" for n, why in g.not_counted]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


def write_feedback(grades: list[LearnerGrade], directory, fmt: str = "md") -> list[Path]:
    """Write one feedback file per learner into ``directory`` (created if needed); return the paths.

    Files are named ``<learner>.<fmt>`` (characters other than letters, digits, ``.``, ``_`` and ``-``
    become ``_``; a repeated name gets ``-2``, ``-3`` ...). See ``coursekit.grader.intake.identify``
    for how the learner is found.
    """
    if fmt not in FORMATS:
        raise ValueError(f"expected a feedback format in {FORMATS} (got {fmt!r})")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    render = feedback_markdown if fmt == "md" else feedback_html
    written: list[Path] = []
    used: set[str] = set()
    for g in grades:
        base = _safe(g.learner)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        path = directory / f"{name}.{fmt}"
        path.write_text(render(g), encoding="utf-8")
        written.append(path)
    return written
