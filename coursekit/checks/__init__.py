"""Instant feedback for the exercise notebooks: one ``check_<task>`` per graded task.

Introduced in lesson 02's exercise notebook; every check cell of ``exercises/`` calls one of these.

A check runs the learner's function (or class) on several randomized cases (shapes from 2D to 5D,
batch size 2, float32 and float64, train/eval, momentum incl. None, groups, dilation, padding
modes, ...) and compares it with PyTorch. It returns a :class:`CheckResult` that prints one line,
and renders a small coloured block in Jupyter::

    ✔ channel_stats: 6/6 cases passed
    ✘ batch_norm_train: case 3 shape (2, 3, 4, 5) float32, eps=0.1: output: max error 0.11 at (1, 2, 0, 3) — hint: ...

How the feedback teaches:

* **Known wrong answers are recognised**: when the output is wrong, the check recomputes the classic
  mistakes (unbiased variance used to normalize, eps outside the square root, statistics over the
  wrong axes, the momentum convention reversed, statistics detached from the graph, a conv's
  dilation dropped, ...) on the same inputs and, if the learner's output matches one, names it.
* **Inputs must not change**: every tensor/array/module passed in is compared before and after.
* **No shortcuts**: while the learner's code runs, the library function the task re-implements
  (``F.batch_norm``, ``torch.batch_norm``, ``F.layer_norm``, ``fuse_conv_bn_eval``, ``update_bn``,
  the course's own ``coursekit.reference``, ...) is replaced by a sentinel that raises; a call is
  reported as "do not call F.batch_norm: the task is to re-implement it".
* **Never crashes the cell**: an exception raised by the learner's code (``NotImplementedError``
  from an unfinished stub, a shape error, ...) becomes a failed result showing the exception.

Checks draw their inputs from their own seed inside :func:`torch.random.fork_rng`, so they are
deterministic and leave the notebook's random state untouched. Tolerances: ``1e-5`` (float32) and
``1e-10`` (float64), relative to ``1 + |expected|``. The grader (``coursekit grade``) does not use
these checks: it compares plain outputs for its own secret inputs.

Example::

    >>> from coursekit import checks
    >>> def channel_stats(x):
    ...     dims = [0, *range(2, x.dim())]
    ...     return x.mean(dims), x.var(dims, unbiased=False)
    >>> print(checks.check_channel_stats(channel_stats))
    ✔ channel_stats: 6/6 cases passed

Layout (one module per lesson's tasks; import everything from ``coursekit.checks``):

* ``forward``: lesson 02, ``channel_stats``, ``batch_norm_train``;
* ``running_stats``: lesson 03, ``update_running_stats``, ``MyBatchNorm2d``, ``bn_process``;
* ``backward``: lesson 04, ``batch_norm_backward``, ``BatchNormFunction``;
* ``family``: lesson 05, ``layer_norm``, ``instance_norm``, ``group_norm``;
* ``pitfalls``: lesson 06, ``freeze_batchnorm``, ``predict``, ``recalibrate``;
* ``folding``: lesson 07, ``fold_conv_bn``, ``fold_linear_bn``, ``fold_model``;
* ``_core`` (the result, forbidden calls, the runner, comparisons) and ``_inputs`` (shared inputs
  and reference maths): the machinery the lesson modules share.
"""
from __future__ import annotations

from typing import Any, Callable

from ._core import CheckResult
from .backward import check_batch_norm_backward, check_BatchNormFunction
from .family import check_group_norm, check_instance_norm, check_layer_norm
from .folding import check_fold_conv_bn, check_fold_linear_bn, check_fold_model
from .forward import check_batch_norm_train, check_channel_stats
from .pitfalls import check_freeze_batchnorm, check_predict, check_recalibrate
from .running_stats import check_bn_process, check_MyBatchNorm2d, check_update_running_stats

__all__ = [
    "CheckResult",
    "check_channel_stats", "check_batch_norm_train",
    "check_update_running_stats", "check_MyBatchNorm2d", "check_bn_process",
    "check_batch_norm_backward", "check_BatchNormFunction",
    "check_layer_norm", "check_instance_norm", "check_group_norm",
    "check_freeze_batchnorm", "check_predict", "check_recalibrate",
    "check_fold_conv_bn", "check_fold_linear_bn", "check_fold_model",
    "CHECKS",
]


CHECKS: dict[str, Callable[[Any], CheckResult]] = {
    "channel_stats": check_channel_stats, "batch_norm_train": check_batch_norm_train,
    "update_running_stats": check_update_running_stats, "MyBatchNorm2d": check_MyBatchNorm2d,
    "bn_process": check_bn_process, "batch_norm_backward": check_batch_norm_backward,
    "BatchNormFunction": check_BatchNormFunction, "layer_norm": check_layer_norm,
    "instance_norm": check_instance_norm, "group_norm": check_group_norm,
    "freeze_batchnorm": check_freeze_batchnorm, "predict": check_predict, "recalibrate": check_recalibrate,
    "fold_conv_bn": check_fold_conv_bn, "fold_linear_bn": check_fold_linear_bn, "fold_model": check_fold_model,
}
"""Task name -> its check, for every task of ``coursekit.tasks.TASKS``."""
