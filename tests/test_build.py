"""coursekit.build: markers, locking, raises-exception tags, --check, and never losing a learner's work."""
import argparse
import hashlib
from pathlib import Path

import nbformat
import pytest

from coursekit import build
from coursekit.build import BuildError, build_all, build_notebook, build_source, content_hash, find_repo_root

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "tests" / "fixtures" / "mini_solutions"
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _mini():
    return nbformat.read(MINI / "02_bn_forward_exercises.ipynb", as_version=4)


def _cells(nb):
    return {c.id: c for c in nb.cells}


def _args(**kw):
    base = {"check": False, "force": False, "solutions": MINI, "exercises": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_regions_become_placeholders_at_their_indentation():
    cells = _cells(build_notebook(_mini()))
    src = cells["answer-channel_stats"].source
    assert "### BEGIN SOLUTION" not in src and "x.mean" not in src
    assert src.endswith("    # YOUR CODE HERE\n    raise NotImplementedError()")
    assert src.startswith("def channel_stats(x):\n")


def test_outputs_cleared_checks_locked_answers_undeletable():
    sol = _mini()
    sol.cells[0].outputs = [nbformat.v4.new_output("stream", text="hello")]
    sol.cells[0].execution_count = 3
    nb = build_notebook(sol)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    cells = _cells(nb)
    assert cells["check-channel_stats"].metadata["editable"] is False
    assert cells["check-channel_stats"].metadata["deletable"] is False
    assert cells["answer-channel_stats"].metadata["deletable"] is False
    assert "editable" not in cells["answer-channel_stats"].metadata
    assert sol.cells[0].outputs  # the input notebook is not modified


def test_raises_exception_tags_follow_what_raises():
    cells = _cells(build_notebook(_mini()))
    tagged = {cid for cid, c in cells.items() if "raises-exception" in c.metadata.get("tags", [])}
    # the fixture's checks call the functions directly; "demo" calls one, "after" uses its result
    assert tagged == {"check-channel_stats", "check-batch_norm_train", "demo", "after"}


def test_top_level_region_tags_the_answer_cell():
    sol = _mini()
    cell = _cells(sol)["answer-channel_stats"]
    cell.source = "### BEGIN SOLUTION\nchannel_stats = lambda x: (x.mean(0), x.var(0))\n### END SOLUTION"
    cells = _cells(build_notebook(sol))
    assert "raises-exception" in cells["answer-channel_stats"].metadata["tags"]


def test_passing_a_function_to_a_check_is_not_tagged():
    sol = _mini()
    _cells(sol)["check-channel_stats"].source = "checks.check_channel_stats(channel_stats)"
    cells = _cells(build_notebook(sol))
    assert "tags" not in cells["check-channel_stats"].metadata


def test_practice_cells_never_ship_their_answer():
    """A practice cell (a derivation step the learner fills in, not graded) is stripped and tagged like an
    answer cell, a check using its names is tagged and locked, and a practice cell without a region is an error."""
    sol = _mini()
    practice = nbformat.v4.new_code_cell("# step: 2 * 3\n### BEGIN SOLUTION\nstep = 2 * 3\n### END SOLUTION", id="practice-step")
    verify = nbformat.v4.new_code_cell("print(step == 6)", id="check-step")
    sol.cells[2:2] = [practice, verify]
    cells = _cells(build_notebook(sol))
    assert cells["practice-step"].source == "# step: 2 * 3\n# YOUR CODE HERE\nraise NotImplementedError()"
    assert "raises-exception" in cells["practice-step"].metadata["tags"]
    assert "raises-exception" in cells["check-step"].metadata["tags"]  # `step` is unbound in the exercise
    assert cells["check-step"].metadata["editable"] is False
    practice.source = "step = 2 * 3"
    with pytest.raises(BuildError, match="cell practice-step: a practice cell needs a '### BEGIN SOLUTION'"):
        build_notebook(sol, "x.ipynb")


@pytest.mark.parametrize("source,expected", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "without '### END SOLUTION'"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", "nested"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without '### BEGIN SOLUTION'"),
    ("def channel_stats(x):\n    return 1\n", "needs a '### BEGIN SOLUTION'"),
])
def test_malformed_markers_name_notebook_and_cell(source, expected):
    sol = _mini()
    _cells(sol)["answer-channel_stats"].source = source
    with pytest.raises(BuildError, match=expected) as info:
        build_notebook(sol, "solutions/02_x.ipynb")
    assert "solutions/02_x.ipynb" in str(info.value) and "answer-channel_stats" in str(info.value)


