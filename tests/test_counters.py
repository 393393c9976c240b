"""Every checked verdict can fail: each verdict line has a counter-setting, and the mechanism that
runs them reports a counter that does not flip its verdict (see tests/counter_support.py).

The counters themselves run inside the stability test (tests/test_stability*.py), in the same
kernel that re-executes each notebook, so they cost no extra notebook run.
"""
from __future__ import annotations

import nbformat
import pytest
from counter_support import Counter, covered, judge, load_counters, stdout_of, verdict_label, verdict_lines
from stability_support import ROOT, cell_options, course_notebooks, execute


def uncovered_verdicts(nb_path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    counters = load_counters(nb_path)
    missing = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell_options(cell)["check"]:
            continue
        mine = [c for c in counters if c.cell == cell.get("id")]
        for line in verdict_lines(stdout_of(cell.outputs)):
            if not any(covered(line, c) for c in mine):
                missing.append(f"cell {index} (id {cell.get('id')!r}): {line.strip()!r}")
    return missing


@pytest.mark.parametrize("notebook", course_notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_verdict_has_a_counter(notebook):
    """Each verdict line (True/False/✔/✘) of each checked cell is covered by a counter-setting."""
    missing = uncovered_verdicts(notebook)
    assert not missing, (f"{len(missing)} checked verdict line(s) without a counter-setting "
                         f"(add them to tests/counters/{notebook.parent.name}_{notebook.stem}.py):\n"
                         + "\n".join(missing))


@pytest.mark.parametrize("notebook", course_notebooks(), ids=lambda p: str(p.relative_to(ROOT)))
def test_counters_name_checked_cells(notebook):
    """A counter names a checked cell of its notebook that prints verdicts."""
    nb = nbformat.read(notebook, as_version=4)
    cells = {c.get("id"): c for c in nb.cells}
    for counter in load_counters(notebook):
        cell = cells.get(counter.cell)
        assert cell is not None, f"{notebook.name}: counter names no cell: {counter.cell!r}"
        assert cell.cell_type == "code" and cell_options(cell)["check"], f"{counter.cell!r} is not a checked cell"
        assert any(covered(line, counter) for line in verdict_lines(stdout_of(cell.outputs))), (
            f"{counter.cell!r}: the counter covers none of the cell's verdict lines")


def _fixture(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import torch\nx = 3\nexpected = torch.rand((), generator=torch.Generator().manual_seed(0))\n"
                                  "torch.manual_seed(0)", id="setup"),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint('x is positive:', x > 0)\n"
                                  "print('x is odd:', x % 2 == 1)", id="claim"),
        nbformat.v4.new_code_cell(
            "# NBVAL_CHECK_OUTPUT\nprint('x still 3:', x == 3, '| rng untouched:', bool(torch.rand(()) == expected))",
            id="after"),
    ]
    path = tmp_path / "fixture.ipynb"
    nbformat.write(nb, path)
    executed = execute(path, other_path=False)
    nbformat.write(executed, path)
    return path, executed


def test_counter_mechanism_reports_what_did_not_flip(tmp_path):
    """A counter that flips every covered line passes; one that leaves a line as stored, one that
    raises and one whose line disappears are reported; a counter's rebinding of ``x`` and its RNG use
    do not leak into the notebook's later cells."""
    path, executed = _fixture(tmp_path)
    stored = stdout_of(executed.cells[1].outputs)
    assert verdict_lines(stored) == ["x is positive: True", "x is odd: True"]
    assert verdict_label("x is positive: True") == "x is positive:"
    counters = [
        Counter("claim", "x = -2", "a negative even x"),
        Counter("claim", "x = 5", "a positive odd x: claims still true", lines=("positive",)),
        Counter("claim", "raise RuntimeError('boom')", "a setup that breaks"),
        Counter("claim", "print = lambda *a: None", "prints nothing"),
        Counter("claim", "torch.manual_seed(1); x = -2 * int(torch.randint(1, 9, ()))", "negative even x drawn from the RNG"),
    ]
    nb, runs = execute(path, other_path=False, counters=counters)
    assert len(nb.cells) == 3 and stdout_of(nb.cells[2].outputs).strip() == "x still 3: True | rng untouched: True"
    results = [judge(counter, stored, outputs) for counter, outputs in runs]
    assert results[0] == []
    assert results[1] == ["did not flip: 'x is positive: True'"]
    assert results[2] and results[2][0].startswith("raised RuntimeError")
    assert all(p.startswith("verdict line not printed") for p in results[3]) and len(results[3]) == 2
    assert results[4] == []


def test_counter_needs_a_reason():
    with pytest.raises(ValueError, match="why"):
        Counter("cell", "x = 1", " ")
