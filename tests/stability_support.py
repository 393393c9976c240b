"""Helpers for the stability test (tests/test_stability.py, tests/test_stability_more.py).

A checked cell (``# NBVAL_CHECK_OUTPUT`` comment or ``nbval-check-output`` tag) must print the same
text on any CPU. Other CPUs are not available here, so the test re-executes each notebook on another
*arithmetic path* of the same machine: ``ATEN_CPU_CAPABILITY=default`` makes ATen use its
non-vectorised kernels and ``ONEDNN_MAX_CPU_ISA=SSE41`` restricts oneDNN's convolutions to SSE4.1.
``test_arithmetic_path_differs`` measures that this changes the bits of conv2d, matmul, tanh and
batch_norm (if it did not, the stability test would prove nothing).

The comparison is the one ``pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg``
makes, built from nbval's own functions: only checked cells, streams coalesced, every output key
except images/metadata/execution counts, both sides sanitized with the same regexes. What differs
is the report: it names the notebook, the cell (index in the notebook, cell id and nbval's
"Cell N" number, which counts code cells only) and the first differing line, stored vs got.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import nbformat
from counter_support import judge, load_counters, runner_source, stdout_of
from nbclient import NotebookClient
from nbval.plugin import (
    coalesce_streams,
    find_comment_markers,
    find_metadata_tags,
    get_sanitize_patterns,
    transform_streams_for_comparison,
)

ROOT = Path(__file__).resolve().parents[1]
SANITIZE_FILE = ROOT / "tests" / "nbval_sanitize.cfg"

# The other arithmetic path; OMP_NUM_THREADS=1 as when the stored outputs were made.
OTHER_PATH = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"}
PATH_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")

# nbval --nbval-lax skips these keys (images only without --nbdime, which the suite does not use).
SKIP_COMPARE = {
    "metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
    "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg",
}

CELL_TIMEOUT = 300  # seconds; a lesson must run in 30 s, this only catches a hung kernel


def course_notebooks() -> list[Path]:
    """Every lesson and solved exercise, sorted: the notebooks the test suite runs."""
    return sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])


def share(part: int, parts: int = 2) -> list[Path]:
    """Every ``parts``-th notebook: the two test files each take one share, so that
    ``--dist loadfile`` (one file per worker) still spreads the notebooks over both workers.
    Alternating through the sorted list balances them; tests/test_stability.py takes the lighter
    share (lessons 01, 03, 05, 07 and three solutions) because it also runs the self-tests."""
    return course_notebooks()[part::parts]


def environment(other_path: bool) -> dict[str, str]:
    """This process's environment, on the other arithmetic path or with its variables removed."""
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    if other_path:
        env.update(OTHER_PATH)
    return env


def load_sanitize_patterns(path: Path = SANITIZE_FILE) -> dict[str, str]:
    return dict(get_sanitize_patterns(path.read_text()))


def cell_options(cell) -> dict:
    """nbval's options for one code cell in lax mode: tags first, comments override them."""
    options = defaultdict(bool, find_metadata_tags(cell.metadata))
    options.update(dict(find_comment_markers(cell.source)))
    options.setdefault("check", False)
    return options


def execute(nb_path: Path, other_path: bool, counters=()):
    """Execute a copy of the notebook in a fresh kernel, in its own directory, as nbval would.

    Cells nbval skips (NBVAL_SKIP) are blanked. Errors do not stop the run: they are reported by
    :func:`compare` for cells not expected to raise. Each counter (``tests/counter_support.py``) runs
    in a cell of its own right after the cell it names; those cells are taken out again, so the
    returned notebook lines up with the stored one. Returns ``(notebook, [(counter, outputs)])``
    when counters are given, else the notebook.
    """
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell_options(cell)["skip"]:
            cell.source = ""
    ids = {cell.get("id") for cell in nb.cells}
    unknown = sorted({c.cell for c in counters} - ids)
    if unknown:
        raise ValueError(f"{nb_path.name}: counters name cells that do not exist: {unknown}")
    cells, inserted = [], []
    for cell in nb.cells:
        cells.append(cell)
        for counter in (c for c in counters if c.cell == cell.get("id")):
            runner = nbformat.v4.new_code_cell(runner_source(counter, cell.source))
            cells.append(runner)
            inserted.append((counter, runner))
    nb.cells = cells
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(nb_path.parent)}},
    )
    client.execute(env=environment(other_path))
    runners = {id(runner) for _, runner in inserted}
    nb.cells = [cell for cell in nb.cells if id(cell) not in runners]
    if not counters:
        return nb
    return nb, [(counter, runner.outputs) for counter, runner in inserted]


