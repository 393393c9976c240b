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
import functools
import logging
import multiprocessing
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import coursekit
from coursekit.grader import handcalls, seccomp
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
from coursekit.grader.progress import configure, log, progress_bar, step
from coursekit.grader.results import GradingError, NotebookResult, TaskResult
from coursekit.grader.sandbox import resolve as resolve_sandbox
from coursekit.grader.scan import defined_and_used, forbidden_uses, parse, with_helpers
from coursekit.i18n import DEFAULT_LANGUAGE, notebook_language, using_language
from coursekit.verdicts import HAND_CALL_HINT, Feedback, case_label, hand_call, hint_text, static_feedback, unusable, with_summary

__all__ = ["grade_notebook", "grade_paths", "lock_source"]

_TRUSTED_CELL_TIMEOUT = 120.0  # seconds for the instructor's setup cells (imports on a loaded machine)
_MAX_OUTPUT_BYTES = 64 * 2**20  # a probe writing more than this is treated as an error, not loaded
_TRUSTED_KINDS = ("harness", "lock", "instructor")
_HARNESS = Path(__file__).with_name("in_kernel.py")  # sent as text: the grader itself never imports it (torch)


@dataclass(frozen=True)
class _Cell:
    """One cell sent to the kernel.

    ``kind``: ``"harness"`` (``in_kernel.py``), ``"lock"`` (the guard's), ``"instructor"`` (setup and given
    code) are trusted and get at least ``_TRUSTED_CELL_TIMEOUT``; ``"answer"`` and ``"probe"`` run the
    learner's code and get ``--timeout``. ``task``: the task an answer or probe belongs to.
    """

    kind: str
    source: str
    task: str | None = None

    @property
    def trusted(self) -> bool:
        return self.kind in _TRUSTED_KINDS


@dataclass
class _Grading:
    """The state of one submission's grading, shared by the steps of ``grade_notebook``."""

    path: Path
    solutions: Path
    timeout: float
    total_timeout: float
    tasks: dict
    started: float = field(default_factory=time.monotonic)
    results: dict[str, TaskResult] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)  # failed the static scan; their answers still run
    answer_errors: dict[str, str] = field(default_factory=dict)  # task -> what its answer cell raised
    replay: list[_Cell] = field(default_factory=list)  # cells that ran to completion, replayed after a restart
    kernel: Kernel | None = None
    on_ready: object = None  # called once the kernel is up (``grade_paths`` launches the next one then)
    marker: Path | None = None  # where the native layer names a node called by hand before stopping the kernel
    notes: list[str] = field(default_factory=list)  # a layer that could not be armed, for the report

    def remaining(self) -> float:
        return self.started + self.total_timeout - time.monotonic()

    def limit(self, cell: _Cell) -> float:
        """Seconds ``cell`` may run: ``--timeout`` (at least ``_TRUSTED_CELL_TIMEOUT`` for trusted cells),
        within what is left of ``--total-timeout``, and at least 1 s."""
        per_cell = max(self.timeout, _TRUSTED_CELL_TIMEOUT) if cell.trusted else self.timeout
        return max(1.0, min(per_cell, self.remaining()))

    def settle(self, name: str, feedback: Feedback) -> None:
        """Record a task's verdict; the first one recorded stands."""
        if name not in self.results:
            t = self.tasks[name]
            self.results[name] = TaskResult(t.id, t.points if feedback.status == "pass" else 0, t.points,
                                            feedback.status, feedback.message, hint=hint_text(feedback.hint),
                                            case=feedback.case)

    def pending(self) -> list[str]:
        return [name for name in self.tasks if name not in self.results]


