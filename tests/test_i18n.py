"""coursekit.i18n: coursekit's messages in the learner's language, English untouched.

English returns the very string it was given (byte-identical output); Chinese comes from the catalogue
read at run time; every translation in the catalogue keeps the placeholders, numbers and code names of
its English (shown failing on broken entries); ``coursekit translate extract`` adds each ``_("...")`` of
the source to the catalogue; every hint a known wrong answer (tests/wrong_answers.py) gets from its check
has a current Chinese translation, and a hint missing from the catalogue is reported with the answer's name.
"""
import shutil
from pathlib import Path

import polib
import pytest
from wrong_answers import WRONG

from coursekit import i18n, translate
from coursekit.verdicts import hint_text

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = ROOT / "coursekit/locale/zh_CN/LC_MESSAGES/coursekit.po"


@pytest.fixture(autouse=True)
def _english_afterwards():
    yield
    i18n.set_language("en")


# --------------------------------------------------------------------------- coursekit's messages

def test_english_messages_are_returned_unchanged():
    message = "✔ {task}: {passed}/{total} cases passed"
    assert i18n.get_language() == "en" and i18n.gettext(message) is message and i18n._ is i18n.gettext


def test_chinese_messages_come_from_the_catalogue_and_unknown_ones_stay_english():
    i18n.set_language("zh-CN")
    assert i18n._("hint:") == "提示："
    assert i18n._("✔ {task}: {passed}/{total} cases passed").format(task="f", passed=3, total=3) == "✔ f：3/3 个用例通过"
    assert i18n._("no such message") == "no such message"


def test_language_is_validated_and_restored():
    with pytest.raises(ValueError, match=r"expected one of en, zh-CN; got 'fr'"):
        i18n.set_language("fr")
    with i18n.using_language("zh_CN"):
        assert i18n.get_language() == "zh-CN"
    assert i18n.get_language() == "en"


def _message_problems(entry) -> list[str]:
    fields, got = i18n.placeholders(entry.msgid), i18n.placeholders(entry.msgstr)
    problems = [f"placeholders {sorted(fields)} became {sorted(got)}"] if fields != got else []
    return problems + translate.translation_problems(entry.msgid, entry.msgstr, root=ROOT)


def test_every_message_translation_keeps_placeholders_numbers_and_code_names():
    po = polib.pofile(str(MESSAGES))
    assert po.translated_entries()
    for entry in po:
        assert not _message_problems(entry), (entry.msgid, _message_problems(entry))


@pytest.mark.parametrize("msgid, msgstr", [
    ("✔ {task}: {passed}/{total} cases passed", "✔ {task}：{passed} 个用例通过"),
    ("use torch operations on x only (no .detach())", "只对 x 使用 torch 运算"),
    ("return the variance, not the standard deviation", "返回标准差"),
])
def test_a_broken_message_translation_is_caught(msgid, msgstr):
    assert _message_problems(polib.POEntry(msgid=msgid, msgstr=msgstr))




