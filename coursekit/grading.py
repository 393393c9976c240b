"""``coursekit grade``: score submitted exercise notebooks without trusting them.

Threat model (the course design's): a submission may edit check cells, monkeypatch coursekit or
torch, print fake "passed" text, write fake report files, loop forever, kill its kernel, or be a
broken file. The grader therefore

1. reads the submission (never writes it) and keeps only its answer cells, matched by cell id
   (``answer-<name>``), and scans them for calls of the library function a task re-implements;
2. rebuilds the instructor's notebook from ``solutions/`` with ``coursekit.build`` and puts the
   learner's answers in place of the placeholders; check cells, the learner's extra cells and the
   instructor's demo cells that call the learner's code are dropped;
3. runs the setup and answer cells in a fresh kernel (the current Python, ``OMP_NUM_THREADS=1``,
   a minimal environment) inside a temporary directory, with per-cell and total time limits;
4. runs one probe cell per task (``coursekit.probes``): hidden inputs drawn from a seed the
   notebook never sees are written as ``.npz``; the learner's code returns plain arrays/JSON only,
   read with ``allow_pickle=False``; all comparison happens here, against PyTorch;
5. scores each task independently: a timeout or a dead kernel costs that task only (the kernel is
   restarted and the setup and surviving answers are replayed before the next probe).

Exit status: 0 whenever every submission was graded (whatever the scores), 1 when one could not be
graded (unreadable file, unknown lesson), 2 when no notebook was given or found.

See the README's "Exercises and grading" section.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = [
    "STATUSES", "TaskResult", "NotebookResult", "GradingError", "identify_exercise",
    "answer_sources", "forbidden_uses", "grade_notebook", "grade_paths", "classroom_report",
    "format_table", "add_arguments", "run",
]

STATUSES = ("pass", "fail", "error", "timeout", "missing")
_TRUSTED_CELL_TIMEOUT = 120.0  # seconds for the instructor's setup cells (imports on a loaded machine)
_KERNEL_ENV = {"PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
               "CONDA_PREFIX", "SYSTEMROOT", "JUPYTER_PATH", "JUPYTER_DATA_DIR", "MPLBACKEND", "MPLCONFIGDIR"}
_MAX_OUTPUT_BYTES = 64 * 2**20  # a probe writing more than this is treated as an error, not loaded


class GradingError(Exception):
    """The submission could not be graded at all (unreadable, or not one of the course's exercises)."""


@dataclass
class TaskResult:
    id: str
    points: int
    max_points: int
    status: str
    message: str = ""


@dataclass
class NotebookResult:
    notebook: str
    score: int
    max_score: int
    tasks: list[TaskResult] = field(default_factory=list)
    lesson: str | None = None
    error: str | None = None  # set when the submission could not be graded
    seconds: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        if d["error"] is None:
            del d["error"]
        return d


# ---------------------------------------------------------------------------------- submission
def _read_submission(path: Path):
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


def _parse(source: str):
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:  # cells may hold IPython syntax (magics); translate it to Python first
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:
        return None


def forbidden_uses(source: str, names: frozenset, own: frozenset = frozenset()) -> list[str]:
    """Identifiers from ``names`` (and any use of ``coursekit``'s reference) that a cell mentions.

    Names, attributes, imported modules/names and string constants are scanned: a static check that
    catches the honest shortcut (``F.batch_norm``), not determined obfuscation. Bare names in
    ``own`` (functions the learner defined, e.g. their own ``layer_norm`` called from
    ``group_norm``) are allowed.
    """
    tree = _parse(source)
    if tree is None:
        return []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in names and node.id not in own:
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            if node.attr in names:
                found.add(node.attr)
            if node.attr == "reference":
                found.add("coursekit.reference")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names]
            if isinstance(node, ast.ImportFrom) and node.module:
                mods.append(node.module)
            for m in mods:
                found.update(set(m.split(".")) & names)
                if m.split(".")[0] == "coursekit":
                    found.add(m)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            found.add(node.value)
    return sorted(found)


