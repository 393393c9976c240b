"""``coursekit grade``: the command-line front of the grader (options, exit status, outputs).

Every output is each learner's grade on the assignment (``coursekit.grader.assignment``). With
``--classroom``, ``--classroom-base64`` or ``--gradescope`` the run is one learner's repository or
upload: every notebook is that learner's.

Exit status: 0 whenever every submission was graded (whatever the scores), 1 when one could not be
graded (unreadable file, unknown lesson, several notebooks of one exercise without a single one
named like it), 2 when no notebook was given or found or the options are wrong, 3 when the grader
refused to grade (``--sandbox require`` where bubblewrap does not work): a CI step or a Classroom
workflow must fail then, not report a zero.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from coursekit.grader.assignment import default_solutions, grade_learners, load_assignment, plan
from coursekit.grader.feedback import write_feedback
from coursekit.grader.grade import grade_paths
from coursekit.grader.gradescope import gradescope_report
from coursekit.grader.intake import expand
from coursekit.grader.progress import configure, step
from coursekit.grader.reports import classroom_base64, classroom_report, emit, format_table, grades_json, write_gradebook
from coursekit.grader.sandbox import SandboxUnavailable

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
                        help="instructor solutions, or a trusted copy of the built exercises (default: solutions/ of "
                             "the course repository around the current directory, else of the one coursekit is "
                             "installed from)")
    parser.add_argument("--assignment", metavar="LESSONS", default=None,
                        help="the exercises due, e.g. 02,03 (default: [tool.coursekit] assignment in the pyproject.toml "
                             "beside --solutions, else every exercise)")
    parser.add_argument("--sandbox", choices=("auto", "require", "none"), default="auto",
                        help="run each kernel in bubblewrap: auto (if it works here, else warn), require "
                             "(refuse without it), none (default auto)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="log each step of each submission with its duration on stderr")



def _setup(args: argparse.Namespace):
    """(solutions, assignment) for this run, or None after saying what is wrong (exit status 2)."""
    solutions = getattr(args, "solutions", None) or default_solutions()
    if solutions is None or not Path(solutions).is_dir():
        where = ("no course repository around the current directory or where coursekit is installed from"
                 if solutions is None else f"got {solutions}, not a directory")
        print(f"coursekit grade: expected --solutions DIR (the instructor's solutions or a trusted copy of the "
              f"built exercises); {where}", file=sys.stderr)
        return None
    try:
        assignment = load_assignment(getattr(args, "assignment", None), solutions)
    except (ValueError, OSError) as exc:
        print(f"coursekit grade: {exc}", file=sys.stderr)
        return None
    return Path(solutions), assignment


def run(args: argparse.Namespace) -> int:
    """``coursekit grade``; see the module docstring for the exit status."""
    if args.jobs < 1 or args.timeout <= 0 or args.total_timeout <= 0:
        print("coursekit grade: expected --jobs >= 1 and positive timeouts", file=sys.stderr)
        return 2
    setup = _setup(args)
    if setup is None:
        return 2
    solutions, assignment = setup
    configure(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    files = list(dict.fromkeys(expand(args.submissions)))  # a path given twice is one submission
    one = _one_learner(args)
    if not files:
        print(f"coursekit grade: no notebooks found in {' '.join(args.submissions)}", file=sys.stderr)
        _write_outputs(args, assignment, grade_learners([], assignment, learner=one) if one else [], [],
                       note="no notebook (.ipynb) found in the submission")
        return 2
    to_grade, skipped = plan(files, assignment, _roots(args), learner=one)
    try:
        graded = grade_paths(to_grade, solutions, args.timeout, args.total_timeout, args.jobs,
                             sandbox=getattr(args, "sandbox", "auto"))
    except SandboxUnavailable as exc:
        print(f"coursekit grade: --sandbox require: {exc}", file=sys.stderr)
        return 3
    by_path = {r.notebook: r for r in graded} | skipped
    results = [by_path[str(f)] for f in files]
    unsandboxed = next((r.sandbox for r in results if r.sandbox.startswith("UNSANDBOXED")), None)
    if unsandboxed:  # on stderr, whatever else goes to stdout: an instructor must not miss it
        print(f"coursekit grade: WARNING: {unsandboxed}", file=sys.stderr)
    with step("batch", "reports"):
        grades = grade_learners(results, assignment, _roots(args), learner=one)
        quiet = "-" in (str(args.json), args.classroom, getattr(args, "csv", None), getattr(args, "gradescope", None))
        print(format_table(grades), file=sys.stderr if quiet else sys.stdout)
        _write_outputs(args, assignment, grades, results)
    failed = any(r.error for r in results) or any(e.error for g in grades for e in g.exercises)
    return 1 if failed else 0


def _roots(args: argparse.Namespace) -> list[str]:
    """The directories given on the command line (a learner is a sub-folder of one)."""
    return [s for s in args.submissions if Path(s).is_dir()]


def _one_learner(args: argparse.Namespace) -> str | None:
    """Classroom and Gradescope grade one learner's repository or upload: every notebook is that learner's."""
    if args.classroom or getattr(args, "classroom_base64", None) or getattr(args, "gradescope", None):
        return "submission"
    return None


def _write_outputs(args: argparse.Namespace, assignment, grades: list, results: list, note: str = "") -> None:
    """The instructor formats asked for. With no notebook at all, Classroom and Gradescope still get the
    learner's grade: 0 of the assignment's points, every task missing."""
    if args.json:
        emit(grades_json(grades, results, assignment), args.json)
    if args.classroom:
        emit(classroom_report(grades[0]), args.classroom)
    if getattr(args, "classroom_base64", None):
        Path(args.classroom_base64).write_text(classroom_base64(classroom_report(grades[0])), encoding="ascii")
    if getattr(args, "gradescope", None):
        emit(gradescope_report(grades[0], note), args.gradescope)
    if getattr(args, "csv", None) and grades:
        write_gradebook(grades, args.csv)
    if getattr(args, "feedback", None) and grades:
        write_feedback(grades, args.feedback, getattr(args, "feedback_format", "md"))
