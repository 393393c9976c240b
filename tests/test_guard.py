"""coursekit.grader.guard and .seccomp: what the lock refuses, and that Python cannot undo it.

Each lock runs in a fresh Python (a lock lasts for the process's life): after ``guard.lock`` the
library's normalization is refused in every thread, re-registering over the refusal does not bring
the kernel back, the refused Python implementations cannot be restored, read or found, and no new
process starts, not even below the audit hook (the seccomp filter); threads still run and honest
tensor code still computes. Where the tasks forbid every automatic differentiation (lesson 04's graded
backward), no new thread starts either: the Python start functions refuse with a recognisable
message, and a start function captured before the lock meets the seccomp filter; autograd's engine
still runs in the kernel's own thread. A check's :class:`Scope` puts everything back when it ends.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from coursekit.grader.guard import REFUSED, Scope
from coursekit.grader.seccomp import program
from coursekit.tasks._task import AUTOGRAD_OPS, NORM_OPS, REFERENCE_NORM_WATCH, UPDATE_BN_WATCH

# each script records what every attempt did in ``out``, printed as JSON after "RESULT"
_ATTEMPT = r"""
def attempt(label, fn):
    try:
        fn()
        out[label] = "went through"
    except BaseException as exc:
        out[label] = f"{type(exc).__name__}: {exc}"[:200]
"""

_LOCKED = r"""
import json, sys, threading, os, gc, types
import torch, torch.nn.functional as F
from coursekit.grader import guard
from coursekit.tasks._task import NORM_OPS, REFERENCE_NORM_WATCH
import coursekit.reference.functional as ref
import torch._refs as refs
orig_file = ref.__file__
notes = guard.lock(NORM_OPS, REFERENCE_NORM_WATCH)
x = torch.randn(4, 3, 5)
out = {"notes": notes}

{attempt}
def in_thread():
    r = {}
    t = threading.Thread(target=lambda: r.setdefault("y", F.batch_norm(x, None, None, training=True)))
    t.start(); t.join()
    assert "y" in r

def reregistered():
    lib = torch.library.Library("aten", "IMPL")
    lib.impl("native_batch_norm", torch.library.fallthrough_kernel, "CPU")
    lib.impl("native_batch_norm", torch.library.fallthrough_kernel, "Autograd")
    torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)

def restored_code():
    ref.batch_norm.__code__ = (lambda *a, **k: 0).__code__

def honest():
    dims = [0, 2]
    y = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, unbiased=False, keepdim=True) + 1e-5)
    r = {}
    t = threading.Thread(target=lambda: r.setdefault("s", y.sum())); t.start(); t.join()
    assert abs(float(r["s"])) < 1e-3

def fork_below_the_hook():
    import _posixsubprocess  # no audit event: the seccomp filter is what refuses it
    r, w = os.pipe()
    _posixsubprocess.fork_exec([b"/bin/true"], [b"/bin/true"], True, (w,), None, None, -1, -1, -1, -1, -1, -1,
                               r, w, True, False, -1, None, None, None, -1, None, False)

