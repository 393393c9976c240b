"""``coursekit build``: write the learner's ``exercises/`` from the solved ``solutions/``.

Every ``solutions/<stem>.ipynb`` becomes ``exercises/<stem>.ipynb``:

* each region between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes
  ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the indentation of the BEGIN line;
* outputs and execution counts are cleared;
* check cells (id ``check-<name>``) are locked (not editable, not deletable) and answer cells
  (id ``answer-<name>``) cannot be deleted, since the grader finds answers by cell id;
* practice cells (id ``practice-<name>``, e.g. the steps of a derivation) are filled in by the learner
  but not graded: like answer cells they must hold a solution region, so an exercise never ships
  their answer;
* cells that raise in the untouched exercise carry the ``raises-exception`` tag, so JupyterLab's
  "Run All" (which stops at the first untagged error) runs the whole notebook: an answer cell whose
  placeholder runs at definition time, every later cell whose top-level code calls a task that is
  not implemented yet, and every cell using a name bound by a cell that raised. A check cell that
  only passes the learner's function to ``coursekit.checks`` is not tagged: checks report failures
  (including ``NotImplementedError``) as a verdict instead of raising;
* ``metadata.coursekit.build`` records the source notebook and a hash of the built cells, so a
  rebuild can tell the exercise it wrote from one a learner has worked in.

A learner's work is never lost: a modified exercise is only replaced with ``--force``, and then a
timestamped copy ``<stem>.backup-<UTC time>.ipynb`` is kept next to it. The output is deterministic
(nbformat's JSON layout), so ``coursekit build --check`` compares bytes.

Described for instructors in docs/instructors.md, "Building the exercises".
"""
from __future__ import annotations

import argparse
import ast
import copy
import datetime as _dt
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BEGIN", "END", "PLACEHOLDER", "RAISES_TAG", "BuildError", "BuildReport",
    "build_notebook", "build_source", "content_hash", "read_notebook", "find_repo_root",
    "build_all", "add_arguments", "run",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError()")
RAISES_TAG = "raises-exception"


class BuildError(ValueError):
    """A solution notebook that cannot be turned into an exercise (names the notebook and cell)."""


