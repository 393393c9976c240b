"""Kernel-side forgery earns nothing: verdicts rest on data the grader recomputes, not on what the kernel reports.

The learner's kernel shares its namespace with the probe (``coursekit.grader.in_kernel``), so an answer
cell can replace ``_coursekit_probe`` itself, or rewrite what the body records. These end-to-end
``coursekit grade`` runs (two crafted lesson 06 submissions, graded once, two at a time) show that a
do-nothing answer dressed up with forged measurements fails, while the honest answers next to it
still pass. The in-kernel writer's exact-type rule is tested directly.
"""

import copy
from pathlib import Path

import nbformat
import pytest
import torch

from coursekit.grader import in_kernel
from coursekit.grader.grade import grade_paths

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
STEM = "06_pitfalls_exercises"

# A do-nothing freeze_batchnorm that REPLACES THE PROBE: it runs the real case, then overwrites the
# model's state with the inputs' (so "running statistics unchanged", "BN affine unchanged") and
# writes flags claiming a proper freeze -- only for its own task, so the honest answers still pass.
FORGED_PROBE = """
import json, os
import numpy as np

PREFIX = "_course" + "kit_"  # built from strings: the static scan rejects the plain names

def freeze_batchnorm(model):
    return model  # does nothing

def forged_probe(task_dir, body, _run=globals()[PREFIX + "run_case"]):
    with open(os.path.join(task_dir, "cases.json")) as f:
        cases = json.load(f)
    forge = "freeze_batchnorm" in body.__code__.co_names
    for i, case in enumerate(cases):
        with np.load(os.path.join(task_dir, f"in{i}.npz")) as z:
            arrays = {k: z[k] for k in z.files}
        res = _run(body, case, arrays)
        out = res.pop("arrays")
        if forge:
            for k, v in arrays.items():
                if k.startswith("sd_"):
                    for prefix in ("state0_", "state1_"):
                        out[prefix + k[3:]] = v
            res["meta"].update(eval_non_bn=[], requires_grad={}, bn_grad0=[], bn_grad1=[], gradcheck=True)
            res.update(ok=True, error=None)
        np.savez(os.path.join(task_dir, f"out{i}.npz"), **out)
        with open(os.path.join(task_dir, f"res{i}.json"), "w") as f:
            json.dump(res, f, default=str)

globals()[PREFIX + "probe"] = forged_probe
"""

# predict that leaves the model in eval mode, and rewrites the body's record of the flags "before"
# (any dict named meta in its callers' frames) to match.
LEAVES_EVAL = """
import sys

def predict(model, x):
    model.eval()  # never restored
    with torch.no_grad():
        y = model(x)
    f = sys._getframe(1)
    while f is not None:
        if isinstance(f.f_locals.get("meta"), dict):
            f.f_locals["meta"]["flags_before"] = [m.training for m in model.modules()]
        f = f.f_back
    return y
"""


def _submission(cid, source):
    nb = nbformat.read(SOLUTIONS / f"{STEM}.ipynb", as_version=4)
    nb = copy.deepcopy(nb)
    next(c for c in nb.cells if c.get("id") == cid).source = source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("forgery")
    subs = {
        "forged_probe": _submission("answer-freeze_batchnorm", FORGED_PROBE),
        "leaves_eval": _submission("answer-predict", LEAVES_EVAL),
    }
    paths = []
    for name, nb in subs.items():
        d = root / name
        d.mkdir()
        nbformat.write(nb, d / f"{STEM}.ipynb")
        paths.append(d / f"{STEM}.ipynb")
    results = grade_paths(paths, SOLUTIONS, timeout=30.0, jobs=2)
    return {name: r for name, r in zip(subs, results)}


def _status(result):
    return {t.id: t.status for t in result.tasks}


def test_a_replaced_probe_forging_the_state_earns_no_points(graded):
    r = graded["forged_probe"]
    assert r.error is None, r.error
    assert _status(r) == {"06.freeze_batchnorm": "fail", "06.predict": "pass", "06.recalibrate": "pass"}, r.tasks
    msg = next(t for t in r.tasks if t.id == "06.freeze_batchnorm").message
    assert "output after model.train()" in msg, msg  # the forged state got past; the replayed output did not


def test_predict_leaving_eval_mode_with_forged_flags_earns_no_points(graded):
    r = graded["leaves_eval"]
    assert r.error is None, r.error
    assert _status(r) == {"06.freeze_batchnorm": "pass", "06.predict": "fail", "06.recalibrate": "pass"}, r.tasks
    msg = next(t for t in r.tasks if t.id == "06.predict").message
    assert "training flags not restored" in msg, msg


class _Forging(torch.Tensor):
    """A Tensor subclass that could answer detach/clone/numpy with anything it likes."""


def test_the_in_kernel_writer_reads_exact_tensor_and_ndarray_types_only():
    import numpy as np

    class Arr(np.ndarray):
        pass

    sub = torch.zeros(3).as_subclass(_Forging)
    arrays, kinds = in_kernel._coursekit_plain(
        {"t": torch.ones(2), "sub": sub, "a": np.ones(2), "arr": np.ones(2).view(Arr), "obj": np.array([None])}
    )
    assert set(arrays) == {"t", "a"}
    assert kinds["sub"] == {"kind": "_Forging"} and kinds["arr"] == {"kind": "Arr"} and kinds["obj"] == {"kind": "ndarray"}
