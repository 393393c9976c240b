"""The benchmark script cannot silently break: every section imports, the CLI parses, RESULTS.md
renders every status. No timing here (timed claims live in benchmarks/, never in tests)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the ``benchmarks`` package lives at the repo root, not installed

from benchmarks import run  # noqa: E402
from benchmarks.grading import exercise_notebooks, parse_options  # noqa: E402
from benchmarks.report import render_markdown  # noqa: E402
from benchmarks.sections import SECTIONS, default_keys  # noqa: E402
from benchmarks.submissions import MIXED_PLAN, WRONG_ANSWERS, mixed_batch  # noqa: E402

MACHINE = {"cores": 2, "cpu_model": "test", "ram_gb": 1, "platform": "test", "python": "3", "torch": "2",
           "torch_threads": 1, "OMP_NUM_THREADS": "1", "git_commit": "abc"}


def _results(sections: dict) -> dict:
    return {"written_at": "now", "machine": MACHINE, "note": None, "sections": sections}


def test_every_section_module_has_the_interface():
    """Each section has its letter, a title, run/render and a docstring for --help; a..j all present."""
    assert list(SECTIONS) == list("abcdefghij")
    for key, module in SECTIONS.items():
        assert module.KEY == key and module.TITLE.startswith(f"{key}. ")
        assert callable(module.run) and callable(module.render) and module.__doc__
    assert default_keys() == list("abcdeghj") and default_keys(suite=True) == list("abcdefghj")


@pytest.mark.parametrize("argv, expected", [
    ([], list("abcdeghj")), (["--suite"], list("abcdefghj")), (["--only", "a,c"], ["a", "c"]),
    (["--quick", "--only", " g, h "], ["g", "h"]),
])
def test_cli_selects_sections(argv, expected):
    parser = run.build_parser()
    assert run.selected_sections(parser.parse_args(argv), parser) == expected


def test_cli_rejects_an_unknown_section(capsys):
    parser = run.build_parser()
    with pytest.raises(SystemExit):
        run.selected_sections(parser.parse_args(["--only", "a,z"]), parser)
    assert "expected sections among a, b, c, d, e, f, g, h, i, j (got z)" in capsys.readouterr().err


def test_help_lists_every_section():
    text = run.build_parser().format_help()
    for key in SECTIONS:
        assert f"\n{key}. " in text


@pytest.mark.parametrize("status", ["not available", "failed"])
def test_report_says_why_a_section_has_no_numbers(status):
    """Every section, when not measured "ok", renders its heading and the reason, not a table."""
    sections = {k: {"status": status, "reason": f"reason-{k}", "measured_at": "t", "loadavg": None, "quick": True}
                for k in SECTIONS}
    text = render_markdown(_results(sections))
    for key, module in SECTIONS.items():
        assert f"## {module.TITLE}" in text and f"reason-{key}." in text
    assert "|---|" not in text


def test_report_renders_the_stored_results_json():
    """results.json as committed renders, whichever sections it holds: existing keys are kept."""
    stored = json.loads((REPO / "benchmarks" / "results.json").read_text())
    text = render_markdown(stored)
    assert "Not measured yet." in text or all(k in stored["sections"] for k in "gh")
    for key in stored["sections"]:
        assert f"## {SECTIONS[key].TITLE}" in text


def test_report_renders_new_sections_when_measured():
    """Sections g and h render their tables from the keys their run() returns (made-up values)."""
    common = {"status": "ok", "measured_at": "t", "loadavg": None, "quick": True}
    g = {**common, "submissions": ["learner01/02.ipynb (solved)"], "jobs": 1, "repeats": 1, "none_s": 1.0,
         "require_s": 1.1, "ratio_require_over_none": 1.1, "ratio_iqr": [1.1, 1.1], "same_scores": True,
         "target": 1.15, "target_met": True}
    h = {**common, "submissions": 10, "mix": {"solved": 4, "untouched": 3, "wrong": 3}, "lessons": ["02", "03"],
         "jobs": 2, "repeats": 1, "sandbox": "none", "json_only_s_per_submission": 2.0,
         "all_outputs_s_per_submission": 2.1, "all_outputs_options": ["--classroom"],
         "outputs_not_available": ["--csv"], "outputs_written": {"--classroom": True}, "ratio_all_over_json": 1.05,
         "ratio_iqr": [1.05, 1.05], "scores_as_expected": True, "same_scores_with_all_outputs": True,
         "external": SECTIONS["h"].EXTERNAL, "ratio_vs_before": 1.02, "target_outputs_not_slower": "x",
         "target_outputs_not_slower_met": True, "not_slower_than_before_met": True}
    text = render_markdown(_results({"g": g, "h": h}))
    assert "| 1.0 | 1.1 | 1.1 |" in text and "nbgrader 0.9.6" in text and "Outputs not available yet: --csv" in text


def test_dry_run_measures_and_writes_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--dry-run", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "would measure: a (batch_norm)" in proc.stderr and not any(tmp_path.iterdir())


def test_option_detection_reads_long_options_from_help_text():
    text = "usage: coursekit grade [--json FILE] [-j N]\n  --sandbox {auto,require,none}\n  --total-timeout S"
    assert parse_options(text) == {"--json", "--sandbox", "--total-timeout"}


def test_mixed_batch_has_solved_untouched_and_wrong_submissions(tmp_path):
    """The batch of section h: 10 learner folders; a wrong one differs from the solution in one answer cell."""
    subs = mixed_batch(tmp_path)
    assert len(subs) == len(MIXED_PLAN) == 10
    assert {s["kind"] for s in subs} == {"solved", "untouched", "wrong"}
    assert len({s["learner"] for s in subs}) == 10
    stems = exercise_notebooks()
    for s in subs:
        nb = json.loads(s["path"].read_text())
        answers = {c["id"]: "".join(c["source"]) for c in nb["cells"] if c.get("id", "").startswith("answer-")}
        solution = json.loads((REPO / "solutions" / s["path"].name).read_text())
        expected = {c["id"]: "".join(c["source"]) for c in solution["cells"] if c.get("id", "").startswith("answer-")}
        assert s["path"].stem in stems and set(answers) == set(expected)
        changed = {k for k in answers if answers[k] != expected[k]}
        if s["kind"] == "solved":
            assert not changed
        elif s["kind"] == "wrong":
            assert changed == {f"answer-{WRONG_ANSWERS[s['lesson']][0]}"}
        else:
            assert changed == set(expected)  # untouched: no answer written in any cell


def _run_peer_tests(cells: list[dict]) -> dict[str, str]:
    """Execute a peer submission's code cells and each hidden test in one namespace: {task: outcome}."""
    from benchmarks.peers import HIDDEN_TESTS

    ns: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec("".join(cell["source"]), ns)
    outcome = {}
    for name, code in HIDDEN_TESTS.items():
        try:
            exec(code, dict(ns))
            outcome[name] = "pass"
        except Exception as exc:  # what the peer graders would score 0
            outcome[name] = type(exc).__name__
    return outcome


