"""The code base is lint-clean under the project's ruff configuration (pyproject.toml [tool.ruff])."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ruff_reports_nothing():
    """`ruff check` over coursekit/, tests/ and benchmarks/ finds no violation (ruff is a test dependency)."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "coursekit", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
