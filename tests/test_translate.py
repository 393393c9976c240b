"""coursekit.translate: the Chinese edition is derived from the English source and says when it is behind.

The real course: every notebook declared translated (i18n/zh-CN/complete.txt) has a current translation
of every markdown cell; every current translation in any notebook keeps the English cell's numbers, code
names, formulas, links and glossary terms; notebooks/zh-CN and exercises/zh-CN are byte for byte what
``coursekit translate build`` writes. That is the whole of the suite's cost for the Chinese notebooks:
nbval does not re-run them (pyproject's --ignore), their code cells and stored outputs are the English
ones. The fixtures show each check failing where it must.
"""
import re
import shutil
from pathlib import Path

import nbformat
import polib
import pytest

from coursekit import i18n, translate
from coursekit.build import content_hash, read_notebook

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _english_afterwards():
    yield
    i18n.set_language("en")


# --------------------------------------------------------------------------- the real course

@pytest.mark.parametrize("source", translate.complete_notebooks(root=ROOT))
def test_declared_notebooks_are_translated_completely_and_currently(source):
    """Each notebook in complete.txt: every markdown cell translated, not stale, numbers/code/terms kept."""
    found = translate.findings(source, root=ROOT)
    assert not found, "\n".join(map(str, found))


@pytest.mark.parametrize("source", translate.source_notebooks(ROOT))
def test_every_current_translation_keeps_numbers_code_and_terms(source):
    """In every notebook, declared complete or not, a translated cell keeps what it must of the English."""
    broken = [f for f in translate.findings(source, root=ROOT) if f.kind == "broken"]
    assert not broken, "\n".join(map(str, broken))


def test_the_declared_list_names_real_notebooks():
    declared = translate.complete_notebooks(root=ROOT)
    assert declared and set(declared) <= set(translate.source_notebooks(ROOT)), declared


def test_the_edition_is_exactly_what_the_build_writes():
    """notebooks/zh-CN and exercises/zh-CN are current (an English change or a new translation makes them stale)."""
    report = translate.build_edition(root=ROOT, check=True)
    assert report.ok, "out of date (run `coursekit translate build`): " + ", ".join(report.stale + report.refused)
    assert report.unchanged, "no Chinese notebook was built"


def test_every_catalogue_names_its_cells_and_notebook():
    """Each .po entry is keyed by a cell id and points at its notebook (what translators' tools show)."""
    for source in translate.source_notebooks(ROOT):
        path = translate.catalogue_path(source, root=ROOT)
        if path.is_file():
            for entry in polib.pofile(str(path)):
                where = ":".join(filter(None, entry.occurrences[0]))  # polib splits a numeric cell id off as a line
                assert entry.msgctxt and where == f"{source}:{entry.msgctxt}", (path, entry.msgctxt)


def test_chinese_lesson_00_has_the_glossary_and_keeps_code_and_outputs():
    en = read_notebook(ROOT / "notebooks/00_start_here.ipynb")
    zh = read_notebook(ROOT / "notebooks/zh-CN/00_start_here.ipynb")
    assert [c.id for c in en.cells] == [c.id for c in zh.cells]
    assert [c for c in en.cells if c.cell_type == "code"] == [c for c in zh.cells if c.cell_type == "code"]
    text = "".join(c.source for c in zh.cells if c.cell_type == "markdown")
    for term in ("批归一化", "层归一化", "实例归一化", "组归一化", "均值", "方差", "无偏", "有偏", "动量", "通道",
                 "运行均值", "运行方差", "训练模式", "推理模式", "评估模式", "折叠", "融合"):
        assert f"| {term}" in text or f"/ {term}" in text, f"glossary row for {term} missing"
    assert i18n.notebook_language(zh) == "zh-CN" and i18n.notebook_language(en) == "en"


