"""Tests of coursekit.checks: each check passes the solutions, fails each known-wrong answer with
the right hint, fails unfinished stubs cleanly, prints one line and renders HTML.

How fast a check answers is a timed claim, measured in benchmarks/ (section e), not asserted here."""
from __future__ import annotations

import nbformat
import pytest
import torch
import torch.nn.functional as F
from wrong_answers import HINTS, SOLUTIONS_DIR, STUBS, WRONG, solutions

from coursekit import checks
from coursekit.checks import CHECKS, CheckResult
from coursekit.tasks import EXERCISES, TASKS

TASK_NAMES = [t.name for t in TASKS.values()]
WRONG_CASES = [(task, name) for task in WRONG for name in WRONG[task]]


@pytest.fixture(scope="module")
def solved():
    return solutions()


def test_every_task_has_a_check_wrong_answers_and_a_stub():
    assert set(CHECKS) == set(TASK_NAMES)
    assert set(WRONG) == set(TASK_NAMES)
    assert set(STUBS) == set(TASK_NAMES)
    for name in TASK_NAMES:
        assert CHECKS[name] is getattr(checks, f"check_{name}")
        assert f"check_{name}" in checks.__all__
        assert len(WRONG[name]) >= 4, name


@pytest.mark.parametrize("task", TASK_NAMES)
def test_solution_passes(task, solved):
    result = CHECKS[task](solved[task])
    assert isinstance(result, CheckResult)
    assert result.passed, str(result)
    assert result.cases_run == result.cases_total >= 3
    assert str(result) == f"✔ {task}: {result.cases_total}/{result.cases_total} cases passed"


@pytest.mark.parametrize("task,name", WRONG_CASES, ids=[f"{t}-{n}" for t, n in WRONG_CASES])
def test_wrong_answer_fails_with_the_right_hint(task, name):
    result = CHECKS[task](WRONG[task][name])
    assert not result.passed, f"{task}/{name} passed"
    # a case, or the static scan (the grader's, applied to the answer's source) before any case
    assert result.failing_case and (result.failing_case.startswith("case ") or result.failing_case == "the source of your answer")
    expected = HINTS[task][name]
    if expected is not None:
        assert result.hint and expected in result.hint, f"{task}/{name}: {result}"


@pytest.mark.parametrize("task", TASK_NAMES)
def test_stub_fails_cleanly(task):
    """Every case runs and fails; the message shows the exception and the line of the answer it came from."""
    result = CHECKS[task](STUBS[task])
    assert not result.passed
    assert result.cases_run == result.cases_total and len(result.passed_cases) < result.cases_total
    assert result.message.startswith("raised NotImplementedError")
    assert "raise NotImplementedError()" in result.message  # the line of the learner's code
    assert "raise NotImplementedError()" in result.hint


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("bad", [42, "channel_stats", None])
def test_non_callable_is_a_type_error(task, bad):
    with pytest.raises(TypeError, match=r"expected .* \(got (int|str|NoneType)"):
        CHECKS[task](bad)


@pytest.mark.parametrize("task", ["MyBatchNorm2d", "BatchNormFunction"])
def test_class_tasks_want_the_class(task, solved):
    with pytest.raises(TypeError, match="the class itself"):
        CHECKS[task](lambda *a: None)


def test_failing_result_prints_one_line_with_case_shape_error_where_and_hint():
    result = checks.check_batch_norm_train(WRONG["batch_norm_train"]["unbiased_variance"])
    line = str(result)
    assert "\n" not in line and repr(result) == line
    assert line.startswith("✘ batch_norm_train: case 1 shape (4, 3) float32: output: max error ")
    assert f" at {result.where} — hint: " in line
    assert result.max_error > 1e-3 and len(result.where) == 2
    assert not result


def test_html_rendering():
    ok = checks.check_channel_stats(solutions()["channel_stats"])._repr_html_()
    assert "✔" in ok and "<code>channel_stats</code>" in ok and "6/6 cases passed" in ok
    bad = checks.check_group_norm(WRONG["group_norm"]["strided_groups"])._repr_html_()
    assert "✘" in bad and "hint:" in bad and "CONSECUTIVE" in bad
    # learner text is escaped, never injected
    bad = checks.check_channel_stats(lambda x: (_ for _ in ()).throw(ValueError("<b>x</b>")))._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;" in bad and "<b>x</b>" not in bad


def test_exception_message_is_reported_in_full_with_its_line():
    def broken(x):
        raise ValueError("shapes do not match\nsecond line of the message")
    result = checks.check_channel_stats(broken)
    assert result.message.startswith("raised ValueError: shapes do not match\nsecond line of the message (line ")
    assert 'raise ValueError("shapes do not match' in result.message

    def bare_assert(x):
        assert x.dim() == 99
    assert "assert x.dim() == 99" in checks.check_channel_stats(bare_assert).message


