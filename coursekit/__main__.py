"""``python -m coursekit`` is the same as the ``coursekit`` console script."""
from coursekit.cli import entry

entry()