def test_extract_adds_each_message_of_the_source_untranslated_and_keeps_the_rest(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text('from coursekit.i18n import _\nx = _("hint:")\ny = _("{n} new cases").format(n=1)\nz = f(\"no\")\n')
    catalogue = tmp_path / "coursekit.po"
    shutil.copy(MESSAGES, catalogue)
    assert i18n.source_messages(pkg) == {"hint:": [("pkg/m.py", "2")], "{n} new cases": [("pkg/m.py", "3")]}
    assert i18n.extract_messages("zh-CN", pkg, catalogue) is True
    entries = {e.msgid: e for e in polib.pofile(str(catalogue))}
    assert entries["{n} new cases"].msgstr == "" and entries["hint:"].msgstr == "提示："
    assert len(entries) == len(polib.pofile(str(MESSAGES))) + 1  # nothing dropped
    assert i18n.extract_messages("zh-CN", pkg, catalogue) is False


def test_every_message_coursekit_marks_is_in_the_catalogue():
    """After the lead wires _() into checks and grader, `coursekit translate extract` keeps this true."""
    known = {e.msgid for e in polib.pofile(str(MESSAGES))}
    missing = sorted(set(i18n.source_messages()) - known)
    assert not missing, f"run `coursekit translate extract`: {missing}"


# --------------------------------------------------------------------------- the hints of the known wrong answers

@pytest.fixture(scope="module")
def wrong_answer_hints() -> dict[str, list[str]]:
    """``{hint: ["task/answer", ...]}``: every known wrong answer run once through its check cell's check."""
    from coursekit.checks import CHECKS

    hints: dict[str, list[str]] = {}
    for task, answers in WRONG.items():
        for name, answer in answers.items():
            hint = CHECKS[task](answer).hint
            if hint:
                hints.setdefault(hint, []).append(f"{task}/{name}")
    return hints


def _hint_problems(hints: dict[str, list[str]]) -> list[str]:
    """Each hint without a usable zh-CN translation, named by the first wrong answer that gets it."""
    problems = []
    with i18n.using_language("zh-CN"):
        for hint, answers in sorted(hints.items()):
            chinese = hint_text(hint)  # as the learner reads it: its own entry, else its template's
            if chinese == hint:
                problems.append(f"{answers[0]}: no zh-CN translation of {hint!r}")
                continue
            problems += [f"{answers[0]}: {p}" for p in _message_problems(polib.POEntry(msgid=hint, msgstr=chinese))]
    return problems


def test_every_wrong_answer_hint_has_a_chinese_translation_keeping_its_code_names(wrong_answer_hints):
    """The Chinese exercises' known-wrong-answer hints are Chinese (non-empty, not fuzzy, code names kept)."""
    assert {answer.split("/")[0] for answers in wrong_answer_hints.values() for answer in answers} == set(WRONG)
    assert not _hint_problems(wrong_answer_hints), "\n".join(_hint_problems(wrong_answer_hints))


def test_a_hint_missing_fuzzy_or_broken_in_the_catalogue_is_reported_by_answer(wrong_answer_hints, tmp_path, monkeypatch):
    """Removed, fuzzy and number-dropping entries each fail the test above, naming the wrong answer."""
    po = polib.pofile(str(MESSAGES), wrapwidth=0)
    entries = {e.msgid: e for e in po}
    own = [h for h in wrong_answer_hints if h in entries and i18n.placeholders(h) == set() and "1" in h]
    removed, fuzzy, broken = sorted(own)[:3]
    po.remove(entries[removed])
    entries[fuzzy].flags.append("fuzzy")
    entries[broken].msgstr = entries[broken].msgstr.replace("1", "")
    po.save(str(tmp_path / "coursekit.po"))
    monkeypatch.setattr(i18n, "catalogue_file", lambda lang: tmp_path / "coursekit.po")
    i18n.message_catalogue.cache_clear()
    i18n._templates.cache_clear()
    try:
        problems = _hint_problems(wrong_answer_hints)
    finally:
        monkeypatch.undo()
        i18n.message_catalogue.cache_clear()
        i18n._templates.cache_clear()
    named = {problem.split(": ", 1)[0] for problem in problems}
    assert len(problems) == 3 and named == {wrong_answer_hints[h][0] for h in (removed, fuzzy, broken)}, problems
    assert any(p.startswith(wrong_answer_hints[broken][0] + ": ") and "the number 1" in p for p in problems), problems


# ------------------------------------------------------------------ the verdicts a learner reads, in Chinese
def test_a_check_speaks_the_exercise_language():
    """The check cell's verdict of a known wrong answer: in a Chinese exercise (``set_language("zh-CN")``)
    its frame, case summary and hint come from the catalogue; in English the same result prints as before."""
    from coursekit.checks import CHECKS

    wrong = WRONG["batch_norm_train"]["unbiased_variance"]
    english = CHECKS["batch_norm_train"](wrong)
    assert english.summary().startswith("✘ batch_norm_train: case 1") and " — hint: " in english.summary()
    with i18n.using_language("zh-CN"):
        chinese = CHECKS["batch_norm_train"](wrong)
        line, html = chinese.summary(), chinese._repr_html_()
    assert line.startswith("✘ batch_norm_train：用例 1") and " — 提示：" in line, line
    assert i18n.message_catalogue("zh-CN")[english.hint] in line and "个用例" in line
    assert "提示：" in html and english.hint not in html
    assert str(CHECKS["batch_norm_train"](wrong)) == english.summary()  # the language was restored


def test_the_grader_writes_feedback_in_the_notebooks_language():
    """``coursekit grade`` reads the edition's language from the notebook (``metadata.coursekit.lang``):
    the hint it records is Chinese for a Chinese exercise, English otherwise, and an unknown tag is English
    (the tag is the learner's to edit: it changes words, never a score)."""
    import nbformat

    from coursekit.grader.grade import _feedback_language, _Grading
    from coursekit.tasks import TASKS
    from coursekit.verdicts import Feedback

    task = next(t for t in TASKS.values() if t.name == "batch_norm_train")
    hint = "normalize with the biased variance (unbiased=False)"
    recorded = {}
    for lang in ("zh-CN", "en", "xx"):
        nb = nbformat.v4.new_notebook(metadata={"coursekit": {"lang": lang}})
        g = _Grading(Path("x.ipynb"), Path("."), 1.0, 1.0, {task.name: task})
        with i18n.using_language(_feedback_language(nb)):
            g.settle(task.name, Feedback("fail", "wrong", "case 1", hint))
        recorded[lang] = g.results[task.name].hint
    assert recorded["zh-CN"] == i18n.message_catalogue("zh-CN")[hint] != hint
    assert recorded["en"] == recorded["xx"] == hint


def test_a_hint_written_with_an_f_string_is_translated_through_its_template():
    """A value never catalogued gets the template's Chinese with the value kept; an entry of its own wins over
    the template; a template's short pattern never claims another text; English stays as written."""
    hint = "do not call torch.some_new_norm: the task is to re-implement it"
    with i18n.using_language("zh-CN"):
        assert hint_text(hint) == "不要调用 torch.some_new_norm：本任务就是要重新实现它"
        own = "do not call forward-mode AD: the task is to re-implement it"
        assert hint_text(own) == "不要调用前向模式 AD：本任务就是要重新实现它"
        untranslated = "an English hint nobody translated"
        assert hint_text("f: 3") == "f: 3" and hint_text(untranslated) == untranslated
    assert hint_text(hint) == hint
