"""coursekit.grader.assignment: a grade is the whole assignment's, one notebook counts per exercise, and
Classroom shows every task by name (checked with a re-implementation of the reporter's documented parsing).

One real ``coursekit grade`` run (module fixture) over five learners built from the full template
(every exercise of ``exercises/``; lesson 02 solved where a learner needs points):

* ``full``: the whole template, lesson 02 solved -> 2/16;
* ``deleted``: only the solved lesson 02 (five notebooks deleted) -> 2/16, every other task missing;
* ``dup``: the solved lesson 02, a copy ``02_bn_forward_exercises (1).ipynb`` and a copy renamed
  ``mine.ipynb`` -> counted once (2/16), the two copies listed as not counted;
* ``ambiguous``: two renamed copies of the solved lesson 02, neither with the exercise's own name -> an
  error naming both, 0/16;
* ``renamed``: the lesson-03 exercise saved under lesson 02's file name -> counted as lesson 03 (its
  metadata), lesson 02 missing;
* ``bilingual``: the untouched English lesson 02 beside the Chinese edition's copy, solved
  (``zh-CN/02_bn_forward_exercises.ipynb``) -> the attempt counts (2/16), the untouched copy does not compete.
"""
import argparse
import base64
import json
import shutil
from pathlib import Path

import pytest

from coursekit.grader import cli as grading_cli
from coursekit.grader.assignment import Assignment, grade_learners, load_assignment, parse_assignment
from coursekit.grader.gradescope import gradescope_report
from coursekit.grader.reports import classroom_base64, classroom_report
from coursekit.grader.results import NotebookResult, TaskResult
from coursekit.tasks import EXERCISES, Exercise, Task

ROOT = Path(__file__).resolve().parents[1]
STEM = "02_bn_forward_exercises"
TOTAL = sum(t.points for ex in EXERCISES for t in ex.tasks)
ALL_IDS = [t.id for ex in EXERCISES for t in ex.tasks]


