"""Intake: find the submissions, read each one, tell which exercise it is, take its answer cells.

Grader side (trusted). Nothing here executes the submission. A submission is read once, before any
kernel starts (``read_all``), as a regular file (``O_NOFOLLOW | O_NONBLOCK`` then ``fstat``: no
symlink to a secret or to ``/dev/zero``, no FIFO, no device) of at most ``MAX_SUBMISSION_BYTES``;
a kernel graded earlier can no longer change what a later submission is. Error messages never
quote the file's contents. ``trusted_digest`` fingerprints what grading trusts (the instructor's
notebooks and coursekit's own files), checked unchanged after every submission.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NamedTuple

from coursekit.grader.bounded import OutputError, read_regular
from coursekit.grader.results import GradingError

__all__ = ["expand", "read_bytes", "read_all", "read_submission", "parse_notebook", "Node", "identify", "Identity",
           "identify_exercise", "answer_sources", "instructor_notebook", "trusted_digest", "changed_files",
           "MAX_SUBMISSION_BYTES"]

MAX_SUBMISSION_BYTES = 20 * 2**20  # an exercise notebook with outputs and figures is well under 5 MB


def read_bytes(path: Path, max_bytes: int = MAX_SUBMISSION_BYTES) -> bytes:
    """The bytes of a submission that is a regular file of at most ``max_bytes``.

    Raises:
        GradingError: unreadable, a symlink, FIFO, device or directory, or too large; the message
            names the file, never its contents.
    """
    if os.path.islink(path):
        raise GradingError(f"cannot read {path}: a symbolic link (expected a regular file)")
    if not os.path.exists(path):
        raise GradingError(f"cannot read {path}: No such file or directory")
    try:  # the same guarded read as every file a kernel writes: O_NOFOLLOW | O_NONBLOCK, fstat, capped
        return read_regular(path, max_bytes)
    except OutputError as exc:
        expected = f"at most {max_bytes} bytes" if "too large" in str(exc) else "a regular notebook file"
        raise GradingError(f"cannot read {path}: {exc} (expected {expected})") from None
    except OSError as exc:
        raise GradingError(f"cannot read {path}: {exc.strerror}") from None


def read_all(paths) -> dict[str, bytes | GradingError]:
    """Every submission's bytes (or why it cannot be read), read up front, before any kernel runs."""
    out: dict[str, bytes | GradingError] = {}
    for p in paths:
        try:
            out[str(p)] = read_bytes(Path(p))
        except GradingError as exc:
            out[str(p)] = exc
    return out


def read_submission(path: Path, data: bytes | None = None):
    """The notebook of a submission (``data``: its bytes read earlier by ``read_all``; else read now)."""
    if data is None:
        data = read_bytes(Path(path))
    elif isinstance(data, GradingError):
        raise data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise GradingError(f"{path} is not a readable notebook (not UTF-8 text)") from None
    return parse_notebook(text, path)