def grade_notebook(path, solutions="solutions", timeout: float = 60.0, total_timeout: float = 600.0,
                   seed: int | None = None, sandbox: str = "auto", data: bytes | None = None) -> NotebookResult:
    """Grade one submission (see the module docstring). Never modifies ``path``.

    The steps: read, scan, assemble, run (kernel start, setup and answers), probe (each task, judged
    here), verify the trusted files, result; each is logged with its duration (``progress.step``).

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
    return _grade(path, solutions, timeout, total_timeout, seed, sandbox, data)


def _grade(path, solutions, timeout: float, total_timeout: float, seed: int | None, sandbox: str, data,
           ahead: _Workspace | None = None, on_ready=None) -> NotebookResult:
    """``grade_notebook``, with the workspace launched ahead for this submission (``ahead``, by
    ``grade_paths``) and ``on_ready`` called once this submission's kernel is up. A workspace that is
    not used is closed, whatever happens."""
    path, solutions = Path(path), Path(solutions)
    started = time.monotonic()
    sandboxed, sandbox_desc = resolve_sandbox(sandbox)
    exercise, early = None, ahead
    try:
        try:
            with step(path, "read"):
                nb = read_submission(path, data)
            digest = trusted_digest(solutions)  # before any kernel of this submission runs a cell
            if early is None and _may_need_kernel(nb):  # it starts while the grader loads the judges (torch)
                with step(path, "kernel launch"):
                    early = _Workspace(solutions, sandboxed)
            with step(path, "identify"):
                exercise = identify_exercise(nb, path)
                instructor = instructor_notebook(exercise, solutions)
        except GradingError as exc:  # the lesson when known: the assignment counts it as that exercise's notebook
            return NotebookResult(str(path), 0, 0, lesson=exercise and exercise.lesson, error=str(exc))
        g = _Grading(path, solutions, timeout, total_timeout, {t.name: t for t in exercise.tasks}, started,
                     on_ready=on_ready)
        with using_language(_feedback_language(nb)):  # verdicts and hints in the notebook's language
            with step(path, "scan"):
                answers = _scan(g, nb, instructor)
            if g.pending():  # else nothing to run: no kernel at all
                work, early = early or _Workspace(solutions, sandboxed), None
                with step(path, "assemble"):
                    cells = _assemble(g, instructor, answers, work)
                _run_and_probe(g, work, cells, np.random.default_rng(secrets.randbits(128) if seed is None else seed))
    finally:
        if early is not None:  # launched for a notebook that turned out to need no kernel
            early.close()
    with step(path, "verify trusted files"):
        untrusted, sandbox_desc = _verify_trusted(digest, solutions, sandboxed, sandbox_desc)
    if untrusted:
        return NotebookResult(str(path), 0, 0, error=untrusted, sandbox=sandbox_desc)
    return _result(g, exercise, "; ".join([sandbox_desc, *g.notes]))


def _may_need_kernel(nb) -> bool:
    """Whether a submission looks attempted: some answer cell without the built placeholder's
    ``raise NotImplementedError()``. Only decides when its kernel is launched (early or after the
    scan); whether a task is attempted is the scan's exact comparison with the instructor's cell."""
    from coursekit.build import PLACEHOLDER

    return any(PLACEHOLDER[1] not in src for src in answer_sources(nb).values())


class _Workspace:
    """A submission's private directory (``mkdtemp``, mode 0700; the sandbox sees only this one) and
    its kernel, launched at once. ``close`` stops the kernel and removes the directory."""

    def __init__(self, solutions: Path, sandboxed):
        self.dir = Path(tempfile.mkdtemp(prefix="coursekit-grade-"))
        try:
            self.probe_root = self.dir / secrets.token_hex(8)  # outside the kernel's cwd, under an unguessable name
            self.probe_root.mkdir()
            (self.dir / "cwd").mkdir()
            hidden = [solutions, Path(coursekit.__file__).resolve().parents[1] / "solutions"]
            self.kernel = Kernel(self.dir / "cwd", sandboxed, hidden=hidden)
            try:
                self.kernel.launch()
            except Exception as exc:  # ``Kernel.start`` retries a failed start
                log.warning("kernel launch failed: %s: %s", type(exc).__name__, exc)
                self.kernel.stop()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            self.kernel.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _feedback_language(nb) -> str:
    """The language of the edition the learner worked in (``metadata.coursekit.lang``): only the words of
    the feedback depend on it, never a score; an unknown tag gives English."""
    try:
        return notebook_language(nb)
    except ValueError:
        return DEFAULT_LANGUAGE


def _scan(g: _Grading, nb, instructor) -> dict[str, str]:
    """Settle what needs no kernel (a missing or unchanged answer, a forbidden name in the source);
    return the submission's answer sources by cell id."""
    answers = answer_sources(nb)
    placeholders = {c.id: c.source for c in instructor.cells if c.get("id", "").startswith("answer-")}
    for name, t in g.tasks.items():
        if t.answer_cell not in answers:
            g.settle(name, Feedback("missing", f"answer cell {t.answer_cell} not found"))
        elif answers[t.answer_cell].strip() == placeholders.get(t.answer_cell, "").strip():
            g.settle(name, Feedback("missing", "not attempted (the answer cell is unchanged)"))
        else:
            found = _forbidden_found(answers, t)
            if found:
                g.rejected.add(name)
                from coursekit.tasks._task import AUTOGRAD_NAMES

                g.settle(name, static_feedback(found, AUTOGRAD_NAMES))
    return answers


