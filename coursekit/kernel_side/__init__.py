"""Code that CROSSES INTO THE LEARNER'S KERNEL: the task bodies and the models they build.

Everything in this folder is untrusted once it runs: ``coursekit grade`` sends it into the
learner's kernel (after ``coursekit.grader.in_kernel``), and a check cell runs it in the learner's
process. It calls the learner's code and returns plain data; it judges nothing (the judges in
``coursekit.tasks`` do, on the trusted side).

One module per lesson (``lesson02`` .. ``lesson07``) holds one ``run_<task>`` function per task,
``models`` the small models of lessons 06 and 07. A body has the signature
``run_<task>(learner, case, tensors, arrays, recording) -> (outputs, meta)``: ``learner`` is what
the learner defined under the task's name, ``tensors``/``arrays`` the case's inputs as torch
tensors/numpy arrays, and every call into the learner's code sits inside ``with recording:``.
Each body is decorated with :func:`~coursekit.kernel_side.outputs.writes`, which declares the
output and meta keys it may write; the judge reads only those (``tests/test_tasks.py`` checks
both over every catalogue answer).

These are real modules (ruff lints them, tests import them); ``coursekit.tasks._kernel_source``
turns one body and what it uses into the self-contained source the kernel receives
(``Task.body``). They import torch inside each function, never at the top: the grader imports
them (through ``coursekit.tasks``) before it needs torch, and ``coursekit grade`` starts the
learner's kernel in that time (``tests/test_kernel_side.py`` keeps it so).
"""

__all__: list[str] = []
