"""The course's timed claims, measured: ``python benchmarks/run.py [--quick] [--suite] [--only a,c]``.

Writes ``benchmarks/results.json`` (everything, machine-readable) and ``benchmarks/RESULTS.md``
(the same as tables). Timed claims live here and never in tests: timings on a shared CPU swing by
a factor of several, so every ratio comes from *interleaved* runs (the contenders take turns
inside each repeat, so a burst of load hits both) and is reported as a median over repeats.

Layout: this file is the command line; ``benchmarks/sections/<name>.py`` holds one section each
(what it measures, its targets, its RESULTS.md table); ``common.py`` (timing, machine facts),
``kernels.py`` (timed notebook execution), ``grading.py`` (the ``coursekit grade`` command and its
options), ``submissions.py`` (the submission sets graded), ``report.py`` (RESULTS.md).

``--only`` re-measures some sections and keeps the others from the existing results.json; each
section records when it was measured and the machine's load average at the time. A section whose
component is missing (a module, a ``coursekit grade`` option, bubblewrap) reports
"not available (reason)"; one that crashes reports "failed (error)"; neither fakes a number.
``--dry-run`` measures nothing: it imports every section, checks the options and renders
RESULTS.md from the existing results.json to stdout.
"""
from __future__ import annotations

import os

# Before torch is imported anywhere (here or in kernels started from here): one thread, as CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import OUT_DIR, NotAvailable, error_text, loadavg, machine, now  # noqa: E402
from benchmarks.grading import grade_options  # noqa: E402
from benchmarks.report import render_markdown, write_results  # noqa: E402
from benchmarks.sections import SECTIONS, default_keys  # noqa: E402

__all__ = ["build_parser", "selected_sections", "main"]


def _sections_help() -> str:
    lines = ["Sections (each degrades to \"not available (reason)\" when what it measures is missing):", ""]
    for module in SECTIONS.values():
        lines.append(" ".join((module.__doc__ or module.NAME).split()))
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py", description=__doc__.split("\n\n", 1)[0],
        epilog=_sections_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (notebooks and grader runs once)")
    parser.add_argument("--suite", action="store_true", help="also time the whole test suite (section f)")
    parser.add_argument("--only", default=None, metavar="LETTERS",
                        help="comma-separated sections to (re-)measure, e.g. 'a,b'; others are kept from results.json")
    parser.add_argument("--note", default=None, help="a sentence shown at the top of RESULTS.md")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where results.json and RESULTS.md go")
    parser.add_argument("--dry-run", action="store_true",
                        help="measure and write nothing: list the sections and render RESULTS.md from results.json to stdout")
    return parser


def selected_sections(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The section letters to measure; a parser error for an unknown letter."""
    if not args.only:
        return default_keys(args.suite)
    wanted = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in SECTIONS]
    if unknown or not wanted:
        parser.error(f"expected sections among {', '.join(SECTIONS)} (got {', '.join(unknown) or 'none'})")
    return wanted


def measure(key: str, quick: bool) -> dict:
    """One section's result: its numbers with status "ok", or "not available"/"failed" with the reason."""
    started, t0 = now(), time.perf_counter()
    try:
        data = {"status": "ok", **SECTIONS[key].run(quick)}
    except NotAvailable as exc:
        data = {"status": "not available", "reason": str(exc)}
    except Exception as exc:  # report, never fake a number
        traceback.print_exc()
        data = {"status": "failed", "reason": error_text(exc)}
    data.update(measured_at=started, loadavg=loadavg(), quick=quick, section_seconds=round(time.perf_counter() - t0, 1))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    wanted = selected_sections(args, parser)
    json_path = args.out_dir / "results.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() else None

    if args.dry_run:
        print("would measure: " + ", ".join(f"{k} ({SECTIONS[k].NAME})" for k in wanted), file=sys.stderr)
        try:
            print("coursekit grade options: " + " ".join(sorted(grade_options())), file=sys.stderr)
        except NotAvailable as exc:
            print(f"coursekit grade: not available ({exc})", file=sys.stderr)
        if previous is not None:
            print(render_markdown(previous), end="")
        return 0

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sections = dict(previous.get("sections", {})) if (args.only and previous) else {}
    info = machine()
    for key in wanted:
        print(f"[{key}] {SECTIONS[key].NAME} ...", flush=True)
        sections[key] = measure(key, args.quick)
        print(f"[{key}] {sections[key]['status']} in {sections[key]['section_seconds']} s", flush=True)
        # Written after every section: a long run that is interrupted keeps what it measured.
        write_results(args.out_dir, sections, args.note, info)
    print(f"wrote {json_path} and {args.out_dir / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