def test_peer_hidden_tests_can_fail():
    """Section i's hidden tests (run by nbgrader and otter) pass the solution, fail the unbiased variance
    (the wrong submission) and raise on the untouched notebook: the scores it checks are 2, 1 and 0."""
    from benchmarks.peers import submission_cells

    assert _run_peer_tests(submission_cells("solved")) == {"channel_stats": "pass", "batch_norm_train": "pass"}
    assert _run_peer_tests(submission_cells("wrong")) == {"channel_stats": "AssertionError", "batch_norm_train": "pass"}
    assert set(_run_peer_tests(submission_cells("untouched")).values()) == {"NotImplementedError"}


def test_peer_submissions_keep_the_exercise_text_and_drop_checks():
    """The peers grade the same notebook a learner gets: setup without coursekit, task text, answer cells."""
    from benchmarks.peers import submission_cells

    cells = submission_cells("untouched")
    ids = [c.get("id", "") for c in cells]
    assert ids[0] == "setup" and "coursekit" not in "".join(cells[0]["source"])
    assert not any(i.startswith(("check-", "try-")) for i in ids)
    answers = ["".join(c["source"]) for c in cells if c.get("id", "").startswith("answer-")]
    assert len(answers) == 2 and all("raise NotImplementedError()" in a and "BEGIN SOLUTION" not in a for a in answers)


def test_report_renders_peers():
    common = {"status": "ok", "measured_at": "t", "loadavg": None, "quick": True}
    names = ["coursekit --jobs 2", "coursekit --jobs 1", "nbgrader", "otter", "otter, two at a time"]
    med = {n: 1.0 for n in names} | {f"{g} {k}": 2.0 for g in ("coursekit", "nbgrader", "otter")
                                      for k in ("solved", "untouched")}
    targets = SECTIONS["i"].TARGETS
    i = {**common, "submissions": 10, "mix": {"solved": 4, "untouched": 3, "wrong": 3}, "repeats": 1,
         "seconds_per_submission": med, "ratios": {k: 0.5 for k in targets}, "targets": targets,
         "targets_met": {k: True for k in targets}, "all_scores_correct": True, "scores_correct": {}}
    text = render_markdown(_results({"i": i}))
    assert "| nbgrader 0.9.6 `autograde` | 1.0 | 2.0 | 2.0 |" in text and "single correct vs otter: 0.5" in text


def test_profile_reads_the_graders_own_step_lines():
    """Section j parses what ``coursekit grade -v`` writes (progress.LOG_FORMAT, progress.step): a step
    that ran twice is summed, the start is the first line's arrival minus its duration, the exit follows the last line,
    the rest is unaccounted."""
    import io
    import logging

    from benchmarks.sections.profile import EXIT, STARTUP, UNACCOUNTED, breakdown, parse_step_log
    from coursekit.grader.progress import LOG_FORMAT, log, step

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    try:
        for name in ("read", "run instructor cell", "run instructor cell"):
            with step("subs/a b/02.ipynb", name):
                pass
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    written = buf.getvalue().splitlines()
    assert len(parse_step_log([(0.0, line) for line in written])) == 3
    lines = [(1.5, "x coursekit.grader: subs/a b/02.ipynb: read took 0.500 s\n"), (2.0, "a warning\n"),
             (4.0, "x coursekit.grader: subs/a b/02.ipynb: run instructor cell took 1.000 s\n"),
             (5.0, "x coursekit.grader: subs/a b/02.ipynb: run instructor cell took 0.250 s\n")]
    parts = breakdown(parse_step_log(lines), wall=6.0)
    assert parts == {STARTUP: 1.0, "read": 0.5, "run instructor cell": 1.25, EXIT: 1.0, UNACCOUNTED: 2.25}
    with pytest.raises(ValueError, match="expected step lines"):
        breakdown([], wall=1.0)


def test_profile_renders_one_column_per_submission():
    common = {"status": "ok", "measured_at": "t", "loadavg": None, "quick": True}
    j = {**common, "submissions": ["02 solved", "02 untouched"], "sandbox": "require", "repeats": 1,
         "wall_s": {"solved": 9.5, "untouched": 4.25},
         "steps": [{"step": "kernel start", "solved": 1.25, "untouched": None}]}
    text = render_markdown(_results({"j": j}))
    assert "| kernel start | 1.250 | – |" in text and "| **whole command (wall)** | **9.50** | **4.25** |" in text
