"""coursekit.kernel_side: the code that runs in the learner's kernel, as real files, and what it declares.

Every body declares the keys it writes (``writes``); running every catalogue answer
(tests/wrong_answers.py: known-wrong answers, other right answers, stubs, solutions) through each
task's visible cases shows that the body writes only declared keys and that the judge reads only
declared keys, so a body and its judge agree through the declaration, not through loose strings.
The source the kernel receives (``Task.body``) is self-contained: it needs nothing of coursekit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from wrong_answers import RIGHT, STUBS, WRONG, solutions

from coursekit.grader import in_kernel
from coursekit.kernel_side.outputs import Outputs, writes
from coursekit.tasks import TASKS, task_named
from coursekit.tasks._kernel_source import kernel_body


class _Reads(dict):
    """A dict that records the keys read from it (``[]``, ``get``, ``in``); iterating is not reading a key."""

    def __init__(self, data, reads):
        super().__init__(data)
        self.reads = reads

    def __getitem__(self, key):
        self.reads.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.reads.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.reads.add(key)
        return super().__contains__(key)


def undeclared_reads(task, results, cases) -> tuple[set, set]:
    """The output and meta keys ``task.judge`` reads on ``results`` that ``task.outputs`` does not declare."""
    arrays_read, meta_read, kinds_read = set(), set(), set()
    for case, res in zip(cases, results):
        if not res["ok"]:
            continue
        meta = dict(res["meta"])
        meta["_kinds"] = _Reads(meta.get("_kinds", {}), kinds_read)
        try:
            task.judge(case.params, case.arrays, _Reads(res["arrays"], arrays_read), _Reads(meta, meta_read))
        except Exception:  # noqa: S110  (judge_case reports these as unusable output; the reads so far count)
            pass
    declared = task.outputs
    return ({k for k in arrays_read | kinds_read if not declared.allows_array(k)},
            {k for k in meta_read if not declared.allows_meta(k)})


def _run(task, obj, cases):
    ns = dict(vars(in_kernel))
    ns[task.name] = obj
    exec(compile(task.body, f"<coursekit-body-{task.name}>", "exec"), ns)
    with torch.random.fork_rng(devices=[]):
        return [in_kernel._coursekit_run_case(ns["_coursekit_body"], case.params, case.arrays) for case in cases]


def _answers(task_name, solved):
    answers = {"solution": solved[task_name], "stub": STUBS[task_name]}
    answers.update({f"wrong {n}": a for n, a in WRONG.get(task_name, {}).items()})
    answers.update({f"right {n}": a for n, a in RIGHT.get(task_name, {}).items()})
    return answers


@pytest.fixture(scope="module")
def solved():
    return solutions()


@pytest.mark.parametrize("task_name", [t.name for t in TASKS.values()])
def test_body_writes_and_judge_reads_only_declared_keys(task_name, solved):
    """Over every catalogue answer: each key the body writes and each key the judge reads is declared."""
    task = task_named(task_name)
    cases = task.cases(np.random.default_rng(7))
    written_arrays, written_meta = set(), set()
    for label, obj in _answers(task_name, solved).items():
        results = _run(task, obj, cases)
        for res in results:
            written_arrays |= set(res["arrays"])
            written_meta |= set(res["meta"])
        arrays_read, meta_read = undeclared_reads(task, results, cases)
        assert not arrays_read and not meta_read, (label, arrays_read, meta_read)
    assert not {k for k in written_arrays if not task.outputs.allows_array(k)}, written_arrays
    assert not {k for k in written_meta if not task.outputs.allows_meta(k)}, written_meta


@writes("y", meta=("returned",))
def run_identity(identity, case, tensors, arrays, recording):
    with recording:
        return {"y": identity(tensors["x"])}, {}


def test_an_undeclared_read_is_found():
    """The reads check can fail: a judge reading an output or a meta key its body does not declare is named."""

    class _Task:
        outputs = run_identity.outputs
        judge = staticmethod(lambda params, inputs, out, meta: (out.get("y"), out.get("y_old"), meta.get("legacy")))

    class _Case:
        params, arrays = {}, {"x": np.ones(2)}

    body = kernel_body(run_identity, "identity")
    ns = dict(vars(in_kernel), identity=lambda x: x)
    exec(body, ns)
    results = [in_kernel._coursekit_run_case(ns["_coursekit_body"], {}, _Case.arrays)]
    assert results[0]["ok"], results[0]["error"]
    assert undeclared_reads(_Task, results, [_Case]) == ({"y_old"}, {"legacy"})


def test_prefix_declarations_match_only_their_prefix():
    declared = Outputs(("state_*", "y"), meta=("n_bn",))
    assert declared.allows_array("state_0.weight") and declared.allows_array("y")
    assert not declared.allows_array("y0") and not declared.allows_array("sd_0.weight")
    assert declared.allows_meta("n_bn") and declared.allows_meta("_kinds") and not declared.allows_meta("returned")


@pytest.mark.parametrize("task_name", [t.name for t in TASKS.values()])
def test_kernel_source_is_self_contained(task_name):
    """Task.body runs with nothing of coursekit importable and adds only _coursekit_body to the kernel's names."""
    task = task_named(task_name)
    assert "coursekit" not in task.body.replace("_coursekit_", "")
    ns: dict = {}
    exec(compile(task.body, "<body>", "exec"), ns)
    assert sorted(k for k in ns if not k.startswith("__")) == ["_coursekit_body"]
    assert isinstance(task.outputs, Outputs)


def test_a_kernel_name_equal_to_the_learners_is_refused():
    """The learner's object is looked up by name when a case runs: a kernel-side name may not shadow it."""
    from coursekit.kernel_side import lesson06

    with pytest.raises(ValueError, match="'load_model' defined"):
        kernel_body(lesson06.run_predict, "load_model")


def test_a_body_that_is_not_a_module_level_function_is_refused():
    def run_nested(learner, case, tensors, arrays, recording):
        return {}, {}

    with pytest.raises(ValueError, match="module-level function"):
        kernel_body(run_nested, "identity")