def test_chinese_exercise_is_the_built_exercise_with_translated_markdown():
    """Same cells, locks and tags as exercises/02; the setup cell adds set_language; the build hash holds."""
    en = read_notebook(ROOT / "exercises/02_bn_forward_exercises.ipynb")
    zh = read_notebook(ROOT / "exercises/zh-CN/02_bn_forward_exercises.ipynb")
    assert [(c.id, c.cell_type, c.metadata) for c in en.cells] == [(c.id, c.cell_type, c.metadata) for c in zh.cells]
    for a, b in zip(en.cells[1:], zh.cells[1:]):
        assert (a.source == b.source) == (a.cell_type == "code"), a.id
    assert zh.cells[0].source.startswith(en.cells[0].source)
    assert zh.metadata["coursekit"]["build"]["hash"] == content_hash(zh)
    namespace = {}
    exec(zh.cells[0].source, namespace)  # the setup cell, as the learner's kernel runs it
    assert i18n.get_language() == "zh-CN"


# --------------------------------------------------------------------------- the rule on translations

EN = ("Use `F.batch_norm` with eps 1e-5 on 3 channels, e.g. F.batch_norm or BatchNorm2d; "
      "the mean is $\\mu_B$ over 64 values ([lesson](02_x.ipynb)).")
ZH = ("对 3 个通道使用 `F.batch_norm`，eps 为 1e-5，例如 F.batch_norm 或 BatchNorm2d；"
      "均值为 $\\mu_B$，取自 64 个值（[课](02_x.ipynb)）。")


def test_a_faithful_translation_has_no_problem():
    assert translate.translation_problems(EN, ZH, root=ROOT) == []


@pytest.mark.parametrize("broken, expected", [
    (ZH.replace("64", "65"), "number 64"),
    (ZH.replace("3 个", "三个"), "number 3"),
    (ZH.replace("`F.batch_norm`", "`F.batchnorm`"), "'`F.batch_norm`'"),
    (ZH.replace("或 BatchNorm2d", "或 BatchNorm2d2"), "'BatchNorm2d'"),
    (ZH.replace("$\\mu_B$", "$\\mu$"), "'$\\\\mu_B$'"),
    (ZH.replace("(02_x.ipynb)", "(03_x.ipynb)"), "'02_x.ipynb'"),
    (ZH.replace("均值", "平均"), "'mean'"),
    (ZH.replace("通道", "频道"), "'channel'"),
])
def test_a_dropped_or_changed_number_code_name_formula_link_or_term_is_named(broken, expected):
    problems = translate.translation_problems(EN, broken, root=ROOT)
    assert any(expected in p for p in problems), problems


def test_the_technique_may_be_translated_but_a_code_name_may_not():
    """``BatchNorm`` in prose is the technique (批归一化 suffices); ``BatchNorm2d`` is a class name."""
    assert translate.translation_problems("BatchNorm keeps statistics.", "批归一化保留统计量。", root=ROOT) == []
    assert translate.translation_problems("Use BatchNorm2d.", "使用二维批归一化。", root=ROOT)


# --------------------------------------------------------------------------- extract, stale, build on fixtures

def _notebook(cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    return nb


def _write(path, nb):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.fixture
def repo(tmp_path):
    """A two-notebook course: a lesson with a stored output, and a solved exercise."""
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "i18n/zh-CN").mkdir(parents=True)
    shutil.copy(ROOT / "i18n/zh-CN/glossary.tsv", tmp_path / "i18n/zh-CN/glossary.tsv")
    out = nbformat.v4.new_output("stream", text="2.5\n")
    code = nbformat.v4.new_code_cell("print(2.5)", id="c1", outputs=[out], execution_count=1,
                                     metadata={"tags": ["t"]})
    _write(tmp_path / "notebooks/01_x.ipynb", _notebook([
        nbformat.v4.new_markdown_cell("# 01 · The mean\n\nSee [the exercise](../exercises/02_y.ipynb).", id="m0"),
        code,
        nbformat.v4.new_markdown_cell("One channel, 3 values.", id="m2"),
    ]))
    _write(tmp_path / "solutions/02_y.ipynb", _notebook([
        nbformat.v4.new_code_cell("import torch", id="setup"),
        nbformat.v4.new_markdown_cell("Write `f(x)`: 2 lines.", id="task-f-md"),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION", id="answer-f"),
    ]))
    return tmp_path


def _translate(root, source, texts):
    path = translate.catalogue_path(source, root=root)
    po = polib.pofile(str(path))
    for entry in po:
        if entry.msgctxt in texts:
            entry.msgstr = texts[entry.msgctxt]
    po.save(str(path))


