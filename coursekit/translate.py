"""``coursekit translate``: the course in other languages, one English source, one derived edition each.

``i18n/<lang>/notebooks/<stem>.po`` (lessons) and ``i18n/<lang>/solutions/<stem>.po`` (exercises) are
gettext catalogues (polib) with one entry per markdown cell: ``msgctxt`` is the cell id, ``msgid`` the
English cell source, ``msgstr`` the translation. ``coursekit translate extract`` creates and updates
them; an entry whose English cell changed keeps its translation, marked ``fuzzy`` with the old English
as ``#| msgid``, and a removed cell's entry goes obsolete. ``coursekit translate build`` writes
``notebooks/<lang>/`` and ``exercises/<lang>/`` for every notebook with a translation: the English
notebook (for exercises, the built exercise) with every current translation swapped in; code cells,
ids, tags, metadata and stored outputs unchanged; relative links pointed at the translated notebooks;
in exercises one more line in the setup cell, ``set_language(<lang>)`` (:mod:`coursekit.i18n`). A
missing or stale translation falls back to the English cell; ``--check`` fails when an edition differs
from what the build would write. Nothing in an edition is edited by hand; a learner's edited exercise
is never overwritten (``--force`` keeps a backup).

:func:`translation_problems` is the rule a translation keeps: every number, inline code span, code
block, LaTeX formula, link target and code name (``F.batch_norm``, ``running_mean``, ``BatchNorm2d``,
``.detach()``, ``unbiased=False``) of the English appears in it unchanged, and each glossary term of
the English prose appears as the glossary's translation (``i18n/<lang>/glossary.tsv``).
``i18n/<lang>/complete.txt`` lists the notebooks declared fully translated.

Example::

    >>> from coursekit import translate
    >>> translate.translation_problems("the mean of 3 values", "3 个值的平均")
    ["'mean' in the English, but none of 均值 in the translation"]

Introduced in the Chinese lesson 00 (its glossary). Described in CONTRIBUTING.md.
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from coursekit.i18n import catalogue_file, extract_messages, normalize_language

__all__ = [
    "GLOSSARY_MARKER", "Term", "glossary", "glossary_markdown", "code_tokens", "translation_problems",
    "source_notebooks", "catalogue_path", "extract", "Finding", "findings", "complete_notebooks",
    "EditionReport", "build_edition", "add_arguments", "run",
]

GLOSSARY_MARKER = "<!-- glossary -->"


# --------------------------------------------------------------------------- glossary and the rule

@dataclass(frozen=True)
class Term:
    """One glossary row: the English term, its translations (the first preferred), the English pattern it enforces."""

    english: str
    translations: tuple[str, ...]
    pattern: str  # regex on English prose (case-insensitive); "" = listed, not enforced


@functools.cache
def _glossary(path: Path) -> tuple[Term, ...]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return tuple(Term(en, tuple(zh.split("|")), pat) for en, zh, pat in rows)


def glossary(lang: str = "zh-CN", root: Path | None = None) -> tuple[Term, ...]:
    """The terminology of ``lang``'s edition, from ``i18n/<lang>/glossary.tsv`` (columns english, translations, pattern)."""
    return _glossary(_root(root) / "i18n" / normalize_language(lang) / "glossary.tsv")


def glossary_markdown(lang: str = "zh-CN", root: Path | None = None) -> str:
    """The glossary as a markdown table; a translation holding ``<!-- glossary -->`` gets it there."""
    def shown(t: Term) -> str:  # a short form the check also accepts (无偏 for 无偏方差) is not shown
        return " / ".join(z for z in t.translations if not any(z != o and z in o for o in t.translations))

    rows = [f"| {shown(t)} | {t.english} |" for t in glossary(lang, root)]
    return "\n".join(["| 中文 | English |", "|---|---|", *rows])