def _names(source: str) -> tuple[set[str], set[str]]:
    """(top-level names a cell defines, every name it mentions)."""
    tree = _parse(source)
    if tree is None:
        return set(), set()
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return defined, {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _with_helpers(answers: dict[str, str], cid: str) -> list[str]:
    """The answer cell ``cid`` and every other answer cell it uses names from (transitively)."""
    info = {c: _names(src) for c, src in answers.items()}
    seen, todo = {cid}, [cid]
    while todo:
        used = info[todo.pop()][1]
        for other, (defined, _) in info.items():
            if other not in seen and defined & used:
                seen.add(other)
                todo.append(other)
    return [answers[c] for c in seen]


# -------------------------------------------------------------------------------------- kernel
class _Kernel:
    """A fresh IPython kernel of the current Python, driven through nbclient, one cell at a time."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.client = None
        self.starts = 0

    def start(self, attempts: int = 3) -> None:
        """Start the kernel, retrying: a loaded machine occasionally loses a kernel at startup."""
        for attempt in range(attempts):
            try:
                return self._start()
            except Exception:
                self.stop()
                if attempt == attempts - 1:
                    raise

    def _start(self) -> None:
        import nbformat
        from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        class _CurrentPython(KernelSpecManager):
            def get_kernel_spec(self, kernel_name):  # noqa: ARG002
                return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                  display_name="coursekit grader", language="python")

        # IPC sockets in the grader's temporary directory: no TCP port to race other kernels for
        self.starts += 1
        km = AsyncKernelManager(kernel_name="coursekit-grader", kernel_spec_manager=_CurrentPython(),
                                transport="ipc", ip=str(self.cwd.parent / f"kernel{self.starts}"))
        # only what Python needs: the grader's environment may hold tokens (e.g. in CI)
        env = {k: v for k, v in os.environ.items() if k in _KERNEL_ENV}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
        self.client = NotebookClient(nbformat.v4.new_notebook(), km=km, allow_errors=True, startup_timeout=120,
                                     shutdown_kernel="immediate", record_timing=False)
        # the learner's stderr noise (warnings, crash dumps) would garble the grader's report
        self.client.start_new_kernel(cwd=str(self.cwd), env=env, stderr=subprocess.DEVNULL)
        self.client.start_new_kernel_client()

    def run(self, source: str, timeout: float) -> tuple[str, str]:
        """Run one cell: ``("ok" | "error" | "timeout" | "dead", message)``."""
        import nbformat
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        cell = nbformat.v4.new_code_cell(source)
        self.client.timeout = max(1, int(timeout + 0.999))
        self.client.nb.cells = [cell]  # nbclient stores the executed cell back at its index
        try:
            self.client.execute_cell(cell, 0)
        except CellTimeoutError:
            return "timeout", f"time limit of {self.client.timeout} s exceeded"
        except DeadKernelError:
            return "dead", "the kernel died (the code exited or crashed the Python process)"
        except Exception as exc:  # e.g. the kernel went away between messages
            if not self.alive():
                return "dead", "the kernel died (the code exited or crashed the Python process)"
            return "error", f"{type(exc).__name__}: {str(exc)[:300]}"
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            return "error", f"{errors[0].get('ename')}: {str(errors[0].get('evalue'))[:300]}"
        return "ok", ""

    def alive(self) -> bool:
        from jupyter_core.utils import run_sync

        km = self.client.km if self.client is not None else None
        return km is not None and bool(run_sync(km.is_alive)())

    def stop(self) -> None:
        if self.client is not None and self.client.km is not None:
            try:
                self.client._cleanup_kernel()
            except Exception:
                pass
        self.client = None


# ------------------------------------------------------------------------------------- grading
def _instructor_notebook(exercise, solutions: Path):
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


def _write_inputs(task_dir: Path, cases) -> None:
    import numpy as np

    task_dir.mkdir(parents=True)
    with open(task_dir / "cases.json", "w") as f:
        json.dump([params for params, _ in cases], f)
    for i, (_, arrays) in enumerate(cases):
        np.savez(task_dir / f"in{i}.npz", **arrays)


def _read_outputs(task_dir: Path, probe, cases) -> tuple[str, str]:
    """Compare the probe's plain outputs with the grader's own computation: (status, message)."""
    import numpy as np

    for i, (params, arrays) in enumerate(cases):
        res_path, out_path = task_dir / f"res{i}.json", task_dir / f"out{i}.npz"
        try:
            if res_path.stat().st_size > 1_000_000:
                return "error", "the probe result is too large"
            res = json.loads(res_path.read_text())
        except (OSError, ValueError):
            return "error", f"case {i + 1}: no result (the code under test did not return)"
        if not isinstance(res, dict) or not res.get("ok"):
            err = res.get("error", "unknown error") if isinstance(res, dict) else "malformed result"
            return "error", f"case {i + 1}: {err}"
        try:
            if out_path.stat().st_size > _MAX_OUTPUT_BYTES:
                return "error", f"case {i + 1}: output too large"
            with np.load(out_path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            msg = probe.compare(params, arrays, out, res.get("meta") or {})
        except KeyError as exc:
            return "fail", f"case {i + 1}: missing output {exc}"
        except Exception as exc:
            return "fail", f"case {i + 1}: unusable output ({type(exc).__name__}: {str(exc)[:200]})"
        if msg:
            desc = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items() if k in ("x", "feature"))
            return "fail", f"case {i + 1}{' (' + desc + ')' if desc else ''}: {msg}"
    return "pass", ""


def grade_notebook(path, solutions="solutions", timeout: float = 60.0, total_timeout: float = 600.0,
                   seed: int | None = None) -> NotebookResult:
    """Grade one submission (see the module docstring). Never modifies ``path``.

    Args:
        path: the submitted ``.ipynb``.
        solutions: directory of the instructor's solution notebooks. Default: ``"solutions"``.
        timeout: seconds allowed per cell (setup, each answer, each probe). Default: 60.
        total_timeout: seconds allowed for the whole notebook. Default: 600.
        seed: seed of the hidden inputs; ``None`` draws a fresh one with ``secrets``. Default: None.

    Returns:
        a ``NotebookResult``; if the file cannot be graded, one with ``error`` set and score 0.
    """
    import numpy as np

    from coursekit.probes import HARNESS, PROBES

    path = Path(path)
    t0 = time.monotonic()
    try:
        nb = _read_submission(path)
        exercise = identify_exercise(nb, path)
        instructor = _instructor_notebook(exercise, Path(solutions))
    except GradingError as exc:
        return NotebookResult(str(path), 0, 0, error=str(exc))
    tasks = {t.name: t for t in exercise.tasks}
    results: dict[str, TaskResult] = {}

    def settle(name: str, status: str, message: str = "") -> None:
        if name not in results:
            t = tasks[name]
            results[name] = TaskResult(t.id, t.points if status == "pass" else 0, t.points, status, message)

    answers = answer_sources(nb)
    rejected: set[str] = set()  # failed the static scan
    placeholders = {c.id: c.source for c in instructor.cells if c.get("id", "").startswith("answer-")}
    for name, t in tasks.items():
        if t.answer_cell not in answers:
            settle(name, "missing", f"answer cell {t.answer_cell} not found")
        elif answers[t.answer_cell].strip() == placeholders.get(t.answer_cell, "").strip():
            settle(name, "missing", "not attempted (the answer cell is unchanged)")
        else:
            bad = []
            sources = _with_helpers(answers, t.answer_cell)
            own = frozenset().union(*(_names(src)[0] for src in sources))
            for src in sources:
                bad += forbidden_uses(src, PROBES[name].forbidden, own)
            if bad:
                rejected.add(name)
                settle(name, "fail", f"uses {', '.join(sorted(set(bad)))}: the task asks you to implement it yourself")

    # The cells the kernel runs: the instructor's, minus checks, with the learner's answers in place.
    cells: list[tuple[str | None, str]] = []  # (task name or None, source)
    given = {c.get("id"): c.source for c in instructor.cells}
    for c in instructor.cells:
        cid = c.get("id", "")
        if c.cell_type != "code" or cid.startswith("check-"):
            continue
        if cid.startswith("answer-"):
            name = cid[len("answer-"):]
            # rejected answers still run: another task's answer may call them
            if name in tasks and (name not in results or name in rejected):
                cells.append((name, answers[cid]))
            continue
        tree = _parse(c.source)
        if tree is not None and {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & set(tasks):
            continue  # an instructor's demo of the learner's code: untrusted in effect, and not graded
        cells.append((None, c.source))

    deadline = t0 + total_timeout
    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    work = Path(tempfile.mkdtemp(prefix="coursekit-grade-"))
    probe_root = work / secrets.token_hex(8)  # outside the kernel's cwd, under an unguessable name
    cwd = work / "cwd"
    cwd.mkdir()
    kernel = _Kernel(cwd)
    replay: list[tuple[str | None, str]] = []  # cells that ran to completion (ok or error), to replay after a restart
    answer_errors: dict[str, str] = {}

    def restart() -> None:
        kernel.stop()
        kernel.start()
        for name, src in replay:
            limit = timeout if name else max(timeout, _TRUSTED_CELL_TIMEOUT)
            if kernel.run(src, max(1.0, min(limit, deadline - time.monotonic())))[0] in ("timeout", "dead"):
                break

    try:
        if all(name in results for name in tasks):  # nothing to run: skip the kernel altogether
            cells = []
        else:
            kernel.start()
        for name, src in cells:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # the instructor's own cells (setup, given code) are trusted: --timeout limits the learner's
            limit = timeout if name else max(timeout, _TRUSTED_CELL_TIMEOUT)
            status, msg = kernel.run(src, min(limit, remaining))
            if status in ("ok", "error"):
                replay.append((name, src))
                if status == "error" and name:
                    answer_errors[name] = msg
            elif name:
                settle(name, "timeout" if status == "timeout" else "error", f"answer cell: {msg}")
                restart()
            else:
                restart()
        for name in tasks:
            if name in results:
                continue
            probe = PROBES[name]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                settle(name, "timeout", f"total time limit of {total_timeout:g} s reached before this task ran")
                continue
            task_dir = probe_root / name
            cases = probe.make_cases(rng)
            _write_inputs(task_dir, cases)
            prelude = f"_COURSEKIT_GIVEN = {given.get('given-batch_norm_forward', '')!r}\n" if "_COURSEKIT_GIVEN" in probe.body else ""
            source = HARNESS + prelude + probe.body + f"\n_coursekit_probe({str(task_dir)!r}, _coursekit_body)\n"
            status, msg = kernel.run(source, min(timeout, remaining))
            if status in ("timeout", "dead"):
                settle(name, "timeout" if status == "timeout" else "error", msg)
                restart()
                continue
            st, message = _read_outputs(task_dir, probe, cases)
            if st == "error" and name in answer_errors:
                message = f"the answer cell raised {answer_errors[name]}"
            settle(name, st, message)
    finally:
        kernel.stop()
        shutil.rmtree(work, ignore_errors=True)
    for name in tasks:
        settle(name, "timeout", "total time limit reached")
    ordered = [results[n] for n in tasks]
    return NotebookResult(str(path), sum(r.points for r in ordered), sum(r.max_points for r in ordered), ordered,
                          lesson=exercise.lesson, seconds=round(time.monotonic() - t0, 2))


def _expand(paths) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts and ".backup-" not in q.name)
        else:
            out.append(p)
    return out


def _grade_one(args) -> NotebookResult:
    path, solutions, timeout, total = args
    try:
        return grade_notebook(path, solutions, timeout, total)
    except Exception as exc:  # a grader bug must not take the other submissions down
        return NotebookResult(str(path), 0, 0, error=f"internal grader error: {type(exc).__name__}: {exc}")


def grade_paths(paths, solutions="solutions", timeout: float = 60.0, total_timeout: float = 600.0,
                jobs: int = 1) -> list[NotebookResult]:
    """Grade files and directories (every ``.ipynb`` below a directory), ``jobs`` at a time."""
    files = _expand(paths)
    work = [(str(f), str(solutions), timeout, total_timeout) for f in files]
    if jobs <= 1 or len(work) <= 1:
        return [_grade_one(w) for w in work]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: the workers start clean instead of inheriting a forked copy of torch's thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_grade_one, work))


# -------------------------------------------------------------------------------------- output
def format_table(results: list[NotebookResult]) -> str:
    """A plain-text table: one block per notebook, one row per task."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.notebook}: NOT GRADED: {r.error}")
            continue
        lines.append(f"{r.notebook} (lesson {r.lesson}): {r.score}/{r.max_score}")
        width = max(len(t.id) for t in r.tasks)
        for t in r.tasks:
            lines.append(f"  {t.id:<{width}}  {t.points}/{t.max_points}  {t.status:<7}  {t.message}".rstrip())
    total = sum(r.score for r in results)
    lines.append(f"total: {total}/{sum(r.max_score for r in results)} over {len(results)} notebook(s)")
    return "\n".join(lines)