def _flatten(outputs, patterns: dict[str, str]) -> dict[str, list]:
    """nbval's comparison form: key (stream name or MIME type) -> sanitized values, in order."""
    flat = defaultdict(list)

    def sanitize(value):
        if not isinstance(value, str):
            return value
        for regex, replace in patterns.items():
            value = re.sub(regex, replace, value)
        return value

    for output in transform_streams_for_comparison(coalesce_streams(outputs)):
        for key, value in output.items():
            if key in SKIP_COMPARE:
                continue
            if key == "data":
                for mime, data in value.items():
                    if mime not in SKIP_COMPARE:
                        flat[mime].append(sanitize(data))
            else:
                flat[key].append(sanitize(value))
    return flat


def _first_difference(stored: str, got: str) -> tuple[int, str, str]:
    """1-based number of the first differing line, and that line on each side."""
    stored_lines, got_lines = str(stored).splitlines(), str(got).splitlines()
    for number in range(max(len(stored_lines), len(got_lines))):
        left = stored_lines[number] if number < len(stored_lines) else "<no line>"
        right = got_lines[number] if number < len(got_lines) else "<no line>"
        if left != right:
            return number + 1, left, right
    return 0, "<same lines, different whitespace>", ""


def compare(stored_nb, executed_nb, name: str, patterns: dict[str, str]) -> list[str]:
    """One message per checked cell whose output differs (and per unexpected error)."""
    problems = []
    code_number = -1
    for index, (stored, got) in enumerate(zip(stored_nb.cells, executed_nb.cells)):
        if stored.cell_type != "code":
            continue
        code_number += 1
        options = cell_options(stored)
        where = f"{name} cell {index} (id {stored.get('id', '?')!r}, nbval Cell {code_number})"
        errors = [o for o in got.outputs if o.output_type == "error"]
        if errors and not options["check_exception"] and not options["skip"]:
            problems.append(f"{where}: raised {errors[0].ename}: {errors[0].evalue}")
            continue
        if not options["check"] or stored.execution_count is None:
            continue
        ref, test = _flatten(stored.outputs, patterns), _flatten(got.outputs, patterns)
        if set(ref) != set(test):
            problems.append(
                f"{where}: output kinds differ: stored {sorted(ref)} vs got {sorted(test)}")
            continue
        for key in ref:
            if len(ref[key]) != len(test[key]):
                problems.append(f"{where}: {len(ref[key])} stored {key} output(s) vs {len(test[key])} got")
                break
            mismatch = next(((r, t) for r, t in zip(ref[key], test[key]) if r != t), None)
            if mismatch:
                line, left, right = _first_difference(*mismatch)
                problems.append(
                    f"{where}: {key} differs at line {line}\n"
                    f"    stored: {left!r}\n    got:    {right!r}")
                break
    return problems


def check_notebook(nb_path: Path, other_path: bool = True) -> list[str]:
    """Re-execute one notebook (by default on the other arithmetic path), compare its checked cells
    with the stored outputs and run its counter-settings. Returns the problems found (empty: stable,
    and every counter flipped its verdicts)."""
    try:
        name = str(nb_path.relative_to(ROOT))
    except ValueError:
        name = nb_path.name
    stored = nbformat.read(nb_path, as_version=4)
    counters = load_counters(nb_path)
    executed = execute(nb_path, other_path, counters)
    problems = []
    if counters:
        executed, runs = executed
        sources = {cell.get("id"): cell for cell in stored.cells}
        for counter, outputs in runs:
            stored_stdout = stdout_of(sources[counter.cell].outputs)
            problems += [f"{name} counter for cell {counter.cell!r} ({counter.why}): {p}"
                         for p in judge(counter, stored_stdout, outputs)]
    return compare(stored, executed, name, load_sanitize_patterns()) + problems


# Probe of the arithmetic path: md5 of each op's output bytes, in a fresh interpreter (the variables
# are read once, when torch loads). Shapes large enough that vectorised and scalar kernels differ.
PROBE = r"""
import hashlib, json, torch, torch.nn.functional as F
torch.manual_seed(0)
def md5(t):
    return hashlib.md5(t.detach().contiguous().numpy().tobytes()).hexdigest()
x, w = torch.randn(8, 16, 24, 24), torch.randn(32, 16, 3, 3)
a, b = torch.randn(257, 513), torch.randn(513, 129)
z = torch.randn(64, 32, 12, 12) * 3 + 1
print(json.dumps({
    "conv2d": md5(F.conv2d(x, w, padding=1)),
    "matmul": md5(a @ b),
    "tanh": md5(torch.tanh(3 * a)),
    "batch_norm": md5(F.batch_norm(z, None, None, training=True)),
}))
"""


@functools.cache
def probe_hashes(other_path: bool) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=environment(other_path),
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)