ZH_01 = {"m0": "# 01 · 均值\n\n见[练习](../exercises/02_y.ipynb)。", "m2": "一个通道，3 个值。"}


def test_a_missing_translation_names_notebook_and_cell(repo):
    assert len(translate.extract(root=repo)) == 2
    found = translate.findings("notebooks/01_x.ipynb", root=repo)
    assert [(f.notebook, f.cell, f.kind) for f in found] == [("notebooks/01_x.ipynb", "m0", "missing"),
                                                             ("notebooks/01_x.ipynb", "m2", "missing")]
    assert "no translation" in str(found[0]) and "cell m0" in str(found[0])
    _translate(repo, "notebooks/01_x.ipynb", ZH_01)
    assert translate.findings("notebooks/01_x.ipynb", root=repo) == []


def test_a_changed_english_cell_makes_its_translation_stale_and_fuzzy(repo):
    translate.extract(root=repo)
    _translate(repo, "notebooks/01_x.ipynb", ZH_01)
    nb = read_notebook(repo / "notebooks/01_x.ipynb")
    nb.cells[2].source = "One channel, 4 values."
    _write(repo / "notebooks/01_x.ipynb", nb)
    found = translate.findings("notebooks/01_x.ipynb", root=repo)
    assert [(f.cell, f.kind) for f in found] == [("m2", "stale")]  # before extract: msgid differs
    assert translate.extract(root=repo) == [translate.catalogue_path("notebooks/01_x.ipynb", root=repo)]
    entry = {e.msgctxt: e for e in polib.pofile(str(translate.catalogue_path("notebooks/01_x.ipynb", root=repo)))}["m2"]
    assert entry.fuzzy and entry.msgstr == ZH_01["m2"] and entry.previous_msgid == "One channel, 3 values."
    assert [f.cell for f in translate.findings("notebooks/01_x.ipynb", root=repo)] == ["m2"]  # fuzzy is still stale
    assert translate.extract(root=repo) == []  # nothing more to update


def test_a_removed_cell_goes_obsolete_and_a_new_one_is_added_empty(repo):
    translate.extract(root=repo)
    nb = read_notebook(repo / "notebooks/01_x.ipynb")
    nb.cells[2] = nbformat.v4.new_markdown_cell("New.", id="m3")
    _write(repo / "notebooks/01_x.ipynb", nb)
    translate.extract(root=repo)
    po = polib.pofile(str(translate.catalogue_path("notebooks/01_x.ipynb", root=repo)))
    assert [e.msgctxt for e in po if not e.obsolete] == ["m0", "m3"] and [e.msgctxt for e in po.obsolete_entries()] == ["m2"]


def test_build_swaps_markdown_only_and_points_links_at_the_edition(repo):
    translate.extract(root=repo)
    _translate(repo, "notebooks/01_x.ipynb", ZH_01)
    _translate(repo, "solutions/02_y.ipynb", {"task-f-md": "写出 `f(x)`：2 行。"})
    report = translate.build_edition(root=repo)
    assert len(report.written) == 2 and report.ok
    en, zh = read_notebook(repo / "notebooks/01_x.ipynb"), read_notebook(repo / "notebooks/zh-CN/01_x.ipynb")
    assert zh.cells[1] == en.cells[1]  # code, output, execution count, tags
    assert zh.cells[0].source == "# 01 · 均值\n\n见[练习](../../exercises/zh-CN/02_y.ipynb)。"
    ex = read_notebook(repo / "exercises/zh-CN/02_y.ipynb")
    assert "raise NotImplementedError()" in ex.cells[2].source and "return x" not in ex.cells[2].source
    assert ex.cells[2].metadata["deletable"] is False and ex.cells[1].source == "写出 `f(x)`：2 行。"
    assert ex.cells[0].source.endswith('set_language("zh-CN")') and ex.metadata["coursekit"]["lang"] == "zh-CN"
    assert translate.build_edition(root=repo, check=True).ok


