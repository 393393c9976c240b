"""What a learner returned, in words, for the bodies that expect a tuple: see :mod:`coursekit.kernel_side`."""

from __future__ import annotations

__all__ = ["describe_returned"]


def describe_returned(obj):
    """What the learner returned, in words: "a Tensor", "a tuple of length 3"."""
    text = f"a {type(obj).__name__}"
    if isinstance(obj, (tuple, list)):
        text += f" of length {len(obj)}"
    return text