def classroom_report(results: list[NotebookResult]) -> dict:
    """GitHub Classroom's autograding result shape (``autograding-grading-reporter``)."""
    tests = []
    for r in results:
        if r.error:
            tests.append({"name": Path(r.notebook).name, "status": "error", "score": 0, "max_score": 0,
                          "message": r.error})
        for t in r.tasks:
            status = {"pass": "pass", "error": "error", "timeout": "error"}.get(t.status, "fail")
            tests.append({"name": f"{Path(r.notebook).name} {t.id}", "status": status, "score": t.points,
                          "max_score": t.max_points, "message": t.message or t.status})
    max_score = sum(r.max_score for r in results)
    ok = all(not r.error and r.score == r.max_score for r in results)
    return {"version": 1, "status": "pass" if ok else "fail", "max_score": max_score, "tests": tests}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``coursekit grade``."""
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebooks or directories of notebooks")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON ('-' for stdout)")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="grade N submissions in parallel (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds per cell (default 60)")
    parser.add_argument("--total-timeout", type=float, default=600.0, metavar="S",
                        help="seconds per notebook (default 600)")
    parser.add_argument("--classroom", nargs="?", const="-", metavar="FILE",
                        help="write GitHub Classroom's autograding JSON to FILE (default: stdout)")
    parser.add_argument("--solutions", type=Path, default=None, help="instructor solutions, or a trusted copy of the built exercises (default: <repo>/solutions)")


def _emit(payload: dict | list, dest) -> None:
    text = json.dumps(payload, indent=2)
    if str(dest) == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """``coursekit grade``; see the module docstring for the exit status."""
    from coursekit.build import find_repo_root

    if args.jobs < 1 or args.timeout <= 0 or args.total_timeout <= 0:
        print("coursekit grade: expected --jobs >= 1 and positive timeouts", file=sys.stderr)
        return 2
    files = _expand(args.submissions)
    if not files:
        print(f"coursekit grade: no notebooks found in {' '.join(args.submissions)}", file=sys.stderr)
        return 2
    solutions = args.solutions or find_repo_root() / "solutions"
    results = grade_paths(files, solutions, args.timeout, args.total_timeout, args.jobs)
    quiet = str(args.json) == "-" or args.classroom == "-"
    print(format_table(results), file=sys.stderr if quiet else sys.stdout)
    if args.json:
        _emit([r.to_json() for r in results] if len(results) != 1 else results[0].to_json(), args.json)
    if args.classroom:
        _emit(classroom_report(results), args.classroom)
    return 1 if any(r.error for r in results) else 0
