"""Stability test: every checked cell prints the same text on another arithmetic path.

Each notebook in notebooks/ and solutions/ is re-executed in a fresh kernel with
``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41`` (a cheap stand-in for "another CPU", see
tests/stability_support.py) and its checked cells are compared with the stored outputs as nbval
--nbval-lax does. A failure names the notebook, the cell and the first differing line.

The notebooks are split between this file and tests/test_stability_more.py so that pytest-xdist's
``--dist loadfile`` (a whole file per worker) runs them on both workers.
"""
from __future__ import annotations

import nbformat
import pytest
from stability_support import (
    ROOT,
    check_notebook,
    compare,
    course_notebooks,
    execute,
    load_sanitize_patterns,
    probe_hashes,
    share,
)

FIXTURE = ROOT / "tests" / "fixtures" / "path_dependent.ipynb"


def test_arithmetic_path_differs():
    """The two variables change the bits of conv2d, matmul, tanh and batch_norm on this machine
    (md5 of each output, computed in two fresh interpreters). Without that, the stability test
    would compare a path with itself."""
    native, other = probe_hashes(other_path=False), probe_hashes(other_path=True)
    same = sorted(op for op in native if native[op] == other[op])
    assert not same, f"these ops give identical bits on both arithmetic paths here: {same}"


def test_shares_cover_every_notebook():
    """The two test files together run every notebook exactly once."""
    both = share(0) + share(1)
    assert sorted(both) == course_notebooks() and len(set(both)) == len(both)
    assert len(course_notebooks()) >= 15


def test_detects_a_path_dependent_checked_cell(tmp_path):
    """The check can fail: a fixture whose checked cell prints the last bits of a float32 sum,
    stored on the native path, is reported on the other path with notebook, cell and line; its
    unchecked path-dependent cell and its stable checked cells (one with a sanitized memory
    address) are not reported, and on the native path nothing is."""
    native, other = probe_hashes(other_path=False), probe_hashes(other_path=True)
    if native["tanh"] == other["tanh"]:
        pytest.skip("tanh gives the same bits on both paths on this CPU: nothing to detect")
    path = tmp_path / FIXTURE.name
    nbformat.write(execute(FIXTURE, other_path=False), path)  # stored outputs: the native path

    problems = check_notebook(path, other_path=True)
    assert len(problems) == 1, problems
    message = problems[0]
    assert message.startswith("path_dependent.ipynb cell 2 (id 'fixture-2', nbval Cell 1)"), message
    assert "stdout differs at line 2" in message
    stored_line = [line for line in message.splitlines() if line.strip().startswith("stored:")][0]
    got_line = [line for line in message.splitlines() if line.strip().startswith("got:")][0]
    assert "last bits of a tanh sum:" in stored_line and "last bits of a tanh sum:" in got_line
    assert stored_line.split("stored:")[1].strip() != got_line.split("got:")[1].strip()

    assert check_notebook(path, other_path=False) == []


def test_detects_an_unexpected_error(tmp_path):
    """A cell that raises on the other path is reported even if it is not checked."""
    broken = nbformat.read(FIXTURE, as_version=4)
    broken.cells[3].source = "1 / 0"
    path = tmp_path / "broken.ipynb"
    nbformat.write(broken, path)
    problems = compare(broken, execute(path, other_path=True), "broken.ipynb", load_sanitize_patterns())
    assert len(problems) == 1 and problems[0].startswith("broken.ipynb cell 3 (id 'fixture-3'"), problems
    assert "ZeroDivisionError" in problems[0]


@pytest.mark.parametrize("notebook", share(1), ids=lambda p: str(p.relative_to(ROOT)))
def test_checked_cells_stable(notebook):
    """Every checked cell of this notebook prints its stored output on the other arithmetic path."""
    problems = check_notebook(notebook)
    assert not problems, "checked cells differ on the other arithmetic path:\n" + "\n".join(problems)
