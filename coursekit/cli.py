"""The ``coursekit`` command: ``doctor``, ``build`` (exercises from solutions) and ``grade``.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run(args) -> int``; they are imported only when used so ``coursekit doctor`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["build_parser", "main", "entry"]

_SUBCOMMANDS = {
    "doctor": ("coursekit.cli", "check the environment: versions, threads, Jupyter kernel"),
    "build": ("coursekit.build", "write exercises/ from solutions/ (--check: fail if out of date)"),
    "grade": ("coursekit.grader.cli", "grade submitted exercise notebooks"),
    "gradescope-bundle": ("coursekit.grader.gradescope", "write a Gradescope autograder zip (setup.sh, run_autograder)"),
    "translate": ("coursekit.translate", "the Chinese edition: extract i18n/ catalogues, build notebooks/zh-CN, exercises/zh-CN"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``coursekit doctor`` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    """``coursekit doctor``: print the environment report, exit 1 with a fix if something is missing."""
    from coursekit.env import environment_report

    report = environment_report()
    print(report)
    if report.versions.get("torch"):
        # the grader's native layer (hand-called autograd nodes, lesson 04), built here once so a
        # check never compiles; without a compiler only the grader's report says it is missing
        from coursekit.grader.handcalls import library

        path, why = library()
        print(f"grader layer  {'native library for hand-called autograd nodes: ' + str(path) if path else why}")
    return 0 if report.ok else 1


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``coursekit`` parser; only ``command``'s module is imported, to add its options.

    Args:
        command: the subcommand whose options to add (its module is imported); ``None`` imports
            none, which is enough for ``coursekit --help``. Default: ``None``.
    """
    parser = argparse.ArgumentParser(prog="coursekit", description="Batch Normalization, hands-on: course tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in _SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name != command:
            continue
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:  # a subcommand whose module is missing must not break the others
            p.set_defaults(_error=f"coursekit {name} is unavailable: {exc}")
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser has no options but --help, so a subcommand can only be the first word.
    command = argv[0] if argv and argv[0] in _SUBCOMMANDS else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_error", None):
        print(args._error, file=sys.stderr)
        return 2
    return args._run(args)


def entry() -> None:
    """The ``coursekit`` console script and ``python -m coursekit``: ``main``, then a prompt exit.

    Everything a command writes is written and closed when ``main`` returns; the interpreter's own
    teardown (torch's modules, after ``coursekit grade``) would add ~0.3 s to every run, so the
    process ends with ``os._exit`` once the standard streams and the log are flushed.
    """
    code = main()
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    entry()
