"""Counter-settings: every checked verdict is shown to be able to fail.

A *verdict line* is a line of a checked cell's stored stdout that carries a verdict token
(``True``, ``False``, ``✔``, ``✘``). A lesson claim such as "BN learns at lr 0.1 on 3/3 seeds: True"
means something only if the same code prints ``False`` where the claim is false. For each checked
cell with verdict lines, ``tests/counters/<folder>_<notebook stem>.py`` lists one or more
:class:`Counter` objects. A counter names the cell, a ``setup`` (code that builds a setting in which
the claim is false: another model, the other mode, a wrong answer, the plain network ...) and a
``why`` sentence saying what that setting is.

The stability run (``tests/stability_support.py``) executes each notebook cell by cell; right after a
cell with counters it runs, for each counter, ``setup`` and then **the cell's own source** in a copy
of the notebook's namespace (RNG states saved and restored, so the notebook's later cells are
unaffected). A counter passes when every verdict line it covers comes out with different verdict
tokens (True -> False, ✔ -> ✘, ...). ``tests/test_counters.py`` checks that every verdict line of
every checked cell is covered by some counter and that the mechanism itself can fail.

Counter authors: never mutate objects of the notebook in ``setup`` (deep-copy models first); rebind
names instead. Prefer a real false setting (re-run the experiment configured the other way) to
substituted numbers; where a re-run would be too slow, substitute measurements and say so in ``why``.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTER_DIR = ROOT / "tests" / "counters"

TOKEN = re.compile(r"\b(?:True|False)\b|✔|✘")
FLIPPED = {"True": "False", "False": "True", "✔": "✘", "✘": "✔"}
MARK = "__COURSEKIT_COUNTER__"


@dataclass(frozen=True)
class Counter:
    """A setting in which the claims of one checked cell are false.

    Args:
        cell: the id of the checked cell.
        setup: Python run before the cell's own source, in a copy of the notebook's namespace.
        why: one sentence: what the false setting is.
        lines: substrings of the verdict lines this counter must flip (default: all of the cell's).
    """

    cell: str
    setup: str
    why: str
    lines: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not self.why.strip():
            raise ValueError(f"counter for cell {self.cell!r}: expected a 'why' sentence (got an empty one)")
        if isinstance(self.lines, str):
            raise ValueError(f"counter for cell {self.cell!r}: expected lines as a tuple of strings (got one string)")


def counter_module(nb_path: Path) -> Path:
    """``notebooks/06_pitfalls.ipynb`` -> ``tests/counters/notebooks_06_pitfalls.py``."""
    return COUNTER_DIR / f"{nb_path.parent.name}_{nb_path.stem}.py"


def load_counters(nb_path: Path) -> list[Counter]:
    """The counters of one notebook (none when its module does not exist)."""
    path = counter_module(nb_path)
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location(f"counters_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counters = list(module.COUNTERS)
    for c in counters:
        if not isinstance(c, Counter):
            raise ValueError(f"{path.name}: expected Counter objects in COUNTERS (got {type(c).__name__})")
    return counters


def verdict_label(line: str) -> str:
    """A verdict line without its tokens, whitespace folded: what identifies the line."""
    return " ".join(TOKEN.sub(" ", line).split())


def verdict_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if TOKEN.search(line)]


def stdout_of(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


def covered(line: str, counter: Counter) -> bool:
    return not counter.lines or any(part in line for part in counter.lines)


def runner_source(counter: Counter, cell_source: str) -> str:
    """The code cell that runs one counter in the notebook's kernel."""
    return f"""\
def {MARK}(setup, source):
    import copy as _copy, random as _random
    ip = get_ipython()
    saved = [_random.getstate()]
    try:
        import numpy as _np
        saved.append(_np.random.get_state())
    except ImportError:
        _np = None
    import torch as _torch
    torch_state, grad_mode, dtype = _torch.get_rng_state(), _torch.is_grad_enabled(), _torch.get_default_dtype()
    ns = dict(globals())
    print({MARK!r})
    try:
        exec(compile(ip.transform_cell(setup), "<counter setup>", "exec"), ns)
        exec(compile(ip.transform_cell(source), "<checked cell>", "exec"), ns)
    finally:
        _random.setstate(saved[0])
        if _np is not None:
            _np.random.set_state(saved[1])
        _torch.set_rng_state(torch_state)
        _torch.set_grad_enabled(grad_mode)
        _torch.set_default_dtype(dtype)
{MARK}({json.dumps(counter.setup)}, {json.dumps(cell_source)})
del {MARK}
"""


def judge(counter: Counter, stored_stdout: str, outputs) -> list[str]:
    """Problems with one counter's run: an error, or a covered verdict line that did not flip."""
    errors = [o for o in outputs if o.get("output_type") == "error"]
    if errors:
        return [f"raised {errors[0].get('ename')}: {errors[0].get('evalue')}"]
    got = stdout_of(outputs).split(MARK, 1)[-1]
    got_by_label: dict[str, list[list[str]]] = {}
    for line in verdict_lines(got):
        got_by_label.setdefault(verdict_label(line), []).append(TOKEN.findall(line))
    problems, seen = [], {}
    for line in verdict_lines(stored_stdout):
        if not covered(line, counter):
            continue
        label = verdict_label(line)
        index = seen.get(label, 0)
        seen[label] = index + 1
        candidates = got_by_label.get(label, [])
        if index >= len(candidates):
            problems.append(f"verdict line not printed under the counter: {line.strip()!r}")
        elif candidates[index] == TOKEN.findall(line):
            problems.append(f"did not flip: {line.strip()!r}")
    if not any(covered(line, counter) for line in verdict_lines(stored_stdout)):
        problems.append(f"covers no verdict line of the cell (lines={counter.lines!r})")
    return problems
