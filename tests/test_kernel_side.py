"""coursekit.kernel_side: the code that runs in the learner's kernel, as real files, and what it declares.

Every body declares the keys it writes (``writes``). tests/test_tasks.py runs every catalogue
answer (tests/wrong_answers.py) through the grader's pipeline with a recording judge
(tests/declared_keys.py) and requires the body to write and the judge to read only declared keys;
here: that this record can fail, how a declaration matches keys, and that the source the kernel
receives (``Task.body``) is self-contained and adds one name to the kernel.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from declared_keys import KeyRecord, recording_task

from coursekit.grader import in_kernel
from coursekit.kernel_side.outputs import Outputs, writes
from coursekit.tasks import TASKS, Case, Task, task_named
from coursekit.tasks._kernel_source import kernel_body

ROOT = Path(__file__).resolve().parents[1]


@writes("y", meta=("returned",))
def run_identity(identity, case, tensors, arrays, recording):
    with recording:
        return {"y": identity(tensors["x"]), "y_spare": tensors["x"]}, {"legacy": 1}


def test_undeclared_writes_and_reads_are_found():
    """The record can fail: an output or meta key the body writes or the judge reads without a declaration is named."""
    task = Task("02", "identity", body=run_identity,
                judge=lambda params, inputs, out, meta: (out.get("y"), out.get("y_old"), meta.get("flag"), None)[-1])
    case = Case("two ones", {}, {"x": np.ones(2)})
    ns = dict(vars(in_kernel), identity=lambda x: x)
    exec(task.body, ns)
    result = in_kernel._coursekit_run_case(ns["_coursekit_body"], case.params, case.arrays)
    assert result["ok"], result["error"]
    keys = KeyRecord()
    recording_task(task, keys).judge(case.params, case.arrays, result["arrays"], result["meta"])
    assert keys.undeclared(task.outputs) == {
        "written output": {"y_spare"},
        "written meta": {"legacy"},
        "read output": {"y_old"},
        "read meta": {"flag"},
    }


def test_prefix_declarations_match_only_their_prefix():
    declared = Outputs(("state_*", "y"), meta=("n_bn",))
    assert declared.allows_array("state_0.weight") and declared.allows_array("y")
    assert not declared.allows_array("y0") and not declared.allows_array("sd_0.weight")
    assert declared.allows_meta("n_bn") and declared.allows_meta("_kinds") and not declared.allows_meta("returned")


@pytest.mark.parametrize("task_name", [t.name for t in TASKS.values()])
def test_kernel_source_is_self_contained(task_name):
    """Task.body needs nothing of coursekit and leaves only _coursekit_body among the kernel's names."""
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


def test_the_task_definitions_and_the_grader_import_without_torch():
    """``coursekit grade`` launches the learner's kernel before torch loads in the grader: importing the
    grader, the task definitions and the kernel-side bodies must not import torch (or nbformat, whose
    schema validator costs ~1 s). Fails if a module-level ``import torch`` comes back."""
    code = ("import sys\nimport coursekit.grader.cli, coursekit.grader.grade, coursekit.tasks, coursekit.kernel_side.lesson07\n"
            "import coursekit.grader.intake as i\n"
            "i.parse_notebook(open(sys.argv[1]).read(), 'x')\n"
            "print(sorted(m for m in ('torch', 'nbformat', 'nbclient', 'jsonschema') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "solutions" / "02_bn_forward_exercises.ipynb")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