class Node(dict):
    """A notebook, cell or metadata dict whose keys read as attributes (``nb.cells``, ``cell.source``),
    as nbformat's ``NotebookNode``: the grader reads notebooks without importing nbformat, whose schema
    validator costs ~1 s at every start."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __deepcopy__(self, memo):
        import copy

        return Node({k: copy.deepcopy(v, memo) for k, v in self.items()})


def _node(value):
    if isinstance(value, dict):
        return Node({k: _node(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_node(v) for v in value]
    return value


def parse_notebook(text: str, path) -> Node:
    """A v4 notebook from its JSON text, checked for what the grader and the builder rely on: a
    ``cells`` list of objects, each with a ``cell_type`` string and a ``source`` string or list of
    strings (joined, as nbformat does), ``metadata`` objects. Anything else is a ``GradingError``.
    """
    import json

    try:
        raw = json.loads(text)
    except RecursionError:
        raise GradingError(f"{path} is not a readable notebook (nested too deeply)") from None
    except json.JSONDecodeError as exc:  # the position, never the text around it
        raise GradingError(f"{path} is not a readable notebook (invalid JSON at line {exc.lineno}, "
                           f"column {exc.colno})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise GradingError(f"{path} is not a notebook (expected a 'cells' list)")
    if raw.get("nbformat") != 4:
        got = raw.get("nbformat")  # its number only: an error never quotes the file's text
        got = got if isinstance(got, int) and not isinstance(got, bool) else f"a {type(got).__name__}"
        raise GradingError(f"{path} is not a readable notebook (expected nbformat 4, got {got}; "
                           "open and save it in JupyterLab)")
    if not isinstance(raw.setdefault("metadata", {}), dict):
        raise GradingError(f"{path} is not a readable notebook (metadata is not an object)")
    for i, cell in enumerate(raw["cells"]):
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise GradingError(f"{path} is not a readable notebook (cell {i} has no cell_type)")
        src = cell.get("source", "")
        if isinstance(src, list) and all(isinstance(line, str) for line in src):
            src = "".join(src)
        if not isinstance(src, str):
            raise GradingError(f"{path} is not a readable notebook (cell {i}: source is not text)")
        cell["source"] = src
        if not isinstance(cell.setdefault("metadata", {}), dict):
            raise GradingError(f"{path} is not a readable notebook (cell {i}: metadata is not an object)")
    return _node(raw)


def identify_exercise(nb, path: Path):
    """The ``coursekit.tasks.Exercise`` of a submission: ``metadata.coursekit.lesson``, else the file name.

    The metadata wins over the file name, so a lesson-03 notebook renamed to lesson 02's file name
    is graded as lesson 03 and cannot earn lesson 02's points. ``identify`` holds the rule.
    """
    from coursekit.tasks import EXERCISES

    meta = nb.get("metadata", {}).get("coursekit", {})
    lesson = meta.get("lesson") if isinstance(meta, dict) else None
    if lesson is not None:
        try:
            return identify(path, lesson=str(lesson)).exercise
        except ValueError as exc:
            raise GradingError(f"{path}: metadata coursekit.lesson: {exc}") from None
    exercise = identify(path).exercise
    if exercise is None:
        raise GradingError(f"{path}: unknown notebook (expected metadata coursekit.lesson or a file name "
                           f"like {EXERCISES[0].filename})")
    return exercise


class Identity(NamedTuple):
    """Whose submission a file is and which exercise it holds (``identify``)."""

    learner: str
    exercise: object | None  # a ``coursekit.tasks.Exercise``, or None when neither metadata nor name tells
    own_name: bool  # the file name is the exercise's own (``02_bn_forward_exercises.ipynb``, ``alice_02_...``)


_SEP = "_-. "


def _name_match(stem: str):
    """(exercise, start, end) of the exercise a file stem names, or None: the exercise's stem at the start
    or after a separator (``alice_02_bn_forward_exercises``, ``02_bn_forward_exercises (1)``), else a stem
    starting with its lesson number (``02_mine``)."""
    from coursekit.tasks import EXERCISES

    for ex in EXERCISES:
        for m in re.finditer(re.escape(ex.stem), stem):
            if m.start() == 0 or stem[m.start() - 1] in _SEP:
                return ex, m.start(), m.end()
    for ex in EXERCISES:
        if stem.startswith(ex.lesson + "_"):
            return ex, 0, 0
    return None


def identify(path, roots=(), lesson: str | None = None) -> Identity:
    """The one rule that maps a submitted file to a learner and an exercise; every report uses it.

    Exercise: ``lesson`` (the notebook's ``metadata.coursekit.lesson``, which the grader reads) when
    given, else the file name (``_name_match``): a name that names no exercise gives None.

    Learner (first that applies):

    1. a notebook in a sub-folder of a directory in ``roots`` belongs to that sub-folder:
       ``submissions/alice/02_bn_forward_exercises.ipynb`` (and ``submissions/alice/any/x.ipynb``) -> ``alice``;
    2. text before the exercise's name in the file name: ``alice_02_bn_forward_exercises.ipynb`` -> ``alice``
       (also with ``-``, ``.`` or a space as separator);
    3. a file name that names no exercise: its stem, ``alice.ipynb`` -> ``alice``;
    4. otherwise the folder the file is in: ``alice/02_bn_forward_exercises (1).ipynb`` -> ``alice``.

    ``own_name``: what follows the learner's prefix is exactly the exercise's stem (the duplicate rule of
    ``coursekit.grader.assignment`` keeps the notebook with the exercise's own name).

    Raises:
        ValueError: ``lesson`` is not a lesson with an exercise.
    """
    from coursekit.tasks import exercise_for

    path = Path(path)
    stem = path.stem
    match = _name_match(stem)
    exercise = exercise_for(lesson) if lesson is not None else (match[0] if match else None)
    named = match if match and match[0] is exercise else None
    own = bool(named and named[2] == len(stem) and named[2] > named[1])
    learner = None
    for root in map(Path, roots):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if len(rel.parts) > 1:
            learner = rel.parts[0]
            break
    if learner is None and match and stem[:match[1]].rstrip(_SEP):
        learner = stem[:match[1]].rstrip(_SEP)
    if learner is None:
        learner = stem if match is None else (path.parent.name or stem)
    return Identity(learner, exercise, own)


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
    from coursekit.build import build_notebook

    path = Path(solutions) / exercise.filename
    if not path.is_file():
        raise GradingError(f"no solution notebook {path} to grade lesson {exercise.lesson} against")
    nb = parse_notebook(path.read_text(encoding="utf-8"), path)
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


def _trusted_files(solutions) -> list[Path]:
    import coursekit

    files = sorted(Path(solutions).glob("*.ipynb")) if Path(solutions).is_dir() else []
    pkg = Path(coursekit.__file__).resolve().parent
    files += sorted(p for p in pkg.rglob("*") if p.suffix in (".py", ".json", ".txt", ".po"))
    import site

    for d in {*site.getsitepackages(), site.getusersitepackages()}:  # code every Python runs at startup
        if os.path.isdir(d):
            files += sorted(Path(d).glob("*.pth")) + [Path(d) / f for f in ("sitecustomize.py", "usercustomize.py")
                                                        if (Path(d) / f).exists()]
    return files


def trusted_digest(solutions) -> dict[str, str]:
    """``{path: sha256}`` of the instructor's notebooks in ``solutions`` and of coursekit's own files."""
    out = {}
    for p in _trusted_files(solutions):
        try:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            out[str(p)] = "unreadable"
    return out


def changed_files(before: dict[str, str], solutions) -> list[str]:
    """Trusted files added, removed or changed since ``before = trusted_digest(solutions)``."""
    after = trusted_digest(solutions)
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
