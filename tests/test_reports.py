"""Instructor outputs of ``coursekit grade``: GitHub Classroom (and its workflow), Gradescope's results,
the gradebook CSV, the feedback files, and points per task in every one of them.

Each format is checked against what its consumer reads (the reporter's source and Gradescope's autograder docs):
Classroom's reporter base64-decodes ``<ID>_RESULTS`` then parses ``{"version", "status", "max_score",
"tests": [{"name", "status", "score", "max_score", "message", "line_no"}]}`` and prints ``message``
only for ``error`` tests; Gradescope reads ``{"score", "output", "visibility", "tests": [{"name",
"score", "max_score", "status": passed|failed, "output", "visibility"}]}``.

Real notebooks are graded once for the module, with every output asked for in the same run:
a solved lesson 02 (alice, full marks), the untouched exercise (bob, zero), a wrong answer whose
code raises an exception carrying HTML and a variance that earns a hint (dave), and a broken file
(carol, not graded), each learner scored against an assignment of lesson 02 (``--assignment 02``).
Classroom and Gradescope grade one learner's repository each: their reports are built per learner
from the same results. The hidden inputs' seed is fixed to a recognisable number for the run, so
the tests can prove that no output contains it.
"""
import argparse
import base64
import csv
import html.parser
import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from coursekit.grader import cli as grading_cli
from coursekit.grader.assignment import Assignment, grade_learners, parse_assignment
from coursekit.grader.feedback import write_feedback
from coursekit.grader.gradescope import gradescope_report
from coursekit.grader.reports import classroom_base64, classroom_report, format_table, write_gradebook
from coursekit.grader.results import NotebookResult, TaskResult
from coursekit.tasks import TASKS, Exercise, Task

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
STEM = "02_bn_forward_exercises"
SEED = 0xC0FFEE_5EED_1234_ABCD_9876_5432_1FED  # recognisable in decimal and hex
SCRIPT = "<script>alert('pwned')</script>"
TASK_IDS = ["02.channel_stats", "02.batch_norm_train"]
ASSIGNMENT = parse_assignment("02")


def _tasks(grade):
    return [t for e in grade.exercises for t in e.tasks]


