"""The graded tasks, each defined ONCE: what the check cells, ``coursekit grade``, ``coursekit build`` and the tests read.

Every exercise notebook lives at ``solutions/<stem>.ipynb`` (source of truth) and is built into
``exercises/<stem>.ipynb``. Each task is a function or class with a fixed name that the learner
writes in one answer cell, followed by one check cell:

* answer cell id: ``answer-<name>`` (holds ``### BEGIN SOLUTION`` / ``### END SOLUTION``)
* check cell id:  ``check-<name>`` (locked in exercises/, discarded by the grader)

One module per exercise notebook defines its tasks (:class:`Task`: signature, points, case
generator, trusted judge with its tolerance and known wrong answers, forbidden operations); the
body each task runs in the learner's kernel is in ``coursekit.kernel_side``. ``_task`` is the
framework, ``_kernel_source`` makes a body self-contained source, ``_data``, ``_norm`` and
``_models`` the shared inputs, models of wrong answers and small models. Adding a task:
CONTRIBUTING.md, "Adding a task".

* ``lesson02``: ``channel_stats(x) -> (mean, var)``, ``batch_norm_train(x, gamma, beta, eps=1e-5)``;
* ``lesson03``: ``update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0)``,
  ``MyBatchNorm2d`` (state_dict interchangeable with ``nn.BatchNorm2d``), ``bn_process`` (numpy, fixed);
* ``lesson04``: ``batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)`` with ``cache = (x_hat, inv_std, gamma)``,
  ``BatchNormFunction`` (a ``torch.autograd.Function``, ``apply(x, gamma, beta, eps)``);
* ``lesson05``: ``layer_norm``, ``instance_norm``, ``group_norm`` (as their ``torch.nn.functional`` namesakes);
* ``lesson06``: ``freeze_batchnorm(model)``, ``predict(model, x)``, ``recalibrate(model, loader)``;
* ``lesson07``: ``fold_conv_bn(conv, bn)``, ``fold_linear_bn(linear, bn)``, ``fold_model(model)`` (eval-mode BN).

Nothing may be mutated; see each module for the exact contract of its tasks.
"""

from __future__ import annotations

from . import lesson02, lesson03, lesson04, lesson05, lesson06, lesson07
from ._task import Case, Exercise, Mismatch, Task, Verdict, judge_case

__all__ = ["Task", "Exercise", "Case", "Mismatch", "Verdict", "judge_case", "EXERCISES", "TASKS", "exercise_for", "task_named"]

EXERCISES: tuple[Exercise, ...] = tuple(m.EXERCISE for m in (lesson02, lesson03, lesson04, lesson05, lesson06, lesson07))



def _collect(exercises: tuple[Exercise, ...]) -> dict[str, Task]:
    """Every task by id; a name used twice is a ``ValueError`` (checks and ``task_named`` look tasks up by name)."""
    tasks: dict[str, Task] = {}
    lesson_of: dict[str, str] = {}
    for ex in exercises:
        for t in ex.tasks:
            if t.name in lesson_of:
                raise ValueError(f"expected each task name once (got {t.name!r} in lesson {lesson_of[t.name]} "
                                 f"and again in lesson {t.lesson})")
            lesson_of[t.name] = t.lesson
            tasks[t.id] = t
    return tasks


TASKS: dict[str, Task] = _collect(EXERCISES)


def exercise_for(lesson: str) -> Exercise:
    """The exercise of a lesson ("02" .. "07"); ``ValueError`` for any other lesson."""
    for ex in EXERCISES:
        if ex.lesson == lesson:
            return ex
    known = ", ".join(ex.lesson for ex in EXERCISES)
    raise ValueError(f"expected a lesson with an exercise ({known}) (got {lesson!r})")


def task_named(name: str) -> Task:
    """The task a learner's name belongs to ("channel_stats" -> task 02.channel_stats)."""
    for t in TASKS.values():
        if t.name == name:
            return t
    raise ValueError(f"expected the name of a graded task (got {name!r})")