def _forbidden_found(answers: dict[str, str], task) -> list[str]:
    """The forbidden names in a task's answer and the helpers it uses from other cells, sorted."""
    sources = with_helpers(answers, task.answer_cell)
    own = frozenset().union(*(defined_and_used(src)[0] for src in sources))
    return sorted({name for src in sources for name in forbidden_uses(src, task.forbidden_names, own)})


def _assemble(g: _Grading, instructor, answers: dict[str, str], work: _Workspace) -> list[_Cell]:
    """The cells the kernel runs: the instructor's, minus checks, with the learner's answers in place.

    First the code the probes use (``in_kernel.py``): it captures its I/O functions before any
    learner code can replace them. Before the first answer, the guard's lock
    (``coursekit.grader.guard``): what the notebook's tasks forbid is refused for the kernel's life.
    """
    cells = [_Cell("harness", _HARNESS.read_text())]
    lock = _Cell("lock", _lock_cell(g, work))
    for c in instructor.cells:
        cid = c.get("id", "")
        if c.cell_type != "code" or cid.startswith("check-"):
            continue
        if cid.startswith("answer-"):
            if lock not in cells:
                cells.append(lock)
            name = cid[len("answer-"):]
            # rejected answers still run: another task's answer may call them
            if name in g.tasks and (name not in g.results or name in g.rejected):
                cells.append(_Cell("answer", answers[cid], name))
        elif not _calls_learner_code(c.source, g.tasks):
            cells.append(_Cell("instructor", c.source))
    return cells


