"""Stability test, the other share of the notebooks (see tests/test_stability.py for what it checks).

A separate file so that pytest-xdist's ``--dist loadfile`` runs the two shares on different workers.
"""
from __future__ import annotations

import pytest
from stability_support import ROOT, check_notebook, share


@pytest.mark.parametrize("notebook", share(0), ids=lambda p: str(p.relative_to(ROOT)))
def test_checked_cells_stable(notebook):
    """Every checked cell of this notebook prints its stored output on the other arithmetic path."""
    problems = check_notebook(notebook)
    assert not problems, "checked cells differ on the other arithmetic path:\n" + "\n".join(problems)