attempt("F.batch_norm", lambda: F.batch_norm(x, None, None, training=True))
attempt("in a thread", in_thread)
attempt("re-registered", reregistered)
attempt("torch._refs", lambda: refs.native_layer_norm(x, [5], None, None, 1e-5))
attempt("reference", lambda: ref.batch_norm(x, None, None, training=True))
attempt("code restored", restored_code)
attempt("source read", lambda: open(orig_file).read())
attempt("gc", lambda: gc.get_objects())
attempt("ctypes", lambda: __import__("ctypes").CDLL(None).getpid())
attempt("os.fork", lambda: os.fork())
attempt("fork_exec", fork_below_the_hook)
attempt("honest", honest)
print("RESULT" + json.dumps(out))
"""


def _run(script: str) -> dict:
    """Run a lock script in a fresh Python (a lock lasts for the process's life): what each attempt did."""
    r = subprocess.run([sys.executable, "-c", script.replace("{attempt}", _ATTEMPT)], capture_output=True, text=True,
                       timeout=300)
    assert "RESULT" in r.stdout, r.stderr[-2000:]
    return json.loads(r.stdout.split("RESULT", 1)[1])


@pytest.fixture(scope="module")
def locked():
    return _run(_LOCKED)


@pytest.mark.parametrize("label", ["F.batch_norm", "torch._refs", "reference", "code restored", "source read", "gc",
                                   "ctypes", "os.fork"])
def test_after_the_lock_the_library_and_the_ways_around_it_are_refused(locked, label):
    assert REFUSED in locked[label], locked


def test_after_the_lock_another_thread_or_a_kernel_registered_over_the_refusal_gets_nothing(locked):
    """The thread's call raised (its result is missing); a fallthrough over the refusal finds no kernel below."""
    assert locked["in a thread"].startswith("AssertionError"), locked
    assert locked["re-registered"] != "went through" and "no fallback function" in locked["re-registered"], locked


def test_after_the_lock_a_process_started_below_the_audit_hook_is_refused_by_seccomp(locked):
    assert locked["notes"] == [] and "Operation not permitted" in locked["fork_exec"], locked


def test_after_the_lock_honest_code_in_threads_still_computes(locked):
    assert locked["honest"] == "went through", locked


_LOCKED_NO_THREADS = r"""
import json, os, threading, _thread
from concurrent.futures import ThreadPoolExecutor
import torch
from coursekit.grader import guard
from coursekit.tasks._task import AUTOGRAD_OPS, NORM_OPS, REFERENCE_NORM_WATCH
captured = _thread.start_new_thread
notes = guard.lock(NORM_OPS | AUTOGRAD_OPS, REFERENCE_NORM_WATCH)
out = {"notes": notes}

{attempt}
def engine():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: (t - t.mean(0)) / t.std(0), (x,))

def pool():
    with ThreadPoolExecutor(1) as p:
        p.submit(print).result()

attempt("Thread.start", lambda: threading.Thread(target=print).start())
attempt("thread pool", pool)
attempt("_thread", lambda: _thread.start_new_thread(print, ()))
attempt("captured before the lock", lambda: captured(print, ()))
attempt("os.fork", lambda: os.fork())
attempt("autograd in this thread", engine)
out["threads"] = threading.active_count()
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def locked_no_threads():
    return _run(_LOCKED_NO_THREADS)


@pytest.mark.parametrize("label", ["Thread.start", "thread pool", "_thread"])
def test_a_lock_that_forbids_autodiff_refuses_a_new_thread_with_a_recognisable_message(locked_no_threads, label):
    assert locked_no_threads[label].startswith("RuntimeError: " + REFUSED + " thread"), locked_no_threads


def test_a_thread_start_captured_before_the_lock_is_refused_by_seccomp(locked_no_threads):
    assert locked_no_threads["notes"] == [], locked_no_threads
    assert locked_no_threads["captured before the lock"] == "RuntimeError: can't start new thread", locked_no_threads
    assert locked_no_threads["threads"] == 1, locked_no_threads


def test_a_lock_that_forbids_autodiff_still_runs_autograd_in_its_own_thread_and_refuses_processes(locked_no_threads):
    assert locked_no_threads["autograd in this thread"] == "went through", locked_no_threads
    assert REFUSED in locked_no_threads["os.fork"], locked_no_threads


def test_a_scope_that_forbids_autodiff_refuses_threads_and_puts_them_back():
    import threading

    with pytest.raises(RuntimeError, match=REFUSED + " thread"), Scope(NORM_OPS | AUTOGRAD_OPS):
        threading.Thread(target=print).start()
    t = threading.Thread(target=print)
    t.start()
    t.join()
    with Scope(NORM_OPS):  # the other lessons: threads stay allowed
        t = threading.Thread(target=print)
        t.start()
        t.join()


def test_a_fused_kernel_that_normalizes_inside_is_refused_too():
    """``_transformer_encoder_layer_fwd`` (the fast path of ``nn.TransformerEncoderLayer``) is not named for a
    normalization, but its layer norms go through the dispatcher, where the refusal sits."""
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 3, 8)
    args = (x, 8, 2, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias, layer.self_attn.out_proj.weight,
            layer.self_attn.out_proj.bias, True, False, layer.norm1.eps, layer.norm1.weight, layer.norm1.bias,
            layer.norm2.weight, layer.norm2.bias, layer.linear1.weight, layer.linear1.bias, layer.linear2.weight,
            layer.linear2.bias, None)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match=REFUSED), Scope(NORM_OPS):
            torch._transformer_encoder_layer_fwd(*args)
        torch._transformer_encoder_layer_fwd(*args)  # outside the scope it computes


def test_a_scope_puts_the_library_back_when_it_ends():
    x = torch.randn(4, 3, 5)
    with pytest.raises(RuntimeError, match=REFUSED), Scope(NORM_OPS, REFERENCE_NORM_WATCH):
        torch.nn.functional.batch_norm(x, None, None, training=True)
    torch.nn.functional.batch_norm(x, None, None, training=True)
    import coursekit.reference.functional as ref

    ref.batch_norm(x, None, None, training=True)


def test_a_scope_refuses_update_bn_captured_before_it_started():
    from torch.optim.swa_utils import update_bn

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    with pytest.raises(RuntimeError, match=REFUSED), Scope({}, UPDATE_BN_WATCH):
        update_bn([torch.randn(4, 3)], model)
    update_bn([torch.randn(4, 3)], model)


@pytest.mark.parametrize("threads", [True, False])
def test_the_seccomp_program_jumps_inside_itself(threads):
    prog = program(threads)
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert i + 1 + jt < len(prog) and i + 1 + jf < len(prog)
    assert prog[-1][0] == 0x06  # ends with a return


def _verdict(prog, nr: int, arg0: int = 0, arch: int = 0xC000003E) -> str:
    """Run the classic-BPF program on one ``struct seccomp_data`` (nr, arch, args[0]): the verdict."""
    data = {0: nr, 4: arch, 16: arg0 & 0xFFFFFFFF}
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == 0x20:  # ld [k]
            acc = data[k]
        elif code == 0x06:  # ret k
            return {0x7FFF0000: "allow", 0x00050000 | 1: "EPERM", 0x00050000 | 38: "ENOSYS"}[k]
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        pc += 1


def test_the_seccomp_program_refuses_threads_only_when_asked():
    clone, clone3, thread_flags, fork_flags = 56, 435, 0x3D0F00, 0x01200011  # glibc's pthread_create / fork
    assert _verdict(program(), clone, thread_flags) == "allow"
    assert _verdict(program(False), clone, thread_flags) == "EPERM"
    for threads in (True, False):
        prog = program(threads)
        assert _verdict(prog, clone, fork_flags) == "EPERM"
        assert _verdict(prog, clone3) == "ENOSYS"  # glibc falls back to clone
        assert _verdict(prog, 57) == "EPERM" and _verdict(prog, 59) == "EPERM"  # fork, execve
        assert _verdict(prog, 0) == "allow" and _verdict(prog, 56 | 0x40000000) == "EPERM"  # read, x32 clone
        assert _verdict(prog, 56, thread_flags, arch=0x40000003) == "allow"  # not x86-64: not filtered


def test_a_library_imported_after_a_check_is_still_refused_in_the_next_one():
    """scipy not imported: importing it is refused; imported later (by the notebook): zscore itself is."""
    from wrong_answers import WRONG

    from coursekit.checks import CHECKS

    shortcut = WRONG["batch_norm_train"]["scipy_zscore"]
    first = CHECKS["batch_norm_train"](shortcut)
    import scipy.stats  # noqa: F401

    second = CHECKS["batch_norm_train"](shortcut)
    assert not first.passed and not second.passed
    assert "do not call scipy" in first.hint and "do not call scipy" in second.hint, (first, second)
