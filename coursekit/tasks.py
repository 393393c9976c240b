"""The graded tasks: the interface shared by solutions/, ``coursekit.checks`` and ``coursekit grade``.

Every exercise notebook lives at ``solutions/<stem>.ipynb`` (source of truth) and is built into
``exercises/<stem>.ipynb``. Each task is a function or class with a fixed name that the learner
writes in one answer cell, followed by one check cell:

* answer cell id: ``answer-<name>`` (holds ``### BEGIN SOLUTION`` / ``### END SOLUTION``)
* check cell id:  ``check-<name>`` (locked in exercises/, discarded by the grader)

Signatures (all tensors are ``torch.Tensor`` unless said otherwise; nothing may be mutated):

02 ``channel_stats(x) -> (mean, var)``: per-channel mean and *biased* variance of an
   (N, C, *) tensor, each of shape (C,).
02 ``batch_norm_train(x, gamma, beta, eps=1e-5) -> y``: training-mode BN of (N, C, *) input
   with batch statistics, like ``F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)``.
03 ``update_running_stats(running_mean, running_var, x, momentum=0.1, num_batches_tracked=0)
   -> (new_running_mean, new_running_var)``: PyTorch's update for one batch ``x`` of shape
   (N, C, *): unbiased batch variance; ``momentum=None`` means the cumulative average with
   factor ``1 / (num_batches_tracked + 1)`` (``num_batches_tracked`` counts batches *before* x).
03 ``MyBatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``:
   an ``nn.Module`` whose state_dict loads into ``nn.BatchNorm2d`` and back (keys ``weight``,
   ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``) and whose forward matches it
   in train and eval mode, including the running-statistics update.
03 ``bn_process(feature, mean, var, momentum=0.1, eps=1e-5) -> (out, new_mean, new_var)``: the seed's
   numpy function fixed: ``feature`` (N, C, H, W) and ``mean``/``var`` (C,) are numpy arrays that
   must come back unchanged; returns new numpy arrays.
04 ``batch_norm_backward(dy, cache) -> (dx, dgamma, dbeta)`` where ``cache`` comes from the
   notebook's given ``batch_norm_forward(x, gamma, beta, eps=1e-5) -> (y, cache)`` with
   ``cache = (x_hat, inv_std, gamma)``; x is (N, C, *), inv_std and gamma are (C,).
04 ``BatchNormFunction``: a ``torch.autograd.Function``; ``BatchNormFunction.apply(x, gamma, beta, eps)``
   returns training-mode BN of x and its backward is analytic (passes gradcheck in float64).
05 ``layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)``,
   ``instance_norm(x, weight=None, bias=None, eps=1e-5)`` (per-sample, per-channel, no running
   stats; weight/bias of shape (C,)), ``group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)``:
   same results as their ``torch.nn.functional`` namesakes.
06 ``freeze_batchnorm(model) -> model``: every BatchNorm layer stops updating its running
   statistics and its affine parameters, and stays so after a later ``model.train()``.
06 ``predict(model, x) -> y``: eval-mode forward without autograd that restores every submodule's
   previous training flag.
06 ``recalibrate(model, loader) -> model``: resets BN running statistics and re-estimates them as
   the cumulative average over the batches of ``loader`` (like ``torch.optim.swa_utils.update_bn``),
   leaving weights untouched and the model's mode as it was.
07 ``fold_conv_bn(conv, bn) -> conv``: a new ``nn.Conv1d/2d/3d`` equal to conv followed by bn in eval
   mode (conv bias None or not, groups, stride, dilation, every padding_mode); inputs not mutated.
07 ``fold_linear_bn(linear, bn) -> linear``: the same for ``nn.Linear`` + ``nn.BatchNorm1d``.
07 ``fold_model(model) -> model``: a new model, in eval mode, with every conv/linear -> BN pair
   inside ``nn.Sequential`` containers (at any depth) folded and the BN replaced by ``nn.Identity``.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Task", "Exercise", "EXERCISES", "TASKS", "exercise_for"]


@dataclass(frozen=True)
class Task:
    """One graded task: the name the learner defines and the cells that hold it."""

    lesson: str
    name: str
    points: int = 1

    @property
    def id(self) -> str:
        return f"{self.lesson}.{self.name}"

    @property
    def answer_cell(self) -> str:
        return f"answer-{self.name}"

    @property
    def check_cell(self) -> str:
        return f"check-{self.name}"


@dataclass(frozen=True)
class Exercise:
    """One exercise notebook: ``solutions/<stem>.ipynb`` built into ``exercises/<stem>.ipynb``."""

    lesson: str
    stem: str
    tasks: tuple[Task, ...]

    @property
    def filename(self) -> str:
        return f"{self.stem}.ipynb"


def _exercise(lesson: str, stem: str, *names: str) -> Exercise:
    return Exercise(lesson, stem, tuple(Task(lesson, n) for n in names))


EXERCISES: tuple[Exercise, ...] = (
    _exercise("02", "02_bn_forward_exercises", "channel_stats", "batch_norm_train"),
    _exercise("03", "03_running_stats_exercises", "update_running_stats", "MyBatchNorm2d", "bn_process"),
    _exercise("04", "04_bn_backward_exercises", "batch_norm_backward", "BatchNormFunction"),
    _exercise("05", "05_normalization_family_exercises", "layer_norm", "instance_norm", "group_norm"),
    _exercise("06", "06_pitfalls_exercises", "freeze_batchnorm", "predict", "recalibrate"),
    _exercise("07", "07_folding_exercises", "fold_conv_bn", "fold_linear_bn", "fold_model"),
)

TASKS: dict[str, Task] = {t.id: t for ex in EXERCISES for t in ex.tasks}


def exercise_for(lesson: str) -> Exercise:
    """The exercise of a lesson ("02" .. "07"); ``ValueError`` for any other lesson."""
    for ex in EXERCISES:
        if ex.lesson == lesson:
            return ex
    known = ", ".join(ex.lesson for ex in EXERCISES)
    raise ValueError(f"expected a lesson with an exercise ({known}) (got {lesson!r})")
