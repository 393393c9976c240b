"""Exercise 04's staged derivation: every stage check passes the solution and catches a wrong stage.

The learner derives ``batch_norm_backward`` stage by stage (``practice-stage1`` .. ``practice-stage6``
in ``solutions/04_bn_backward_exercises.ipynb``), each followed by a locked ``check-stageN`` cell that
compares the stage's gradient with autograd's: every gradient the learner computes, including stage 2's
partial ``dcentered_from_x_hat`` (compared with autograd's gradient at a copy of ``centered`` that feeds
``x_hat`` only). A check that passes must be able to fail: here each stage is replaced by a plausible
mistake, and its own check must print ✘ for the gradient the mistake changes while the earlier stages
still print ✔. Pass and fail print the same verdict label (``<name> matches autograd: ✔/✘``), so the
counter-settings of the stability run can match them.
"""
import contextlib
import io
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "solutions" / "04_bn_backward_exercises.ipynb"
CELLS = {c.get("id"): c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells}
STAGES = [str(k) for k in range(1, 7)]
SOLVED = {k: CELLS[f"practice-stage{k}"] for k in STAGES}


def _replace(stage: str, old: str, new: str) -> str:
    src = SOLVED[stage]
    assert old in src, f"stage {stage}'s solution no longer contains {old!r}: update this catalogue"
    return src.replace(old, new)


# stage -> {mistake: (gradient whose check must fail, the stage's wrong source)}
WRONG = {
    "1": {"dbeta as a mean": ("dbeta", _replace("1", "dbeta = dy.sum(dim=dims)", "dbeta = dy.mean(dim=dims)")),
          "dbeta with keepdim": ("dbeta", _replace("1", "dbeta = dy.sum(dim=dims)", "dbeta = dy.sum(dim=dims, keepdim=True)")),
          "dgamma without x_hat": ("dgamma", _replace("1", "(dy * x_hat).sum", "(dy).sum")),
          "dgamma not summed": ("dgamma", _replace("1", "dgamma = (dy * x_hat).sum(dim=dims)", "dgamma = dy * x_hat")),
          "dgamma summed over N only": ("dgamma", _replace("1", "dgamma = (dy * x_hat).sum(dim=dims)",
                                                             "dgamma = (dy * x_hat).sum(dim=0)")),
          "dx_hat without gamma": ("dx_hat", _replace("1", "dx_hat = dy * gamma.reshape(shape)", "dx_hat = dy"))},
    "2": {"x_hat instead of centered": ("dinv_std", _replace("2", "(dx_hat * centered)", "(dx_hat * x_hat)")),
          "dy instead of dx_hat": ("dinv_std", _replace("2", "(dx_hat * centered)", "(dy * centered)")),
          "x_hat part without inv_std": ("dcentered_from_x_hat",
                                         _replace("2", "dcentered_from_x_hat = dx_hat * inv_std.reshape(shape)",
                                                  "dcentered_from_x_hat = dx_hat")),
          "x_hat part divided by inv_std": ("dcentered_from_x_hat",
                                            _replace("2", "dx_hat * inv_std.reshape", "dx_hat / inv_std.reshape")),
          "x_hat part from dy": ("dcentered_from_x_hat", _replace("2", "dcentered_from_x_hat = dx_hat *",
                                                                  "dcentered_from_x_hat = dy *")),
          "x_hat part with var's term": ("dcentered_from_x_hat",
                                         _replace("2", "dcentered_from_x_hat = dx_hat * inv_std.reshape(shape)",
                                                  "dcentered_from_x_hat = dx_hat * inv_std.reshape(shape) - x_hat / m"))},
    "3": {"power 2 instead of 3": ("dvar", _replace("3", "inv_std ** 3", "inv_std ** 2")),
          "sign lost": ("dvar", _replace("3", "(-0.5)", "0.5")),
          "eps forgotten": ("dvar", "dvar = dinv_std * (-0.5) * var ** -1.5")},
    "4": {"no 1/m": ("dcentered", _replace("4", " / m", "")),
          "factor 2 forgotten": ("dcentered", _replace("4", " * 2.0", "")),
          "variance path dropped": ("dcentered", "dcentered = dcentered_from_x_hat"),
          "x_hat path dropped": ("dcentered", _replace("4", "dcentered_from_x_hat + ", ""))},
    "5": {"sign lost": ("dmean", _replace("5", "-dcentered", "dcentered")),
          "mean instead of sum": ("dmean", _replace("5", "-dcentered.sum(dim=dims)", "-dcentered.mean(dim=dims)"))},
    "6": {"mean path dropped": ("dx", "dx = dcentered"),
          "no 1/m": ("dx", _replace("6", " / m", "")),
          "eval-mode formula": ("dx", "dx = dx_hat * inv_std.reshape(shape)")},
}