def read_notebook(path: Path):
    """Read a notebook as nbformat v4 without modifying the file."""
    import nbformat

    with open(path, encoding="utf-8") as f:
        return nbformat.read(f, as_version=4)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _strip_regions(source: str, where: str) -> tuple[str, int]:
    """Replace every solution region of one cell; returns (new source, number of regions)."""
    out: list[str] = []
    inside = False
    regions = 0
    for lineno, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise BuildError(f"{where}: nested '{BEGIN}' at line {lineno} (the previous region is not closed)")
            inside = True
            regions += 1
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + p for p in PLACEHOLDER)
        elif marker == END:
            if not inside:
                raise BuildError(f"{where}: '{END}' without '{BEGIN}' at line {lineno}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise BuildError(f"{where}: '{BEGIN}' without '{END}'")
    return "\n".join(out), regions


class _TopLevel(ast.NodeVisitor):
    """Names that the top-level code of a cell loads and binds (function bodies are not run)."""

    def __init__(self) -> None:
        self.loads: set[str] = set()
        self.calls: set[str] = set()  # root names of called expressions: f(...), C.apply(...)
        self.binds: set[str] = set()
        self.raises_now = False  # a NotImplementedError placeholder runs when the cell runs

    def _skip_body(self, node) -> None:
        self.binds.add(node.name)
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        if isinstance(node, ast.ClassDef):  # a class body runs at definition time
            for b in node.bases:
                self.visit(b)
            for stmt in node.body:
                self.visit(stmt)

    visit_FunctionDef = visit_AsyncFunctionDef = _skip_body

    def visit_ClassDef(self, node) -> None:
        self._skip_body(node)

    def visit_Lambda(self, node) -> None:
        pass

    def visit_Name(self, node) -> None:
        (self.loads if isinstance(node.ctx, ast.Load) else self.binds).add(node.id)

    def visit_Call(self, node) -> None:
        root = node.func
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        if isinstance(root, ast.Name):
            self.calls.add(root.id)
        self.generic_visit(node)

    def visit_Raise(self, node) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
            self.raises_now = True
        self.generic_visit(node)

    def visit_Import(self, node) -> None:
        for a in node.names:
            self.binds.add((a.asname or a.name).split(".")[0])

    visit_ImportFrom = visit_Import


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _solution_binds(source: str) -> set[str]:
    """Names the solved cell binds at top level, including those its regions bind."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    top = _TopLevel()
    top.visit(tree)
    return top.binds | _defined_names(tree)


def content_hash(nb) -> str:
    """Hash of what a learner can change: cell types, ids and sources (not outputs or metadata).

    Running cells or saving from JupyterLab (which rewrites kernel metadata) keeps the hash;
    editing, adding or deleting a cell changes it.
    """
    items = [[c.get("cell_type"), c.get("id"), _source(c)] for c in nb.cells]
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def build_notebook(solution, name: str = "<notebook>"):
    """Return the exercise notebook built from a solution notebook (the input is not modified).

    The build is a list of steps, each a function with one job, applied in order to a copy.

    Args:
        solution: an nbformat v4 notebook with solution regions.
        name: how error messages refer to the notebook (e.g. its path). Default: ``"<notebook>"``.

    Raises:
        BuildError: malformed markers (BEGIN without END, nested BEGIN, END without BEGIN), an
            answer or practice cell without a solution region, or a task cell listed in ``coursekit.tasks``
            missing from the notebook; the message names the notebook and the cell id.
    """
    nb = copy.deepcopy(solution)
    _require_task_cells(nb, name)
    _replace_solutions(nb, name)
    _clear_outputs(nb)
    _lock_task_cells(nb)
    _tag_raising_cells(nb, solution)
    _record_build(nb, name)
    return nb


def _cell_id(cell, index: int) -> str:
    return cell.get("id") or f"#{index}"


def _require_task_cells(nb, name: str) -> None:
    """Every answer and check cell that ``coursekit.tasks`` lists for the notebook's lesson exists."""
    from coursekit.tasks import exercise_for

    lesson = nb.metadata.get("coursekit", {}).get("lesson")
    if lesson is None:
        return
    try:
        ex = exercise_for(str(lesson))
    except ValueError as exc:
        raise BuildError(f"{name}: metadata coursekit.lesson: {exc}") from None
    ids = {c.get("id") for c in nb.cells}
    missing = [cid for t in ex.tasks for cid in (t.answer_cell, t.check_cell) if cid not in ids]
    if missing:
        raise BuildError(f"{name}: expected cells with ids {', '.join(missing)} (lesson {lesson}); not found")


def _replace_solutions(nb, name: str) -> None:
    """Each solution region becomes the placeholder; answer and practice cells must hold one."""
    for index, cell in enumerate(nb.cells):
        cid = _cell_id(cell, index)
        where = f"{name}: cell {cid}"
        if cell.cell_type != "code":
            if BEGIN in _source(cell) or END in _source(cell):
                raise BuildError(f"{where}: solution markers are only allowed in code cells")
            continue
        cell.source, regions = _strip_regions(_source(cell), where)
        if regions == 0 and cid.startswith(("answer-", "practice-")):
            kind = "an answer" if cid.startswith("answer-") else "a practice"
            raise BuildError(f"{where}: {kind} cell needs a '{BEGIN}' ... '{END}' region")


def _clear_outputs(nb) -> None:
    """No outputs, execution counts or execution timings."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def _lock_task_cells(nb) -> None:
    """Check cells can be neither edited nor deleted; answer cells cannot be deleted (the grader finds them by id)."""
    for index, cell in enumerate(nb.cells):
        cid = _cell_id(cell, index)
        if cell.cell_type != "code":
            continue
        if cid.startswith("check-"):
            cell.metadata["editable"] = False
            cell.metadata["deletable"] = False
        elif cid.startswith("answer-"):
            cell.metadata["deletable"] = False


def _has_region(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.split("\n"))


def _tag_raising_cells(nb, solution) -> None:
    """Tag ``raises-exception`` on every cell that raises when the untouched exercise runs top to bottom.

    Calling an unimplemented task raises NotImplementedError, and a name bound by a cell that raised
    may be undefined. Passing an unimplemented function to a check is fine: checks report a failure
    instead of raising.
    """
    unimplemented: set[str] = set()
    undefined: set[str] = set()
    for cell, solved_cell in zip(nb.cells, solution.cells):
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(_source(cell))
        except SyntaxError:  # IPython magics etc.: nothing to learn about names
            continue
        solved = _source(solved_cell)
        regions = _has_region(solved)
        top = _TopLevel()
        top.visit(tree)
        raises = top.raises_now or bool(top.calls & unimplemented) or bool(top.loads & undefined)
        if regions:
            unimplemented |= _defined_names(tree)
        if raises:
            undefined |= top.binds | _defined_names(tree)
            if regions:  # a placeholder raises before binding what the solution binds (a practice cell's results)
                undefined |= _solution_binds(solved)
            tags = list(cell.metadata.get("tags", []))
            if RAISES_TAG not in tags:
                cell.metadata["tags"] = tags + [RAISES_TAG]
        else:  # a cell that runs fine (re)binds what it assigns
            undefined -= top.binds
            if not regions:
                unimplemented -= top.binds


def _record_build(nb, name: str) -> None:
    """``metadata.coursekit.build``: the source notebook and the hash a later build compares with."""
    nb.metadata.setdefault("coursekit", {})
    nb.metadata["coursekit"]["build"] = {"source": f"solutions/{Path(name).name}", "hash": content_hash(nb)}


def build_source(solution_path: Path) -> str:
    """The exact text ``coursekit build`` writes for one solution notebook."""
    import nbformat

    nb = build_notebook(read_notebook(solution_path), str(solution_path))
    text = nbformat.writes(nb)  # nbformat's own layout (indent 1, sorted keys), as nbformat.write
    return text if text.endswith("\n") else text + "\n"


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest directory (from ``start`` = cwd upward) holding ``solutions/`` and ``pyproject.toml``; else cwd."""
    start = (start or Path.cwd()).resolve()
    for d in (start, *start.parents):
        if (d / "solutions").is_dir() and (d / "pyproject.toml").is_file():
            return d
    return start


@dataclass
class BuildReport:
    """What a build did (or, with ``check=True``, would do) for each exercise."""

    written: list[str]
    unchanged: list[str]
    stale: list[str]  # --check: out of date or missing
    refused: list[str]  # learner-modified, not overwritten
    backups: list[str]

    @property
    def ok(self) -> bool:
        return not self.stale and not self.refused


def _learner_modified(path: Path) -> bool:
    """True when the file is not what a build wrote (edited, or no build record)."""
    try:
        nb = read_notebook(path)
    except Exception:
        return True  # unreadable: treat as someone's work, never overwrite silently
    recorded = nb.metadata.get("coursekit", {}).get("build", {}).get("hash")
    return recorded != content_hash(nb)


def _backup_path(path: Path) -> Path:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.stem}.backup-{stamp}.ipynb")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}.backup-{stamp}-{n}.ipynb")
    return candidate


