"""coursekit.grader.intake: submissions read once, as regular files, without quoting them; trusted files hashed;
one rule maps a file to its learner and exercise."""
import os
from pathlib import Path

import nbformat
import pytest

from coursekit.grader.intake import (
    MAX_SUBMISSION_BYTES,
    changed_files,
    identify,
    identify_exercise,
    read_all,
    read_bytes,
    read_submission,
    trusted_digest,
)
from coursekit.grader.results import GradingError


def _nb(path):
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), path)
    return path


def test_only_regular_files_within_the_cap_are_read(tmp_path):
    ok = _nb(tmp_path / "ok.ipynb")
    assert read_bytes(ok) == ok.read_bytes()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    link = tmp_path / "link.ipynb"
    link.symlink_to(secret)
    fifo = tmp_path / "fifo.ipynb"
    os.mkfifo(fifo)  # O_NONBLOCK: refused at once, not a hang waiting for a writer
    big = tmp_path / "big.ipynb"
    with open(big, "wb") as f:
        f.truncate(MAX_SUBMISSION_BYTES + 1)
    for path, words in [(link, "symbolic link"), (fifo, "not a regular file"), (big, "expected at most"),
                        (Path("/dev/zero"), "not a regular file"), (tmp_path, "not a regular file"),
                        (tmp_path / "missing.ipynb", "No such file")]:
        with pytest.raises(GradingError, match=words) as e:
            read_bytes(path)
        assert "TOPSECRET" not in str(e.value)


def test_a_batch_is_read_up_front_and_later_changes_do_not_count(tmp_path):
    a, b = _nb(tmp_path / "a.ipynb"), tmp_path / "b.ipynb"
    blobs = read_all([a, b])
    assert isinstance(blobs[str(b)], GradingError)
    original = a.read_bytes()
    a.write_text("overwritten by someone")
    nb = read_submission(a, blobs[str(a)])
    assert nb.cells[0].source == "x = 1" and blobs[str(a)] == original
    with pytest.raises(GradingError, match="No such file"):
        read_submission(b, blobs[str(b)])


def test_error_messages_never_quote_the_file(tmp_path):
    for text in ('{"cells": "TOPSECRET"}', "TOPSECRET not json", '{"cells": [], "nbformat": "TOPSECRET"}',
                 "[" * 100_000):
        p = tmp_path / "s.ipynb"
        p.write_text(text)
        with pytest.raises(GradingError) as e:
            read_submission(p)
        assert "TOPSECRET" not in str(e.value) and "s.ipynb" in str(e.value)
    p.write_bytes(b"\xff\xfe TOPSECRET")
    with pytest.raises(GradingError, match="not UTF-8"):
        read_submission(p)


def test_trusted_files_are_fingerprinted(tmp_path):
    sol = tmp_path / "solutions"
    sol.mkdir()
    nb = _nb(sol / "02_x.ipynb")
    before = trusted_digest(sol)
    assert str(nb) in before and any(p.endswith("coursekit/__init__.py") for p in before)
    assert changed_files(before, sol) == []
    nb.write_text(nb.read_text() + " ")
    (sol / "03_new.ipynb").write_text("{}")
    assert changed_files(before, sol) == sorted([str(nb), str(sol / "03_new.ipynb")])


@pytest.mark.parametrize("path, roots, lesson, expected", [
    ("subs/alice/02_bn_forward_exercises.ipynb", ["subs"], None, ("alice", "02", True)),
    ("subs/alice/deeper/any.ipynb", ["subs"], "03", ("alice", "03", False)),
    ("subs/alice_02_bn_forward_exercises.ipynb", ["subs"], None, ("alice", "02", True)),
    ("subs/alice.smith-03_running_stats_exercises.ipynb", ["subs"], None, ("alice.smith", "03", True)),
    ("subs/alice.ipynb", ["subs"], None, ("alice", None, False)),
    ("bob/02_bn_forward_exercises.ipynb", [], None, ("bob", "02", True)),
    ("bob/02_bn_forward_exercises (1).ipynb", [], None, ("bob", "02", False)),
    ("bob/02_mine.ipynb", [], None, ("bob", "02", False)),
    ("bob/02_bn_forward_exercises.ipynb", [], "03", ("bob", "03", False)),  # metadata wins; not its own name
])
def test_identify_is_the_one_rule_for_learner_and_exercise(path, roots, lesson, expected):
    """Learner: sub-folder of a given directory, else the file-name prefix, else the stem of a name that
    names no exercise, else the folder. Exercise: the metadata's lesson, else the name. own_name: the
    name (after the learner's prefix) is exactly the exercise's."""
    who = identify(path, roots, lesson=lesson)
    assert (who.learner, who.exercise and who.exercise.lesson, who.own_name) == expected


def test_identify_exercise_reads_metadata_then_name(tmp_path):
    """Metadata lesson 03 in a lesson-02 file name is lesson 03; no metadata and no exercise name is refused."""
    nb = nbformat.v4.new_notebook(metadata={"coursekit": {"lesson": "03"}})
    assert identify_exercise(nb, tmp_path / "02_bn_forward_exercises.ipynb").lesson == "03"
    assert identify_exercise(nbformat.v4.new_notebook(), tmp_path / "alice_02_bn_forward_exercises.ipynb").lesson == "02"
    with pytest.raises(GradingError, match="unknown notebook"):
        identify_exercise(nbformat.v4.new_notebook(), tmp_path / "alice.ipynb")
    with pytest.raises(GradingError, match="metadata coursekit.lesson"):
        identify_exercise(nbformat.v4.new_notebook(metadata={"coursekit": {"lesson": "09"}}), tmp_path / "x.ipynb")
