"""Refusing the library at run time: what a task forbids cannot compute, in any thread or process.

Runs in the process that runs the learner's code: the learner's own kernel for a check cell, the
sandboxed grader kernel for ``coursekit grade``. Three layers, each on every thread of the process:

* **the dispatcher**: a kernel that raises is registered (``torch._C._dispatch_library``) over every
  dispatch key that computes for each forbidden operator (CPU, Autograd, the composite keys,
  QuantizedCPU, ...), so ``F.batch_norm`` fails however it is reached: a built name, another thread,
  with the ``TorchDispatchMode`` stack disabled or popped, ``OpOverload.redispatch`` with a CPU key
  set, ``decompose()``, ``_batch_norm_with_update``;
* **Python implementations**: the code of PyTorch's own (``torch._decomp``, ``torch._refs``) and the
  course's reference functions, ``update_bn`` and the fusion utilities is replaced by code that
  raises, so a captured reference, a copy of the function or of its code object refuses too;
* **an audit hook** (PEP 578, cannot be removed): new processes (``os.fork``, ``subprocess``,
  ``os.posix_spawn``, ``os.exec*``, ``os.system``), reading the source or bytecode of a refused
  implementation from disk, importing a refused library not imported yet (scikit-learn, SciPy),
  ``gc.get_objects``/``get_referrers``/``get_referents``, replacing a function's ``__code__`` and
  ``ctypes`` are refused;
* **no new thread** where the tasks forbid every automatic differentiation (lesson 04's graded
  backward: :func:`threads_refused`), since the ``TorchDispatchMode`` that records autograd is per
  thread and autograd's engine run in another thread would go unseen: the functions that start a
  thread (``threading.Thread.start``'s ``_start_new_thread``, ``_thread.start_new_thread``) are
  replaced by ones that raise. Elsewhere threads stay allowed (the dispatcher layer covers them).

:class:`Scope` arms them around the learner's calls in a check cell (and puts everything back
after; it also notices a child process that bypassed the audit hook, from ``RUSAGE_CHILDREN``).
:func:`lock` arms them for the rest of the process's life in the grader's kernel, keeps no Python
object that could undo them, and adds a seccomp filter (``coursekit.grader.seccomp``) that forbids
new processes below Python (and, where threads are refused, new threads: a start function captured
before the lock still fails there, with "can't start new thread"). In a check a start function
captured before the check's first case gets through: the check is advisory, the grade refuses it.
A refusal raises ``RuntimeError``/``PermissionError`` whose message starts with :data:`REFUSED`;
``coursekit.tasks.judge_case`` turns it into "called <what>".
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import types
import warnings

__all__ = ["REFUSED", "Scope", "lock", "refusal", "protected_paths", "refused_imports", "threads_refused"]

REFUSED = "coursekit refused"
# keys a kernel may compute under (a refusing kernel goes on each one the operator has, and always
# on CPU and Autograd, so a call below autograd still meets one)
_KEYS = ("CPU", "Autograd", "CompositeImplicitAutograd", "CompositeExplicitAutograd",
         "CompositeExplicitAutogradNonFunctional", "QuantizedCPU", "NestedTensorCPU", "SparseCPU", "MkldnnCPU",
         "FuncTorchBatched", "FuncTorchBatchedDecomposition", "Functionalize", "ADInplaceOrView")
_PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn", "os.system",
                             "subprocess.Popen", "pty.spawn"})
_REACH_EVENTS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "ctypes.dlopen", "ctypes.dlsym",
                           "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata", "ctypes.cdata/buffer",
                           "ctypes.PyObj_FromPtr", "ctypes.string_at", "ctypes.addressof"})


# the functions that start a thread: ``threading.Thread.start`` calls the first through its module global
_THREAD_STARTS = (("threading", "_start_new_thread"), ("threading", "_start_joinable_thread"),
                  ("_thread", "start_new_thread"), ("_thread", "start_new"), ("_thread", "start_joinable_thread"))
# forward-mode AD is forbidden exactly where every automatic differentiation is (lesson 04's graded backward)
_NO_AUTODIFF_MARK = "aten::_make_dual"

# libraries too heavy to import just to refuse them: when one is not imported yet, importing it is refused
_LAZY_ROOTS = ("sklearn", "scipy")


def refusal(kind: str, what: str) -> str:
    """The message of a refusal, ``"coursekit refused <kind>: <what>"``; ``kind`` is ``call`` (a library
    function or operator), ``process`` (another process), ``thread`` (a new thread, judged as a call of
    what started it) or ``access`` (what would reach or copy one)."""
    return f"{REFUSED} {kind}: {what}"


def threads_refused(ops) -> bool:
    """Whether the tasks that forbid ``ops`` forbid new threads: those that forbid every automatic
    differentiation (forward-mode AD among their operators), whose autograd record is per thread."""
    return _NO_AUTODIFF_MARK in ops


# ------------------------------------------------------------------------------ the dispatcher
def _refuser(message: str):
    def refuse(*args, **kwargs):
        raise RuntimeError(message)

    return refuse


@functools.cache
def _plan(ops: tuple[str, ...]) -> tuple[tuple[str, str, str, str], ...]:
    """``(namespace, overload name, key, qualified op)`` for each refusing kernel to register."""
    import torch

    wanted = set(ops)
    plan = []
    for full in torch._C._dispatch_get_all_op_names():
        base = full.split(".")[0]
        if base not in wanted:
            continue
        ns, name = full.split("::", 1)
        for key in _KEYS:
            if key in ("CPU", "Autograd") or torch._C._dispatch_has_kernel_for_dispatch_key(full, key):
                plan.append((ns, name, key, base))
    return tuple(plan)


def _register(ops) -> list:
    """Register the refusing kernels; the registrations last as long as the returned modules."""
    import torch

    modules: dict[str, object] = {}
    with warnings.catch_warnings():  # "overriding a previously registered kernel": that is the point
        warnings.simplefilter("ignore")
        for ns, name, key, base in _plan(tuple(sorted(ops))):
            if ns not in modules:
                modules[ns] = torch._C._dispatch_library("IMPL", ns, "", "", 0)
            modules[ns].impl(name, key, _refuser(refusal("call", ops[base])), False)
    return list(modules.values())


# ------------------------------------------------------------------------------ Python implementations
def _resolve(target: str) -> list[types.FunctionType]:
    """The functions behind ``"module:qualname"`` (the one named, and those it wraps with that name)."""
    module, _, qualname = target.partition(":")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):  # absent in this torch version: nothing to refuse
        return []
    out, seen = [], set()
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        fn = getattr(obj, "__func__", obj)
        if isinstance(fn, types.FunctionType) and fn.__code__.co_name == qualname.split(".")[-1]:
            out.append(fn)
        obj = getattr(fn, "__wrapped__", None)
    return out


def _stub(code: types.CodeType, what: str) -> types.CodeType:
    """Code that raises, with as many free variables as ``code`` (a function's ``__code__`` must match)."""
    free = [f"v{i}" for i in range(len(code.co_freevars))]
    lines = ["def outer():"]
    if free:  # the stub refers to them, so its code has the same number of free variables
        lines += [f"    {' = '.join(free)} = None"]
    lines += ["    def stub(*args, **kwargs):"]
    if free:
        lines += [f"        ({', '.join(free)},)"]
    message = refusal("call", what)
    lines += [f"        raise RuntimeError({message!r})", "    return stub"]
    src = "\n".join(lines) + "\n"
    ns: dict = {}
    exec(compile(src, "<coursekit refused>", "exec"), ns)
    stub = ns["outer"]().__code__
    return stub.replace(co_name=code.co_name, co_qualname=code.co_qualname)


def _stubs(targets: tuple[str, ...]) -> tuple[tuple[types.FunctionType, types.CodeType, types.CodeType], ...]:
    """``(function, its code, refusing code)`` for every resolvable target (not the lazy ones not yet imported)."""
    return _stubs_for(targets, tuple(r for r in _LAZY_ROOTS if r in sys.modules))


@functools.cache
def _stubs_for(targets: tuple[str, ...], imported: tuple[str, ...]) -> tuple:
    """:func:`_stubs` given which lazy libraries are imported (one imported later is refused from then on)."""
    out = []
    for target in targets:
        if target.split(".")[0] in _LAZY_ROOTS and target.split(".")[0] not in imported:
            continue
        label = target.replace(":", ".")
        for fn in _resolve(target):
            out.append((fn, fn.__code__, _stub(fn.__code__, label)))
    return tuple(out)


def refused_imports(targets) -> tuple[str, ...]:
    """The lazy libraries among ``targets`` that are not imported yet: importing them is refused."""
    return tuple(sorted({t.split(".")[0] for t in targets if t.split(".")[0] in _LAZY_ROOTS} - set(sys.modules)))


def protected_paths(targets) -> tuple[str, ...]:
    """Source and bytecode paths of the refused implementations (their package directory, or the file
    and its ``__pycache__`` entries): opening them is refused, so the code cannot be read and rebuilt."""
    out = set()
    for module in {t.partition(":")[0] for t in targets}:
        if module in sys.modules:
            out.update(_module_paths(module))
    return tuple(sorted(out))


@functools.cache
def _module_paths(module: str) -> tuple[str, ...]:
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return ()
    path = os.path.realpath(path)
    folder, name = os.path.split(path)
    if name == "__init__.py":
        return (folder + os.sep,)
    return path, os.path.join(folder, "__pycache__", name.rsplit(".", 1)[0] + ".")


# ------------------------------------------------------------------------------ threads
def _thread_starts() -> list[tuple[types.ModuleType, str, object]]:
    """``(module, name, function)`` for each function that starts a thread in this Python."""
    import _thread
    import threading

    modules = {"_thread": _thread, "threading": threading}
    return [(modules[m], name, getattr(modules[m], name)) for m, name in _THREAD_STARTS if hasattr(modules[m], name)]


def _refuse_threads() -> list[tuple[types.ModuleType, str, object]]:
    """Replace the thread-starting functions by refusing ones; what was there (to put back after a check)."""
    before = _thread_starts()
    refuse = _refuser(refusal("thread", "threading.Thread.start (a new thread: lesson 04's graded backward "
                                        "runs in one thread)"))
    for module, name, _ in before:
        setattr(module, name, refuse)
    return before


# ------------------------------------------------------------------------------ the audit hook
def _hook(paths: tuple[str, ...], imports: tuple[str, ...], armed: list | None):
    """An audit hook refusing what the module docstring lists; ``armed`` (a one-item list) switches it
    for a check, ``None`` means always (the grader: nothing left to switch)."""
    import pathlib

    process, reach = _PROCESS_EVENTS, _REACH_EVENTS
    realpath, fsdecode, type_, error = os.path.realpath, os.fsdecode, type, PermissionError
    # a path of another type could name one file here and another when opened (``__fspath__`` asked twice)
    plain = (str, bytes, type(pathlib.Path()))

    def hook(event, args):
        if armed is not None and not armed[0]:
            return
        if event in process:
            raise error(refusal("process", event))
        if event in reach:
            raise error(refusal("access", event))
        if event == "import" and imports and (args[0].split(".")[0] in imports):
            raise error(refusal("call", f"{args[0].split('.')[0]} (importing {args[0]}: a library normalization)"))
        if event == "object.__setattr__" and args[1] == "__code__":
            raise error(refusal("access", "replacing a function's __code__"))
        if event == "open" and paths and type_(args[0]) is not int:
            if type_(args[0]) not in plain:
                raise error(refusal("access", f"opening a {type_(args[0]).__name__} path"))
            path = realpath(fsdecode(args[0]))
            if path.startswith(paths) or path in paths:
                raise error(refusal("access", f"reading {path}"))

    return hook


_CHECK_HOOK: dict[tuple, list] = {}  # (paths, imports) -> the armed switch of the hook installed for them


def _check_switch(paths: tuple[str, ...], imports: tuple[str, ...]) -> list:
    """The switch of this process's check hook for ``paths`` and ``imports`` (installed once: hooks stay)."""
    if (paths, imports) not in _CHECK_HOOK:
        switch = [False]
        sys.addaudithook(_hook(paths, imports, switch))
        _CHECK_HOOK[paths, imports] = switch
    return _CHECK_HOOK[paths, imports]


def _children() -> tuple:
    """This process's reaped children's resource use and its live children: changes when one was started."""
    import resource

    live = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                live += f.read().split()
    except OSError:
        pass
    return tuple(resource.getrusage(resource.RUSAGE_CHILDREN)), tuple(sorted(live))


class Scope:
    """The layers armed around the learner's calls in a check (see the module docstring).

    Args:
        ops: forbidden operator -> what the learner called (``Task.forbidden_ops``).
        targets: refused Python implementations, ``"module:qualname"`` (``Task.watch``).

    ``with scope:`` arms (re-entrant); :attr:`refused` lists what was refused or noticed.
    """

    def __init__(self, ops: dict, targets=()):
        self.ops = dict(ops)
        self.targets = tuple(sorted(targets))
        self.refused: list[str] = []
        self._depth = 0
        self._modules: list = []
        self._before = None
        self._switch = None
        self._threads: list = []

    def __enter__(self):
        self._depth += 1
        if self._depth == 1:
            stubs = _stubs(self.targets)
            self._switch = _check_switch(protected_paths(self.targets), refused_imports(self.targets))
            self._before = _children()
            self._modules = _register(self.ops) if self.ops else []
            for fn, _, stub in stubs:
                fn.__code__ = stub
            self._threads = _refuse_threads() if threads_refused(self.ops) else []
            self._switch[0] = True
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._switch[0] = False
            for module, name, start in self._threads:
                setattr(module, name, start)
            self._threads = []
            for fn, code, _ in _stubs(self.targets):
                fn.__code__ = code
            self._modules = []  # drops the registrations: the library computes again
            if _children() != self._before:
                self.refused.append(refusal("process", "a child process ran during your code"))
        return False


def lock(ops: dict, targets=(), processes: bool = True) -> list[str]:
    """Arm every layer for the rest of this process's life (the grader's kernel); what could not be armed.

    Nothing that could undo it stays reachable from Python: the dispatcher registrations are owned
    by the C++ side only (their Python handles are leaked on purpose), the original code of the
    refused functions is dropped, the audit hook keeps only immutable values and is installed last
    (it refuses ``ctypes`` and ``gc``), after the seccomp filter (``processes``). Where
    :func:`threads_refused`, the thread-starting functions are replaced (their originals dropped) and
    the seccomp filter refuses new threads too.
    """
    import ctypes

    notes = []
    for module in _register(ops) if ops else []:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(module))  # owned by nobody: never deregistered
    for fn, _, stub in _stubs(tuple(sorted(targets))):
        fn.__code__ = stub
    _stubs_for.cache_clear()  # the original code objects go with the cache
    threads = not threads_refused(ops)
    if not threads:
        _refuse_threads()
    if processes:
        from coursekit.grader.seccomp import install

        reason = install(threads)
        if reason:
            notes.append(reason)
    sys.addaudithook(_hook(protected_paths(targets), refused_imports(targets), None))
    return notes