def _cli(argv):
    parser = argparse.ArgumentParser()
    grading_cli.add_arguments(parser)
    return grading_cli.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The five learners above, graded in one run: exit status, JSON, and the per-notebook results."""
    subs = tmp_path_factory.mktemp("assignment") / "subs"
    solved = ROOT / "solutions" / f"{STEM}.ipynb"
    layout = {"full": {ex.filename: ROOT / "exercises" / ex.filename for ex in EXERCISES} | {f"{STEM}.ipynb": solved},
              "deleted": {f"{STEM}.ipynb": solved},
              "dup": {f"{STEM}.ipynb": solved, f"{STEM} (1).ipynb": solved, "mine.ipynb": solved},
              "ambiguous": {"copy_a.ipynb": solved, "copy_b.ipynb": solved},
              "renamed": {f"{STEM}.ipynb": ROOT / "exercises" / "03_running_stats_exercises.ipynb"},
              "bilingual": {f"{STEM}.ipynb": ROOT / "exercises" / f"{STEM}.ipynb", f"zh-CN/{STEM}.ipynb": solved}}
    for learner, files in layout.items():
        for name, src in files.items():
            (subs / learner / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, subs / learner / name)
    out = subs.parent / "out.json"
    captured, graded = [], []
    real_learners, real_paths = grading_cli.grade_learners, grading_cli.grade_paths
    mp = pytest.MonkeyPatch()
    mp.setattr(grading_cli, "grade_learners", lambda res, *a, **k: captured.extend(res) or real_learners(res, *a, **k))
    mp.setattr(grading_cli, "grade_paths", lambda paths, *a, **k: graded.extend(paths) or real_paths(paths, *a, **k))
    try:
        code = _cli([str(subs), "--solutions", str(ROOT / "solutions"), "--jobs", "2", "--timeout", "30",
                     "--json", str(out)])
    finally:
        mp.undo()
    data = json.loads(out.read_text())
    return {"code": code, "json": data, "learners": {g["learner"]: g for g in data["learners"]},
            "results": captured, "graded": [Path(p).relative_to(subs).as_posix() for p in graded], "subs": subs}


def _tasks(grade_json):
    return {t["id"]: t for e in grade_json["exercises"] for t in e["tasks"]}


def test_every_learner_owes_the_whole_assignment(graded):
    """Each learner's maximum is the assignment's 16 points, whatever they submitted; exit 1 (ambiguous)."""
    learners = graded["learners"]
    assert graded["code"] == 1
    assert sorted(learners) == ["ambiguous", "bilingual", "deleted", "dup", "full", "renamed"]
    assert graded["json"]["max_score"] == TOTAL == 16 and graded["json"]["assignment"] == [ex.lesson for ex in EXERCISES]
    for g in learners.values():
        assert g["max_score"] == TOTAL and list(_tasks(g)) == ALL_IDS
        assert sum(t["max_points"] for t in _tasks(g).values()) == TOTAL


def test_deleted_notebooks_owe_their_points(graded):
    """Five notebooks deleted: 2/16 (not 2/2), every task of a deleted notebook missing with 0 points."""
    g = graded["learners"]["deleted"]
    assert (g["score"], g["max_score"]) == (2, 16)
    for tid, t in _tasks(g).items():
        if not tid.startswith("02."):
            assert t["status"] == "missing" and t["points"] == 0 and "no notebook of lesson" in t["message"]
    assert graded["learners"]["full"]["score"] == 2


def test_duplicates_count_once_and_are_named(graded):
    """The solved lesson 02 three times (own name, ``(1)`` copy, renamed): 2 points once, the copies listed."""
    g = graded["learners"]["dup"]
    assert g["score"] == 2
    (e02,) = [e for e in g["exercises"] if e["lesson"] == "02"]
    assert e02["notebook"] == f"dup/{STEM}.ipynb"
    assert sorted(n["notebook"] for n in g["not_counted"]) == sorted([f"dup/{STEM} (1).ipynb", "dup/mine.ipynb"])


def test_notebooks_that_cannot_count_are_not_graded(graded):
    """Copies beside a single own-named notebook start no kernel; notebooks of an exercise without a
    single own-named one are all graded (an untouched copy must be told from an attempt)."""
    assert sorted(graded["graded"]) == sorted([f"full/{ex.filename}" for ex in EXERCISES] + [
        f"deleted/{STEM}.ipynb", f"dup/{STEM}.ipynb", f"renamed/{STEM}.ipynb", "ambiguous/copy_a.ipynb",
        "ambiguous/copy_b.ipynb", f"bilingual/{STEM}.ipynb", f"bilingual/zh-CN/{STEM}.ipynb"])
    skipped = {Path(r["notebook"]).relative_to(graded["subs"]).as_posix(): r["skipped"]
               for r in graded["json"]["notebooks"] if "skipped" in r}
    assert sorted(skipped) == sorted([f"dup/{STEM} (1).ipynb", "dup/mine.ipynb"])
    assert "another notebook of lesson 02 counts" in skipped["dup/mine.ipynb"]


def test_an_untouched_copy_does_not_compete_with_an_attempt(graded):
    """The learner's solved Chinese-edition notebook counts, the untouched English one beside it is listed
    as not counted; both have the exercise's own name, so without this rule the exercise would be an error."""
    g = graded["learners"]["bilingual"]
    (e02,) = [e for e in g["exercises"] if e["lesson"] == "02"]
    assert g["score"] == 2 and "error" not in e02 and e02["notebook"] == f"bilingual/zh-CN/{STEM}.ipynb"
    assert [n["notebook"] for n in g["not_counted"]] == [f"bilingual/{STEM}.ipynb"]
    assert "untouched copy" in g["not_counted"][0]["reason"]


def test_two_copies_without_the_exercise_name_are_an_error_naming_both(graded):
    """copy_a and copy_b of lesson 02: 0 points, an error that names both files; every task says so."""
    g = graded["learners"]["ambiguous"]
    (e02,) = [e for e in g["exercises"] if e["lesson"] == "02"]
    assert g["score"] == 0 and "ambiguous/copy_a.ipynb" in e02["error"] and "ambiguous/copy_b.ipynb" in e02["error"]
    assert all(t["status"] == "error" and "copy_a" in t["message"] for t in e02["tasks"])


def test_a_renamed_notebook_counts_for_its_own_exercise(graded):
    """Lesson 03's notebook under lesson 02's name is lesson 03 (metadata): 02 missing, 03 graded from it."""
    g = graded["learners"]["renamed"]
    by_lesson = {e["lesson"]: e for e in g["exercises"]}
    assert by_lesson["02"]["notebook"] is None and by_lesson["03"]["notebook"] == f"renamed/{STEM}.ipynb"
    assert {t["status"] for t in by_lesson["02"]["tasks"]} == {"missing"}


# --- the Classroom reporter ------------------------------------------------------------------------

