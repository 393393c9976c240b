"""The assignment: which exercises are due, and each learner's grade scored against it.

Grader side (trusted). ``grade_paths`` grades every notebook it is given; this module turns those
per-notebook results into one grade per learner that every report prints (table, JSON, CSV,
Classroom, Gradescope, feedback):

* the assignment is the instructor's: ``--assignment 02,03`` on the command line, else
  ``assignment = ["02", "03"]`` in the ``[tool.coursekit]`` table of the course's ``pyproject.toml``
  (the trusted copy next to the notebooks graded against), else every exercise of the course;
* every due exercise appears in every learner's grade: a notebook that was not submitted owes each
  of its tasks (status ``missing``, 0 of its points), so the maximum is always the assignment's;
* one notebook counts per learner and exercise (``coursekit.grader.intake.identify`` tells whose it
  is and which exercise it holds). Of several, the one whose file name is the exercise's own counts
  and the others are listed as not counted; when no single one has that name, the exercise scores 0
  and the grade names every file (``keep one``);
* notebooks of exercises outside the assignment, and files that are no exercise at all, are listed
  as not counted and change no score.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from coursekit.grader.intake import identify
from coursekit.grader.results import NotebookResult, TaskResult

__all__ = ["Assignment", "ExerciseGrade", "LearnerGrade", "parse_assignment", "load_assignment", "default_solutions",
           "plan", "grade_learners", "shown"]


@dataclass(frozen=True)
class Assignment:
    """The exercises due (``coursekit.tasks.Exercise``, in the course's order) and where that was decided."""

    exercises: tuple
    source: str = "every exercise of the course"

    @property
    def lessons(self) -> list[str]:
        return [ex.lesson for ex in self.exercises]

    @property
    def tasks(self) -> list:
        return [t for ex in self.exercises for t in ex.tasks]

    @property
    def max_points(self):
        return sum(t.points for t in self.tasks)

    def describe(self) -> str:
        return f"assignment {', '.join(self.lessons)} ({self.source})"


def parse_assignment(value, source: str = "--assignment") -> Assignment:
    """An ``Assignment`` from ``"02,03"`` or ``["02", "03"]`` (lessons in any order, each once).

    Raises:
        ValueError: empty, repeated, or a lesson without an exercise; the message names ``source``.
    """
    from coursekit.tasks import EXERCISES

    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ValueError(f"{source}: expected lessons as a list of strings like [\"02\", \"03\"] (got {value!r})")
    known = [ex.lesson for ex in EXERCISES]
    bad = [v for v in items if v not in known]
    if not items or bad or len(set(items)) != len(items):
        why = f"unknown {', '.join(map(repr, bad))}" if bad else "empty" if not items else "a lesson listed twice"
        raise ValueError(f"{source}: expected lessons with an exercise, each once, from {', '.join(known)} "
                         f"(got {value!r}: {why})")
    return Assignment(tuple(ex for ex in EXERCISES if ex.lesson in items), source)


def _read_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_assignment(option: str | None, solutions) -> Assignment:
    """The assignment in force: ``option`` (``--assignment``), else ``[tool.coursekit] assignment`` in the
    ``pyproject.toml`` beside ``solutions`` (the trusted course copy: ``trusted/exercises`` ->
    ``trusted/pyproject.toml``), else every exercise.

    Raises:
        ValueError: the option or the table names no valid assignment.
    """
    from coursekit.tasks import EXERCISES

    if option is not None:
        return parse_assignment(option, "--assignment")
    pyproject = Path(solutions).resolve().parent / "pyproject.toml"
    if pyproject.is_file():
        table = _read_toml(pyproject).get("tool", {}).get("coursekit", {})
        if "assignment" in table:
            return parse_assignment(table["assignment"], f"{pyproject} [tool.coursekit] assignment")
    return Assignment(tuple(EXERCISES))


def default_solutions(cwd: Path | None = None) -> Path | None:
    """Where ``coursekit grade`` finds the instructor's notebooks without ``--solutions``.

    The ``solutions/`` of the course repository around ``cwd`` (default: the current directory), else
    of the repository coursekit itself is installed from (an editable install or a checkout on
    ``PYTHONPATH``), else that repository's built ``exercises/``; None when there is none.
    """
    import coursekit
    from coursekit.build import find_repo_root

    here = find_repo_root(cwd) / "solutions"
    installed_from = Path(coursekit.__file__).resolve().parents[1]
    for candidate in (here, installed_from / "solutions", installed_from / "exercises"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    return None


@dataclass
class ExerciseGrade:
    """One due exercise of one learner: the counted notebook's tasks, or what it owes."""

    exercise: object
    tasks: list[TaskResult]
    notebook: str | None = None  # the counted file; None when missing or ambiguous
    error: str | None = None  # not graded, or several notebooks without a single own-named one

    @property
    def score(self):
        return sum(t.points for t in self.tasks)

    @property
    def max_score(self):
        return sum(t.max_points for t in self.tasks)


@dataclass
class LearnerGrade:
    """A learner's grade on the assignment: every due exercise once, and the files that did not count."""

    learner: str
    assignment: Assignment
    exercises: list[ExerciseGrade]
    not_counted: list[tuple[str, str]] = field(default_factory=list)  # (notebook, why)

    @property
    def score(self):
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self):
        return self.assignment.max_points

    @property
    def complete(self) -> bool:
        """Full marks with nothing in error."""
        return self.score == self.max_score and not any(e.error for e in self.exercises)

    def to_json(self) -> dict:
        return {"learner": self.learner, "score": self.score, "max_score": self.max_score,
                "exercises": [{"lesson": e.exercise.lesson, "notebook": e.notebook, "score": e.score,
                               "max_score": e.max_score, **({"error": e.error} if e.error else {}),
                               "tasks": [vars(t).copy() for t in e.tasks]} for e in self.exercises],
                "not_counted": [{"notebook": n, "reason": why} for n, why in self.not_counted]}


def plan(files, assignment: Assignment, roots=(), learner: str | None = None):
    """Which notebooks to grade: those that can count. Returns (files to grade, ``{path: result}`` of the
    others, ungraded, with ``skipped`` saying why).

    Not graded: a notebook of an exercise outside the assignment, and of several notebooks of one
    exercise from one learner every one but the one whose name is the exercise's own. When not exactly
    one has it (``exercises/02_....ipynb`` beside the Chinese edition's ``exercises/zh-CN/02_....ipynb``)
    all are graded, so that ``_exercise_grade`` can tell untouched copies from attempts. Each file's
    lesson is read as the grader reads it (``intake.identify_exercise``); a file the grader cannot
    read or identify is graded, so that its result says why. Runs before any kernel starts.
    """
    from coursekit.grader.intake import identify_exercise, read_submission
    from coursekit.grader.results import GradingError

    groups: dict[tuple[str, str], list[tuple[Path, bool]]] = {}
    for f in map(Path, files):
        try:
            lesson = identify_exercise(read_submission(f), f).lesson
        except GradingError:
            continue
        who = identify(f, roots, lesson=lesson)
        groups.setdefault((learner or who.learner, lesson), []).append((f, who.own_name))
    skipped: dict[str, NotebookResult] = {}
    for (_, lesson), items in groups.items():
        if lesson not in assignment.lessons:
            why = f"lesson {lesson} is not part of the {assignment.describe()}"
        elif len(items) > 1 and sum(is_own for _, is_own in items) == 1:
            own = next(f for f, is_own in items if is_own)
            items = [item for item in items if item[0] != own]
            why = f"another notebook of lesson {lesson} counts"
        else:  # one notebook, or several without a single own-named one: all graded, see _exercise_grade
            continue
        for f, _ in items:
            skipped[str(f)] = NotebookResult(str(f), 0, 0, lesson=lesson, skipped=f"not graded: {why}")
    return [f for f in map(Path, files) if str(f) not in skipped], skipped


def shown(notebook: str, roots=()) -> str:
    """How grades name a notebook: its path below the directory given on the command line that holds it
    (``alice/02_bn_forward_exercises.ipynb``), else its file name."""
    path = Path(notebook)
    for root in map(Path, roots):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            return rel.as_posix()
    return path.name


def _owed(exercise, status: str, message: str) -> list[TaskResult]:
    return [TaskResult(t.id, 0, t.points, status, message) for t in exercise.tasks]


def _untouched(result: NotebookResult) -> bool:
    """Graded, and no task attempted: every answer cell as built (or absent)."""
    return not result.error and not result.skipped and all(t.status == "missing" for t in result.tasks)


def _without_untouched_copies(exercise, candidates, not_counted: list):
    """Of several notebooks of one exercise, untouched copies do not compete with an attempt (a learner
    works in the English or the Chinese edition and leaves the other as built). All untouched: one counts."""
    attempts = [c for c in candidates if not _untouched(c[0])]
    kept = attempts or candidates[:1]
    for r, _ in candidates:
        if all(r is not k for k, _ in kept):
            not_counted.append((r.notebook, f"an untouched copy of lesson {exercise.lesson}'s exercise "
                                            f"(another notebook of it counts)"))
    return kept


def _exercise_grade(exercise, candidates: list[tuple[NotebookResult, bool]], not_counted: list) -> ExerciseGrade:
    """The grade of one due exercise from the learner's notebooks of it ((result, own name) pairs)."""
    if not candidates:
        return ExerciseGrade(exercise, _owed(exercise, "missing", f"no notebook of lesson {exercise.lesson} was "
                                             f"submitted (expected {exercise.filename})"))
    if len(candidates) > 1 and sum(is_own for _, is_own in candidates) != 1:
        candidates = _without_untouched_copies(exercise, candidates, not_counted)
    if len(candidates) > 1:
        own = [r for r, is_own in candidates if is_own]
        if len(own) != 1:
            names = ", ".join(r.notebook for r, _ in candidates)
            why = (f"{len(candidates)} notebooks of lesson {exercise.lesson} ({names}) and not exactly one named "
                   f"{exercise.filename}: keep one")
            return ExerciseGrade(exercise, _owed(exercise, "error", why), error=why)
        for r, _ in candidates:
            if r is not own[0]:
                not_counted.append((r.notebook, f"another notebook of lesson {exercise.lesson}, {own[0].notebook}, "
                                                f"has the exercise's own name and counts"))
        candidates = [(own[0], True)]
    (r, _), = candidates
    if r.error or r.skipped:
        why = f"not graded: {r.error}" if r.error else r.skipped
        return ExerciseGrade(exercise, _owed(exercise, "error", why), r.notebook, error=why)
    return ExerciseGrade(exercise, list(r.tasks), r.notebook)


def grade_learners(results: list[NotebookResult], assignment: Assignment, roots=(),
                   learner: str | None = None) -> list[LearnerGrade]:
    """One ``LearnerGrade`` per learner (in order of first appearance), scored against ``assignment``.

    Args:
        results: what ``grade_paths`` returned, one per notebook.
        assignment: the exercises due.
        roots: the directories given on the command line (``identify``'s rule 1).
        learner: every notebook is this learner's (one Classroom repository, one Gradescope upload);
            then the grade exists even without any notebook. Default: None (learners from ``identify``).
    """
    groups: dict[str, list[tuple[NotebookResult, object, bool]]] = {} if learner is None else {learner: []}
    for r in results:
        who = identify(r.notebook, roots, lesson=r.lesson)
        r = replace(r, notebook=shown(r.notebook, roots))
        groups.setdefault(learner or who.learner, []).append((r, who.exercise, who.own_name))
    grades = []
    for name, items in groups.items():
        not_counted: list[tuple[str, str]] = []
        exercises = []
        for ex in assignment.exercises:
            mine = [(r, own) for r, e, own in items if e is not None and e.lesson == ex.lesson]
            exercises.append(_exercise_grade(ex, mine, not_counted))
        for r, ex, _ in items:
            if ex is None:
                not_counted.append((r.notebook, r.error or "not an exercise of this course"))
            elif ex.lesson not in assignment.lessons:
                not_counted.append((r.notebook, f"lesson {ex.lesson} is not part of the {assignment.describe()}"))
        grades.append(LearnerGrade(name, assignment, exercises, not_counted))
    return grades