_FENCE_OR_CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
_LINK_TARGET = re.compile(r"\]\(([^)\s]+)\)")
_NAME = re.compile(
    r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+\b(?:\(\))?"  # dotted: F.batch_norm, nn.Module, torch.var
    r"|\b\w*_\w+\b"  # snake_case: running_mean, num_features
    r"|\b[A-Za-z]+\d+[A-Za-z]*\b"  # with digits: BatchNorm2d, Conv2d
    r"|\b[A-Z][a-z]+(?:[A-Z][a-z0-9]*)+\b"  # CamelCase: PyTorch, LayerNorm
    r"|(?<![\w.])\.[A-Za-z_]\w*\(\)"  # a method: .detach(), .item()
    r"|\b[A-Za-z_]\w*=[\w.+-]+"  # a keyword argument: unbiased=False, eps=1e-5
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _is_name(token: str) -> bool:
    return not all(len(part) == 1 for part in token.rstrip("()").split("."))  # "e.g", "i.e" are prose


def code_tokens(text: str, translatable: tuple[str, ...] = ()) -> tuple[set[str], Counter, str]:
    """What a translation must keep verbatim: ``(literals, numbers, prose)``.

    ``literals`` are inline code, code blocks, LaTeX math, link targets and code names; ``numbers``
    counts the numerals of the remaining prose (a translation keeps at least as many of each);
    ``prose`` is that text with literals blanked. ``translatable`` are regexes of glossary terms:
    a CamelCase name they match (``BatchNorm`` the technique) is prose, not a code name.
    """
    literals: set[str] = set()

    def take(match: re.Match) -> str:
        literals.add(match.group(0))
        return " "

    text = _MATH.sub(take, _FENCE_OR_CODE.sub(take, text))
    literals.update(_LINK_TARGET.findall(text))
    text = _LINK_TARGET.sub("]( )", text)
    for name in _NAME.findall(text):
        if _is_name(name) and not any(re.fullmatch(p, name, re.I) for p in translatable if p):
            literals.add(name)
            text = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w])", " ", text)
    return literals, Counter(_NUMBER.findall(text)), text


def translation_problems(english: str, translation: str, lang: str = "zh-CN", root: Path | None = None) -> list[str]:
    """Why ``translation`` does not keep what it must of ``english`` (empty list: it does).

    Each problem names the number, literal or glossary term the translation drops or changes.
    """
    terms = glossary(lang, root)
    literals, numbers, prose = code_tokens(english, tuple(t.pattern for t in terms))
    problems = [f"drops or changes {tok!r}" for tok in sorted(literals)
                if not re.search(rf"(?<![A-Za-z0-9_.]){re.escape(tok)}(?![A-Za-z0-9_])", translation)]
    _, got_numbers, _ = code_tokens(translation)
    problems += [f"drops or changes the number {n} ({numbers[n]} times in the English, {got_numbers[n]} here)"
                 for n in sorted(numbers) if got_numbers[n] < numbers[n]]
    for t in terms:
        if t.pattern and re.search(t.pattern, prose, re.I) and not any(zh in translation for zh in t.translations):
            problems.append(f"'{t.english}' in the English, but none of {'/'.join(t.translations)} in the translation")
    return problems


# --------------------------------------------------------------------------- catalogues

def _root(root: Path | None) -> Path:
    from coursekit.build import find_repo_root

    return Path(root) if root is not None else find_repo_root()


def source_notebooks(root: Path | None = None) -> list[str]:
    """The English notebooks that have editions, relative to the repository: lessons, then solutions."""
    root = _root(root)
    return [f"{d}/{p.name}" for d in ("notebooks", "solutions") for p in sorted((root / d).glob("*.ipynb"))
            if ".backup-" not in p.name]


def catalogue_path(source: str, lang: str = "zh-CN", root: Path | None = None) -> Path:
    """``i18n/<lang>/<notebooks|solutions>/<stem>.po`` of the English notebook ``source``."""
    src = Path(source)
    return _root(root) / "i18n" / normalize_language(lang) / src.parent.name / (src.stem + ".po")


def _markdown(nb, source: str) -> list[tuple[str, str]]:
    """``(cell id, English text)`` of every markdown cell; a cell without an id cannot be keyed."""
    from coursekit.build import _source

    cells = [(c.get("id"), _source(c)) for c in nb.cells if c.cell_type == "markdown"]
    if any(not cid for cid, _ in cells):
        raise ValueError(f"{source}: expected an id on every markdown cell (nbformat 4.5); got a cell without one")
    return cells


def _load(path: Path, lang: str):
    import polib

    if path.is_file():
        return polib.pofile(str(path), wrapwidth=0)
    po = polib.POFile(wrapwidth=0)
    po.metadata = {"Project-Id-Version": "coursekit", "Language": lang.replace("-", "_"),
                   "MIME-Version": "1.0", "Content-Type": "text/plain; charset=UTF-8",
                   "Content-Transfer-Encoding": "8bit"}
    return po


def _update(po, source: str, cells: list[tuple[str, str]]) -> None:
    """Entries in cell order; a changed English cell keeps its translation as fuzzy; a removed cell's entry goes obsolete."""
    import polib

    by_id = {e.msgctxt: e for e in po}
    entries = []
    for cid, text in cells:
        entry = by_id.pop(cid, None) or polib.POEntry(msgctxt=cid, msgid=text, msgstr="")
        if entry.msgid != text:
            entry.previous_msgid, entry.msgid = entry.msgid, text
            if entry.msgstr and "fuzzy" not in entry.flags:
                entry.flags.append("fuzzy")
        entry.obsolete = False
        entry.occurrences = [(source, cid)]
        entries.append(entry)
    for entry in by_id.values():
        entry.obsolete = True
        entries.append(entry)
    po[:] = entries


