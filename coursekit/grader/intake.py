"""Intake: find the submissions, read each one, tell which exercise it is, take its answer cells.

Grader side (trusted). Nothing here executes the submission.
"""
from __future__ import annotations

from pathlib import Path

from coursekit.grader.results import GradingError

__all__ = ["expand", "read_submission", "identify_exercise", "answer_sources", "instructor_notebook"]


def read_submission(path: Path):
    import nbformat

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GradingError(f"cannot read {path}: {exc.strerror}") from None
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as exc:
        raise GradingError(f"{path} is not a readable notebook ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(nb.get("cells"), list):
        raise GradingError(f"{path} is not a notebook (expected a 'cells' list)")
    return nb


def identify_exercise(nb, path: Path):
    """The ``coursekit.tasks.Exercise`` of a submission: ``metadata.coursekit.lesson``, else the file name.

    The metadata wins over the file name, so a lesson-03 notebook renamed to lesson 02's file name
    is graded as lesson 03 and cannot earn lesson 02's points.
    """
    from coursekit.tasks import EXERCISES, exercise_for

    meta = nb.get("metadata", {}).get("coursekit", {})
    lesson = meta.get("lesson") if isinstance(meta, dict) else None
    if lesson is not None:
        try:
            return exercise_for(str(lesson))
        except ValueError as exc:
            raise GradingError(f"{path}: metadata coursekit.lesson: {exc}") from None
    stem = path.stem
    for ex in EXERCISES:
        if stem == ex.stem or stem.startswith(ex.lesson + "_"):
            return ex
    raise GradingError(f"{path}: unknown notebook (expected metadata coursekit.lesson or a file name "
                       f"like {EXERCISES[0].filename})")


def answer_sources(nb) -> dict[str, str]:
    """``{cell id: source}`` of the answer cells (the first cell wins if an id is repeated)."""
    out: dict[str, str] = {}
    for cell in nb.cells:
        cid = cell.get("id")
        if cell.get("cell_type") == "code" and isinstance(cid, str) and cid.startswith("answer-") and cid not in out:
            src = cell.get("source", "")
            out[cid] = "".join(src) if isinstance(src, list) else str(src)
    return out


def instructor_notebook(exercise, solutions: Path):
    from coursekit.build import build_notebook, read_notebook

    path = Path(solutions) / exercise.filename
    if not path.is_file():
        raise GradingError(f"no solution notebook {path} to grade lesson {exercise.lesson} against")
    nb = read_notebook(path)
    if "build" in nb.metadata.get("coursekit", {}):
        # a pristine built exercise serves as well: the grader never uses the solution code itself,
        # so GitHub Classroom can grade against a trusted copy of exercises/ without solutions
        return nb
    return build_notebook(nb, str(path))



def expand(paths) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts and ".backup-" not in q.name)
        else:
            out.append(p)
    return out

