"""Helpers for the real-browser smoke test (tests/test_browser.py).

A JupyterLab server is started on 127.0.0.1 with a throw-away configuration (settings, workspaces,
runtime and data directories under a temporary folder) serving a temporary copy of the notebooks,
and Debian's ``/usr/bin/chromium`` is driven through Playwright (Python). Nothing here downloads
a browser: ``playwright install`` is never used.

Why the details matter (each measured with this JupyterLab and chromium):

* JupyterLab autosaves and writes ``.ipynb_checkpoints``: the repository's files are never served.
* A workspace saved by another server would reopen stale tabs, and the news/update popups cover
  the page: each server gets its own workspaces and user-settings directories.
* ``page.wait_for_function`` with the default ``requestAnimationFrame`` polling never resolves in
  headless chromium: every wait polls on a timer.
* JupyterLab attaches only on-screen cells to the DOM, so verdicts come from the notebook *model*
  (``window.jupyterapp.shell.currentWidget.content.model``); only the figure check looks at the DOM,
  after scrolling the cell into view, because "the figure rendered" is a DOM fact.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CHROMIUM",
    "JupyterLabServer",
    "NotebookRun",
    "browser_unavailable_reason",
    "launch_browser",
    "open_notebook",
    "run_all",
    "rendered_images",
    "try_edit_cell",
    "run_problems",
    "run_notebook",
    "copy_tree",
    "stored_has_figures",
    "exercise_problems",
    "page_state",
]

CHROMIUM = os.environ.get("COURSEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
]
POLL_MS = 250  # never 'raf': it does not fire in headless chromium


def browser_unavailable_reason() -> str | None:
    """Why the browser test cannot run here (``None`` when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python package 'playwright' is not installed (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (Debian/Ubuntu: apt-get install -y chromium)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


class JupyterLabServer:
    """``jupyter lab`` on a free local port with an isolated configuration; ``stop()`` kills its group.

    ``base`` is a fresh temporary directory; the server's root is ``base/root`` (fill it before
    ``start()``). The kernel spec ``python3`` is written into a private data directory pointing at
    this interpreter, so the browser's kernels run in the same environment as the tests.
    """

    def __init__(self, base: Path, startup_timeout: float = 90.0):
        self.base = Path(base)
        self.root = self.base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(24)
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.startup_timeout = startup_timeout
        self.log_path = self.base / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        data = self.base / "data"
        # The private data dir comes first in Jupyter's data path, so this spec wins over any
        # other 'python3'; the system data dirs stay searchable for JupyterLab's own assets.
        _write_json(
            data / "kernels" / "python3" / "kernel.json",
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "metadata": {"debugger": True},
            },
        )
        env.update(
            JUPYTER_CONFIG_DIR=str(self.base / "config"),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            JUPYTER_DATA_DIR=str(data),
            IPYTHONDIR=str(self.base / "ipython"),
            MPLCONFIGDIR=str(self.base / "mpl"),
            # Same thread count as CI and as the stored outputs; also keeps kernels from
            # oversubscribing a 2-core machine.
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYDEVD_DISABLE_FILE_VALIDATION="1",
        )
        env.pop("JUPYTER_PATH", None)
        return env

    def _user_settings(self) -> Path:
        settings = self.base / "user-settings"
        _write_json(
            settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
            {"fetchNews": "false", "checkForUpdates": False},
        )
        # Autosave would rewrite the served copies while cells run; nothing needs saving here.
        _write_json(
            settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings",
            {"autosave": False},
        )
        return settings

    def start(self) -> JupyterLabServer:
        env = self._environment()
        settings = self._user_settings()
        workspaces = self.base / "workspaces"
        workspaces.mkdir(exist_ok=True)
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = _free_port()
            cmd = [
                sys.executable, "-m", "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                "--LabApp.expose_app_in_browser=True",
                f"--LabApp.workspaces_dir={workspaces}",
                f"--LabApp.user_settings_dir={settings}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension panel
                "--ServerApp.terminals_enabled=False",
            ]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                cmd.append("--allow-root")
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # own process group: kill it whole
            )
            log.close()
            if self._wait_ready():
                return self
            last_error = self.log_tail()
            self.stop()
        raise RuntimeError(f"jupyter lab did not start; server log:\n{last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                self.api("GET", "/api/status")
                return True
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        return False

    def api(self, method: str, path: str) -> object:
        req = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session (and its kernel): each notebook's kernel holds torch in memory."""
        try:
            for session in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{session['id']}")
        except Exception:  # the server may already be gone; stop() still kills the group
            pass

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        if pgid is not None:
            # SIGTERM first so the server shuts its kernels down; SIGKILL the group if it lingers.
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the notebooks of ``src`` (without checkpoints) to ``dst``."""
    if src.is_dir():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints"), dirs_exist_ok=True)


def launch_browser(playwright):
    """Headless Debian chromium; Playwright adds --no-sandbox itself."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )


# --- JupyterLab page scripts -------------------------------------------------------------------

_PANEL = "window.jupyterapp && window.jupyterapp.shell.currentWidget"

_JS_KERNEL_READY = """(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  const panel = app.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== path || !panel.context.isReady) return false;
  const sc = panel.sessionContext;
  if (!sc || !sc.isReady || !sc.session || !sc.session.kernel) return false;
  const k = sc.session.kernel;
  return k.connectionStatus === 'connected' && k.status === 'idle';
}"""

# The run-all promise can settle before the kernel has worked through its queue: JupyterLab sends
# every execute_request at once, and a cell tagged raises-exception that fails makes the promise
# settle early (seen: the model read while later cells were still queued looked "never executed").
# So after it settles, one silent empty execute_request goes to the back of the kernel's queue; its
# completion (reply and idle status) means every earlier request was handled and its output
# received, because the kernel handles shell requests in order and publishes on one socket.
_JS_START_RUN_ALL = """() => {
  window.__runAll = {done: false, result: null, error: null};
  const panel = window.jupyterapp.shell.currentWidget;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(r => {
    window.__runAll.result = r;
    const k = panel.sessionContext.session.kernel;
    return k.requestExecute({code: '', silent: true, store_history: false, stop_on_error: false}).done;
  }).then(
    () => { window.__runAll.done = true; },
    e => { window.__runAll.done = true; window.__runAll.error = String(e); });
  return true;
}"""

_JS_RUN_FINISHED = """() => {
  if (!window.__runAll || !window.__runAll.done) return false;
  const panel = window.jupyterapp.shell.currentWidget;
  const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
  if (!k || k.status !== 'idle') return false;
  for (const cell of panel.content.model.cells) {
    if (cell.type === 'code' && cell.executionState === 'running') return false;
  }
  return true;
}"""

_JS_MODEL = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = [];
  for (const cell of panel.content.model.cells) {
    const j = cell.toJSON();
    cells.push({
      id: cell.id,
      type: cell.type,
      tags: (j.metadata && j.metadata.tags) || [],
      editable: j.metadata ? j.metadata.editable : undefined,
      execution_count: cell.type === 'code' ? (cell.executionCount ?? null) : null,
      state: cell.type === 'code' ? (cell.executionState || null) : null,
      outputs: j.outputs || [],
      source: cell.sharedModel.getSource(),
    });
  }
  return {path: panel.context.path, cells: cells, runAll: window.__runAll || null};
}"""

_JS_CELL_IMAGES = """async (index) => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  nb.activeCellIndex = index;
  if (nb.scrollToItem) { await nb.scrollToItem(index, 'center'); }
  const w = nb.widgets[index];
  if (!w || !w.node || !w.node.isConnected) return -1;
  w.node.scrollIntoView({block: 'center'});
  const imgs = w.node.querySelectorAll('.jp-OutputArea-output img');
  let ok = 0;
  for (const img of imgs) { if (img.complete && img.naturalWidth > 0) ok += 1; }
  return ok;
}"""


@dataclass
class NotebookRun:
    """What one run-all in the browser produced, read from the notebook model."""

    path: str
    cells: list[dict]
    seconds_open: float = 0.0
    seconds_run: float = 0.0
    run_all_result: object = None
    images: dict[int, int] = field(default_factory=dict)  # cell index -> rendered <img> count

    @property
    def code_cells(self) -> list[tuple[int, dict]]:
        return [(i, c) for i, c in enumerate(self.cells) if c["type"] == "code"]

    def errors(self) -> list[tuple[int, dict, dict]]:
        """(index, cell, error output) for every error output in the model."""
        out = []
        for i, c in self.code_cells:
            for o in c["outputs"]:
                if o.get("output_type") == "error":
                    out.append((i, c, o))
        return out

    def unexpected_errors(self) -> list[str]:
        """Errors in cells not tagged ``raises-exception``, as readable lines."""
        return [
            f"cell {i} (id {c['id']}): {o.get('ename')}: {o.get('evalue')}"
            for i, c, o in self.errors()
            if "raises-exception" not in c["tags"]
        ]

    def not_executed(self) -> list[str]:
        """Code cells with source that have no execution count after run-all (run stopped early)."""
        return [
            f"cell {i} (id {c['id']})"
            for i, c in self.code_cells
            if c["source"].strip() and c["execution_count"] is None
        ]

    def figure_cells(self) -> list[int]:
        return [i for i, c in self.code_cells if any("image/png" in o.get("data", {}) for o in c["outputs"])]


def open_notebook(page, server: JupyterLabServer, path: str, workspace: str, timeout_ms: int = 90_000) -> float:
    """Open ``path`` (relative to the server root) in a fresh workspace; wait for an idle kernel."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.monotonic()
    page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={server.token}")
    try:
        page.wait_for_function(_JS_KERNEL_READY, arg=path, polling=POLL_MS, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise AssertionError(
            f"{path}: no notebook with an idle kernel after {timeout_ms / 1000:.0f} s; "
            f"page state: {page_state(page)}\nserver log tail:\n{server.log_tail(1500)}"
        ) from None
    return time.monotonic() - t0


def run_all(page, timeout_ms: int = 300_000) -> tuple[float, dict]:
    """Run every cell with JupyterLab's own command; wait until it finished; return the model."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.monotonic()
    page.evaluate(_JS_START_RUN_ALL)
    try:
        page.wait_for_function(_JS_RUN_FINISHED, polling=POLL_MS, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise AssertionError(
            f"run-all did not finish within {timeout_ms / 1000:.0f} s; page state: {page_state(page)}"
        ) from None
    return time.monotonic() - t0, page.evaluate(_JS_MODEL)


_JS_STATE = """() => {
  const st = {dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.innerText.slice(0, 300))};
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  if (!panel) { st.current = null; return st; }
  st.current = panel.context ? panel.context.path : String(panel.title && panel.title.label);
  const sc = panel.sessionContext;
  const k = sc && sc.session && sc.session.kernel;
  st.kernel = k ? {status: k.status, connection: k.connectionStatus, name: k.name} : null;
  if (panel.content && panel.content.model) {
    st.running = [];
    let i = 0;
    for (const c of panel.content.model.cells) { if (c.executionState === 'running') st.running.push(i); i += 1; }
  }
  st.runAll = window.__runAll || null;
  return st;
}"""


def page_state(page) -> str:
    """A one-line description of what the page shows (dialogs, current notebook, kernel, running cells)."""
    try:
        return json.dumps(page.evaluate(_JS_STATE))
    except Exception as exc:  # a crashed page: say so rather than hide the original failure
        return f"(page state unavailable: {exc})"


def read_model(page) -> dict:
    return page.evaluate(_JS_MODEL)


def rendered_images(page, index: int, timeout_s: float = 15.0) -> int:
    """Scroll cell ``index`` into view and count decoded ``<img>`` elements in its output area."""
    deadline = time.monotonic() + timeout_s
    count = -1
    while time.monotonic() < deadline:
        count = page.evaluate(_JS_CELL_IMAGES, index)
        if count > 0:
            return count
        page.wait_for_timeout(POLL_MS)
    return max(count, 0)


def run_notebook(
    page,
    server: JupyterLabServer,
    path: str,
    workspace: str,
    screenshot: Path | None = None,
    figure_timeout_s: float = 15.0,
) -> NotebookRun:
    """Open, run all, read the model and count rendered figures of one notebook."""
    t_open = open_notebook(page, server, path, workspace)
    t_run, model = run_all(page)
    run = NotebookRun(path=path, cells=model["cells"], seconds_open=t_open, seconds_run=t_run,
                      run_all_result=model["runAll"])
    for i in run.figure_cells():
        run.images[i] = rendered_images(page, i, timeout_s=figure_timeout_s)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
    return run


_JS_CELL_EDITOR = """(index) => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const w = nb.widgets[index];
  return {readOnly: !!w.readOnly, editorReadOnly: !!(w.editor && w.editor.getOption && w.editor.getOption('readOnly'))};
}"""


def try_edit_cell(page, index: int, text: str = "HACKED = 1\n") -> dict:
    """Click into cell ``index``'s editor and type; return its read-only flags and source before/after."""
    before = read_model(page)["cells"][index]["source"]
    page.evaluate(
        """async (index) => {
          const nb = window.jupyterapp.shell.currentWidget.content;
          nb.activeCellIndex = index;
          if (nb.scrollToItem) { await nb.scrollToItem(index, 'center'); }
          nb.widgets[index].node.scrollIntoView({block: 'center'});
        }""",
        index,
    )
    flags = page.evaluate(_JS_CELL_EDITOR, index)
    # The cell was just made active, so its editor is the active cell's CodeMirror content.
    page.locator(".jp-Notebook .jp-Cell.jp-mod-active .cm-content").first.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)
    page.keyboard.press("Escape")  # back to command mode
    after = read_model(page)["cells"][index]["source"]
    return {"before": before, "after": after, **flags}


