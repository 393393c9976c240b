"""coursekit's own messages in the learner's language: check verdicts, hints, the grader's feedback.

The catalogue is ``coursekit/locale/<ll_CC>/LC_MESSAGES/coursekit.po`` (gettext, read with polib at run
time, so no compiled ``.mo`` is kept). :func:`gettext` (alias ``_``) returns its argument itself in
English, so English output stays byte-identical; in another language it returns the translation, or the
English text when there is none. Format after translating, so the placeholders travel with the text.
The Chinese exercise notebooks' setup cell calls ``set_language("zh-CN")``; the grader can write one
notebook's feedback in that notebook's language with ``using_language(notebook_language(nb))``.
``coursekit translate extract`` adds every ``_("...")`` of coursekit's source to the catalogue
(:func:`extract_messages`). The notebooks' own translations are :mod:`coursekit.translate`'s.

Example::

    >>> from coursekit import i18n
    >>> i18n.set_language("zh-CN")
    >>> i18n._("✔ {task}: {passed}/{total} cases passed").format(task="f", passed=3, total=3)
    '✔ f：3/3 个用例通过'

Introduced in the Chinese exercise notebooks (their setup cell). Described in CONTRIBUTING.md.
"""
from __future__ import annotations

import ast
import functools
import re
import string
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LANGUAGES", "DEFAULT_LANGUAGE", "normalize_language", "set_language", "get_language", "using_language",
    "gettext", "_", "gettext_filled", "notebook_language", "message_catalogue", "catalogue_file", "source_messages",
    "extract_messages", "placeholders",
]

LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"
_PACKAGE = Path(__file__).parent
_language = DEFAULT_LANGUAGE


def normalize_language(lang: str) -> str:
    """The course's spelling of a language tag (``"zh_CN"``, ``"zh-cn"`` -> ``"zh-CN"``).

    Raises:
        ValueError: a language the course has no edition for (names the ones it has).
    """
    known = {code.lower(): code for code in LANGUAGES}
    got = str(lang).replace("_", "-").lower()
    if got not in known:
        raise ValueError(f"language: expected one of {', '.join(LANGUAGES)}; got {lang!r}")
    return known[got]


def set_language(lang: str) -> None:
    """Make :func:`gettext` answer in ``lang`` (the Chinese exercises' setup cell calls ``set_language("zh-CN")``)."""
    global _language
    _language = normalize_language(lang)


def get_language() -> str:
    """The language :func:`gettext` answers in (default ``"en"``)."""
    return _language


@contextmanager
def using_language(lang: str):
    """``with using_language("zh-CN"): ...``: the grader writes one notebook's feedback in its language."""
    before = _language
    set_language(lang)
    try:
        yield
    finally:
        set_language(before)


@functools.cache
def message_catalogue(lang: str) -> dict[str, str]:
    """``{English message: translation}`` of coursekit's messages in ``lang`` (translated, not fuzzy entries)."""
    import polib

    lang = normalize_language(lang)
    path = catalogue_file(lang)
    if lang == DEFAULT_LANGUAGE or not path.is_file():
        return {}
    return {e.msgid: e.msgstr for e in polib.pofile(str(path)).translated_entries() if not e.fuzzy}


def gettext(message: str) -> str:
    """``message`` in the current language; the English ``message`` itself when it has no translation.

    Format after translating, so the placeholders travel with the text:
    ``_("{task}: {passed}/{total} cases passed").format(...)``.
    """
    if _language == DEFAULT_LANGUAGE:
        return message
    return message_catalogue(_language).get(message, message)


_ = gettext


def gettext_filled(text: str) -> str:
    """``text``, a message already filled in (a hint written with an f-string, ``"do not call scipy: ..."``),
    in the current language: its own translation if the catalogue has one, else the translation of the
    template it fills (``"do not call {what}: ..."``), filled with the same values; else ``text``.

    A template matches only as a whole, and only one with a literal part of at least 8 characters, so a
    short pattern such as ``"{task}: {n}"`` never claims a hint.
    """
    if _language == DEFAULT_LANGUAGE:
        return text
    own = message_catalogue(_language).get(text)
    if own is not None:
        return own
    for pattern, translation in _templates(_language):
        m = pattern.fullmatch(text)
        if m:
            return translation.format(**m.groupdict())
    return text


@functools.cache
def _templates(lang: str) -> list[tuple[re.Pattern, str]]:
    out = []
    for msgid, msgstr in message_catalogue(lang).items():
        parts = list(string.Formatter().parse(msgid))
        fields = [f for _, f, _, _ in parts if f is not None]
        if not fields or len(set(fields)) != len(fields) or max(len(lit) for lit, *_ in parts) < 8:
            continue
        regex = "".join(re.escape(lit) + (f"(?P<{f}>.+?)" if f is not None else "") for lit, f, _, _ in parts)
        out.append((re.compile(regex, re.S), msgstr))
    return out


def notebook_language(nb) -> str:
    """The language an edition was built in (``metadata.coursekit.lang``), ``"en"`` for the English source."""
    return normalize_language(nb.metadata.get("coursekit", {}).get("lang", DEFAULT_LANGUAGE))


def catalogue_file(lang: str) -> Path:
    """``coursekit/locale/<ll_CC>/LC_MESSAGES/coursekit.po``: coursekit's messages in ``lang``."""
    return _PACKAGE / "locale" / normalize_language(lang).replace("-", "_") / "LC_MESSAGES" / "coursekit.po"


def placeholders(message: str) -> set[str]:
    """The ``str.format`` fields of a message (``"{task}: {n}"`` -> ``{"task", "n"}``); a translation keeps them."""
    return {f for _, f, _, _ in string.Formatter().parse(message) if f is not None}


def source_messages(package: Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """``{message: [(file, line), ...]}`` of every ``_("...")`` or ``gettext("...")`` with a literal in the package.

    Args:
        package: the directory to scan. Default: coursekit's own.
    """
    package = Path(package or _PACKAGE)
    out: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("_", "gettext") and isinstance(node.args[0].value, str):
                where = (f"{package.name}/{path.relative_to(package)}", str(node.lineno))
                out.setdefault(node.args[0].value, []).append(where)
    return out


def extract_messages(lang: str, package: Path | None = None, catalogue: Path | None = None) -> bool:
    """Add each message of :func:`source_messages` missing from the catalogue (untranslated); True if it changed.

    Entries whose message is no longer in the source are kept (a translator removes them), so a
    catalogue can hold translations ahead of the code that uses them.
    """
    import polib

    path = Path(catalogue or catalogue_file(lang))
    po = polib.pofile(str(path), wrapwidth=0)
    before = str(po)
    known = {e.msgid: e for e in po}
    for message, where in source_messages(package).items():
        entry = known.get(message)
        if entry is None:
            entry = polib.POEntry(msgid=message, msgstr="")
            po.append(entry)
        entry.occurrences = where
    if str(po) == before:
        return False
    path.write_text(str(po) + "\n", encoding="utf-8")
    message_catalogue.cache_clear()
    return True
