"""coursekit.i18n: coursekit's messages in the learner's language, English untouched.

English returns the very string it was given (byte-identical output); Chinese comes from the catalogue
read at run time; every translation in the catalogue keeps the placeholders, numbers and code names of
its English (shown failing on broken entries); ``coursekit translate extract`` adds each ``_("...")`` of
the source to the catalogue.
"""
import shutil
from pathlib import Path

import polib
import pytest

from coursekit import i18n, translate

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
