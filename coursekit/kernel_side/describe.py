"""What a learner returned, as outputs or in words, for the bodies that expect a tuple: see :mod:`coursekit.kernel_side`."""

from __future__ import annotations

__all__ = ["describe_returned", "tuple_outputs"]


def describe_returned(obj):
    """What the learner returned, in words: "a Tensor", "a tuple of length 3"."""
    text = f"a {type(obj).__name__}"
    if isinstance(obj, (tuple, list)):
        text += f" of length {len(obj)}"
    return text


def tuple_outputs(returned, names, inputs_after):
    """``(outputs, meta)`` of a body whose task returns a tuple: its items under ``names`` plus
    ``inputs_after`` (the inputs as they came back), or, when it is no tuple of that length, only
    ``inputs_after`` and what it was in words (meta ``"returned"``)."""
    if not isinstance(returned, (tuple, list)) or len(returned) != len(names):
        return dict(inputs_after), {"returned": describe_returned(returned)}
    return {**dict(zip(names, returned)), **inputs_after}, {}