def reporter(encoded: str) -> tuple[list[str], str | None, bool]:
    """What classroom-resources/autograding-grading-reporter does with ``<ID>_RESULTS`` (its documented
    and published parsing, read in its source): base64-decode, JSON-parse; print ``✅ name``
    for ``pass``, ``Error: message`` for ``error``, ``❌ name`` otherwise (``- line N`` when line_no != 0);
    the ``Points`` notice is the sum of the tests' scores over ``max_score``, none when max_score is 0;
    the job fails on a top-level ``fail`` or ``error``. Returns (printed lines, notice, job failed)."""
    results = json.loads(base64.b64decode(encoded, validate=True).decode("utf-8"))
    lines = []
    for test in results["tests"]:
        line = f" - line {test['line_no']}" if test["line_no"] != 0 else ""
        if test["status"] == "pass":
            lines.append(f"✅ {test['name']}{line}")
        elif test["status"] == "error":
            fallback = f"Failed to run test '{test['name']}'"
            lines.append(f"Error: {test['message'] or fallback}")
        else:
            lines.append(f"❌ {test['name']}{line}")
    total = sum(test["score"] for test in results["tests"])
    notice = f"Points {total}/{results['max_score']}" if results["max_score"] else None
    return lines, notice, results["status"] in ("fail", "error")


def _classroom_lines(grade):
    lines, notice, failed = reporter(classroom_base64(classroom_report(grade)))
    return lines, notice, failed


def _one(graded, learner):
    """The learner's notebooks graded in the fixture, as one Classroom repository would be."""
    results = [r for r in graded["results"] if Path(r.notebook).parent.name == learner]
    return grade_learners(results, load_assignment(None, ROOT / "solutions"), learner="submission")[0]


@pytest.mark.parametrize("learner, score", [("deleted", 2), ("dup", 2), ("ambiguous", 0), ("full", 2)])
def test_classroom_records_the_score_of_the_whole_assignment_and_names_every_task(graded, learner, score):
    """Every task of the assignment is one printed line that names it and its verdict; Classroom's
    recorded Points are the score over 16 (not 2/2 for a learner who deleted five notebooks)."""
    grade = _one(graded, learner)
    lines, notice, failed = _classroom_lines(grade)
    assert notice == f"Points {score}/{TOTAL}" and failed
    task_lines = [ln for ln in lines if "not counted" not in ln]
    assert len(task_lines) == len(ALL_IDS)
    for tid, line in zip(ALL_IDS, task_lines):
        assert tid in line, line
        assert line.startswith("✅") or any(f" {s}:" in line for s in ("fail", "error", "timeout", "missing")), line
    assert len(set(lines)) == len(lines)  # no two anonymous identical lines


@pytest.mark.parametrize("exists", [True, False])
def test_an_empty_or_missing_submission_records_zero_of_the_total(tmp_path, exists):
    """An empty exercises/ (exit 2) or none at all (exit 1: it cannot be read): Classroom records Points
    0/16 and Gradescope 0 of 16, every task of the assignment missing and named."""
    if exists:
        (tmp_path / "exercises").mkdir()
    code = _cli([str(tmp_path / "exercises"), "--solutions", str(ROOT / "solutions"),
                 "--classroom-base64", str(tmp_path / "c.b64"), "--gradescope", str(tmp_path / "g.json")])
    assert code == (2 if exists else 1)
    lines, notice, failed = reporter((tmp_path / "c.b64").read_text())
    task_lines = [ln for ln in lines if "not counted" not in ln]
    assert notice == f"Points 0/{TOTAL}" and failed and len(task_lines) == len(ALL_IDS)
    assert all(tid in ln and "missing" in ln for tid, ln in zip(ALL_IDS, task_lines))
    gs = json.loads((tmp_path / "g.json").read_text())
    assert gs["score"] == 0 and sum(t["max_score"] for t in gs["tests"]) == TOTAL
    assert "no notebook" in gs["output"] if exists else "No such file" in gs["output"]


def _weighted():
    """Lesson 02 with tasks worth 3 and 0.5, one passed and one failed."""
    tasks = (Task("02", "channel_stats", points=3), Task("02", "batch_norm_train", points=0.5))
    assignment = Assignment((Exercise("02", STEM, tasks),), "test")
    results = [TaskResult("02.channel_stats", 3, 3, "pass"), TaskResult("02.batch_norm_train", 0, 0.5, "fail", "case 1: off")]
    return grade_learners([NotebookResult(f"x/{STEM}.ipynb", 3, 3.5, results, lesson="02")], assignment, learner="s")[0]


def test_weighted_tasks_record_coursekits_score():
    """Tasks worth 3 and 0.5: the reporter's Points notice and Gradescope's score are coursekit's 3/3.5."""
    grade = _weighted()
    lines, notice, _ = _classroom_lines(grade)
    assert (grade.score, grade.max_score) == (3, 3.5) and notice == "Points 3/3.5"
    assert lines == ["✅ 02.channel_stats (3/3)", "Error: ❌ 02.batch_norm_train (0/0.5) fail: case 1: off"]
    gs = gradescope_report(grade)
    assert gs["score"] == 3 and sum(t["max_score"] for t in gs["tests"]) == 3.5


