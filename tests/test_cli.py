"""The coursekit command: doctor's report and exit codes, the entry points."""
import subprocess
import sys

from coursekit import cli, env


def test_doctor_reports_versions_and_succeeds_here(capsys):
    """In the course environment doctor prints every version, the threads and a kernel, and exits 0."""
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "jupyterlab", "torch threads", "kernel", "all good"):
        assert name in out


def test_doctor_fails_with_a_fix_when_a_package_is_missing(monkeypatch, capsys):
    """A missing package makes doctor exit 1 and print the install command that fixes it."""
    real = env._version
    monkeypatch.setattr(env, "_version", lambda m: None if m == "nbval" else real(m))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "nbval is not installed" in out and "requirements/constraints.txt" in out


def test_doctor_fails_when_no_kernel_runs_this_python(monkeypatch, capsys):
    """Without a Jupyter kernel doctor says how to register one."""
    monkeypatch.setattr(env, "_kernel_for_this_python", lambda: None)
    assert cli.main(["doctor"]) == 1
    assert "ipykernel install" in capsys.readouterr().out


def test_python_dash_m_and_no_command():
    """`python -m coursekit doctor` works; no subcommand prints help and exits 2."""
    done = subprocess.run([sys.executable, "-m", "coursekit", "doctor"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "coursekit"], capture_output=True, text=True)
    assert done.returncode == 2 and "doctor" in done.stdout


def test_setup_notebook_seeds_and_sets_threads():
    """Two setups with the same seed give the same random numbers; threads are set; bad threads refused."""
    import pytest
    import torch

    env.setup_notebook(seed=3)
    a = torch.rand(3)
    env.setup_notebook(seed=3)
    assert torch.equal(a, torch.rand(3)) and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="positive int"):
        env.setup_notebook(threads=0)


def test_only_the_subcommand_used_is_imported():
    """`coursekit doctor` imports neither the builder nor the grading code (only the grader's native-layer
    builder, ``coursekit.grader.handcalls``); `coursekit build --help` imports the builder only."""
    probe = ("import contextlib, sys\nfrom coursekit import cli\n"
             "with contextlib.suppress(SystemExit):\n    cli.main(sys.argv[1:])\n"
             "print(sorted(m for m in sys.modules if m in ('coursekit.build', 'coursekit.grader.grade')))")
    done = subprocess.run([sys.executable, "-c", probe, "doctor"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-c", probe, "build", "--help"], capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "['coursekit.build']", done.stdout + done.stderr