def _run(sources: dict, upto: int) -> dict:
    """Run the given cells, then stages 1..upto with their checks; stage -> the check's printed text."""
    ns: dict = {}
    exec("import numpy as np, torch, torch.nn.functional as F\nfrom torch import nn\ntorch.manual_seed(0)", ns)
    for cid in ("given-batch_norm_forward", "derive-graph"):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(CELLS[cid], ns)
    printed = {}
    for k in STAGES[:upto]:
        exec(sources[k], ns)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(CELLS[f"check-stage{k}"], ns)
        printed[k] = buf.getvalue()
    return printed


def _line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{name} matches autograd: "))


def test_solution_passes_every_stage():
    """The solution's six stages all print ✔ and no ✘, one verdict per gradient (stage 2 checks two)."""
    printed = _run(SOLVED, 6)
    assert all("✔" in text and "✘" not in text for text in printed.values()), printed
    assert _line(printed["2"], "dcentered_from_x_hat").endswith("✔")


def test_pass_and_fail_share_the_verdict_label():
    """A failing stage prints the passing line's label with ✘, and what is wrong on the next line."""
    name, source = WRONG["2"]["x_hat part without inv_std"]
    passed, failed = _run(SOLVED, 2)["2"], _run({**SOLVED, "2": source}, 2)["2"]
    assert _line(passed, name) == f"{name} matches autograd: ✔"
    assert _line(failed, name) == f"{name} matches autograd: ✘"
    detail = failed.splitlines()[failed.splitlines().index(_line(failed, name)) + 1]
    assert "largest error" in detail and "✘" not in detail and "✔" not in detail


@pytest.mark.parametrize("stage,mistake", [(k, m) for k, ms in WRONG.items() for m in ms])
def test_a_wrong_stage_fails_its_own_check(stage, mistake):
    """A stage with a classic mistake gets ✘ for the gradient it changes; earlier stages stay ✔."""
    name, source = WRONG[stage][mistake]
    printed = _run({**SOLVED, stage: source}, int(stage))
    assert _line(printed[stage], name).endswith("✘"), printed[stage]
    assert all("✘" not in printed[k] for k in printed if k != stage), printed


CLOSED_FORM = ("m * dx_hat", "sum(dx_hat * x_hat)", "x_hat * sum", "sum of dy * x_hat")


def _hints_for_wrong_backwards() -> dict:
    from wrong_answers import WRONG as WRONG_ANSWERS

    from coursekit import checks

    return {name: checks.check_batch_norm_backward(fn).hint for name, fn in WRONG_ANSWERS["batch_norm_backward"].items()}


def test_graded_hints_never_give_the_closed_form():
    """The graded check's hints nudge (three paths, the stage checks) or name one local derivative; none of
    them, for any catalogued wrong answer (an arbitrary dx error included), spells out dx or dgamma."""
    hints = _hints_for_wrong_backwards()
    assert "three paths" in hints["dx_off_by_a_constant"], hints["dx_off_by_a_constant"]
    leaks = {name: h for name, h in hints.items() if h and any(part in h for part in CLOSED_FORM)}
    assert not leaks, leaks
