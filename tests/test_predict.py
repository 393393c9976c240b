"""Learners predict before they run: each lesson from 01 to 08 asks two to four "predict, then run"
questions at its key experiments, in one shape (CS231n's inline questions, without grading):

1. a markdown cell tagged ``predict``: the question, starting with ``**Predict:**``;
2. right after it, a markdown cell tagged ``prediction`` where the learner writes a guess;
3. one or more code cells, at least one of them with stored output, that settle it;
4. a markdown cell tagged ``predict-answer``: the answer and its reason inside a collapsed
   ``<details><summary>...</summary> ... </details>`` block, before the next question.
"""
from __future__ import annotations

import nbformat
import pytest
from stability_support import ROOT

LESSONS = sorted((ROOT / "notebooks").glob("0[1-8]_*.ipynb"))


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def predict_blocks(nb) -> list[tuple[int, list[str]]]:
    """(index of each ``predict`` cell, the problems with its block)."""
    blocks = []
    cells = nb.cells
    starts = [i for i, c in enumerate(cells) if "predict" in tags(c)]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(cells)
        problems = []
        question = cells[start]
        if question.cell_type != "markdown" or not question.source.lstrip().startswith("**Predict:**"):
            problems.append("the predict cell is not markdown starting with '**Predict:**'")
        guess = cells[start + 1] if start + 1 < len(cells) else None
        if guess is None or guess.cell_type != "markdown" or "prediction" not in tags(guess):
            problems.append("no markdown cell tagged 'prediction' right after the question")
        answers = [i for i in range(start + 1, end) if "predict-answer" in tags(cells[i])]
        if not answers:
            problems.append("no 'predict-answer' cell before the next question")
        else:
            answer = cells[answers[0]]
            if answer.cell_type != "markdown" or not all(t in answer.source for t in ("<details>", "<summary>", "</details>")):
                problems.append("the answer is not a markdown cell with a collapsed <details><summary> block")
            settling = [c for c in cells[start + 2:answers[0]] if c.cell_type == "code"]
            if not any(c.outputs for c in settling):
                problems.append("no executed code cell between the guess and the answer")
        blocks.append((start, problems))
    return blocks


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.name)
def test_lesson_asks_two_to_four_predictions(lesson):
    nb = nbformat.read(lesson, as_version=4)
    blocks = predict_blocks(nb)
    assert 2 <= len(blocks) <= 4, f"{lesson.name}: {len(blocks)} predict-then-run questions (expected 2 to 4)"
    bad = [f"cell {i}: {p}" for i, problems in blocks for p in problems]
    assert not bad, f"{lesson.name}:\n" + "\n".join(bad)


def test_a_broken_block_is_reported():
    """The shape check can fail: a question without a guess cell, settling code or answer."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("**Predict:** what happens?", metadata={"tags": ["predict"]}),
                nbformat.v4.new_code_cell("1 + 1")]
    (_, problems), = predict_blocks(nb)
    assert any("prediction" in p for p in problems) and any("predict-answer" in p for p in problems)
