"""The benchmark's sections, one module each, keyed by the letter ``--only`` takes.

A section module provides ``KEY`` (its letter, also its key in results.json), ``NAME``, ``TITLE``
(its RESULTS.md heading), ``run(quick) -> dict`` (raises ``benchmarks.common.NotAvailable`` when
what it measures does not exist yet), ``render(section) -> list[str]`` (Markdown lines for a
section measured "ok") and optionally ``DEFAULT = False`` (not run without ``--only``/``--suite``).
Its docstring is its line in ``run.py --help``.
"""
from __future__ import annotations

from benchmarks.sections import batch, checks, folding, grader, notebooks, peers, profile, reference, sandbox, suite

__all__ = ["SECTIONS", "default_keys"]

SECTIONS = {m.KEY: m for m in (reference, folding, notebooks, grader, checks, suite, sandbox, batch, peers, profile)}


def default_keys(suite: bool = False) -> list[str]:
    """The sections a run without ``--only`` measures (f, the whole test suite, only with ``--suite``;
    i, the peers, only with ``--only i``)."""
    return [k for k, m in SECTIONS.items() if getattr(m, "DEFAULT", True) or (suite and k == "f")]
