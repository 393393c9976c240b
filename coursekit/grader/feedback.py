"""Feedback for each learner: one Markdown or HTML file per submission (``coursekit grade --feedback DIR``).

Grader side (trusted). Each file shows the notebook's score, then per task its points, verdict, the
failing case and the hint, built from ``NotebookResult`` fields only. The seed of the hidden inputs
is not one of them (the grader never records it), so no feedback file can reveal it. Everything the
submission can influence (messages quote the learner's exceptions, file names are the learner's) is
escaped: HTML-escaped in HTML, and in Markdown kept inside code spans and fenced blocks, where
Markdown renders neither HTML nor links.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from coursekit.grader.reports import expected_max, format_points, hint_of, learner_id
from coursekit.grader.results import NotebookResult

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


def _title(r: NotebookResult, learner: str) -> str:
    return f"{Path(r.notebook).name}, learner {learner}"


def feedback_markdown(r: NotebookResult, learner: str) -> str:
    """The Markdown feedback of one submission."""
    lines = [f"# Feedback: {_code(_title(r, learner))}", ""]
    if r.error:
        lines += [f"**Not graded** (0/{format_points(expected_max(r))} points). The grader could not read this submission:", "",
                  _fence(r.error), "", "Fix the file and submit again.", ""]
        return "\n".join(lines)
    lines += [f"Lesson {r.lesson}: **{format_points(r.score)}/{format_points(r.max_score)} points**. "
              "A task earns its points when every hidden test case passes.", "",
              "| task | points | verdict |", "|---|---|---|"]
    for t in r.tasks:
        points = f"{format_points(t.points)}/{format_points(t.max_points)}"
        lines.append(f"| {_code(t.id)} | {points} | {_VERDICT.get(t.status, t.status)} |")
    for t in r.tasks:
        if t.status == "pass":
            continue
        what, hint = hint_of(t)
        lines += ["", f"## {_code(t.id)}: {_VERDICT.get(t.status, t.status)}", ""]
        case = getattr(t, "case", None)
        if case and case not in what:
            lines += [f"Failing case: {_code(case)}", ""]
        lines.append(_fence(what or t.status))
        if hint:
            lines += ["", "**Hint:**", "", _fence(hint)]
    return "\n".join(lines) + "\n"


_CSS = ("body{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em;text-align:left}"
        ".pass{color:#060}.notpass{color:#a00}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}")


def feedback_html(r: NotebookResult, learner: str) -> str:
    """The HTML feedback of one submission (a standalone page; every dynamic text is escaped)."""
    e = html.escape
    title = e(_title(r, learner))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>Feedback: {title}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>Feedback: {title}</h1>"]
    if r.error:
        out += [f"<p><strong>Not graded</strong> (0/{e(format_points(expected_max(r)))} points). "
                "The grader could not read this submission:</p>", f"<pre>{e(r.error)}</pre>",
                "<p>Fix the file and submit again.</p>", "</body></html>"]
        return "\n".join(out) + "\n"
    out += [f"<p>Lesson {e(str(r.lesson))}: <strong>{e(format_points(r.score))}/{e(format_points(r.max_score))} points</strong>. "
            "A task earns its points when every hidden test case passes.</p>",
            "<table><tr><th>task</th><th>points</th><th>verdict</th></tr>"]
    for t in r.tasks:
        cls = "pass" if t.status == "pass" else "notpass"
        out.append(f'<tr><td><code>{e(t.id)}</code></td><td>{e(format_points(t.points))}/{e(format_points(t.max_points))}</td>'
                   f'<td class="{cls}">{e(_VERDICT.get(t.status, t.status))}</td></tr>')
    out.append("</table>")
    for t in r.tasks:
        if t.status == "pass":
            continue
        what, hint = hint_of(t)
        out.append(f"<h2><code>{e(t.id)}</code>: {e(_VERDICT.get(t.status, t.status))}</h2>")
        case = getattr(t, "case", None)
        if case and case not in what:
            out.append(f"<p>Failing case: <code>{e(case)}</code></p>")
        out.append(f"<pre>{e(what or t.status)}</pre>")
        if hint:
            out.append(f"<p><strong>Hint:</strong></p><pre>{e(hint)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


def write_feedback(results: list[NotebookResult], directory, fmt: str = "md", roots=()) -> list[Path]:
    """Write one feedback file per submission into ``directory`` (created if needed); return the paths.

    Files are named ``<learner>--<notebook stem>.<fmt>`` (characters other than letters, digits, ``.``,
    ``_`` and ``-`` become ``_``; a repeated name gets ``-2``, ``-3`` ...). See
    ``coursekit.grader.reports.learner_id`` for how the learner id is found.
    """
    if fmt not in FORMATS:
        raise ValueError(f"expected a feedback format in {FORMATS} (got {fmt!r})")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    render = feedback_markdown if fmt == "md" else feedback_html
    written: list[Path] = []
    used: set[str] = set()
    for r in results:
        learner = learner_id(r.notebook, roots)
        base = f"{_safe(learner)}--{_safe(Path(r.notebook).stem)}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        path = directory / f"{name}.{fmt}"
        path.write_text(render(r, learner), encoding="utf-8")
        written.append(path)
    return written
