"""coursekit.grader.progress: ``--verbose`` logs each grading step with its duration, a batch's
progress line shows on a terminal only, and the kernel's failures are logged, not swallowed."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from coursekit.grader import progress
from coursekit.grader.grade import grade_notebook
from coursekit.grader.kernel import Kernel

ROOT = Path(__file__).resolve().parents[1]
STEM = "02_bn_forward_exercises"


def _steps(caplog) -> list[str]:
    return [r.getMessage().split(": ", 1)[1].rsplit(" took ", 1)[0] for r in caplog.records if " took " in r.getMessage()]


def test_an_untouched_notebook_logs_its_steps_and_starts_no_kernel(tmp_path, caplog):
    """No kernel launch and no assembling: nothing of an untouched notebook runs."""
    path = tmp_path / f"{STEM}.ipynb"
    shutil.copy(ROOT / "exercises" / f"{STEM}.ipynb", path)
    with caplog.at_level(logging.INFO, logger="coursekit.grader"):
        result = grade_notebook(path, ROOT / "solutions", sandbox="none")
    assert result.score == 0 and {t.status for t in result.tasks} == {"missing"}
    assert _steps(caplog) == ["read", "identify", "scan", "verify trusted files"]
    assert all(str(path) in r.getMessage() for r in caplog.records)


def test_a_solved_notebook_logs_kernel_cells_probes_and_judging(tmp_path, caplog):
    """The kernel is launched right after reading, before the task definitions are used (torch loads in the
    grader while the kernel starts), and waited for after the scan."""
    path = tmp_path / f"{STEM}.ipynb"
    shutil.copy(ROOT / "solutions" / f"{STEM}.ipynb", path)
    with caplog.at_level(logging.INFO, logger="coursekit.grader"):
        result = grade_notebook(path, ROOT / "solutions", sandbox="none")
    assert result.score == result.max_score == 2, result.tasks
    steps = _steps(caplog)
    assert steps[:6] == ["read", "kernel launch", "identify", "scan", "assemble", "kernel start"]
    assert {"run harness cell", "run lock cell", "run instructor cell", "run answer cell channel_stats"} <= set(steps)
    assert steps.index("probe channel_stats") < steps.index("judge channel_stats") < steps.index("probe batch_norm_train")
    assert steps[-2:] == ["kernel stop", "verify trusted files"]


def test_configure_sends_records_to_the_current_stderr_once(capsys):
    old = progress.log.level
    try:
        progress.configure(logging.INFO)
        progress.configure(logging.INFO)  # a second run in the same process adds no second handler
        with progress.step("sub.ipynb", "scan"):
            pass
        err = capsys.readouterr().err
        assert err.count("coursekit.grader: sub.ipynb: scan took ") == 1
        with pytest.raises(ValueError, match="expected a logging level"):
            progress.configure("INFO")
    finally:
        progress.log.setLevel(old)


def test_progress_bar_only_on_a_terminal_and_for_a_batch(monkeypatch):
    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

        def write(self, s):
            return len(s)

        def flush(self):
            pass

    for out, err, total, shown in [(True, True, 3, True), (False, True, 3, False), (True, False, 3, False),
                                   (True, True, 1, False)]:
        monkeypatch.setattr("sys.stdout", Tty(out))
        monkeypatch.setattr("sys.stderr", Tty(err))
        with progress.progress_bar(total) as bar:
            assert bar.disable is (not shown), (out, err, total)


def test_kernel_stop_logs_what_failed_instead_of_swallowing_it(tmp_path, caplog):
    (tmp_path / "cwd").mkdir()
    kernel = Kernel(tmp_path / "cwd")

    class Manager:
        def shutdown_kernel(self, now=False):
            raise RuntimeError("manager lost the kernel")

    kernel.manager = Manager()
    with caplog.at_level(logging.WARNING, logger="coursekit.grader"):
        kernel.stop()
    assert kernel.client is None and kernel.manager is None
    assert any("stopping the kernel" in r.getMessage() and "manager lost the kernel" in r.exc_text for r in caplog.records)