def test_a_stale_translation_falls_back_to_english_in_the_edition(repo):
    translate.extract(root=repo)
    _translate(repo, "notebooks/01_x.ipynb", ZH_01)
    nb = read_notebook(repo / "notebooks/01_x.ipynb")
    nb.cells[2].source = "Two channels."
    _write(repo / "notebooks/01_x.ipynb", nb)
    translate.extract(root=repo)
    translate.build_edition(root=repo)
    assert read_notebook(repo / "notebooks/zh-CN/01_x.ipynb").cells[2].source == "Two channels."


def test_check_fails_on_a_changed_source_a_missing_edition_and_an_orphan(repo):
    translate.extract(root=repo)
    _translate(repo, "notebooks/01_x.ipynb", ZH_01)
    assert [Path(p).name for p in translate.build_edition(root=repo, check=True).stale] == ["01_x.ipynb"]  # missing
    translate.build_edition(root=repo)
    nb = read_notebook(repo / "notebooks/01_x.ipynb")
    nb.cells[1].outputs[0]["text"] = "2.6\n"  # the English re-executed: the edition's stored output is behind
    _write(repo / "notebooks/01_x.ipynb", nb)
    assert not translate.build_edition(root=repo, check=True).ok
    translate.build_edition(root=repo)
    shutil.copy(repo / "notebooks/zh-CN/01_x.ipynb", repo / "notebooks/zh-CN/09_gone.ipynb")
    stale = translate.build_edition(root=repo, check=True).stale
    assert stale == [f"{repo / 'notebooks/zh-CN/09_gone.ipynb'} (no source)"]


def test_a_markdown_cell_without_an_id_or_an_exercise_without_setup_is_refused(repo):
    nb = read_notebook(repo / "notebooks/01_x.ipynb")
    nb.nbformat_minor = 4  # before 4.5 cells have no ids (nbformat would invent random ones for a 4.5 file)
    for cell in nb.cells:
        del cell["id"]
    (repo / "notebooks/01_x.ipynb").write_text(nbformat.writes(nb, version=4))
    with pytest.raises(ValueError, match=r"notebooks/01_x.ipynb: expected an id on every markdown cell"):
        translate.extract(root=repo)
    (repo / "notebooks/01_x.ipynb").unlink()
    _write(repo / "solutions/02_y.ipynb", _notebook([nbformat.v4.new_markdown_cell("Text.", id="m")]))
    translate.extract(root=repo)
    _translate(repo, "solutions/02_y.ipynb", {"m": "文字。"})
    with pytest.raises(ValueError, match="needs a setup cell"):
        translate.build_edition(root=repo)


def test_a_learners_edited_chinese_exercise_is_kept_unless_forced(repo):
    translate.extract(root=repo)
    _translate(repo, "solutions/02_y.ipynb", {"task-f-md": "写出 `f(x)`：2 行。"})
    translate.build_edition(root=repo)
    dest = repo / "exercises/zh-CN/02_y.ipynb"
    nb = read_notebook(dest)
    nb.cells[2].source = "def f(x):\n    return 2 * x  # mine"
    _write(dest, nb)
    _translate(repo, "solutions/02_y.ipynb", {"task-f-md": "写出 `f(x)`（2 行）。"})
    report = translate.build_edition(root=repo)
    assert report.refused == [str(dest)] and "# mine" in dest.read_text()
    report = translate.build_edition(root=repo, force=True)
    assert report.written == [str(dest)] and "# mine" in Path(report.backups[0]).read_text()


# --------------------------------------------------------------------------- command line and glossary

def test_translate_build_check_passes_on_the_course_and_a_bad_language_is_refused(monkeypatch, capsys):
    from coursekit import cli

    monkeypatch.chdir(ROOT)
    assert cli.main(["translate", "build", "--check"]) == 0
    assert cli.main(["translate", "build", "--lang", "fr"]) == 2
    assert "expected one of en, zh-CN" in capsys.readouterr().err


def test_the_glossary_has_the_terms_a_chinese_reader_expects():
    zh = {z for t in translate.glossary(root=ROOT) for z in t.translations}
    assert {"批归一化", "层归一化", "实例归一化", "组归一化", "均值", "方差", "无偏方差", "有偏方差", "动量", "通道",
            "运行均值", "运行方差", "训练模式", "推理模式", "评估模式", "折叠", "融合"} <= zh
    for t in translate.glossary(root=ROOT):
        if t.pattern:
            re.compile(t.pattern)
