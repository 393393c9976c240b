"""The code that runs INSIDE the learner's kernel: the only untrusted side of grading.

``coursekit grade`` sends this file's source as the first cell of the learner's kernel, before any
learner code runs; a check cell imports it as a module and runs the same functions in-process. It
calls the learner's code on inputs it is given and returns PLAIN DATA only (arrays, numbers,
strings): it judges nothing. What it returns for one case (``_coursekit_run_case``)::

    {"ok": bool, "arrays": {name: np.ndarray}, "meta": {...JSON...},
     "ops": [operators ("aten::name") the dispatcher ran inside the learner's calls, in this thread],
     "autograd": whether an autograd backward ran inside them,
     "autograd_nested": whether a backward started inside another one (inside one ``with recording:``),
     "refused": [what the check's guard noticed after the fact (a child process)],
     "error": {"type", "message", "line", "code", "cell"} when the learner's code raised}

What a task forbids is refused, not trusted to this record: ``coursekit.grader.guard`` arms
refusing dispatcher kernels, refusing code for PyTorch's and the course's Python implementations
and an audit hook, around a check's cases (``coursekit.checks``) and for the whole
life of the grader's kernel (``guard.lock``, sent as a cell before the first answer). A refusal
surfaces as the learner's exception; the grader judges it. The ``TorchDispatchMode`` record is
kept for its clearer message when the op ran in this thread, and for the autograd flag.

The I/O functions the grader's probe uses are captured when this source runs, before any learner
cell: patching ``np.savez`` or ``json.dump`` later does not change what is written.
"""

import builtins as _coursekit_builtins
import json as _coursekit_json
import linecache as _coursekit_linecache
import os as _coursekit_os

import numpy as _coursekit_np
import torch as _coursekit_torch
from torch.utils._python_dispatch import TorchDispatchMode as _CoursekitDispatchMode

# captured now, before any learner code: the probe's file I/O and conversions
_COURSEKIT_IO = {
    "open": _coursekit_builtins.open,
    "json_load": _coursekit_json.load,
    "json_dump": _coursekit_json.dump,
    "np_load": _coursekit_np.load,
    "np_savez": _coursekit_np.savez,
    "np_asarray": _coursekit_np.asarray,
    "ndarray": _coursekit_np.ndarray,
    "from_numpy": _coursekit_torch.from_numpy,
    "Tensor": _coursekit_torch.Tensor,
    "Parameter": _coursekit_torch.nn.Parameter,
    "numpy": _coursekit_torch.Tensor.numpy,
    "detach": _coursekit_torch.Tensor.detach,
    "clone": _coursekit_torch.Tensor.clone,
    "path_join": _coursekit_os.path.join,
    "isinstance": isinstance,
    "type": type,
    "str": str,
    "len": len,
    "dict": dict,
    "list": list,
    "current_node": _coursekit_torch._C._current_autograd_node,
    "graph_task": _coursekit_torch._C._current_graph_task_id,
    "getline": _coursekit_linecache.getline,
}
class _CoursekitRecorder(_CoursekitDispatchMode):
    """Records the operators (and whether autograd ran) while the learner's code runs, in this thread."""

    @classmethod
    def _should_skip_dynamo(cls):
        # torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable otherwise, and the first
        # recorded op would import torch._dynamo (~0.9 s); nothing here runs under torch.compile
        return False

    def __init__(self):
        super().__init__()
        self.ops, self.autograd, self.graph_tasks, self.nested = set(), False, set(), False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        io = _COURSEKIT_IO
        self.ops.add(func._schema.name)
        if io["current_node"]() is not None:
            self.autograd = True
            # a second backward started inside one ``with recording:`` that runs one (BatchNormFunction's
            # backward differentiating its own forward) shows as a second graph task
            self.graph_tasks.add(io["graph_task"]())
            self.nested = self.nested or io["len"](self.graph_tasks) > 1
        return func(*args, **(kwargs or {}))


def _coursekit_is_library(filename):
    """Python's, torch's, numpy's or coursekit's own files (not the learner's code)."""
    return (
        filename.startswith("<")
        and not filename.startswith("<ipython")
        or any(filename.startswith(prefix) for prefix in _COURSEKIT_LIBRARY_DIRS)
    )


