"""Submission sets the grader sections grade: solved, untouched and wrong copies of exercises.

Every set is written into a folder per learner (``learnerNN/<exercise stem>.ipynb``), the layout
an instructor gets from an LMS or Classroom export, so the learner id is the folder name.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchmarks.common import REPO, NotAvailable
from benchmarks.grading import exercise_notebooks

__all__ = ["WRONG_ANSWERS", "MIXED_PLAN", "stem_of", "solved_set", "mixed_batch"]

# One real, common mistake per lesson, written as a learner would: the answer cell's whole source.
# The other tasks of the notebook stay solved, so a wrong submission earns part of the points.
WRONG_ANSWERS = {
    "02": ("channel_stats", '''def channel_stats(x):
    """Per-channel mean and variance of an (N, C, *) tensor."""
    dims = [0, *range(2, x.dim())]
    m = x.numel() // x.shape[1]
    mean = x.mean(dim=dims)
    centered = x - mean.reshape((1, -1) + (1,) * (x.dim() - 2))
    var = centered.pow(2).sum(dim=dims) / (m - 1)  # unbiased: BN divides by m
    return mean, var
'''),
    "03": ("update_running_stats", '''def update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0):
    """Running-statistics update for one batch x of shape (N, C, *)."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims)
    var = (x - mean.reshape((1, -1) + (1,) * (x.dim() - 2))).pow(2).mean(dim=dims)  # biased: PyTorch stores unbiased
    factor = 1.0 / (num_batches_tracked + 1) if momentum is None else momentum
    return (1 - factor) * running_mean + factor * mean, (1 - factor) * running_var + factor * var
'''),
}

# (lesson, kind) per learner: 4 solved, 3 untouched, 3 with one wrong answer, lessons 02 and 03 mixed.
MIXED_PLAN = (
    ("02", "solved"), ("03", "solved"), ("02", "untouched"), ("03", "untouched"), ("02", "wrong"),
    ("03", "wrong"), ("02", "solved"), ("03", "solved"), ("02", "wrong"), ("03", "untouched"),
)


def stem_of(lesson: str) -> str:
    """The exercise notebook stem of a lesson ("02" -> "02_bn_forward_exercises")."""
    for stem in exercise_notebooks():
        if stem.startswith(lesson + "_"):
            return stem
    raise NotAvailable(f"no solutions/{lesson}_*.ipynb with answer cells")


def _with_wrong_answer(src: Path, dst: Path, lesson: str) -> None:
    name, source = WRONG_ANSWERS[lesson]
    nb = json.loads(src.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if c.get("id") == f"answer-{name}"]
    if not cells:
        raise NotAvailable(f"{src.relative_to(REPO)} has no answer-{name} cell to put a wrong answer in")
    cells[0]["source"] = source.splitlines(keepends=True)
    cells[0]["outputs"], cells[0]["execution_count"] = [], None
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write(dest: Path, index: int, lesson: str, kind: str) -> dict:
    stem = stem_of(lesson)
    folder = dest / f"learner{index:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.ipynb"
    if kind == "solved":
        shutil.copy(REPO / "solutions" / f"{stem}.ipynb", path)
    elif kind == "untouched":
        shutil.copy(REPO / "exercises" / f"{stem}.ipynb", path)
    elif kind == "wrong":
        _with_wrong_answer(REPO / "solutions" / f"{stem}.ipynb", path, lesson)
    else:
        raise ValueError(f"expected kind 'solved', 'untouched' or 'wrong' (got {kind!r})")
    return {"learner": folder.name, "lesson": lesson, "kind": kind, "path": path}


def solved_set(dest: Path, lessons=("02", "03")) -> list[dict]:
    """One solved copy of each lesson's solution notebook, one learner folder each."""
    return [_write(dest, i, lesson, "solved") for i, lesson in enumerate(lessons, 1)]


def mixed_batch(dest: Path, plan=MIXED_PLAN) -> list[dict]:
    """The batch of section h: one learner folder per entry of ``plan``; returns what was written."""
    return [_write(dest, i, lesson, kind) for i, (lesson, kind) in enumerate(plan, 1)]
