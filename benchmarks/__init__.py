"""The course's timed claims (``python benchmarks/run.py``); see ``benchmarks/run.py``.

A package so that the sections (``benchmarks.sections``) and their shared helpers import the same
way from the entry point and from ``tests/test_benchmarks.py``. Not part of the installed
``coursekit`` distribution.
"""