def stored_has_figures(path: Path) -> bool:
    """Whether the notebook file on disk holds at least one image/png output."""
    nb = json.loads(Path(path).read_text())
    return any(
        "image/png" in o.get("data", {})
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
        for o in c.get("outputs", [])
    )


def run_problems(run: NotebookRun, expect_figures: bool = False) -> list[str]:
    """Everything wrong with a browser run-all, one readable line each (empty list: all good).

    * an error output in a cell not tagged ``raises-exception``;
    * a code cell that never ran (run-all stopped early);
    * a cell whose model holds an image/png output but whose output area shows no decoded ``<img>``;
    * ``expect_figures`` (the stored file has figures) but the run produced none.
    """
    problems = [f"error output in an untagged cell: {e}" for e in run.unexpected_errors()]
    problems += [f"run-all never executed {c}" for c in run.not_executed()]
    if run.run_all_result and run.run_all_result.get("error"):
        problems.append(f"notebook:run-all-cells failed: {run.run_all_result['error']}")
    for i in run.figure_cells():
        if run.images.get(i, 0) < 1:
            problems.append(
                f"cell {i} (id {run.cells[i]['id']}): image/png in the model but no rendered <img> in its output area"
            )
    if expect_figures and not run.figure_cells():
        problems.append("the stored notebook has figures but the browser run produced no image/png output")
    return problems


