"""Instant feedback for the exercise notebooks: one ``check_<task>`` per graded task.

Introduced in lesson 02's exercise notebook; every check cell of ``exercises/`` calls one of these.

A check runs the task's single definition (:mod:`coursekit.tasks`) in this process: the task's
visible cases (shapes from 2D to 5D, float32 and float64, train/eval, momentum incl. None, groups,
dilation, padding modes, ...), the same body the grader runs in the learner's kernel, and the same
judge the grader uses, so a check and ``coursekit grade`` never disagree. It returns a
:class:`CheckResult` that prints one line and renders a small coloured block in Jupyter::

    ✔ channel_stats: 6/6 cases passed
    ✘ batch_norm_train: case 3 shape (2, 3, 4, 5) float32, eps=0.1: output: max error 0.11 at (1, 2, 0, 3) — hint: ...
      [2/6 cases pass (...), failing: ...]

How the feedback teaches:

* **Known wrong answers are recognised**, only when their model explains the result far better than
  the right answer does (unbiased variance, eps outside the square root, wrong axes, momentum
  reversed, statistics detached, a conv's dilation dropped, kept dims, float32 precision, ...);
* **What the object is comes first**: type, shape and dtype before values; "you returned the
  original layer"; the learner's exception with its full message and the line it came from;
* **Every case runs**, and the verdict says which cases pass and which fail;
* **Inputs must not change**: every tensor/array/module passed in is compared before and after;
* **No shortcuts**: while the cases run, what the task re-implements is refused in every thread of
  the process (``coursekit.grader.guard``: the library's normalization operators at PyTorch's
  dispatcher, PyTorch's and the course's Python implementations, ``update_bn``, the fusion
  utilities, new processes), however it is reached; the grader locks the same layers for its
  kernel's life. The source is scanned for the same names as the grader's static scan.

Checks draw their inputs from their own seed inside :func:`torch.random.fork_rng`, so they are
deterministic and leave the notebook's random state untouched.

Example::

    >>> from coursekit import checks
    >>> def channel_stats(x):
    ...     dims = [0, *range(2, x.dim())]
    ...     return x.mean(dims), x.var(dims, unbiased=False)
    >>> print(checks.check_channel_stats(channel_stats))
    ✔ channel_stats: 6/6 cases passed
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coursekit.tasks import TASKS

from ._core import CheckResult, run_check

__all__ = ["CheckResult", "CHECKS"]


def _make_check(task) -> Callable[[Any], CheckResult]:
    def check(obj) -> CheckResult:
        return run_check(task, obj)

    what = "class" if task.kind == "class" else "function"
    check.__name__ = check.__qualname__ = f"check_{task.name}"
    check.__doc__ = (
        f"Check the learner's {what} ``{task.signature}`` (exercise {task.lesson}) on the task's visible cases.\n\n"
        f"Returns a :class:`CheckResult` (never raises for a wrong or unfinished answer).\n"
        f"Raises ``TypeError`` if given something that is not a {what}."
    )
    return check


CHECKS: dict[str, Callable[[Any], CheckResult]] = {t.name: _make_check(t) for t in TASKS.values()}
"""Task name -> its check, for every task of ``coursekit.tasks.TASKS``."""

for _name, _check in CHECKS.items():
    globals()[_check.__name__] = _check
    __all__.append(_check.__name__)
del _name, _check