def test_the_reporter_reimplementation_can_fail():
    """The parsing above shows the name only for pass/fail: a bare error message would hide it."""
    report = {"version": 1, "status": "fail", "max_score": 1,
              "tests": [{"name": "02.x", "status": "error", "score": 0, "max_score": 1, "message": "boom", "line_no": 0}]}
    lines, notice, _ = reporter(base64.b64encode(json.dumps(report).encode()).decode())
    assert lines == ["Error: boom"] and "02.x" not in lines[0] and notice == "Points 0/1"


# --- setting the assignment -----------------------------------------------------------------------

def test_assignment_from_the_command_line_and_the_template(tmp_path):
    """--assignment wins; else [tool.coursekit] assignment in the pyproject.toml beside the trusted
    notebooks; else every exercise. Bad lists are refused with what was expected and what was got."""
    assert parse_assignment("03, 02").lessons == ["02", "03"] and parse_assignment("02").max_points == 2
    for bad, words in [("02,09", "unknown '09'"), ("", "unknown ''"), ("02,02", "twice"), (["02", 3], "list of strings")]:
        with pytest.raises(ValueError, match=words):
            parse_assignment(bad)
    trusted = tmp_path / "trusted"
    (trusted / "exercises").mkdir(parents=True)
    assert load_assignment(None, trusted / "exercises").lessons == [ex.lesson for ex in EXERCISES]
    (trusted / "pyproject.toml").write_text('[tool.coursekit]\nassignment = ["04", "02"]\n')
    assert load_assignment(None, trusted / "exercises").lessons == ["02", "04"]
    assert load_assignment("07", trusted / "exercises").lessons == ["07"]
    (trusted / "pyproject.toml").write_text('[tool.coursekit]\nassignment = "2"\n')
    with pytest.raises(ValueError, match=r"pyproject.toml \[tool.coursekit\] assignment"):
        load_assignment(None, trusted / "exercises")
    shutil.copy(ROOT / "exercises" / f"{STEM}.ipynb", trusted / "exercises")
    assert _cli([str(trusted / "exercises"), "--solutions", str(trusted / "exercises")]) == 2  # refused before grading
    assert _cli([str(trusted / "exercises"), "--solutions", str(ROOT / "solutions"), "--assignment", "02,09"]) == 2
    assert _cli([str(trusted / "exercises"), "--solutions", str(tmp_path / "nowhere")]) == 2


def test_notebooks_outside_the_assignment_do_not_count(graded):
    """With --assignment 03 the dup learner's three lesson-02 notebooks are listed as not counted: 0/3."""
    results = [r for r in graded["results"] if Path(r.notebook).parent.name == "dup"]
    (g,) = grade_learners(results, parse_assignment("03"), [str(graded["subs"])])
    assert (g.score, g.max_score) == (0, 3) and len(g.not_counted) == 3
    assert all("not part of the assignment 03" in why for _, why in g.not_counted)


def test_grade_finds_the_instructor_notebooks_from_any_directory(tmp_path, monkeypatch, capsys):
    """Without --solutions, from a directory outside the repository, the untouched lesson-02 exercise is
    graded (0/16, tasks missing) instead of "no solution notebook"."""
    shutil.copy(ROOT / "exercises" / f"{STEM}.ipynb", tmp_path / f"{STEM}.ipynb")
    monkeypatch.chdir(tmp_path)
    assert _cli([f"{STEM}.ipynb"]) == 0
    out = capsys.readouterr().out
    assert "no solution notebook" not in out and "02.channel_stats" in out and "0/16" in out


def test_feedback_and_csv_show_the_whole_assignment(graded, tmp_path):
    """The deleted learner's feedback lists all 16 tasks, 14 as "not submitted"; the CSV row has 16 task
    columns, total 2 and max 16; the ambiguous learner's row names both copies in its error."""
    from coursekit.grader.feedback import write_feedback
    from coursekit.grader.reports import write_gradebook

    grades = grade_learners(graded["results"], load_assignment(None, ROOT / "solutions"), [str(graded["subs"])])
    by = {g.learner: g for g in grades}
    (md,) = write_feedback([by["deleted"]], tmp_path, "md")
    text = md.read_text()
    assert "**2/16 points**" in text and text.count("| not submitted |") == 14 and text.count("| passed |") == 2
    write_gradebook(grades, tmp_path / "g.csv")
    import csv

    header, *rows = list(csv.reader(open(tmp_path / "g.csv", encoding="utf-8")))
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert len(header) == 1 + 16 + 4 and (table["deleted"]["total"], table["deleted"]["max"]) == ("2", "16")
    assert "ambiguous/copy_a.ipynb" in table["ambiguous"]["error"] and "ambiguous/copy_b.ipynb" in table["ambiguous"]["error"]
