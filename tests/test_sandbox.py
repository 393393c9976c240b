"""The sandbox: nothing a submission's kernel does reaches the machine, the grader or another learner.

One batch of attack submissions is graded once per module, two at a time, with ``--sandbox
require`` and a 2 GiB memory cap. Each attack is written so that it *would* earn points if it
worked: the answer to ``channel_stats`` is correct only when the attack succeeded (and then it
raises, naming what worked, so a regression says which), else it returns a wrong answer.
Attacks that could hurt the machine if the sandbox failed are written to be harmless then too
(files opened for append but not written, empty files removed at once, kills only of this test's
own kernels). Without bubblewrap (``COURSEKIT_BWRAP=""``) the grader still grades, says so, and
``--sandbox require`` refuses with an install hint.
"""
import argparse
import copy
import hashlib
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from coursekit.build import build_notebook
from coursekit.grader import cli as grading_cli
from coursekit.grader import sandbox as sandbox_mod
from coursekit.grader.grade import grade_paths
from coursekit.grader.kernel import Kernel

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
STEM = "02_bn_forward_exercises"
TIMEOUT = 10.0
DAEMON = "4242.5"  # the detached process execs `sleep 4242.5`: findable, and harmless if it survived

# CI sets COURSEKIT_REQUIRE_SANDBOX=1: there a missing bubblewrap is a failure, not a skip
needs_bwrap = pytest.mark.skipif(sandbox_mod.check() is not None and not os.environ.get("COURSEKIT_REQUIRE_SANDBOX"),
                                 reason=f"bubblewrap unusable here: {sandbox_mod.check()}")

_CORRECT = '''
def channel_stats(x):
    dims = [0, *range(2, x.dim())]
    if _won:
        raise RuntimeError("attacks that worked: " + ", ".join(_won))
    return torch.zeros(x.shape[1]), torch.ones(x.shape[1])
'''


def _solved():
    return nbformat.read(SOLUTIONS / f"{STEM}.ipynb", as_version=4)


def _with(cells: dict, nb=None):
    nb = copy.deepcopy(nb or _solved())
    for c in nb.cells:
        if c.get("id") in cells:
            c.source = cells[c.get("id")]
    return nb


def _gated(attack: str):
    """channel_stats is right only if ``attack`` (which appends names to ``_won``) got somewhere."""
    return _with({"answer-channel_stats": "import os, sys, time, torch\n_won = []\n" + attack + _CORRECT})


