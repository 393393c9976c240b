"""``coursekit grade``: the command-line front of the grader (options, exit status, outputs).

Exit status: 0 whenever every submission was graded (whatever the scores), 1 when one could not be
graded (unreadable file, unknown lesson), 2 when no notebook was given or found.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from coursekit.grader.grade import grade_paths
from coursekit.grader.intake import expand
from coursekit.grader.reports import classroom_report, emit, format_table

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
    parser.add_argument("--solutions", type=Path, default=None, help="instructor solutions, or a trusted copy of the built exercises (default: <repo>/solutions)")



def run(args: argparse.Namespace) -> int:
    """``coursekit grade``; see the module docstring for the exit status."""
    from coursekit.build import find_repo_root

    if args.jobs < 1 or args.timeout <= 0 or args.total_timeout <= 0:
        print("coursekit grade: expected --jobs >= 1 and positive timeouts", file=sys.stderr)
        return 2
    files = expand(args.submissions)
    if not files:
        print(f"coursekit grade: no notebooks found in {' '.join(args.submissions)}", file=sys.stderr)
        return 2
    solutions = args.solutions or find_repo_root() / "solutions"
    results = grade_paths(files, solutions, args.timeout, args.total_timeout, args.jobs)
    quiet = str(args.json) == "-" or args.classroom == "-"
    print(format_table(results), file=sys.stderr if quiet else sys.stdout)
    if args.json:
        emit([r.to_json() for r in results] if len(results) != 1 else results[0].to_json(), args.json)
    if args.classroom:
        emit(classroom_report(results), args.classroom)
    return 1 if any(r.error for r in results) else 0
