"""coursekit.grader.intake: submissions read once, as regular files, without quoting them; trusted files hashed."""
import os
from pathlib import Path

import nbformat
import pytest

from coursekit.grader.intake import MAX_SUBMISSION_BYTES, changed_files, read_all, read_bytes, read_submission, trusted_digest
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