def extract(lang: str = "zh-CN", root: Path | None = None) -> list[Path]:
    """Create or update every notebook's catalogue from the English markdown cells; returns the files changed."""
    from coursekit.build import read_notebook

    root, lang = _root(root), normalize_language(lang)
    changed = []
    for source in source_notebooks(root):
        path = catalogue_path(source, lang, root)
        po = _load(path, lang)
        before = str(po) if path.is_file() else None
        _update(po, source, _markdown(read_notebook(root / source), source))
        if str(po) != before:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(po) + "\n", encoding="utf-8")
            changed.append(path)
    return changed


@dataclass(frozen=True)
class Finding:
    """One cell of one notebook whose translation is missing, stale or breaks :func:`translation_problems`."""

    notebook: str
    cell: str
    kind: str  # "missing", "stale" or "broken" (drops a number, code name, formula, link or term)
    problem: str

    def __str__(self) -> str:
        return f"{self.notebook}: cell {self.cell}: {self.problem}"


def _translations(source: str, lang: str, root: Path) -> dict[str, object]:
    path = catalogue_path(source, lang, root)
    return {e.msgctxt: e for e in _load(path, lang) if not e.obsolete} if path.is_file() else {}


def findings(source: str, lang: str = "zh-CN", root: Path | None = None) -> list[Finding]:
    """Every markdown cell of ``source`` without a current translation that keeps numbers, code and terms."""
    from coursekit.build import read_notebook

    root, lang = _root(root), normalize_language(lang)
    entries = _translations(source, lang, root)
    out = []
    for cid, text in _markdown(read_notebook(root / source), source):
        entry = entries.get(cid)
        if entry is None or not entry.msgstr:
            out.append(Finding(source, cid, "missing", "no translation (run `coursekit translate extract`, then translate)"))
        elif entry.msgid != text or entry.fuzzy:
            out.append(Finding(source, cid, "stale", "stale: the English cell changed since it was translated"))
        else:
            out += [Finding(source, cid, "broken", p) for p in translation_problems(text, entry.msgstr, lang, root)]
    return out


def complete_notebooks(lang: str = "zh-CN", root: Path | None = None) -> list[str]:
    """The notebooks ``i18n/<lang>/complete.txt`` declares fully translated (``#`` starts a comment)."""
    path = _root(root) / "i18n" / normalize_language(lang) / "complete.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [s for s in (line.split("#")[0].strip() for line in lines) if s]


# --------------------------------------------------------------------------- editions

def _edition_of(source: str, lang: str) -> str:
    """``notebooks/x.ipynb`` -> ``notebooks/<lang>/x.ipynb``; ``solutions/x`` -> ``exercises/<lang>/x``."""
    folder, name = source.split("/")
    return f"{'exercises' if folder == 'solutions' else folder}/{lang}/{name}"


def _relink(text: str, english_dir: str, edition_dir: str, built: dict[str, str]) -> str:
    """Relative link targets, written as in the English notebook, pointed from the edition's folder."""
    def target(match: re.Match) -> str:
        href = match.group(1)
        if re.match(r"[a-z]+:|#|/", href):
            return match.group(0)
        path, _, anchor = href.partition("#")
        english = os.path.normpath(os.path.join(english_dir, path))
        new = os.path.relpath(built.get(english, english), edition_dir)
        return f"]({new}{'#' + anchor if anchor else ''})"

    return _LINK_TARGET.sub(target, text)


def _translate(nb, source: str, lang: str, root: Path, built: dict[str, str]):
    """A copy of ``nb`` with the current translations of ``source``'s catalogue in its markdown cells."""
    entries = _translations(source, lang, root)
    english_dir = "exercises" if source.startswith("solutions/") else source.split("/")[0]
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        entry = entries.get(cell.get("id"))
        if cell.cell_type == "markdown" and entry and entry.msgstr and not entry.fuzzy and entry.msgid == cell.source:
            text = entry.msgstr.replace(GLOSSARY_MARKER, glossary_markdown(lang, root))
            cell.source = _relink(text, english_dir, str(Path(_edition_of(source, lang)).parent), built)
    nb.metadata.setdefault("coursekit", {})["lang"] = lang
    return nb


def _set_language_in_setup(nb, lang: str) -> None:
    """The first code cell (the setup cell) ends with ``set_language(lang)``: checks answer in the edition's language."""
    setup = next((c for c in nb.cells if c.cell_type == "code"), None)
    if setup is None:
        raise ValueError("an exercise notebook needs a setup cell (a first code cell); got none")
    setup.source = setup.source.rstrip("\n") + f'\n\nfrom coursekit.i18n import set_language\nset_language("{lang}")'


