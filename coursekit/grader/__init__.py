"""``coursekit grade``: score submitted exercise notebooks without trusting them.

The trust boundary is in the file names. Everything here runs in the grader's own process
(trusted) except the cell source that ``grade`` sends into the learner's kernel:

* ``intake``: find submissions, read each once (regular files only, size cap), identify the
  exercise, take its answer cells, hash the trusted files;
* ``scan``: the static scan of answer cells for forbidden names;
* ``sandbox``: the bubblewrap command around each kernel (read-only machine, private task
  directory, own PID and network namespaces, resource limits);
* ``kernel``: start, drive and stop the learner's kernel (the untrusted process), output capped;
* ``in_kernel``: the code sent INTO the learner's kernel (the only untrusted side): runs a task's body on
  the hidden inputs, records the aten ops the dispatcher runs, returns plain data;
* ``bounded``: every read of what a kernel wrote is bounded (sizes, archive members, JSON depth);
* ``grade``: one submission end to end as named steps, and many in parallel; judging uses
  ``coursekit.tasks``, the wording of verdicts ``coursekit.verdicts``;
* ``progress``: the step log of ``--verbose`` and a batch's progress line on a terminal;
* ``assignment``: the exercises due, one grade per learner scored against them (missing notebooks
  owe their points, one notebook per exercise), and which notebooks are worth grading;
* ``results`` / ``reports``: what grading produces and the table, JSON, Classroom and CSV formats;
  ``gradescope`` (results.json and the autograder bundle) and ``feedback`` (one file per learner);
* ``cli``: the ``coursekit grade`` command.

See docs/instructors.md, "Threat model".
"""
from coursekit.grader.results import STATUSES, GradingError, NotebookResult, TaskResult

__all__ = ["grade_notebook", "grade_paths", "STATUSES", "GradingError", "NotebookResult", "TaskResult"]


def __getattr__(name: str):
    # ``grade`` is imported on first use: it loads torch (the judges), and a submodule such as
    # ``in_kernel`` (the check cell) or ``intake`` must not pay for that
    if name in ("grade_notebook", "grade_paths"):
        from coursekit.grader import grade

        return getattr(grade, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
