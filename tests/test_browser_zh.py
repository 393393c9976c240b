"""The Chinese edition in a real browser: JupyterLab in Chinese opens one Chinese lesson and one Chinese
exercise, renders their translated markdown and runs them with Run All.

Same machinery as tests/test_browser.py (browser_support: Debian chromium through Playwright, a private
JupyterLab server on 127.0.0.1), with the user setting ``locale = zh_CN`` that JupyterLab's Settings ->
Language menu writes, so the zh-CN language pack is shown working too. Skips (or fails with
``COURSEKIT_REQUIRE_BROWSER=1``) without a browser, like the English smoke test.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import browser_support as bs
import pytest

REPO = Path(__file__).resolve().parents[1]
LESSON = "notebooks/zh-CN/00_start_here.ipynb"
EXERCISE = "exercises/zh-CN/02_bn_forward_exercises.ipynb"
_JS_TEXT = "(selector) => Array.from(document.querySelectorAll(selector)).map(e => e.innerText).join('\\n')"


@pytest.fixture(scope="module")
def zh_page(tmp_path_factory):
    if bs.browser_unavailable_reason():
        required = os.environ.get("COURSEKIT_REQUIRE_BROWSER") == "1"
        (pytest.fail if required else pytest.skip)(f"needs a browser: {bs.browser_unavailable_reason()}")
    from playwright.sync_api import sync_playwright

    srv = bs.JupyterLabServer(tmp_path_factory.mktemp("jupyterlab-zh"))
    for folder in ("notebooks", "exercises"):  # whole folders: the Chinese notebooks link to English ones
        bs.copy_tree(REPO / folder, srv.root / folder)
    bs._write_json(srv.base / "user-settings/@jupyterlab/translation-extension/plugin.jupyterlab-settings",
                   {"locale": "zh_CN"})
    try:
        srv.start()
        with sync_playwright() as pw:
            browser = bs.launch_browser(pw)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            yield srv, page
            browser.close()
    finally:
        srv.stop()


def _run(zh_page, path: str) -> bs.NotebookRun:
    srv, page = zh_page
    run = bs.run_notebook(page, srv, path, workspace=path.replace("/", "-").replace(".", "-"))
    srv.shutdown_kernels()
    return run


def test_jupyterlab_menus_are_in_chinese_and_the_lesson_renders_and_runs(zh_page):
    run = _run(zh_page, LESSON)
    problems = bs.run_problems(run, expect_figures=bs.stored_has_figures(REPO / LESSON))
    assert not problems, f"{LESSON} in JupyterLab:\n  " + "\n  ".join(problems)
    page = zh_page[1]
    assert "文件" in page.evaluate(_JS_TEXT, ".lm-MenuBar"), "the zh-CN language pack is not active"
    rendered = page.evaluate(_JS_TEXT, ".jp-RenderedMarkdown")
    assert "从这里开始" in rendered and "批归一化" in rendered, rendered[:300]


def test_the_chinese_exercise_fails_only_where_tagged_with_locked_checks(zh_page):
    run = _run(zh_page, EXERCISE)
    problems = bs.exercise_problems(zh_page[1], run)
    assert not problems, f"{EXERCISE} in JupyterLab:\n  " + "\n  ".join(problems)
    assert "任务 1" in zh_page[1].evaluate(_JS_TEXT, ".jp-RenderedMarkdown")
    # the check cells answer in Chinese: the unfinished task's verdict and hint come from the catalogue
    verdicts = json.dumps([o for _, c in run.code_cells if c["id"].startswith("check-") for o in c["outputs"]],
                          ensure_ascii=False)
    assert "✘ channel_stats：用例 1" in verdicts and "提示" in verdicts, verdicts[:500]