def _wrong_02():
    nb = nbformat.read(SOLUTIONS / f"{STEM}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.get("id") == "answer-channel_stats":
            cell.source = f"def channel_stats(x):\n    raise ValueError({SCRIPT!r} + ' ``` `x`')\n"
        elif cell.get("id") == "answer-batch_norm_train":
            cell.source = ("def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
                           "    shape = (1, -1) + (1,) * (x.dim() - 2)\n"
                           "    dims = [0, *range(2, x.dim())]\n"
                           "    mean = x.mean(dim=dims).reshape(shape)\n"
                           "    var = x.var(dim=dims, unbiased=True).reshape(shape)\n"
                           "    return (x - mean) / torch.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)\n")
    return nb


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One ``coursekit grade`` run over four submissions with every output format."""
    tmp = tmp_path_factory.mktemp("reports")
    subs = tmp / "submissions"
    (subs / "alice").mkdir(parents=True)
    (subs / "dave").mkdir()
    shutil.copy(SOLUTIONS / f"{STEM}.ipynb", subs / "alice" / f"{STEM}.ipynb")
    shutil.copy(EXERCISES / f"{STEM}.ipynb", subs / f"bob_{STEM}.ipynb")
    nbformat.write(_wrong_02(), subs / "dave" / f"{STEM}.ipynb")
    (subs / f"carol_{STEM}.ipynb").write_text('{"cells": [', encoding="utf-8")
    out = tmp / "out"
    out.mkdir()
    parser = argparse.ArgumentParser()
    grading_cli.add_arguments(parser)
    args = parser.parse_args([str(subs), "--solutions", str(SOLUTIONS), "--timeout", "30", "--jobs", "1",
                              "--assignment", "02", "--json", str(out / "results.json"),
                              "--csv", str(out / "gradebook.csv"), "--feedback", str(out / "feedback")])
    captured, drawn = [], []
    real_grade_paths = grading_cli.grade_paths

    def grade_paths(*a, **k):
        captured.extend(real_grade_paths(*a, **k))
        return captured

    def randbits(k):
        drawn.append(k)
        return SEED

    mp = pytest.MonkeyPatch()
    mp.setattr(grading_cli, "grade_paths", grade_paths)
    mp.setattr(secrets, "randbits", randbits)  # jobs=1: grading happens in this process
    try:
        code = grading_cli.run(args)
    finally:
        mp.undo()
    assert drawn, "the grader no longer draws its seed with secrets.randbits: update the seed test"
    grades = grade_learners(captured, ASSIGNMENT, [str(subs)])
    write_feedback(grades, out / "feedback-html", "html")  # the same grades as HTML
    by_learner = {g.learner: g for g in grades}
    for g in grades:  # one Classroom repository / Gradescope upload per learner
        (alone,) = grade_learners([r for r in captured if f"/{g.learner}" in r.notebook], ASSIGNMENT, learner=g.learner)
        (out / f"classroom-{g.learner}.json").write_text(json.dumps(classroom_report(alone)))
        (out / f"classroom-{g.learner}.b64").write_text(classroom_base64(classroom_report(alone)))
        (out / f"gradescope-{g.learner}.json").write_text(json.dumps(gradescope_report(alone)))
    return {"code": code, "out": out, "results": by_learner, "subs": subs}


def test_the_run_graded_as_expected(run):
    """Exit 1 (one file could not be graded); alice 2/2, bob 0, dave fails both tasks, carol not graded."""
    r = run["results"]
    assert run["code"] == 1
    assert sorted(r) == ["alice", "bob", "carol", "dave"]
    assert (r["alice"].score, r["alice"].max_score) == (2, 2)
    assert r["bob"].score == 0 and {t.status for t in _tasks(r["bob"])} == {"missing"}
    assert [t.status for t in _tasks(r["dave"])] == ["error", "fail"]
    wrong_variance = _tasks(r["dave"])[1]
    assert wrong_variance.hint  # the unbiased variance is recognised
    assert "hint" not in wrong_variance.message  # the hint travels as its own field, never inside the message
    (carol,) = r["carol"].exercises
    assert carol.error and "not graded" in carol.error and r["carol"].max_score == 2
    assert {t.status for t in carol.tasks} == {"error"}


# --- GitHub Classroom ---------------------------------------------------------------------------

_CLASSROOM_TEST = {"name": str, "status": str, "score": (int, float), "max_score": (int, float), "message": str, "line_no": int}


def _reporter_parse(encoded: str) -> dict:
    """What autograding-grading-reporter does with ``<ID>_RESULTS``: base64-decode, then JSON-parse."""
    return json.loads(base64.b64decode(encoded, validate=True).decode("utf-8"))


def test_classroom_base64_decodes_to_the_documented_object(run):
    """The base64 form (and the workflow's `base64 -w0 results.json`) decodes to the Classroom object,
    which has the documented top level and six typed fields per test, with scores within bounds."""
    out = run["out"]
    for learner in run["results"]:
        plain = json.loads((out / f"classroom-{learner}.json").read_text())
        assert _reporter_parse((out / f"classroom-{learner}.b64").read_text()) == plain
        if shutil.which("base64"):
            encoded = subprocess.run(["base64", "-w0", str(out / f"classroom-{learner}.json")], capture_output=True,
                                     text=True, check=True)
            assert "\n" not in encoded.stdout and _reporter_parse(encoded.stdout) == plain
        assert set(plain) == {"version", "status", "max_score", "tests"}
        assert plain["version"] == 1 and plain["status"] == ("pass" if learner == "alice" else "fail")
        for test in plain["tests"]:
            assert set(test) == set(_CLASSROOM_TEST), test
            for key, typ in _CLASSROOM_TEST.items():
                assert isinstance(test[key], typ) and not isinstance(test[key], bool), (key, test)
            assert test["status"] in ("pass", "fail", "error")
            assert 0 <= test["score"] <= test["max_score"]
        assert plain["max_score"] == sum(t["max_score"] for t in plain["tests"]) == 2  # carol's notebook is worth 2 too
        assert sum(t["score"] for t in plain["tests"]) == run["results"][learner].score


def test_classroom_shows_every_failed_tasks_feedback(run):
    """The reporter prints ``message`` only for ``error`` tests: every task that did not pass is one,
    its message naming the task and starting with coursekit's status; dave's wrong variance shows its hint."""
    tests = {t["name"]: t for t in json.loads((run["out"] / "classroom-dave.json").read_text())["tests"]}
    for t in _tasks(run["results"]["dave"]):
        entry = tests[f"{t.id} (0/1)"]
        assert entry["status"] == "error" and entry["message"].startswith(f"❌ {t.id} (0/1) {t.status}: ")
        assert t.message in entry["message"] and (t.hint or "") in entry["message"]
    assert _tasks(run["results"]["dave"])[1].hint in tests["02.batch_norm_train (0/1)"]["message"]
    # the reporter shows no line_no for an error test: the answer cell's line is in the message
    assert "(line 2 of your answer cell: raise ValueError(" in tests["02.channel_stats (0/1)"]["message"]
    alice = json.loads((run["out"] / "classroom-alice.json").read_text())["tests"]
    assert [t["status"] for t in alice] == ["pass", "pass"] and all(t["score"] == t["max_score"] == 1 for t in alice)
    carol = json.loads((run["out"] / "classroom-carol.json").read_text())["tests"]
    assert all(t["status"] == "error" and "not graded" in t["message"] and t["max_score"] == 1 for t in carol)


def test_classroom_workflow_grades_against_a_trusted_copy_and_feeds_the_reporter():
    """The template workflow: trusted checkout at a fixed ref in its own directory, constraints install,
    bubblewrap, `--sandbox require --solutions trusted/exercises --classroom results.json`, the base64
    step into $GITHUB_OUTPUT, and the reporter reading <ID>_RESULTS of that step."""
    import yaml  # PyYAML comes with jupyter_server (jupyter_events)

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "classroom.yml").read_text())
    (job,) = wf["jobs"].values()
    steps = job["steps"]
    checkouts = [s for s in steps if str(s.get("uses", "")).startswith("actions/checkout@")]
    trusted = [s for s in checkouts if s.get("with", {}).get("path") == "trusted"]
    assert len(trusted) == 1 and trusted[0]["with"].get("ref") and "${{" not in str(trusted[0]["with"]["ref"])
    assert trusted[0]["with"].get("repository")
    runs = "\n".join(str(s.get("run", "")) for s in steps)
    assert "apt-get install" in runs and "bubblewrap" in runs
    assert re.search(r"pip install[^\n]*-c trusted/requirements/constraints\.txt[^\n]*\./trusted", runs)
    (grade,) = [s for s in steps if "coursekit grade" in str(s.get("run", ""))]
    cmd = grade["run"]
    for part in ("--sandbox require", "--solutions trusted/exercises", "--classroom results.json"):
        assert part in cmd, part
    assert 'echo "result=$(base64 -w0 results.json)" >> "$GITHUB_OUTPUT"' in cmd
    (report,) = [s for s in steps if str(s.get("uses", "")) == "classroom-resources/autograding-grading-reporter@v1"]
    runner = report["with"]["runners"]
    assert runner == grade["id"]
    assert report["env"] == {f"{runner.upper()}_RESULTS": f"${{{{ steps.{grade['id']}.outputs.result }}}}"}
    assert steps.index(grade) < steps.index(report)
    assert wf.get("permissions", {}).get("checks") == "write"


# --- Gradescope -----------------------------------------------------------------------------------

_GS_TOP = {"score", "output", "visibility", "tests", "stdout_visibility", "execution_time", "extra_data", "leaderboard"}
_GS_TEST = {"name", "score", "max_score", "status", "output", "visibility", "number", "tags", "extra_data", "output_format"}
_GS_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def check_gradescope_results(data: dict) -> None:
    """Gradescope's results.json: documented keys only, typed, score = sum of the tests' scores."""
    assert set(data) <= _GS_TOP and "tests" in data
    assert isinstance(data["score"], (int, float)) and isinstance(data["output"], str)
    assert data.get("visibility", "visible") in _GS_VISIBILITY
    for test in data["tests"]:
        assert set(test) <= _GS_TEST and {"name", "score", "max_score", "status", "output"} <= set(test), test
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed") and test.get("visibility", "visible") in _GS_VISIBILITY
        assert (test["status"] == "passed") == (test["score"] == test["max_score"] > 0)
    assert data["score"] == sum(t["score"] for t in data["tests"])


def test_gradescope_results_follow_the_documented_format(run):
    """Gradescope: one test per task of the assignment, passed/failed, points per task, feedback with
    the hint in a failed test's output; a notebook that could not be graded owes its tasks."""
    for learner, grade in run["results"].items():
        data = json.loads((run["out"] / f"gradescope-{learner}.json").read_text())
        check_gradescope_results(data)
        assert data["score"] == grade.score and sum(t["max_score"] for t in data["tests"]) == 2
        assert [t["name"] for t in data["tests"]] == TASK_IDS and f"total: {grade.score}/2" in data["output"]
    dave = json.loads((run["out"] / "gradescope-dave.json").read_text())["tests"]
    assert dave[1]["status"] == "failed" and dave[1]["output"].startswith("fail: ") and "hint:" in dave[1]["output"]
    carol = json.loads((run["out"] / "gradescope-carol.json").read_text())["tests"]
    assert all(t["status"] == "failed" and "not graded" in t["output"] for t in carol)


def test_no_notebook_still_gives_gradescope_and_classroom_a_result(tmp_path, capsys):
    """A submission without any notebook gets 0-point Gradescope and Classroom results (every task
    missing, the assignment's maximum) that say why (exit 2)."""
    parser = argparse.ArgumentParser()
    grading_cli.add_arguments(parser)
    (tmp_path / "sub").mkdir()
    args = parser.parse_args([str(tmp_path / "sub"), "--solutions", str(SOLUTIONS), "--assignment", "02",
                              "--gradescope", str(tmp_path / "r.json"), "--classroom-base64", str(tmp_path / "c.b64")])
    assert grading_cli.run(args) == 2
    data = json.loads((tmp_path / "r.json").read_text())
    check_gradescope_results(data)
    assert data["score"] == 0 and len(data["tests"]) == 2 and "no notebook" in data["output"]
    cls = _reporter_parse((tmp_path / "c.b64").read_text())
    assert cls["max_score"] == 2 and all(t["status"] == "error" and "missing" in t["message"] for t in cls["tests"])


# --- gradebook CSV --------------------------------------------------------------------------------

def test_gradebook_csv_has_one_row_per_learner_and_a_column_per_task(run):
    """--csv: header learner, one "<task> (max P)" column per task of the assignment, total, max,
    notebooks, error; learner ids from folder/file names; task cells add up to the total; the
    ungraded notebook's tasks are 0 and the error says why."""
    with open(run["out"] / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    task_cols = [f"{tid} (max {TASKS[tid].points})" for tid in TASK_IDS]
    assert header == ["learner", *task_cols, "total", "max", "notebooks", "error"]
    assert len(body) == 4 and all(len(row) == len(header) for row in body)
    table = {row[0]: dict(zip(header, row)) for row in body}
    assert sorted(table) == ["alice", "bob", "carol", "dave"]
    for learner, g in run["results"].items():
        row = table[learner]
        assert float(row["total"]) == g.score == sum(float(row[c]) for c in task_cols) and row["max"] == "2"
        assert bool(row["error"]) == (learner == "carol")
    assert "not graded" in table["carol"]["error"] and table["carol"]["total"] == "0"
    assert table["alice"]["total"] == "2" and table["alice"]["notebooks"] == f"alice/{STEM}.ipynb"


WEIGHTED = Assignment((Exercise("02", STEM, (Task("02", "channel_stats", points=3),
                                             Task("02", "batch_norm_train", points=0.5))),), "test")


def _fake(notebook="subs/alice/02_bn_forward_exercises.ipynb", points=(3, 0.5), statuses=("pass", "fail")):
    """One learner's grade on WEIGHTED (tasks worth 3 and 0.5) from a made-up lesson-02 result."""
    tasks = [TaskResult(tid, p, p, s) if s == "pass" else TaskResult(tid, 0, p, s, "case 2 (x (4, 3)): max error 0.1", hint="h")
             for tid, p, s in zip(TASK_IDS, points, statuses)]
    r = NotebookResult(notebook, sum(t.points for t in tasks), sum(t.max_points for t in tasks), tasks, lesson="02")
    return grade_learners([r], WEIGHTED, ["subs"])[0]


def test_points_per_task_reach_every_format(tmp_path):
    """A task worth 3 and one worth 0.5 show as such in the table, Classroom, Gradescope, CSV and feedback."""
    g = _fake()
    assert "3/3" in format_table([g]) and "0/0.5" in format_table([g])
    cls = classroom_report(g)
    assert [(t["score"], t["max_score"]) for t in cls["tests"]] == [(3, 3), (0, 0.5)] and cls["max_score"] == 3.5
    gs = gradescope_report(g)
    check_gradescope_results(gs)
    assert [(t["score"], t["max_score"]) for t in gs["tests"]] == [(3, 3), (0, 0.5)] and gs["score"] == 3
    write_gradebook([g], tmp_path / "g.csv")
    header, row = list(csv.reader(open(tmp_path / "g.csv", encoding="utf-8")))
    assert header[1:3] == ["02.channel_stats (max 3)", "02.batch_norm_train (max 0.5)"]
    assert row[1:5] == ["3", "0", "3", "3.5"]
    (md,) = write_feedback([g], tmp_path / "fb", "md")
    assert "| 3/3 |" in md.read_text() and "| 0/0.5 |" in md.read_text()


def test_hint_and_case_fields_reach_every_format(tmp_path):
    """A result carrying ``hint`` and ``case`` apart from its message (the task definitions' form):
    the hint shows once in Classroom and Gradescope and under "Hint" in feedback, with the failing case."""
    t = TaskResult("02.batch_norm_train", 0, 1, "fail", "case 3: y: max error 0.12")
    t.hint, t.case = "use the biased variance", "case 3 shape (2, 3, 4) float64"
    ok = TaskResult("02.channel_stats", 1, 1, "pass")
    r = NotebookResult("subs/erin/02_bn_forward_exercises.ipynb", 1, 2, [ok, t], lesson="02")
    (g,) = grade_learners([r], ASSIGNMENT, ["subs"])
    assert format_table([g]).count("case 3: y: max error 0.12 — hint: use the biased variance") == 1
    test = classroom_report(g)["tests"][1]
    assert test["status"] == "error" and test["message"].count("use the biased variance") == 1
    gs = gradescope_report(g)["tests"][1]
    assert gs["output"].count("use the biased variance") == 1 and gs["status"] == "failed"
    for fmt in ("md", "html"):
        (f,) = write_feedback([g], tmp_path / fmt, fmt)
        text = f.read_text()
        assert text.count("use the biased variance") == 1 and "case 3 shape (2, 3, 4) float64" in text
        assert "case 3: y: max error 0.12" in text and "Hint:" in text


def test_graded_points_are_the_task_definitions(run):
    """max_points of every graded task is ``Task.points`` of its definition (default 1)."""
    for g in run["results"].values():
        for t in _tasks(g):
            assert t.max_points == TASKS[t.id].points


def test_csv_cells_from_learners_cannot_be_spreadsheet_formulas(tmp_path):
    """A learner id or error text starting with = + - @ is written as text (a leading ')."""
    g = _fake(notebook="subs/=HYPERLINK(evil)/02_bn_forward_exercises.ipynb")
    (bad,) = grade_learners([NotebookResult("subs/@SUM(A1)/x.ipynb", 0, 0, error="-2+3 is not a notebook")], WEIGHTED, ["subs"])
    write_gradebook([g, bad], tmp_path / "g.csv")
    rows = list(csv.reader(open(tmp_path / "g.csv", encoding="utf-8")))
    assert rows[1][0] == "'=HYPERLINK(evil)" and rows[2][0] == "'@SUM(A1)"
    assert rows[2][-1].startswith("not counted: ") and "-2+3 is not a notebook" in rows[2][-1]


# --- feedback ---------------------------------------------------------------------------------------

class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_feedback_one_file_per_learner_with_verdict_case_and_hint(run):
    """--feedback: one Markdown file per learner, named after the learner; each task's points and
    verdict; for dave the failing case of each task and the hint; for carol why it was not graded."""
    files = {p.stem: p.read_text() for p in (run["out"] / "feedback").iterdir()}
    assert sorted(files) == ["alice", "bob", "carol", "dave"]
    assert "**2/2 points**" in files["alice"] and files["alice"].count("| passed |") == 2
    assert files["bob"].count("| not answered |") == 2
    what, hint = _tasks(run["results"]["dave"])[1].message, _tasks(run["results"]["dave"])[1].hint
    assert hint and what in files["dave"] and hint in files["dave"] and "**Hint:**" in files["dave"]
    assert "| wrong result |" in files["dave"] and "| your code raised an error |" in files["dave"]
    assert re.search(r"case \d+", files["dave"])
    assert "not graded" in files["carol"] and "**0/2 points**" in files["carol"]


def test_feedback_never_shows_the_hidden_inputs_seed(run):
    """The seed drawn for the run appears (in decimal or hex) in no output: feedback, CSV, JSON, Classroom, Gradescope."""
    needles = {str(SEED), f"{SEED:x}", f"{SEED:X}", f"{SEED:#x}"}
    files = [p for p in run["out"].rglob("*") if p.is_file()]
    assert len(files) == 2 + 8 + 3 * 4  # JSON, CSV; feedback md + html; Classroom (2) and Gradescope per learner
    for p in files:
        text = p.read_text()
        assert not any(n in text for n in needles), p.name
    for learner in run["results"]:
        assert not any(n in base64.b64decode((run["out"] / f"classroom-{learner}.b64").read_text()).decode() for n in needles)


def test_learner_text_is_escaped_in_html_and_fenced_in_markdown(run):
    """dave's exception message carries <script>: the HTML page has no script tag (the text is escaped
    and still readable), and in Markdown it sits inside a fence that its own backticks cannot close."""
    (page,) = [p for p in (run["out"] / "feedback-html").iterdir() if p.name.startswith("dave.")]
    text = page.read_text()
    parser = _Tags()
    parser.feed(text)
    assert "script" not in parser.tags and set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "h1",
                                                                 "h2", "p", "strong", "table", "tr", "th", "td", "code", "pre"}
    assert SCRIPT in "".join(parser.text) and html.escape(SCRIPT) in text
    (md,) = [p for p in (run["out"] / "feedback").iterdir() if p.name.startswith("dave.")]
    md_text = md.read_text()
    line = next(ln for ln in md_text.splitlines() if SCRIPT in ln)
    opening = [ln for ln in md_text.splitlines()[: md_text.splitlines().index(line)] if ln.startswith("```")][-1]
    fence = opening[: len(opening) - len(opening.lstrip("`"))]
    assert len(fence) > 3 and fence not in line  # longer than the ``` in the message