def exercise_problems(page, run: NotebookRun) -> list[str]:
    """What is wrong with an untouched exercise notebook after run-all in the browser.

    On top of :func:`run_problems`: the stubs must fail somewhere (in tagged cells), there must be
    ``check-*`` cells, each with ``editable: false`` that JupyterLab shows read-only and that typing
    cannot change; and typing into the first ``answer-*`` cell *must* change it (the probe works).
    """
    problems = run_problems(run)
    if not run.errors():
        problems.append("no cell raised: the untouched stubs should raise NotImplementedError (in tagged cells)")
    checks = [(i, c) for i, c in enumerate(run.cells) if str(c["id"]).startswith("check-")]
    if not checks:
        problems.append("no check-* cells found")
    for i, c in checks:
        if c["editable"] is not False:
            problems.append(f"check cell {c['id']} lacks metadata editable: false")
        edit = try_edit_cell(page, i)
        if not edit["readOnly"]:
            problems.append(f"JupyterLab does not show check cell {c['id']} as read-only")
        if edit["after"] != edit["before"]:
            problems.append(f"typing changed the locked check cell {c['id']}")
    answers = [i for i, c in enumerate(run.cells) if str(c["id"]).startswith("answer-")]
    if not answers:
        problems.append("no answer-* cells found")
    else:
        edit = try_edit_cell(page, answers[0])
        if edit["after"] == edit["before"]:
            problems.append("typing into an answer cell had no effect: the edit probe is broken")
    return problems
