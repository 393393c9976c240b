"""``coursekit gradescope-bundle``: the autograder zip Gradescope documents, and its run_autograder really grading.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once (as root) and
``run_autograder`` per submission, with the upload in ``/autograder/submission`` and the result read
from ``/autograder/results/results.json``. The run test executes the bundle's ``run_autograder`` in
a temporary directory (paths overridden by its environment variables) with this Python, on a
solved lesson-02 notebook and an untouched lesson-03 exercise, using the bundle's own copy of coursekit.
"""
import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_reports import check_gradescope_results

from coursekit import cli
from coursekit.build import build_source
from coursekit.grader import cli as grading_cli
from coursekit.grader.gradescope import write_bundle
from coursekit.tasks import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    write_bundle(out, ROOT)
    return out


def _mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16


def test_bundle_has_the_documented_layout(bundle):
    """setup.sh and run_autograder at the zip's root, executable regular files with a bash shebang;
    the package, its pins and one trusted built exercise per lesson; never the solutions."""
    with zipfile.ZipFile(bundle) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        for name in ("setup.sh", "run_autograder"):
            mode = _mode(infos[name])
            assert stat.S_ISREG(mode) and mode & 0o777 == 0o755, (name, oct(mode))
            assert zf.read(name).startswith(b"#!/usr/bin/env bash\n")
        for name in ("pyproject.toml", "README.md", "requirements/constraints.txt", "coursekit/__init__.py",
                     "coursekit/grader/grade.py", "coursekit/grader/gradescope.py"):
            assert name in infos, name
            assert stat.S_ISREG(_mode(infos[name])) and _mode(infos[name]) & 0o111 == 0, name
        for ex in EXERCISES:
            member = f"exercises/{ex.filename}"
            assert zf.read(member).decode() == build_source(ROOT / "solutions" / ex.filename)
        assert not any(n.startswith("solutions/") or "__pycache__" in n or n.endswith(".pyc") for n in infos)
        setup = zf.read("setup.sh").decode()
        run = zf.read("run_autograder").decode()
    assert "apt-get install" in setup and "bubblewrap" in setup
    assert "download.pytorch.org/whl/cpu torch==2.13.0" in setup and "-c requirements/constraints.txt ." in setup
    assert "/submission" in run and "/results/results.json" in run and "--gradescope" in run
    assert 'SANDBOX="${COURSEKIT_SANDBOX-require}"' in run  # sandboxed unless explicitly overridden


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_bundle_scripts_are_valid_bash(bundle, tmp_path):
    """`bash -n` accepts setup.sh and run_autograder as extracted (and fails on a broken script)."""
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path)
    for name in ("setup.sh", "run_autograder"):
        done = subprocess.run([BASH, "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    (tmp_path / "broken").write_text("if then fi\n")
    assert subprocess.run([BASH, "-n", str(tmp_path / "broken")], capture_output=True).returncode != 0


def test_bundle_is_reproducible(bundle, tmp_path):
    """The same repository gives a byte-identical zip (fixed member dates and order)."""
    write_bundle(tmp_path / "again.zip", ROOT)
    assert (tmp_path / "again.zip").read_bytes() == bundle.read_bytes()


def test_gradescope_bundle_command(tmp_path, capsys):
    """`coursekit gradescope-bundle OUT.zip` writes the zip (exit 0); a name without .zip is refused (exit 2)."""
    assert cli.main(["gradescope-bundle", str(tmp_path / "ag.zip"), "--repo", str(ROOT)]) == 0
    assert zipfile.is_zipfile(tmp_path / "ag.zip") and "setup.sh" in capsys.readouterr().out
    assert cli.main(["gradescope-bundle", str(tmp_path / "ag.tar"), "--repo", str(ROOT)]) == 2
    assert cli.main(["gradescope-bundle", str(tmp_path / "x.zip"), "--repo", str(tmp_path)]) == 1


def _sandbox_option() -> str:
    """``require`` when ``coursekit grade`` has ``--sandbox`` (and bubblewrap is here), else "" (the default)."""
    parser = argparse.ArgumentParser()
    grading_cli.add_arguments(parser)
    has_option = any("--sandbox" in a.option_strings for a in parser._actions)
    return "require" if has_option and shutil.which("bwrap") else ""


def _autograder(bundle, tmp_path, submission_files, python=sys.executable):
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    (root / "submission").mkdir()
    for name, src in submission_files.items():
        shutil.copy(src, root / "submission" / name)
    run = root / "source" / "run_autograder"
    run.chmod(0o755)  # zipfile does not restore modes; Gradescope's unpacking does
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(AUTOGRADER_ROOT=str(root), COURSEKIT_PYTHON=python, COURSEKIT_SANDBOX=_sandbox_option(),
               PYTHONPATH=str(root / "source"))  # grader and kernels import the bundle's coursekit
    done = subprocess.run([str(run)], env=env, capture_output=True, text=True, timeout=600)
    return done, root / "results" / "results.json"


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_run_autograder_grades_the_submission_into_results_json(bundle, tmp_path):
    """Solved lesson 02 uploaded twice (``(1)`` copy) + untouched lesson 03 in /autograder/submission:
    results.json in Gradescope's format scored against the whole course (16 points): lesson 02 counted
    once (2, not 4), the untouched tasks and those of the four notebooks not uploaded failed with 0."""
    solved = ROOT / "solutions" / "02_bn_forward_exercises.ipynb"
    done, results = _autograder(bundle, tmp_path, {
        "02_bn_forward_exercises.ipynb": solved, "02_bn_forward_exercises (1).ipynb": solved,
        "03_running_stats_exercises.ipynb": ROOT / "exercises" / "03_running_stats_exercises.ipynb"})
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(results.read_text())
    check_gradescope_results(data)
    total = sum(t.points for ex in EXERCISES for t in ex.tasks)
    assert data["score"] == 2 and sum(t["max_score"] for t in data["tests"]) == total == 16
    status = {t["name"]: t["status"] for t in data["tests"]}
    assert list(status) == [t.id for ex in EXERCISES for t in ex.tasks]
    assert [s for tid, s in status.items() if s == "passed"] == ["passed", "passed"]
    assert status["02.channel_stats"] == status["02.batch_norm_train"] == "passed"
    assert "not counted: 02_bn_forward_exercises (1).ipynb" in data["output"]
    outputs = {t["name"]: t["output"] for t in data["tests"]}
    assert outputs["03.bn_process"].startswith("missing: not attempted") and "no notebook" in outputs["07.fold_model"]


def test_setup_sh_works_on_gradescopes_default_python(bundle):
    """setup.sh accepts Python 3.10 (Ubuntu 22.04, Gradescope's default image) and refuses only older ones;
    its constraints hold a pin for 3.10 wherever the 3.11 pin has no 3.10 build."""
    with zipfile.ZipFile(bundle) as zf:
        setup = zf.read("setup.sh").decode()
        constraints = zf.read("requirements/constraints.txt").decode()
    assert "sys.version_info >= (3, 10)" in setup and "(3, 11)" not in setup
    assert "--upgrade pip" in setup.split("-c requirements/constraints.txt")[0]
    for name in ("numpy", "scipy", "matplotlib", "scikit-learn"):
        assert re.search(rf'^{name}==\S+; python_version < "3.11"$', constraints, re.M), name


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_run_autograder_still_writes_a_result_when_the_grader_cannot_run(bundle, tmp_path):
    """A grader that cannot start (here: a Python that exits 1) leaves a valid 0-point results.json and exit 1."""
    done, results = _autograder(bundle, tmp_path, {}, python=shutil.which("false") or "/bin/false")
    assert done.returncode == 1
    data = json.loads(results.read_text())
    check_gradescope_results(data)
    assert data["score"] == 0 and "failed before it could grade" in data["output"]