def _attacks(ctx) -> dict:
    trusted_copy, marker, report, repo = ctx["trusted"], ctx["marker"], ctx["report"], str(ROOT)
    victim = ctx["paths"]["victim_untouched"]
    solved_text = nbformat.writes(_solved())
    escape = f'''
import glob, pwd, site
def _try(name, fn):
    try:
        if fn():
            _won.append(name)
    except Exception:
        pass
def _append_only(p):  # proves write access without changing anything
    open(p, "a").close()
    return True
def _create_empty(p):
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    os.unlink(p)
    return True
_try("edit repo solutions/", lambda: _append_only({repo!r} + "/solutions/{STEM}.ipynb"))
_try("edit coursekit", lambda: _append_only({repo!r} + "/coursekit/__init__.py"))
_try("edit the --solutions copy", lambda: open({str(trusted_copy / (STEM + ".ipynb"))!r}, "a").write(" "))
_try("read solutions", lambda: "BEGIN SOLUTION" in open({repo!r} + "/solutions/{STEM}.ipynb").read())
_home = pwd.getpwuid(os.getuid()).pw_dir
_try("grader ~/.ipython startup", lambda: _create_empty(_home + "/.ipython/profile_default/startup/zz-coursekit-attack.py"))
_try("see the grader's home", lambda: bool({{".bashrc", ".ipython", ".config"}} & set(os.listdir(_home))))
_try(".pth in site-packages", lambda: _create_empty(site.getsitepackages()[0] + "/zz-coursekit-attack.pth"))
_try("overwrite the next submission", lambda: open({str(victim)!r}, "w").write({solved_text!r}))
_try("read the next submission", lambda: len(open({str(victim)!r}).read()) > 0)
def _procs():
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                yield int(p), open(f"/proc/{{p}}/cmdline", "rb").read(), open(f"/proc/{{p}}/environ", "rb").read()
            except OSError:
                pass
_try("see the grader's processes", lambda: any(p not in (1, os.getpid()) and (
    b"multiprocessing" in c or b"pytest\\0" in c or {marker!r}.encode() in c) for p, c, _ in _procs()))
_try("read the grader's environ", lambda: any(b"COURSEKIT_TEST_TOKEN" in e for _, _, e in _procs()))
_try("open another process's mem",
     lambda: any(open(f"/proc/{{p}}/mem", "rb") for p, _, _ in _procs() if p not in (1, os.getpid())))
_try("see other submissions' temp dirs", lambda: len(glob.glob({marker!r} + "/*")) > 1)
_try("read the host /tmp", lambda: open({ctx["bait"]!r}).read() == "bait")
_try("network", lambda: __import__("socket").create_connection(("127.0.0.1", {ctx["port"]}), timeout=1) or True)
_try("allocate 3 GiB", lambda: len(bytearray(3 << 30)) > 0)
_try("write a 300 MiB file", lambda: open("big.bin", "wb").write(bytes(300 << 20)) and os.path.getsize("big.bin") > (256 << 20))
try:  # not gated: inside the sandbox this lands in its private /tmp; the test checks the host's
    open({str(ctx["tmp"] / "planted")!r}, "w").close()
except OSError:
    pass
'''
    kill = f'''
import signal, subprocess
try:
    subprocess.Popen(["/bin/sh", "-c", "sleep 2; echo pwned > {report}; exec sleep {DAEMON}"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _won.append("started a daemon")
except OSError:  # refused by the guard's lock (audit hook, seccomp): the other attacks still run
    pass
_t = time.time()
while time.time() - _t < 4:  # kill every other kernel of this test run (its cmdline names the test's temp dir)
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid()):
            try:
                if {marker!r}.encode() in open(f"/proc/{{p}}/cmdline", "rb").read():
                    os.kill(int(p), signal.SIGKILL)
                    _won.append("killed " + p)
            except OSError:
                pass
    time.sleep(0.1)
'''
    writers = '''
import glob, io, zipfile
import numpy as np
_h = io.BytesIO()
np.lib.format.write_array_header_1_0(_h, {"descr": "<f8", "fortran_order": False, "shape": (2**25,)})
_z = io.BytesIO()
with zipfile.ZipFile(_z, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, zf.open("mean.npy", "w") as f:
    f.write(_h.getvalue() + bytes(2**28))  # 256 MiB of zeros in about 0.3 MB: compressed once
_BOMB = _z.getvalue()
def _overwrite(name, data):
    # the probe's earlier cases are written by the time a later case calls us: replace them
    for p in glob.glob(os.path.dirname(os.getcwd()) + "/*/*/" + name):
        with open(p, "wb") as f:
            f.write(data)
def channel_stats(x):
    _overwrite("out0.npz", _BOMB)
    return torch.zeros(x.shape[1]), torch.ones(x.shape[1])
def batch_norm_train(x, gamma, beta, eps=1e-5):
    _overwrite("res0.json", b"[" * 200000 + b"]" * 200000)
    return torch.zeros_like(x)
'''
    plant = f'''
import glob, threading
def _plant():  # pre-create the next tasks' directories and plant links in every new directory
    t = time.time()
    while time.time() - t < 8:
        for d in glob.glob(os.path.dirname(os.getcwd()) + "/*/") + glob.glob(os.path.dirname(os.getcwd()) + "/*/*/"):
            for n in ("batch_norm_train", "cases.json"):
                try:
                    os.symlink({str(ctx["bait"])!r}, os.path.join(d, n))
                except OSError:
                    pass
        time.sleep(0.01)
threading.Thread(target=_plant, daemon=True).start()
'''
    untouched = build_notebook(_solved())
    bnt = "answer-batch_norm_train"
    star = _with({bnt: ("from torch.nn.functional import *\nbatch_norm = batch_norm\n"
                        "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
                        "    return batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n")}, untouched)
    magic = _with({bnt: ("%%capture\ndef batch_norm_train(x, gamma, beta, eps=1e-5):\n"
                         "    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n")}, untouched)
    wrong = _gated("")
    both = "answer-channel_stats", "answer-batch_norm_train"
    return {"kill_daemon_plant": _gated(kill + plant), "solved": _solved(), "escape": _gated(escape),
            "bomb_and_deep_json": _with({both[0]: "import os, torch\n" + writers,
                                         both[1]: "# both tasks are in the cell above\n"}),
            "star_import": star, "capture_magic": magic, "honest_wrong": wrong, "victim_untouched": untouched}