def build_all(solutions: Path, exercises: Path, check: bool = False, force: bool = False) -> BuildReport:
    """Build every ``solutions/*.ipynb`` into ``exercises/`` (see the module docstring).

    Args:
        solutions: directory of solved notebooks.
        exercises: output directory (created if missing).
        check: only compare; report stale or missing exercises, write nothing. Default: False.
        force: replace learner-modified exercises, keeping a timestamped backup. Default: False.

    Raises:
        BuildError: a malformed solution notebook, or no solution notebooks at all.
    """
    sources = sorted(p for p in Path(solutions).glob("*.ipynb") if ".backup-" not in p.name)
    if not sources:
        raise BuildError(f"expected solution notebooks in {solutions} (got none)")
    report = BuildReport([], [], [], [], [])
    for src in sources:
        text = build_source(src)
        dest = Path(exercises) / src.name
        current = dest.read_text(encoding="utf-8") if dest.is_file() else None
        if current == text:
            report.unchanged.append(str(dest))
        elif check:
            report.stale.append(str(dest) + (" (missing)" if current is None else ""))
        elif current is not None and _learner_modified(dest) and not force:
            report.refused.append(str(dest))
        else:
            if current is not None and _learner_modified(dest):
                backup = _backup_path(dest)
                backup.write_text(current, encoding="utf-8")
                report.backups.append(str(backup))
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(dest)  # atomic: an interrupted build never leaves half a notebook
            report.written.append(str(dest))
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``coursekit build``."""
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if exercises/ is out of date")
    parser.add_argument("--force", action="store_true",
                        help="replace exercises a learner has modified (a timestamped backup is kept)")
    parser.add_argument("--solutions", type=Path, default=None, help="solution notebooks (default: <repo>/solutions)")
    parser.add_argument("--exercises", type=Path, default=None, help="output directory (default: <repo>/exercises)")


def run(args: argparse.Namespace) -> int:
    """``coursekit build``: 0 on success, 1 when stale (--check) or refused, 2 on a malformed solution."""
    root = find_repo_root()
    solutions = args.solutions or root / "solutions"
    exercises = args.exercises or root / "exercises"
    try:
        report = build_all(solutions, exercises, check=args.check, force=args.force)
    except BuildError as exc:
        print(f"coursekit build: error: {exc}", file=sys.stderr)
        return 2
    for p in report.written:
        print(f"wrote      {p}")
    for p in report.backups:
        print(f"backup     {p} (your previous version)")
    for p in report.stale:
        print(f"stale      {p}")
    for p in report.refused:
        print(f"kept       {p}: modified since it was built; rerun with --force to replace it (a backup is kept)")
    if args.check:
        n = len(report.stale)
        print(f"{len(report.unchanged)} up to date, {n} out of date" + (": run `coursekit build`" if n else ""))
    return 0 if report.ok else 1
