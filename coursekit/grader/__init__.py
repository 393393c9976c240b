"""``coursekit grade``: score submitted exercise notebooks without trusting them.

The trust boundary is in the file names. Everything here runs in the grader's own process
(trusted) except the cell source that ``grade`` sends into the learner's kernel:

* ``intake``: find submissions, read each once, identify the exercise, take its answer cells;
* ``scan``: the static scan of answer cells for forbidden names;
* ``kernel``: start, drive and stop the learner's kernel (the untrusted process);
* ``in_kernel``: the code sent INTO the learner's kernel (the only untrusted side): runs a task's body on
  the hidden inputs, records the aten ops the dispatcher runs, returns plain data;
* ``grade``: one submission end to end, and many in parallel;
* ``results`` / ``reports``: what grading produces and the formats instructors read;
* ``cli``: the ``coursekit grade`` command.

See the README's "Exercises and grading" section for the threat model.
"""
from coursekit.grader.grade import grade_notebook, grade_paths
from coursekit.grader.results import STATUSES, GradingError, NotebookResult, TaskResult

__all__ = ["grade_notebook", "grade_paths", "STATUSES", "GradingError", "NotebookResult", "TaskResult"]
