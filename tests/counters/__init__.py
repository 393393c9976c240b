"""Counter-settings of the checked verdicts, one module per notebook (see tests/counter_support.py)."""