def test_library_functions_untouched_and_rng_untouched(solved):
    """Forbidden calls are recorded at the dispatcher: nothing is patched, and the rng state is left alone."""
    originals = (F.batch_norm, torch.batch_norm, F.layer_norm, torch.optim.swa_utils.update_bn)
    state = torch.get_rng_state()
    assert not checks.check_batch_norm_train(WRONG["batch_norm_train"]["calls_F_batch_norm"])
    assert not checks.check_recalibrate(WRONG["recalibrate"]["calls_update_bn"])
    assert checks.check_layer_norm(solved["layer_norm"])
    assert (F.batch_norm, torch.batch_norm, F.layer_norm, torch.optim.swa_utils.update_bn) == originals
    assert torch.equal(torch.get_rng_state(), state)


def test_results_are_deterministic():
    wrong = WRONG["batch_norm_train"]["eps_outside_sqrt"]
    assert str(checks.check_batch_norm_train(wrong)) == str(checks.check_batch_norm_train(wrong))


@pytest.mark.parametrize("ex", EXERCISES, ids=[ex.stem for ex in EXERCISES])
def test_solution_notebook_structure(ex):
    nb = nbformat.read(SOLUTIONS_DIR / ex.filename, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
    assert nb.metadata["coursekit"] == {"lesson": ex.lesson}
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    assert ids[0] == "setup" and "coursekit.setup_notebook(" in nb.cells[0].source
    assert "from coursekit import checks" in nb.cells[0].source
    cells = {c.id: c for c in nb.cells}
    for task in ex.tasks:
        answer, check = cells[task.answer_cell], cells[task.check_cell]
        assert ids.index(task.check_cell) == ids.index(task.answer_cell) + 1
        assert answer.source.count("### BEGIN SOLUTION") == answer.source.count("### END SOLUTION") >= 1
        assert f"checks.check_{task.name}({task.name})" in check.source
        # stored executed: the check's verdict is in the notebook, and it is a pass
        shown = [o["data"]["text/plain"] for o in check.get("outputs", []) if o.get("output_type") == "execute_result"]
        assert shown and shown[0].startswith(f"✔ {task.name}: "), shown
    if ex.lesson == "04":
        assert "def batch_norm_forward(x, gamma, beta, eps=1e-5)" in cells["given-batch_norm_forward"].source
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = str(out)
            assert "/tmp/" not in text and "/root/" not in text and "/work/" not in text


# Other correct answers a learner may write: a check must not fail them on rounding or style.
def _cs_moments(x):
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims)
    return mean, (x * x).mean(dims) - mean * mean


def _bn_var_mean_rsqrt(x, gamma, beta, eps=1e-5):
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dims, unbiased=False, keepdim=True)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = gamma.reshape(shape) * torch.rsqrt(var + eps)
    return x * scale + (beta.reshape(shape) - mean * scale)


def _ln_var_mean(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    flat = x.reshape(*x.shape[:x.dim() - len(shape)], -1)
    var, mean = torch.var_mean(flat, -1, unbiased=False, keepdim=True)
    y = ((flat - mean) * torch.rsqrt(var + eps)).reshape(x.shape)
    return y * (weight if weight is not None else 1) + (bias if bias is not None else 0)


def _freeze_with_hook(model):
    def keep_eval(module, args):
        module.training = False
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
            m.register_forward_pre_hook(keep_eval)
    return model


def _predict_inference_mode(model, x):
    flags = {m: m.training for m in model.modules()}
    try:
        with torch.inference_mode():
            return model.eval()(x)
    finally:
        for m, flag in flags.items():
            m.training = flag


def _fold_conv_rebuilt(conv, bn):
    new = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                     padding_mode=conv.padding_mode, dtype=conv.weight.dtype)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        new.weight.copy_(conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1)))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new.bias.copy_((b - bn.running_mean) * scale + bn.bias)
    return new


ALTERNATIVES = [("channel_stats", _cs_moments), ("batch_norm_train", _bn_var_mean_rsqrt),
                ("layer_norm", _ln_var_mean), ("freeze_batchnorm", _freeze_with_hook),
                ("predict", _predict_inference_mode), ("fold_conv_bn", _fold_conv_rebuilt)]


@pytest.mark.parametrize("task,fn", ALTERNATIVES, ids=[f.__name__ for _, f in ALTERNATIVES])
def test_other_correct_answers_pass(task, fn):
    result = CHECKS[task](fn)
    assert result.passed, str(result)
