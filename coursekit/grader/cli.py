"""``coursekit grade``: the command-line front of the grader (options, exit status, outputs).

Exit status: 0 whenever every submission was graded (whatever the scores), 1 when one could not be
graded (unreadable file, unknown lesson), 2 when no notebook was given or found, 3 when the grader
refused to grade (``--sandbox require`` where bubblewrap does not work): a CI step or a Classroom
workflow must fail then, not report a zero.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coursekit.grader.grade import grade_paths
from coursekit.grader.intake import expand
from coursekit.grader.reports import classroom_base64, classroom_report, emit, format_table, write_gradebook

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``coursekit grade``."""
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebooks or directories of notebooks")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON ('-' for stdout)")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="grade N submissions in parallel (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds per cell (default 60)")
    parser.add_argument("--total-timeout", type=float, default=600.0, metavar="S",
                        help="seconds per notebook (default 600)")
    parser.add_argument("--classroom", nargs="?", const="-", metavar="FILE",
                        help="write GitHub Classroom's autograding JSON to FILE (default: stdout)")
    parser.add_argument("--classroom-base64", metavar="FILE", default=None,
                        help="write the Classroom JSON base64-encoded, as the reporter reads it from <ID>_RESULTS")
    parser.add_argument("--gradescope", metavar="FILE", default=None, help="write Gradescope's autograder results.json to FILE")
    parser.add_argument("--csv", metavar="FILE", default=None,
                        help="write a gradebook CSV: one row per submission, one column per task ('-' for stdout)")
    parser.add_argument("--feedback", metavar="DIR", type=Path, default=None,
                        help="write one feedback file per submission into DIR")
    parser.add_argument("--feedback-format", choices=("md", "html"), default="md",
                        help="feedback files in Markdown or HTML (default md)")
    parser.add_argument("--solutions", type=Path, default=None,
                        help="instructor solutions, or a trusted copy of the built exercises (default: <repo>/solutions)")
    parser.add_argument("--sandbox", choices=("auto", "require", "none"), default="auto",
                        help="run each kernel in bubblewrap: auto (if it works here, else warn), require "
                             "(refuse without it), none (default auto)")



def run(args: argparse.Namespace) -> int:
    """``coursekit grade``; see the module docstring for the exit status."""
    from coursekit.build import find_repo_root

    if args.jobs < 1 or args.timeout <= 0 or args.total_timeout <= 0:
        print("coursekit grade: expected --jobs >= 1 and positive timeouts", file=sys.stderr)
        return 2
    files = expand(args.submissions)
    if not files:
        print(f"coursekit grade: no notebooks found in {' '.join(args.submissions)}", file=sys.stderr)
        _write_outputs(args, [], note="no notebook (.ipynb) found in the submission")
        return 2
    solutions = args.solutions or find_repo_root() / "solutions"
    from coursekit.grader.sandbox import SandboxUnavailable

    try:
        results = grade_paths(files, solutions, args.timeout, args.total_timeout, args.jobs,
                              sandbox=getattr(args, "sandbox", "auto"))
    except SandboxUnavailable as exc:
        print(f"coursekit grade: --sandbox require: {exc}", file=sys.stderr)
        return 3
    unsandboxed = next((r.sandbox for r in results if r.sandbox.startswith("UNSANDBOXED")), None)
    if unsandboxed:  # on stderr, whatever else goes to stdout: an instructor must not miss it
        print(f"coursekit grade: WARNING: {unsandboxed}", file=sys.stderr)
    quiet = "-" in (str(args.json), args.classroom, getattr(args, "csv", None), getattr(args, "gradescope", None))
    print(format_table(results), file=sys.stderr if quiet else sys.stdout)
    if args.json:
        emit([r.to_json() for r in results] if len(results) != 1 else results[0].to_json(), args.json)
    _write_outputs(args, results)
    return 1 if any(r.error for r in results) else 0


def _write_outputs(args: argparse.Namespace, results: list, note: str = "") -> None:
    """The instructor formats asked for. With no notebook at all, Classroom and Gradescope still get a
    0-point result (a runner with no result file would show the learner nothing)."""
    if args.classroom:
        emit(classroom_report(results, note), args.classroom)
    if getattr(args, "classroom_base64", None):
        Path(args.classroom_base64).write_text(classroom_base64(classroom_report(results, note)), encoding="ascii")
    if getattr(args, "gradescope", None):
        from coursekit.grader.gradescope import gradescope_report

        emit(gradescope_report(results, note), args.gradescope)
    if not results:
        return
    if getattr(args, "csv", None):
        write_gradebook(results, args.csv, args.submissions)
    if getattr(args, "feedback", None):
        from coursekit.grader.feedback import write_feedback

        write_feedback(results, args.feedback, getattr(args, "feedback_format", "md"), args.submissions)