def test_missing_task_cell_is_an_error():
    sol = _mini()
    sol.cells = [c for c in sol.cells if c.id != "check-batch_norm_train"]
    with pytest.raises(BuildError, match="check-batch_norm_train"):
        build_notebook(sol, "x.ipynb")


def test_malformed_solution_makes_the_command_fail(tmp_path, capsys):
    sol = _mini()
    _cells(sol)["answer-channel_stats"].source = "### END SOLUTION"
    (tmp_path / "sol").mkdir()
    nbformat.write(sol, tmp_path / "sol" / "02_bn_forward_exercises.ipynb")
    assert build.run(_args(solutions=tmp_path / "sol", exercises=tmp_path / "ex")) == 2
    assert "answer-channel_stats" in capsys.readouterr().err
    assert not (tmp_path / "ex").exists()


def test_output_is_deterministic_and_nbformat_valid(tmp_path):
    text = build_source(MINI / "02_bn_forward_exercises.ipynb")
    assert text == build_source(MINI / "02_bn_forward_exercises.ipynb")
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert text == nbformat.writes(nb) + "\n"  # nbformat's own layout
    assert nb.metadata["coursekit"]["build"]["hash"] == content_hash(nb)


def test_check_reports_missing_and_stale(tmp_path, capsys):
    ex = tmp_path / "ex"
    assert build.run(_args(check=True, exercises=ex)) == 1
    assert "02_bn_forward_exercises.ipynb (missing)" in capsys.readouterr().out
    assert build.run(_args(exercises=ex)) == 0
    assert build.run(_args(check=True, exercises=ex)) == 0
    target = ex / "02_bn_forward_exercises.ipynb"
    target.write_text(target.read_text().replace("YOUR CODE HERE", "YOUR CODE"))
    capsys.readouterr()
    assert build.run(_args(check=True, exercises=ex)) == 1
    assert "stale      " + str(target) in capsys.readouterr().out


def _work_in(path):
    nb = nbformat.read(path, as_version=4)
    _cells(nb)["answer-channel_stats"].source = "def channel_stats(x):\n    return 'my work'"
    nbformat.write(nb, path)


def test_refuses_to_overwrite_learner_work_without_force(tmp_path, capsys):
    ex = tmp_path / "ex"
    build_all(MINI, ex)
    target = ex / "02_bn_forward_exercises.ipynb"
    _work_in(target)
    before = target.read_bytes()
    # a changed solution makes the exercise stale; the learner's copy must survive a plain build
    sol_dir = tmp_path / "sol"
    sol_dir.mkdir()
    sol = _mini()
    sol.cells[1].source += "\nA new sentence."
    nbformat.write(sol, sol_dir / target.name)
    assert build.run(_args(solutions=sol_dir, exercises=ex)) == 1
    assert "--force" in capsys.readouterr().out
    assert target.read_bytes() == before
    assert build.run(_args(solutions=sol_dir, exercises=ex, force=True)) == 0
    backups = list(ex.glob("02_bn_forward_exercises.backup-*.ipynb"))
    assert len(backups) == 1 and backups[0].read_bytes() == before
    assert target.read_text() == build_source(sol_dir / target.name)


def test_running_cells_is_not_learner_work(tmp_path):
    ex = tmp_path / "ex"
    build_all(MINI, ex)
    target = ex / "02_bn_forward_exercises.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="ran")]
    nb.cells[0].execution_count = 1
    nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"  # JupyterLab rewrites this
    nbformat.write(nb, target)
    report = build_all(MINI, ex)
    assert report.written == [str(target)] and not report.backups


def test_find_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "coursekit")
    assert find_repo_root() == ROOT
    assert find_repo_root(tmp_path) == tmp_path.resolve()


def test_repository_exercises_are_up_to_date():
    """``coursekit build --check`` for the repository itself: exercises/ matches solutions/."""
    assert SOLUTIONS, "solutions/ has no notebooks"
    report = build_all(ROOT / "solutions", ROOT / "exercises", check=True)
    assert report.stale == [], "run `coursekit build`"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_untouched_exercise_runs_to_the_end_under_run_all(solution, tmp_path):
    """Like JupyterLab's Run All: every error happens in a raises-exception cell, and errors happen."""
    from nbclient import NotebookClient

    nb = nbformat.reads(build_source(solution), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    raised = {c.id for c in nb.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)}
    tagged = {c.id for c in nb.cells if "raises-exception" in c.metadata.get("tags", [])}
    assert raised == tagged
    assert hashlib.sha256(solution.read_bytes()).hexdigest()  # the solution was only read
