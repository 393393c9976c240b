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
4. runs one probe cell per task (the task's body from ``coursekit.tasks``, with the harness of
   ``coursekit.grader.in_kernel`` sent as the kernel's first cell): hidden inputs drawn from a seed the
   notebook never sees are written as ``.npz``; the learner's code returns plain arrays/JSON only,
   read with ``allow_pickle=False``; all comparison happens here, against PyTorch;
5. scores each task independently: a timeout or a dead kernel costs that task only (the kernel is
   restarted and the setup and surviving answers are replayed before the next probe).

Grader side (trusted); the only code that runs in the learner's kernel is what this module sends
there as cell source.
"""
from __future__ import annotations

import ast
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from coursekit.grader.bounded import OutputError, load_json, load_npz, new_dir, save_npz, write_json
from coursekit.grader.intake import (
    answer_sources,
    changed_files,
    expand,
    identify_exercise,
    instructor_notebook,
    read_all,
    read_submission,
    trusted_digest,
)
from coursekit.grader.kernel import Kernel
from coursekit.grader.results import GradingError, NotebookResult, TaskResult
from coursekit.grader.sandbox import resolve as resolve_sandbox
from coursekit.grader.scan import defined_and_used, forbidden_uses, parse, with_helpers

__all__ = ["grade_notebook", "grade_paths"]

_TRUSTED_CELL_TIMEOUT = 120.0  # seconds for the instructor's setup cells (imports on a loaded machine)
_MAX_OUTPUT_BYTES = 64 * 2**20  # a probe writing more than this is treated as an error, not loaded


def _lock_cell(tasks) -> str:
    """The cell that arms ``coursekit.grader.guard.lock`` with the union of what the tasks forbid."""
    ops = {op: what for t in tasks for op, what in t.forbidden_ops.items()}
    targets = sorted({w for t in tasks for w in t.watch})
    return (f"import coursekit.grader.guard as _coursekit_guard\n_coursekit_guard.lock({ops!r}, {targets!r})\n"
            "del _coursekit_guard\n")


def _write_inputs(task_dir: Path, cases) -> None:
    # new files only, in a directory just made by new_dir (bounded.py): nothing planted is followed
    write_json(task_dir / "cases.json", [params for params, _ in cases])
    for i, (_, arrays) in enumerate(cases):
        save_npz(task_dir / f"in{i}.npz", arrays)


def _read_outputs(task_dir: Path, task, cases) -> tuple[str, str, str | None, str | None]:
    """Judge the kernel's plain outputs with the task's own judge: (status, message, case, hint).

    Every case is judged (``coursekit.tasks.judge_case``, the same function the check cell uses);
    the first case that does not pass decides the status and is reported with its hint.
    """
    from coursekit.tasks import judge_case

    first = None
    passed, failed = [], []
    for i, case in enumerate(cases):
        res_path, out_path = task_dir / f"res{i}.json", task_dir / f"out{i}.npz"
        label = f"case {i + 1} {case.desc}"
        try:
            res = load_json(res_path)  # bounded.py: regular file, size and depth capped
        except OutputError as exc:
            if not res_path.exists():
                return "error", f"{label}: no result (the code under test did not return)", label, None
            return "error", f"{label}: unusable result ({exc})", label, None
        if not isinstance(res, dict):
            return "error", f"{label}: malformed result", label, None
        try:
            res["arrays"] = load_npz(out_path, max_bytes=_MAX_OUTPUT_BYTES)  # members and array headers checked first
        except OutputError as exc:
            return "error", f"{label}: unusable output ({exc})", label, None
        try:
            verdict = judge_case(task, case, res)
        except Exception as exc:  # plain data the judge cannot use: the answer's failure, not the grader's
            failed.append(case.desc)
            if first is None:
                first = ("fail", f"{label}: unusable output ({type(exc).__name__}: {str(exc)[:200]})", label, None)
            continue
        (passed if verdict.passed else failed).append(case.desc)
        if not verdict.passed and first is None:
            first = (verdict.status, f"{label}: {verdict.message}", label, verdict.hint)
    if first is None:
        return "pass", "", None, None
    status, message, label, hint = first
    if not passed:
        message += f" [all {len(cases)} cases fail]"
    else:  # which shapes/dtypes/modes work and which do not (the check cell says the same)
        message += f" [{len(passed)}/{len(cases)} cases pass ({'; '.join(passed)}), failing: {'; '.join(failed) or '-'}]"
    return status, message, label, hint


def grade_notebook(path, solutions="solutions", timeout: float = 60.0, total_timeout: float = 600.0,
                   seed: int | None = None, sandbox: str = "auto", data: bytes | None = None) -> NotebookResult:
    """Grade one submission (see the module docstring). Never modifies ``path``.

    Args:
        path: the submitted ``.ipynb``.
        solutions: directory of the instructor's solution notebooks. Default: ``"solutions"``.
        timeout: seconds allowed per cell (setup, each answer, each probe). Default: 60.
        total_timeout: seconds allowed for the whole notebook. Default: 600.
        seed: seed of the hidden inputs; ``None`` draws a fresh one with ``secrets``. Default: None.
        sandbox: ``"auto"``, ``"require"`` or ``"none"`` (``coursekit.grader.sandbox``). Default: ``"auto"``.
        data: the submission's bytes read earlier (``intake.read_all``); ``None`` reads ``path`` now.

    Returns:
        a ``NotebookResult``; if the file cannot be graded, one with ``error`` set and score 0.
    """
    import numpy as np

    from coursekit.checks._core import static_hint
    from coursekit.grader import in_kernel

    path = Path(path)
    t0 = time.monotonic()
    sandboxed, sandbox_desc = resolve_sandbox(sandbox)
    exercise = None
    try:
        nb = read_submission(path, data)
        exercise = identify_exercise(nb, path)
        instructor = instructor_notebook(exercise, Path(solutions))
    except GradingError as exc:  # the lesson when known: the assignment counts it as that exercise's notebook
        return NotebookResult(str(path), 0, 0, lesson=exercise and exercise.lesson, error=str(exc))
    tasks = {t.name: t for t in exercise.tasks}
    results: dict[str, TaskResult] = {}

    def settle(name: str, status: str, message: str = "", case: str | None = None, hint: str | None = None) -> None:
        if name not in results:
            t = tasks[name]
            text = message + (f" — hint: {hint}" if hint else "")
            results[name] = TaskResult(t.id, t.points if status == "pass" else 0, t.points, status, text,
                                       hint=hint, case=case)

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
            sources = with_helpers(answers, t.answer_cell)
            own = frozenset().union(*(defined_and_used(src)[0] for src in sources))
            for src in sources:
                bad += forbidden_uses(src, t.forbidden_names, own)
            if bad:
                rejected.add(name)
                found = sorted(set(bad))
                settle(name, "fail", f"uses {', '.join(found)}: the task asks you to implement it yourself",
                       "the source of your answer", static_hint(found))

    # The cells the kernel runs: the instructor's, minus checks, with the learner's answers in place.
    # First, before any other cell, the code the probes use (in_kernel.py): it captures its I/O
    # functions before any learner code can replace them. Before the first answer, the guard's lock
    # (coursekit.grader.guard): what the notebook's tasks forbid is refused for the kernel's life.
    harness = Path(in_kernel.__file__).read_text()
    cells: list[tuple[str | None, str]] = [(None, harness)]  # (task name or None, source)
    lock = _lock_cell(tasks.values())
    for c in instructor.cells:
        cid = c.get("id", "")
        if c.cell_type != "code" or cid.startswith("check-"):
            continue
        if cid.startswith("answer-") and lock:
            cells.append((None, lock))
            lock = ""
        if cid.startswith("answer-"):
            name = cid[len("answer-"):]
            # rejected answers still run: another task's answer may call them
            if name in tasks and (name not in results or name in rejected):
                cells.append((name, answers[cid]))
            continue
        tree = parse(c.source)
        if tree is not None and {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & set(tasks):
            continue  # an instructor's demo of the learner's code: untrusted in effect, and not graded
        cells.append((None, c.source))

    deadline = t0 + total_timeout
    rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)
    work = Path(tempfile.mkdtemp(prefix="coursekit-grade-"))  # mode 0700; the sandbox sees only this one
    probe_root = work / secrets.token_hex(8)  # outside the kernel's cwd, under an unguessable name
    probe_root.mkdir()
    cwd = work / "cwd"
    cwd.mkdir()
    import coursekit

    digest = trusted_digest(solutions)
    kernel = Kernel(cwd, sandboxed, hidden=[Path(solutions), Path(coursekit.__file__).resolve().parents[1] / "solutions"])
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
            task = tasks[name]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                settle(name, "timeout", f"total time limit of {total_timeout:g} s reached before this task ran")
                continue
            task_dir = new_dir(probe_root, name)  # fresh: a directory the kernel pre-created is never reused
            cases = task.cases(rng)
            try:
                _write_inputs(task_dir, [(c.params, c.arrays) for c in cases])
            except OSError as exc:  # something the kernel planted: this task's error, not the grader's
                settle(name, "error", f"could not write this task's inputs ({exc.strerror})")
                continue
            source = task.body + f"\n_coursekit_probe({str(task_dir)!r}, _coursekit_body)\n"
            status, msg = kernel.run(source, min(timeout, remaining))
            if status in ("timeout", "dead"):
                settle(name, "timeout" if status == "timeout" else "error", msg)
                restart()
                continue
            st, message, case, hint = _read_outputs(task_dir, task, cases)
            if st == "error" and name in answer_errors:
                message = f"the answer cell raised {answer_errors[name]}"
            settle(name, st, message, case, hint)
    finally:
        kernel.stop()
        shutil.rmtree(work, ignore_errors=True)
    changed = changed_files(digest, solutions)
    if changed and sandboxed is None:  # the kernel could have written them: this submission is not trusted
        return NotebookResult(str(path), 0, 0, error=f"trusted files changed while grading this submission: "
                              f"{', '.join(changed[:5])}", sandbox=sandbox_desc)
    if changed:  # read-only to the sandboxed kernel: changed by someone else (e.g. an edit during the run)
        sandbox_desc += f"; WARNING: trusted files changed during grading, not by this kernel: {', '.join(changed[:5])}"
    for name in tasks:
        settle(name, "timeout", "total time limit reached")
    ordered = [results[n] for n in tasks]
    return NotebookResult(str(path), sum(r.points for r in ordered), sum(r.max_points for r in ordered), ordered,
                          lesson=exercise.lesson, seconds=round(time.monotonic() - t0, 2), sandbox=sandbox_desc)



def _grade_one(args) -> NotebookResult:
    path, solutions, timeout, total, sandbox, data = args
    try:
        return grade_notebook(path, solutions, timeout, total, sandbox=sandbox, data=data)
    except Exception as exc:  # a grader bug must not take the other submissions down
        return NotebookResult(str(path), 0, 0, error=f"internal grader error: {type(exc).__name__}: {exc}")


def grade_paths(paths, solutions="solutions", timeout: float = 60.0, total_timeout: float = 600.0,
                jobs: int = 1, sandbox: str = "auto") -> list[NotebookResult]:
    """Grade files and directories (every ``.ipynb`` below a directory), ``jobs`` at a time.

    Every submission is read before any kernel starts. Raises ``SandboxUnavailable`` up front for
    ``sandbox="require"`` without a working bubblewrap.
    """
    files = expand(paths)
    resolve_sandbox(sandbox)
    blobs = read_all(files)
    work = [(str(f), str(solutions), timeout, total_timeout, sandbox, blobs[str(f)]) for f in files]
    if jobs <= 1 or len(work) <= 1:
        return [_grade_one(w) for w in work]
    return _in_workers(work, jobs)


def _in_workers(work: list, jobs: int) -> list[NotebookResult]:
    """``_grade_one`` over ``work`` in ``jobs`` worker processes. Without the sandbox a kernel can kill
    a worker, which breaks the pool: the submissions it took down are then graded one per worker,
    and only the one whose own worker dies is reported as not graded."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    def run(items: list[int], n: int) -> tuple[dict, list[int]]:
        done, lost = {}, []
        # spawn: the workers start clean instead of inheriting a forked copy of torch's thread pools
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {i: pool.submit(_grade_one, work[i]) for i in items}
            for i, fut in futures.items():
                try:
                    done[i] = fut.result()
                except BrokenProcessPool:
                    lost.append(i)
        return done, lost

    results, lost = run(list(range(len(work))), jobs)
    for i in lost:
        alone, died = run([i], 1)
        results.update(alone)
        for j in died:
            results[j] = NotebookResult(work[j][0], 0, 0, error="not graded: its grading process was killed "
                                        "(by the submission's kernel; grade with --sandbox require)")
    return [results[i] for i in range(len(work))]