def _calls_learner_code(source: str, tasks: dict) -> bool:
    """An instructor's demo of the learner's code: untrusted in effect, and not graded."""
    tree = parse(source)
    return tree is not None and bool({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & set(tasks))


def _lock_cell(g: _Grading, work: _Workspace) -> str:
    """The lock cell of this submission (:func:`lock_source`); where a task forbids autograd, the native
    library is copied into the workspace (the sandbox hides the grader's home), or a note says why it
    is missing. A machine without the seccomp filter is noted too."""
    missing = seccomp.unavailable()
    if missing:  # the lock's processes layer (and lesson 04's thread refusal below Python) is absent here
        g.notes.append(missing)
    native = None
    if any(t.forbids_autodiff for t in g.tasks.values()):
        library, why = handcalls.library()
        if library is None:
            g.notes.append(why)
        else:
            native = work.dir / "handcalls.so"
            shutil.copyfile(library, native)
            g.marker = work.dir / "handcall"
    return lock_source(g.tasks.values(), native, g.marker)


def lock_source(tasks, native: Path | None = None, marker: Path | None = None) -> str:
    """The source of the cell that arms ``coursekit.grader.guard.lock`` with the union of what ``tasks``
    forbid, after arming the native refusal of hand-called nodes (``coursekit.grader.handcalls``) from
    the library at ``native`` (its stop marker at ``marker``) when given."""
    ops = {op: what for t in tasks for op, what in t.forbidden_ops.items()}
    targets = sorted({w for t in tasks for w in t.watch})
    source = ""
    if native is not None:
        source = ("import coursekit.grader.handcalls as _coursekit_handcalls\n"
                  f"_coursekit_handcalls.arm({str(native)!r}, _coursekit_handcalls.STOP, {str(marker or '')!r})\n"
                  "del _coursekit_handcalls\n")
    return source + (f"import coursekit.grader.guard as _coursekit_guard\n_coursekit_guard.lock({ops!r}, {targets!r})\n"
                     "del _coursekit_guard\n")


def _run_and_probe(g: _Grading, work: _Workspace, cells: list[_Cell], rng: np.random.Generator) -> None:
    """In the submission's workspace and kernel: run the cells, then probe every task still open."""
    warm = threading.Thread(target=_warm_judges, daemon=True)
    try:
        g.kernel = work.kernel
        with step(g.path, "kernel start"):
            g.kernel.start()
        if g.on_ready is not None:
            g.on_ready()
        warm.start()  # while the kernel runs the setup cells, the grader is only waiting for it
        _run_cells(g, cells)
        warm.join()
        _probe_all(g, rng, work.probe_root)
    finally:
        with step(g.path, "kernel stop"):
            work.close()


def _warm_judges() -> None:
    """What the judges load on first use, loaded ahead: the first backward with an explicit gradient
    (the reference gradients of lessons 02-04) imports torch's symbolic-shapes module (~0.4 s)."""
    try:
        import torch

        x = torch.ones(1, requires_grad=True)
        (x * 1).backward(torch.ones(1))
    except Exception:  # only a head start: the judge loads what it needs anyway
        log.debug("warming the judges failed", exc_info=True)


def _lost(status: str) -> str:
    """The task status for a cell that did not finish: ``"timeout"``, or ``"error"`` for a dead kernel."""
    return "timeout" if status == "timeout" else "error"


def _run_cells(g: _Grading, cells: list[_Cell]) -> None:
    """Run the assembled cells in order; a cell that times out or kills the kernel costs its task only."""
    for cell in cells:
        if g.remaining() <= 0:
            break
        with step(g.path, f"run {cell.kind} cell" + (f" {cell.task}" if cell.task else "")):
            status, msg = g.kernel.run(cell.source, g.limit(cell))
        if status in ("ok", "error"):
            g.replay.append(cell)
            if status == "error" and cell.task:
                g.answer_errors[cell.task] = msg
            continue
        if cell.task:
            g.settle(cell.task, Feedback(_lost(status), f"answer cell: {msg}"))
        _restart(g)


def _restart(g: _Grading) -> None:
    """A fresh kernel with the setup and surviving answers replayed (stops at one that does not finish)."""
    with step(g.path, "restart"):
        g.kernel.stop()
        g.kernel.start()
        for cell in g.replay:
            if g.kernel.run(cell.source, g.limit(cell))[0] in ("timeout", "dead"):
                break


def _probe_all(g: _Grading, rng: np.random.Generator, probe_root: Path) -> None:
    """Probe every task not settled yet, in the exercise's order, while the total time lasts."""
    for name in g.pending():
        if g.remaining() <= 0:
            g.settle(name, Feedback("timeout", f"total time limit of {g.total_timeout:g} s reached before this task ran"))
        else:
            g.settle(name, _probe(g, g.tasks[name], rng, probe_root))


def _probe(g: _Grading, task, rng: np.random.Generator, probe_root: Path) -> Feedback:
    """One task's hidden cases: inputs written, the task's body run in the kernel, its outputs judged here."""
    task_dir = new_dir(probe_root, task.name)  # fresh: a directory the kernel pre-created is never reused
    try:
        with step(g.path, f"inputs {task.name}"):
            cases = task.cases(rng)
            _write_inputs(task_dir, [(c.params, c.arrays) for c in cases])
    except OSError as exc:  # something the kernel planted: this task's error, not the grader's
        return Feedback("error", f"could not write this task's inputs ({exc.strerror})")
    cell = _Cell("probe", task.body + f"\n_coursekit_probe({str(task_dir)!r}, _coursekit_body)\n", task.name)
    with step(g.path, f"probe {task.name}"):
        status, msg = g.kernel.run(cell.source, g.limit(cell))
    if status in ("timeout", "dead"):
        refused = _hand_call(g)
        _restart(g)
        return refused or Feedback(_lost(status), msg)
    with step(g.path, f"judge {task.name}"):
        feedback = _judge_outputs(task_dir, task, cases)
    if feedback.status == "error" and task.name in g.answer_errors:
        feedback = replace(feedback, message=f"the answer cell raised {g.answer_errors[task.name]}")
    return feedback


def _hand_call(g: _Grading) -> Feedback | None:
    """The verdict when the native layer stopped the kernel at an autograd node called by hand (the node's
    name in the marker file); None otherwise. The kernel can write the marker itself, but only ever to
    fail a task it has already lost."""
    if g.marker is None or not g.marker.is_file():
        return None
    try:
        node = g.marker.read_text(errors="replace")[:100].strip() or "?"
        g.marker.unlink()
    except OSError:
        node = "?"
    return Feedback("fail", hand_call(node), hint=HAND_CALL_HINT)


def _write_inputs(task_dir: Path, cases) -> None:
    # new files only, in a directory just made by new_dir (bounded.py): nothing planted is followed
    write_json(task_dir / "cases.json", [params for params, _ in cases])
    for i, (_, arrays) in enumerate(cases):
        save_npz(task_dir / f"in{i}.npz", arrays)


def _load_case(task_dir: Path, index: int, label: str) -> dict | Feedback:
    """The kernel's plain result of one case (bounded reads), or the error that makes it unusable."""
    res_path, out_path = task_dir / f"res{index}.json", task_dir / f"out{index}.npz"
    try:
        res = load_json(res_path)  # bounded.py: regular file, size and depth capped
    except OutputError as exc:
        if not res_path.exists():
            return Feedback("error", f"{label}: no result (the code under test did not return)", label)
        return Feedback("error", f"{label}: {unusable('result', str(exc))}", label)
    if not isinstance(res, dict):
        return Feedback("error", f"{label}: malformed result", label)
    try:
        res["arrays"] = load_npz(out_path, max_bytes=_MAX_OUTPUT_BYTES)  # members and array headers checked first
    except OutputError as exc:
        return Feedback("error", f"{label}: {unusable('output', str(exc))}", label)
    return res


def _judge_outputs(task_dir: Path, task, cases) -> Feedback:
    """Judge the kernel's plain outputs with the task's own judge.

    Every case is judged (``coursekit.tasks.judge_case``, the same function the check cell uses);
    the first case that does not pass decides the verdict, with which cases pass and fail.
    """
    from coursekit.tasks import Verdict, judge_case

    first = None
    passed, failed = [], []
    for i, case in enumerate(cases):
        label = case_label(i + 1, case.desc)
        res = _load_case(task_dir, i, label)
        if isinstance(res, Feedback):
            return res
        try:
            verdict = judge_case(task, case, res)
        except Exception as exc:  # plain data the judge cannot use: the answer's failure, not the grader's
            verdict = Verdict("fail", unusable("output", exc))
        (passed if verdict.passed else failed).append(case.desc)
        if not verdict.passed and first is None:
            first = Feedback(verdict.status, f"{label}: {verdict.message}", label, verdict.hint)
    if first is None:
        return Feedback("pass")
    return replace(first, message=with_summary(first.message, passed, failed))


def _verify_trusted(digest, solutions: Path, sandboxed, sandbox_desc: str) -> tuple[str | None, str]:
    """(why this submission is not trusted or None, the isolation description) after comparing the
    trusted files with their digest taken before the kernel started."""
    changed = changed_files(digest, solutions)
    if changed and sandboxed is None:  # the kernel could have written them: this submission is not trusted
        return f"trusted files changed while grading this submission: {', '.join(changed[:5])}", sandbox_desc
    if changed:  # read-only to the sandboxed kernel: changed by someone else (e.g. an edit during the run)
        sandbox_desc += f"; WARNING: trusted files changed during grading, not by this kernel: {', '.join(changed[:5])}"
    return None, sandbox_desc


def _result(g: _Grading, exercise, sandbox_desc: str) -> NotebookResult:
    """The submission's result: every task in the exercise's order, one still open timed out."""
    for name in g.pending():
        g.settle(name, Feedback("timeout", "total time limit reached"))
    ordered = [g.results[n] for n in g.tasks]
    return NotebookResult(str(g.path), sum(r.points for r in ordered), sum(r.max_points for r in ordered), ordered,
                          lesson=exercise.lesson, seconds=round(time.monotonic() - g.started, 2), sandbox=sandbox_desc)


def _grade_one(args, ahead: _Workspace | None = None, on_ready=None) -> NotebookResult:
    path, solutions, timeout, total, sandbox, data = args
    try:
        return _grade(path, solutions, timeout, total, None, sandbox, data, ahead, on_ready)
    except Exception as exc:  # a grader bug must not take the other submissions down
        log.exception("%s: internal grader error", path)
        return NotebookResult(str(path), 0, 0, error=f"internal grader error: {type(exc).__name__}: {exc}")


def grade_paths(paths, solutions="solutions", timeout: float = 60.0, total_timeout: float = 600.0,
                jobs: int = 1, sandbox: str = "auto") -> list[NotebookResult]:
    """Grade files and directories (every ``.ipynb`` below a directory), ``jobs`` at a time.

    Every submission is read before any kernel starts. Raises ``SandboxUnavailable`` up front for
    ``sandbox="require"`` without a working bubblewrap. A batch shows a progress line on a terminal
    (``progress.progress_bar``).
    """
    files = expand(paths)
    resolve_sandbox(sandbox)
    with step("batch", f"read {len(files)} submission(s)"):
        blobs = read_all(files)
    work = [(str(f), str(solutions), timeout, total_timeout, sandbox, blobs[str(f)]) for f in files]
    with progress_bar(len(work)) as bar:
        if jobs <= 1 or len(work) <= 1:
            return _in_turn(work, bar)
        return _in_workers(work, jobs, bar)


def _in_turn(work: list, bar) -> list[NotebookResult]:
    """``_grade_one`` over ``work``, one after the other. Sandboxed, the next submission's kernel is
    launched as soon as the current one's is up, so it starts (and loads torch) while the current one
    runs: each submission still gets a kernel and a sandbox of its own. (Unsandboxed, a kernel could
    change the trusted files while the next one is launched, before its digest: no launch ahead.)"""
    ahead: dict[int, _Workspace] = {}

    def launch_next(i: int) -> None:
        """Launch the kernel of the first submission after ``i`` that will need one."""
        for j in range(i + 1, len(work)):
            path, solutions, _, _, sandbox, data = work[j]
            sandboxed = resolve_sandbox(sandbox)[0]
            try:
                if sandboxed is None or not _may_need_kernel(read_submission(Path(path), data)):
                    continue
            except GradingError:  # its own grading says what is wrong with it
                continue
            if j not in ahead:
                with step(path, "kernel launch (ahead)"):
                    ahead[j] = _Workspace(Path(solutions), sandboxed)
            return

    results = []
    try:
        for i, w in enumerate(work):
            results.append(_grade_one(w, ahead.pop(i, None), functools.partial(launch_next, i)))
            bar.update()
    finally:
        for left in ahead.values():
            left.close()
    return results


def _in_workers(work: list, jobs: int, bar) -> list[NotebookResult]:
    """``_grade_one`` over ``work`` in ``jobs`` worker processes. Without the sandbox a kernel can kill
    a worker, which breaks the pool: the submissions it took down are then graded one per worker,
    and only the one whose own worker dies is reported as not graded."""

    def run(items: list[int], n: int) -> tuple[dict, list[int]]:
        done, lost = {}, []
        # spawn: the workers start clean instead of inheriting a forked copy of torch's thread pools;
        # each logs at the level this process logs at
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_logging, initargs=(log.getEffectiveLevel(),)) as pool:
            futures = {i: pool.submit(_grade_one, work[i]) for i in items}
            for i, fut in futures.items():
                try:
                    done[i] = fut.result()
                    bar.update()
                except BrokenProcessPool:
                    lost.append(i)
        return done, lost

    results, lost = run(list(range(len(work))), jobs)
    for i in lost:
        alone, died = run([i], 1)
        results.update(alone)
        for j in died:
            log.warning("%s: its grading process was killed", work[j][0])
            results[j] = NotebookResult(work[j][0], 0, 0, error="not graded: its grading process was killed "
                                        "(by the submission's kernel; grade with --sandbox require)")
    return [results[i] for i in range(len(work))]


def _worker_logging(level: int) -> None:
    """A spawned worker logs the steps as the parent does (``--verbose``)."""
    if level < logging.WARNING:
        configure(level)