def _edition_text(source: str, lang: str, root: Path, built: dict[str, str]) -> str:
    import nbformat

    from coursekit.build import build_notebook, content_hash, read_notebook

    nb = read_notebook(root / source)
    if source.startswith("solutions/"):
        nb = build_notebook(nb, source)
        nb = _translate(nb, source, lang, root, built)
        _set_language_in_setup(nb, lang)
        nb.metadata["coursekit"]["build"]["hash"] = content_hash(nb)  # a learner's edit is then told from the build
    else:
        nb = _translate(nb, source, lang, root, built)
        nb.metadata["coursekit"]["translation"] = {"source": source, "hash": content_hash(nb)}
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


@dataclass
class EditionReport:
    """What :func:`build_edition` wrote (or, with ``check``, found out of date)."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stale and not self.refused


def _edited_by_hand(path: Path) -> bool:
    from coursekit.build import content_hash, read_notebook

    try:
        meta = read_notebook(path).metadata.get("coursekit", {})
        recorded = (meta.get("build") or meta.get("translation") or {}).get("hash")
        return recorded != content_hash(read_notebook(path))
    except Exception:  # unreadable: someone's work, never overwritten silently
        return True


def _translated_sources(lang: str, root: Path) -> list[str]:
    """Notebooks with at least one translated entry: only these get an edition."""
    return [s for s in source_notebooks(root) if any(e.msgstr for e in _translations(s, lang, root).values())]


def build_edition(lang: str = "zh-CN", root: Path | None = None, check: bool = False, force: bool = False) -> EditionReport:
    """Write (``check``: compare) ``notebooks/<lang>/`` and ``exercises/<lang>/`` for every translated notebook.

    Args:
        lang: the edition's language. Default: ``"zh-CN"``.
        root: the repository. Default: found from the working directory.
        check: write nothing; an edition that differs, is missing or has no source is ``stale``. Default: False.
        force: replace an edition a learner has edited (a timestamped backup is kept). Default: False.
    """
    from coursekit.build import _backup_path

    root, lang = _root(root), normalize_language(lang)
    sources = _translated_sources(lang, root)
    built = {s if s.startswith("notebooks/") else "exercises/" + s.split("/")[1]: _edition_of(s, lang) for s in sources}
    report = EditionReport()
    for source in sources:
        dest = root / _edition_of(source, lang)
        text = _edition_text(source, lang, root, built)
        current = dest.read_text(encoding="utf-8") if dest.is_file() else None
        edited = current is not None and _edited_by_hand(dest)
        if current == text:
            report.unchanged.append(str(dest))
        elif check or (edited and not force):
            (report.stale if check else report.refused).append(str(dest))
        else:
            if edited:
                backup = _backup_path(dest)
                backup.write_text(current, encoding="utf-8")
                report.backups.append(str(backup))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            report.written.append(str(dest))
    expected = {str(root / _edition_of(s, lang)) for s in sources}
    for folder in ("notebooks", "exercises"):
        report.stale += [f"{p} (no source)" for p in sorted((root / folder / lang).glob("*.ipynb"))
                         if str(p) not in expected and ".backup-" not in p.name]
    return report


# --------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``coursekit translate``."""
    parser.add_argument("action", choices=("extract", "build", "status"),
                        help="extract: update i18n/<lang>/*.po from the English notebooks and coursekit's messages "
                             "catalogue from its _() calls; build: write the edition; "
                             "status: list missing, stale and broken translations")
    parser.add_argument("--lang", default="zh-CN", help="the edition's language (default: zh-CN)")
    parser.add_argument("--check", action="store_true", help="build: write nothing; exit 1 if the edition is out of date")
    parser.add_argument("--force", action="store_true", help="build: replace an edition a learner edited (backup kept)")


def run(args: argparse.Namespace) -> int:
    """``coursekit translate``: 0 on success, 1 when the edition is stale (--check) or refused, 2 on bad input."""
    try:
        return _run(args, normalize_language(args.lang))
    except ValueError as exc:  # a bad --lang, a cell without an id, a solution the build refuses
        print(f"coursekit translate: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, lang: str) -> int:
    if args.action == "extract":
        for path in extract(lang):
            print(f"updated    {path}")
        if extract_messages(lang):
            print(f"updated    {catalogue_file(lang)}")
        return 0
    if args.action == "status":
        for source in source_notebooks():
            found = findings(source, lang)
            print(f"{source}: {'complete' if not found else f'{len(found)} cells to do'}")
        return 0
    report = build_edition(lang, check=args.check, force=args.force)
    for kind in ("written", "backups", "stale", "refused"):
        for p in getattr(report, kind):
            print(f"{kind:<10} {p}")
    if args.check:
        print(f"{len(report.unchanged)} up to date, {len(report.stale)} out of date"
              + (": run `coursekit translate build`" if report.stale else ""))
    return 0 if report.ok else 1
