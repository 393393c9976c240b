"""The words of a verdict: what a check cell prints and what ``coursekit grade`` reports, written once.

Both sides of the trust boundary render from here: the check cell (``coursekit.checks``, in the
learner's process) and the grader (``coursekit.grader``, trusted). The module imports nothing from
coursekit but its message catalogue (``coursekit.i18n``, which imports nothing from coursekit), so the
task definitions can use it too. Every phrase goes through ``_()``: English stays byte-identical, a
Chinese exercise (``set_language("zh-CN")``) or a Chinese notebook graded reads it in Chinese.
A hint always travels as its own field, from the judge's ``Verdict`` to ``CheckResult.hint`` and
``TaskResult.hint``; :func:`with_hint` joins it to the message only where a format shows one line of text.

Example::

    >>> case_summary(["shape (4, 3) float32"], ["shape (2, 3, 4) float64"])
    '1/2 cases pass (shape (4, 3) float32), failing: shape (2, 3, 4) float64'
    >>> with_hint("case 2 shape (2, 3, 4) float64: y: max error 0.1", "use the biased variance")
    'case 2 shape (2, 3, 4) float64: y: max error 0.1 — hint: use the biased variance'"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from coursekit.i18n import _, gettext_filled

__all__ = ["Feedback", "STATIC_CASE", "case_label", "case_summary", "with_summary", "with_hint", "hint_text",
           "static_feedback", "unusable", "returned", "hand_call", "HAND_CALL_HINT"]

STATIC_CASE = "the source of your answer"
"""Where a static-scan finding is reported (in place of a failing case)."""


@dataclass(frozen=True)
class Feedback:
    """A task's verdict as the learner reads it: the first thing that went wrong, kept in parts.

    Attributes:
        status: ``"pass"``, ``"fail"`` (a wrong result), ``"error"`` (the code raised or returned nothing usable),
            ``"timeout"`` or ``"missing"``.
        message: what was wrong, without the hint (e.g. ``"case 3 shape (2, 3) float32: y: max error 0.1"``).
        case: the failing case's label (``case_label``) or ``STATIC_CASE``; None when no case is to blame.
        hint: what the mistake most likely is, or None.
    """

    status: str
    message: str = ""
    case: str | None = None
    hint: str | None = None


def case_label(number: int, desc: str) -> str:
    """``"case 3 shape (2, 3, 4, 5) float64"``: a case by its 1-based number and its description."""
    return _("case {number} {desc}").format(number=number, desc=desc)


def case_summary(passed: Sequence[str], failed: Sequence[str]) -> str:
    """Which cases pass and which fail, from their descriptions.

    ``"all 6 cases fail"``, ``"all 6 cases pass at run time"`` (a static finding failed the task) or
    ``"2/6 cases pass (a; b), failing: c; d; e; f"``.
    """
    total = len(passed) + len(failed)
    if not passed:
        return _("all {total} cases fail").format(total=total)
    if not failed:
        return _("all {total} cases pass at run time").format(total=total)
    return _("{passed}/{total} cases pass ({passing}), failing: {failing}").format(
        passed=len(passed), total=total, passing="; ".join(passed), failing="; ".join(failed))


def with_summary(message: str, passed: Sequence[str], failed: Sequence[str]) -> str:
    """``message`` followed by ``[case_summary]`` when there is more than one case."""
    if len(passed) + len(failed) <= 1:
        return message
    return f"{message} [{case_summary(passed, failed)}]"


def with_hint(message: str, hint: str | None) -> str:
    """The message and its hint on one line (``" — hint: "``), for formats that show a single text.
    The hint is read in the current language (:func:`hint_text`)."""
    return message + _(" — hint: {hint}").format(hint=hint_text(hint)) if hint else message


def hint_text(hint: str | None) -> str | None:
    """A hint in the current language: the judges write hints as English sentences, the catalogue holds
    their translations, or those of the templates they fill (``gettext_filled``; a hint with neither
    stays English)."""
    return gettext_filled(hint) if hint else hint


def static_feedback(found: Sequence[str], autograd_names: Collection[str]) -> Feedback:
    """The verdict for names the static scan found in an answer's source (sorted, at least one).

    Args:
        found: the forbidden names found.
        autograd_names: names that mean "autograd" (``coursekit.tasks.AUTOGRAD_NAMES``): their hint asks
            for hand-derived gradients instead of a re-implementation.
    """
    if not found:
        raise ValueError("expected at least one forbidden name found by the scan, got none")
    first = found[0]
    if first in autograd_names:
        hint = f"derive and compute the gradients yourself: no autograd inside this function (found {first})"
    else:
        hint = f"do not use {first}: the task is to re-implement it"
    message = _("uses {names}: the task asks you to implement it yourself").format(names=", ".join(found))
    return Feedback("fail", message, STATIC_CASE, hint)


HAND_CALL_HINT = "write the backward yourself: calling grad_fn by hand is automatic differentiation"


def hand_call(node: str) -> str:
    """``"called an autograd node by hand (MulBackward0)"``: what the check's count or the grader's stopped
    kernel (``coursekit.grader.handcalls``) reports; its hint is :data:`HAND_CALL_HINT`."""
    return _("called an autograd node by hand ({node})").format(node=node)


def unusable(what: str, exc: BaseException | str) -> str:
    """``"unusable output (TypeError: ...)"``: plain data from the learner's code that cannot be judged.

    Args:
        what: ``"output"`` (arrays, values) or ``"result"`` (the case's result record).
        exc: the exception that judging or reading raised, or a reason already in words.
    """
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc)[:200]}"
    return _("unusable {what} ({why})").format(what=what, why=why)


def returned(meta: dict, expected: str) -> tuple[str, str] | None:
    """``(message, hint)`` when the body recorded that the learner returned the wrong kind of thing.

    The kernel-side body records ``meta["returned"]`` (e.g. ``"a tuple of length 3"``) only then;
    None when it did not.
    """
    got = meta.get("returned")
    if got is None:
        return None
    return _("returned {got}, expected {expected}").format(got=got, expected=expected), f"return {expected}"