def _live_processes_mentioning(text: str) -> list[str]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and text in cmd:
            out.append(f"{p}: {cmd[:200]}")
    return out


def _digest(paths):
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Grade every attack once (sandbox required): name -> NotebookResult, plus what the checks need."""
    tmp = tmp_path_factory.mktemp("sandbox")
    subs, grade_tmp, trusted = tmp / "subs", tmp / "gradetmp", tmp / "trusted"
    for d in (subs, grade_tmp, trusted):
        d.mkdir()
    trusted_path = trusted / f"{STEM}.ipynb"
    shutil.copy(SOLUTIONS / f"{STEM}.ipynb", trusted_path)  # the --solutions copy (Classroom style)
    names = ["kill_daemon_plant", "solved", "escape", "bomb_and_deep_json", "star_import", "capture_magic",
             "honest_wrong", "victim_untouched"]
    paths = {n: subs / n / f"{STEM}.ipynb" for n in names}
    ctx = {"trusted": trusted, "marker": str(grade_tmp), "report": str(tmp / "report.json"), "paths": paths,
           "tmp": tmp, "bait": str(tmp / "bait.txt")}
    Path(ctx["report"]).write_text('{"score": 0}')
    server = socket.socket()  # something to connect to on the grader's loopback
    server.bind(("127.0.0.1", 0))
    server.listen()
    ctx["port"] = server.getsockname()[1]
    Path(ctx["bait"]).write_text("bait")
    for name, nb in _attacks(ctx).items():
        paths[name].parent.mkdir()
        nbformat.write(nb, paths[name])
    secret = tmp / "secret.ipynb"  # a "notebook" whose contents must never be quoted
    secret.write_text('{"cells": "TOPSECRET-1234"}')
    specials = {"symlink_to_secret": secret, "symlink_to_dev_zero": Path("/dev/zero")}
    for name, target in specials.items():
        paths[name] = subs / name / f"{STEM}.ipynb"
        paths[name].parent.mkdir()
        paths[name].symlink_to(target)
    paths["fifo"] = subs / "fifo" / f"{STEM}.ipynb"
    paths["fifo"].parent.mkdir()
    os.mkfifo(paths["fifo"])
    paths["oversized"] = subs / "oversized" / f"{STEM}.ipynb"
    paths["oversized"].parent.mkdir()
    paths["oversized"].write_bytes(b" " * (21 * 2**20))
    trusted_files = [SOLUTIONS / f"{STEM}.ipynb", ROOT / "coursekit" / "__init__.py", trusted_path,
                     *[p for p in paths.values() if p.is_file() and not p.is_symlink()]]
    before = _digest(trusted_files)
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSEKIT_TEST_TOKEN", "secret")
    mp.setenv("COURSEKIT_SANDBOX_MEMORY_MB", "2048")
    mp.setenv("TMPDIR", str(grade_tmp))  # every work directory of this batch lives here
    try:
        t0 = time.monotonic()
        results = grade_paths([paths[n] for n in paths], trusted, timeout=TIMEOUT, jobs=2, sandbox="require")
        seconds = time.monotonic() - t0
    finally:
        mp.undo()
        server.close()
    time.sleep(2.5)  # the detached process would have rewritten the report by now
    by_path = {r.notebook: r for r in results}
    print("seconds per submission:", {Path(r.notebook).parent.name: r.seconds for r in results})
    return {"results": {n: by_path[str(p)] for n, p in paths.items()}, "before": before,
            "after": _digest(trusted_files), "ctx": ctx, "grade_tmp": grade_tmp, "seconds": seconds}


def _status(r):
    return {t.id.split(".", 1)[1]: t.status for t in r.tasks}


@needs_bwrap
def test_every_kernel_ran_sandboxed_and_honest_submissions_score_as_usual(batch):
    res = batch["results"]
    assert {r.sandbox.split(";")[0] for n, r in res.items() if not n.startswith(("symlink", "fifo", "oversized"))} == {
        "bwrap"}  # (a shared working tree edited meanwhile adds a warning after ";")
    assert (res["solved"].score, res["solved"].max_score) == (2, 2), res["solved"].tasks  # its neighbour killed kernels
    assert _status(res["honest_wrong"]) == {"channel_stats": "fail", "batch_norm_train": "pass"}
    assert res["victim_untouched"].score == 0 and set(_status(res["victim_untouched"]).values()) == {"missing"}


@needs_bwrap
@pytest.mark.parametrize("attack", ["escape", "kill_daemon_plant", "bomb_and_deep_json"])
def test_attacks_from_the_kernel_earn_nothing_and_cost_only_their_own_task(batch, attack):
    r = batch["results"][attack]
    assert r.error is None, r.error
    st = _status(r)
    assert st["channel_stats"] != "pass", r.tasks
    msg = r.tasks[0].message
    assert "attacks that worked" not in msg and "internal" not in msg, msg
    if attack == "escape":
        assert st == {"channel_stats": "fail", "batch_norm_train": "pass"}, r.tasks
    elif attack == "kill_daemon_plant":  # a link planted where the grader writes next: that task's error at worst
        assert st["channel_stats"] in ("fail", "error") and st["batch_norm_train"] in ("pass", "error"), r.tasks
        assert all("could not write" in t.message for t in r.tasks if t.status == "error"), r.tasks
    else:  # the zip bomb and the 200 000-deep JSON: each its own task's error, read without harm
        assert st == {"channel_stats": "error", "batch_norm_train": "error"}, r.tasks
        assert "unpacks to more than" in r.tasks[0].message and "nested too deeply" in r.tasks[1].message, r.tasks


@needs_bwrap
def test_trusted_files_other_submissions_and_the_report_are_untouched(batch):
    assert batch["before"] == batch["after"]
    assert Path(batch["ctx"]["report"]).read_text() == '{"score": 0}'
    assert Path(batch["ctx"]["bait"]).read_text() == "bait"
    assert not (batch["ctx"]["tmp"] / "planted").exists()
    home = Path(os.path.expanduser("~"))
    assert not (home / ".ipython/profile_default/startup/zz-coursekit-attack.py").exists()
    assert not (Path(site.getsitepackages()[0]) / "zz-coursekit-attack.pth").exists()


@needs_bwrap
def test_nothing_of_a_graded_submission_survives(batch):
    assert _live_processes_mentioning(batch["ctx"]["marker"]) == []
    assert _live_processes_mentioning(f"sleep {DAEMON}") == []
    assert list(batch["grade_tmp"].iterdir()) == []


@needs_bwrap
def test_unusual_files_are_refused_without_quoting_or_hanging(batch):
    res = batch["results"]
    for name in ("symlink_to_secret", "symlink_to_dev_zero", "fifo", "oversized"):
        r = res[name]
        assert r.error and r.score == 0 and r.tasks == [], (name, r)
        assert "TOPSECRET" not in r.error
    assert "symbolic link" in res["symlink_to_secret"].error
    assert "not a regular file" in res["fifo"].error
    assert "expected at most" in res["oversized"].error


@needs_bwrap
def test_static_scan_gaps_are_closed_in_a_real_grade(batch):
    for name in ("star_import", "capture_magic"):
        r = batch["results"][name]
        assert _status(r) == {"channel_stats": "missing", "batch_norm_train": "fail"}, r.tasks
        assert "batch_norm" in r.tasks[1].message


@needs_bwrap
def test_each_limit_holds_inside_the_sandbox(tmp_path):
    """RLIMIT_AS, RLIMIT_FSIZE and RLIMIT_CPU are set and enforced; RLIMIT_NPROC is set (root is exempt)."""
    sb = sandbox_mod.Sandbox(sandbox_mod.bwrap_path(), sandbox_mod.Limits(
        memory=512 * 2**20, processes=64, file_size=2**20, cpu_seconds=2))
    code = '''
import resource as r, os, time
print(*[r.getrlimit(k)[0] for k in (r.RLIMIT_AS, r.RLIMIT_NPROC, r.RLIMIT_FSIZE, r.RLIMIT_CPU)])
try:
    bytearray(1 << 30); print("alloc ok")
except MemoryError:
    print("MemoryError")
try:
    open("f", "wb").write(bytes(2 << 20)); print("write ok")
except OSError as e:
    print("EFBIG" if e.errno == 27 else e)
t = time.time()
while time.time() - t < 20:
    pass
print("cpu not limited")
'''
    argv = sb.wrap([sys.executable, "-u", "-c", code], writable=[tmp_path])
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"]})
    lines = r.stdout.split("\n")
    assert lines[0] == f"{512 * 2**20} 64 {2**20} 2" and lines[1:3] == ["MemoryError", "EFBIG"], r.stdout
    assert "cpu not limited" not in r.stdout and r.returncode != 0 and time.monotonic() - t0 < 15


@needs_bwrap
def test_a_200_mib_print_does_not_grow_the_grader(tmp_path):
    import resource

    (tmp_path / "cwd").mkdir()
    sb, desc = sandbox_mod.resolve("require")
    k = Kernel(tmp_path / "cwd", sb)
    k.start()
    try:
        k.run("x = 1", 30)  # warm up: the first message costs a little
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert k.run('print("x" * (200 * 2**20))\nfor i in range(2000):\n    print("y" * 100_000)', 60)[0] in ("ok", "timeout")
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert k.run("1 + 1", 30)[0] in ("ok", "dead", "timeout")
    finally:
        k.stop()
    assert grown_mib < 100, grown_mib


def test_without_bubblewrap_auto_grades_with_a_warning_and_require_refuses(tmp_path, capsys):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    shutil.copy(SOLUTIONS / f"{STEM}.ipynb", trusted)
    sub = tmp_path / "sub" / f"{STEM}.ipynb"
    sub.parent.mkdir()
    # unsandboxed, this answer really edits the trusted copy: the hash check must catch it
    nbformat.write(_gated(f"open({str(trusted / (STEM + '.ipynb'))!r}, 'a').write(' ')\n"), sub)
    untouched = tmp_path / "untouched" / f"{STEM}.ipynb"
    untouched.parent.mkdir()
    nbformat.write(build_notebook(_solved()), untouched)
    killer = tmp_path / "killer" / f"{STEM}.ipynb"  # unsandboxed, a kernel can kill its grading process
    killer.parent.mkdir()
    nbformat.write(_with({"answer-channel_stats": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"}), killer)
    parser = argparse.ArgumentParser()
    grading_cli.add_arguments(parser)
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSEKIT_BWRAP", "")
    try:
        assert sandbox_mod.check() == "bubblewrap (bwrap) is not installed"
        args = parser.parse_args([str(untouched), str(sub), str(killer), "--solutions", str(trusted), "--timeout", "30",
                                  "--json", str(tmp_path / "out.json"), "--jobs", "2"])
        code = grading_cli.run(args)
        err = capsys.readouterr().err
        refused = grading_cli.run(parser.parse_args([str(untouched), "--solutions", str(trusted), "--sandbox", "require"]))
        err_require = capsys.readouterr().err
    finally:
        mp.undo()
    out = json.loads((tmp_path / "out.json").read_text())["notebooks"]
    by_name = {Path(r["notebook"]).parent.name: r for r in out}
    assert code == 1  # the tampering submission could not be graded
    assert by_name["untouched"]["sandbox"].startswith("UNSANDBOXED") and "WARNING" in err and "bubblewrap" in err
    assert by_name["untouched"]["max_score"] == 2 and "error" not in by_name["untouched"]
    assert by_name["sub"]["score"] == 0 and "trusted files changed" in by_name["sub"]["error"]
    # the killed worker takes down only its own submission (the others are re-graded in fresh workers)
    assert by_name["killer"]["score"] == 0 and "grading process was killed" in by_name["killer"]["error"]
    assert refused == 3 and "apt-get install bubblewrap" in err_require  # refused, not "no notebook" (2)