def _coursekit_library_dirs():
    import sysconfig

    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        try:
            dirs.add(sysconfig.get_paths()[key])
        except KeyError:
            pass
    dirs.add(_coursekit_os.path.dirname(_coursekit_os.path.dirname(_coursekit_torch.__file__)))
    dirs.add(_coursekit_os.path.dirname(_coursekit_os.path.dirname(_coursekit_np.__file__)))
    try:
        import coursekit

        dirs.add(_coursekit_os.path.dirname(coursekit.__file__))
    except Exception:
        pass
    return tuple(d + _coursekit_os.sep for d in dirs if d)


_COURSEKIT_LIBRARY_DIRS = _coursekit_library_dirs()


def _coursekit_error(exc):
    """The learner's exception as plain data: type, full message, and the line of their code it came from."""
    import traceback

    message = _COURSEKIT_IO["str"](exc)
    if not message.strip() and exc.__class__.__name__ == "AssertionError":
        message = "(an assert without a message)"
    line, code, cell = None, None, False
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        fname = frame.f_code.co_filename
        if not _coursekit_is_library(fname):
            line, code = lineno, _COURSEKIT_IO["getline"](fname, lineno).strip() or None
            cell = "ipykernel" in fname or fname.startswith("<ipython")
    if code is not None and message.strip() == "" and exc.__class__.__name__ == "AssertionError":
        message = code
    return {"type": exc.__class__.__name__, "message": message[:4000], "line": line, "code": code, "cell": cell}


def _coursekit_plain(out):
    """Tensors/arrays of ``out`` as numpy arrays, and what each value was (kind, dtype, requires_grad)."""
    io = _COURSEKIT_IO
    arrays, kinds = {}, {}
    for key, value in out.items():
        # EXACT types only: a subclass (``__torch_function__`` intercepting detach/clone/numpy, or an
        # ndarray overriding copy) could forge what is read; it is reported as its own kind, an error
        if io["type"](value) is io["Tensor"] or io["type"](value) is io["Parameter"]:
            kinds[key] = {
                "kind": "tensor",
                "dtype": io["str"](value.dtype).replace("torch.", ""),
                "requires_grad": bool(value.requires_grad),
            }
            arrays[key] = io["numpy"](io["clone"](io["detach"](value)))  # CPU only: numpy() raises otherwise
        elif io["type"](value) is io["ndarray"] and value.dtype.kind in "biuf":
            kinds[key] = {"kind": "ndarray", "dtype": io["str"](value.dtype)}
            arrays[key] = value.copy()
        else:
            kinds[key] = {"kind": io["type"](value).__name__}
    return arrays, kinds


class _CoursekitRecording:
    """``with recording:`` around the learner's calls in a body: ops recorded across all of them."""

    def __init__(self):
        self.recorder = _CoursekitRecorder()

    def __enter__(self):
        self.recorder.graph_tasks = set()
        self.recorder.__enter__()
        return self

    def __exit__(self, *exc):
        self.recorder.__exit__(*exc)
        return False


def _coursekit_run_case(body, case, arrays):
    """Run one case of a task's body on its inputs; the result as plain data (see the module docstring)."""
    io = _COURSEKIT_IO
    tensors = {k: io["from_numpy"](v.copy()) for k, v in arrays.items()}
    copies = {k: v.copy() for k, v in arrays.items()}
    rec = _CoursekitRecording()
    result = {"ok": True, "arrays": {}, "meta": {}, "error": None}
    try:
        with _coursekit_torch.enable_grad():
            out, meta = body(case, tensors, copies, rec)
        result["arrays"], kinds = _coursekit_plain(out)
        result["meta"] = dict(meta, _kinds=kinds)
    except Exception as exc:  # the learner's exception is feedback, reported with its line
        result["ok"] = False
        result["error"] = _coursekit_error(exc)
    r = rec.recorder
    result.update(ops=sorted(r.ops), autograd=r.autograd, autograd_nested=r.nested)
    return result


def _coursekit_probe(task_dir, body):
    """Grader side of the kernel: read the cases, run each, write plain arrays and JSON."""
    io = _COURSEKIT_IO
    join = io["path_join"]
    with io["open"](join(task_dir, "cases.json")) as f:
        cases = io["json_load"](f)
    for i, case in enumerate(cases):
        with io["np_load"](join(task_dir, f"in{i}.npz"), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        res = _coursekit_run_case(body, case, arrays)
        io["np_savez"](join(task_dir, f"out{i}.npz"), **res.pop("arrays"))
        with io["open"](join(task_dir, f"res{i}.json"), "w") as f:
            io["json_dump"](res, f, default=str)
