"""Drive a real JupyterLab in headless Chromium the way a learner does, and list what went wrong.

`LabServer` starts ``jupyter lab`` on 127.0.0.1 (a free port, token authentication on) serving a
temporary folder, so the repository's notebooks are never written to. `run_notebook` opens one
notebook, clicks Run ▸ Run All Cells, waits for the kernel to go idle, saves, and returns a list of
problems (empty when the notebook is fine): error outputs, widgets that did not render, controls
that are invisible or do not change their output, figures that are not images, a progress widget
that is missing or disagrees with the checkers' verdicts.

Left out on purpose: pixel comparisons (fonts and CPUs differ between machines) and timing asserts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat

# Chromium flags for a closed network and a root user: no sandbox (root only), no background
# networking, no component or sync updates — the browser must not try to download anything.
CHROMIUM_ARGS = ["--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-dev-shm-usage"]

# JupyterLab user settings for the test server: every cell attached to the DOM (so visibility checks
# mean something), no autosave, no news or update checks, no extension manager (all offline).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin.jupyterlab-settings": {"enabled": False},
}

# ipywidgets 8 controls a learner can move (class names of their views)
CONTROLS = (".widget-slider, .widget-dropdown, .widget-checkbox, .widget-toggle-buttons, .widget-toggle-button, "
            ".widget-radio, .widget-select, .widget-select-multiple, .widget-text, .widget-textarea, .widget-button, "
            ".widget-colorpicker, .widget-play")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
VERDICT = re.compile(r"Exercise (\S+) · (\S+) — (not attempted yet|all \d+ cases pass)")


def chromium_path() -> str | None:
    """$LABUTILS_CHROMIUM, else the first Chromium-like browser on PATH."""
    env = os.environ.get("LABUTILS_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_args() -> list[str]:
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    return CHROMIUM_ARGS + (["--no-sandbox"] if root else [])  # Chromium's sandbox refuses to run as root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` on 127.0.0.1 with a random token, serving ``root``; always stop() it."""

    def __init__(self, root: Path, *, startup_timeout_s: float = 120):
        self.root, self.port, self.token = Path(root), free_port(), secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        for rel, value in LAB_SETTINGS.items():
            path = self.root / ".lab" / "settings" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = dict(os.environ,  # inherits LABUTILS_CACHE_DIR / LABUTILS_PROGRESS_FILE from tests/conftest.py
                   JUPYTERLAB_SETTINGS_DIR=str(self.root / ".lab" / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.root / ".lab" / "workspaces"),
                   JUPYTER_RUNTIME_DIR=str(self.root / ".lab" / "runtime"))
        env.pop("MPLBACKEND", None)  # tests/conftest.py sets Agg; a learner's kernel draws inline images
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--port-retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path = self.root / ".lab" / "server.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # its own process group: kernels die with it
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"jupyter lab did not answer within {startup_timeout_s} s:\n{self.log_tail()}")
                time.sleep(0.3)

    def api(self, method: str, path: str, *, timeout: float = 30):
        """One REST call with the token in the Authorization header; returns the decoded JSON or None."""
        req = urllib.request.Request(self.url + path, method=method, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def lab_url(self, relpath: str) -> str:
        return f"{self.url}/lab/tree/{relpath}?reset&token={self.token}"  # reset: no tabs restored from before

    def shutdown_kernels(self) -> None:
        """End every session (and so its kernel): one kernel at a time on a small machine."""
        for s in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{s['id']}")
        for k in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{k['id']}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then terminate, then kill its process group."""
        if self.proc.poll() is None:
            try:
                self.api("POST", "/api/shutdown", timeout=10)
                self.proc.wait(timeout=20)
            except Exception:
                pass
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=wait_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any kernel left behind in the group
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


# ----------------------------------------------------------------------------- page helpers

_STATE_JS = """() => {
  const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputArea-prompt')]
      .map(e => e.textContent.trim());
  return {status: ind ? ind.getAttribute('data-status') : null, prompts};
}"""


def wait_idle(page, *, timeout_s: float, settle_s: float = 2.0) -> dict:
    """Wait until the kernel is idle, no cell is queued ([*]) and nothing changed for settle_s."""
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        state = page.evaluate(_STATE_JS)
        busy = state["status"] != "idle" or any("*" in p for p in state["prompts"])
        if state != last or busy:
            last, since = state, time.monotonic()
        elif time.monotonic() - since >= settle_s:
            return state
        page.wait_for_timeout(250)
    raise TimeoutError(f"kernel still busy after {timeout_s:.0f} s (prompts: {' '.join(last['prompts'])})")


_CONTENT_JS = """([cell, controls]) => {
  // what a learner reads in a cell's outputs, the controls themselves left out
  const area = cell.querySelector('.jp-Cell-outputArea');
  if (!area) return '';
  const clone = area.cloneNode(true);
  clone.querySelectorAll(controls).forEach(e => e.remove());
  const imgs = [...clone.querySelectorAll('img')].map(i => i.getAttribute('src') || '').join('|');
  const svgs = [...clone.querySelectorAll('svg')].map(s => s.outerHTML).join('|');
  return clone.textContent + '\\n' + imgs + '\\n' + svgs;
}"""


def _move(control, page) -> str:
    """Change one control's value the way a learner would; return what was done."""
    cls = control.get_attribute("class") or ""
    if "widget-slider" in cls or "widget-hslider" in cls or "widget-vslider" in cls:
        readout = control.locator(".widget-readout")
        before = readout.first.text_content() if readout.count() else None
        handle = control.locator(".noUi-handle").first
        handle.focus()
        for key in ("ArrowRight", "ArrowLeft"):  # at the maximum already: move left instead
            handle.press(key)
            page.wait_for_timeout(200)
            if before is None or readout.first.text_content() != before:
                return f"slider {before} → {key}"
        return f"slider {before} (did not move)"
    if "widget-dropdown" in cls or "widget-select" in cls:
        select = control.locator("select").first
        options = select.locator("option").all_text_contents()
        current = select.evaluate("s => s.selectedIndex")
        if len(options) < 2:
            return "selection with a single option"
        choice = (current + 1) % len(options)
        select.select_option(index=choice)
        return f"selection → {options[choice]!r}"
    if "widget-toggle-buttons" in cls:
        buttons = control.locator("button:not(.mod-active)")
        buttons.first.click()
        return "toggle buttons"
    if "widget-radio" in cls:
        control.locator("input[type=radio]:not(:checked)").first.check()
        return "radio buttons"
    if "widget-checkbox" in cls:
        control.locator("input[type=checkbox]").first.click()
        return "checkbox"
    if "widget-text" in cls or "widget-textarea" in cls:
        box = control.locator("input, textarea").first
        value = box.input_value()
        try:
            new = str(float(value) * 2 if float(value) else 1).rstrip("0").rstrip(".")
        except ValueError:
            new = value + "x"
        box.fill(new)
        box.press("Enter")
        return f"text {value!r} → {new!r}"
    control.click()  # buttons, toggle button, play, colour picker
    return "click"


def _widget_problems(page, timeout_s: float) -> list[str]:
    problems = []
    # every outermost control inside a widget output
    controls = page.locator(f".jp-Cell-outputArea :is({CONTROLS})")
    outer = [controls.nth(i) for i in range(controls.count())
             if controls.nth(i).evaluate("(e, sel) => !e.parentElement.closest(sel)", CONTROLS)]
    for n, control in enumerate(outer, 1):
        control.scroll_into_view_if_needed()
        name = (control.get_attribute("class") or "").split()
        kind = next((c for c in name if c.startswith("widget-") and c not in ("widget-inline-hbox", "widget-inline-vbox")), "widget")
        box = control.bounding_box()
        if not control.is_visible() or not box or box["width"] < 2 or box["height"] < 2:
            problems.append(f"control {n} ({kind}) is not visible")
            continue
        cell = control.locator("xpath=ancestor::div[contains(@class, 'jp-CodeCell')][1]")
        before = page.evaluate(_CONTENT_JS, [cell.element_handle(), CONTROLS])
        what = _move(control, page)
        deadline = time.monotonic() + timeout_s
        changed = False
        while time.monotonic() < deadline:
            page.wait_for_timeout(300)
            try:
                wait_idle(page, timeout_s=max(1.0, deadline - time.monotonic()), settle_s=1.0)
            except TimeoutError:
                break
            if page.evaluate(_CONTENT_JS, [cell.element_handle(), CONTROLS]) != before:
                changed = True
                break
        if not changed:
            problems.append(f"control {n} ({kind}): moving it ({what}) did not change its cell's output within {timeout_s:.0f} s")
    return problems


def _file_outputs(nb) -> list[tuple[int, dict]]:
    return [(i, out) for i, c in enumerate(nb.cells) if c.cell_type == "code" for out in c.get("outputs", [])]


def _open_and_run_all(page, server: LabServer, relpath: str, timeout_s: float) -> tuple[list[str], bool]:
    """Open the notebook, wait for its kernel, then Run ▸ Run All Cells and wait until it is quiet.

    Returns (problems, finished): nothing more can be checked when the run did not finish."""
    page.goto(server.lab_url(relpath))
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=120_000)
    # the indicator says "idle" before any kernel exists: first wait for the server's session, then the page
    deadline = time.monotonic() + 120
    while not any(s["path"] == relpath and s["kernel"]["execution_state"] == "idle"
                  for s in server.api("GET", "/api/sessions")):
        if time.monotonic() > deadline:
            return [f"no kernel became idle for {relpath} within 120 s"], False
        page.wait_for_timeout(250)
    wait_idle(page, timeout_s=120, settle_s=1.0)
    page.keyboard.press("Control+b")  # hide the file browser: more room for the notebook in the screenshot
    # give the notebook the focus
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputArea-prompt").first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    item = page.locator(".lm-Menu-item", has_text=re.compile(r"^Run All Cells"))
    item.first.wait_for(state="visible")
    if item.first.get_attribute("aria-disabled") == "true":
        return ["Run ▸ Run All Cells is disabled"], False
    item.first.click()
    page.wait_for_timeout(1000)
    try:
        state = wait_idle(page, timeout_s=timeout_s)
    except TimeoutError as err:
        return [str(err)], False
    problems = []
    if any(not re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]):
        problems.append(f"not every code cell ran (prompts: {' '.join(state['prompts'])})")
    dialogs = page.locator(".jp-Dialog")
    if dialogs.count():
        problems.append(f"a dialog is open: {(dialogs.first.text_content() or '').strip()[:200]!r}")
        page.keyboard.press("Escape")
    return problems, True


def _save_and_read_back(page, server: LabServer, relpath: str):
    """Save, then read back exactly what ran from the server (output types, widget and image outputs)."""
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=30_000)
    model = server.api("GET", f"/api/contents/{relpath}?content=1&type=notebook")
    return nbformat.from_dict(model["content"])


def _error_outputs(outputs) -> list[str]:
    """Error outputs, and figures that were printed as text instead of drawn."""
    problems = []
    for i, out in outputs:
        if out.get("output_type") == "error":
            problems.append(f"cell {i} shows an error: {out.get('ename')}: {str(out.get('evalue'))[:200]}")
        text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
        if re.search(r"<Figure size \d+x\d+ with \d+ Axes>", text) and "image/png" not in out.get("data", {}):
            problems.append(f"cell {i} made a figure that was not drawn as an image ({text.strip()[:60]})")
    return problems


def _rendering_problems(page, nb, outputs, min_images: int) -> list[str]:
    """Every figure a decoded, visible image; every widget output a rendered view."""
    # the page shows the saved model: file output k of cell j is the k-th output child of DOM cell j
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    if cells.count() != len(nb.cells):
        return [f"{len(nb.cells)} cells in the notebook but {cells.count()} on the page"]
    problems, per_cell, n_png = [], {}, 0
    for j, out in outputs:
        k = per_cell[j] = per_cell.get(j, -1) + 1
        data = out.get("data", {})
        if not ({"image/png", WIDGET_MIME} & set(data)):
            continue
        el = cells.nth(j).locator(":scope .jp-Cell-outputArea > .jp-OutputArea-child").nth(k) \
            .locator(":scope > .jp-OutputArea-output")
        if not el.count():
            problems.append(f"cell {j}: output {k + 1} is in the notebook but not on the page")
            continue
        if WIDGET_MIME in data and not el.is_visible() and not (el.text_content() or "").strip():
            continue  # a widget its code closed on purpose (e.g. tqdm's bar with leave=False)
        el.scroll_into_view_if_needed()
        if "image/png" in data:  # a figure: an <img> the browser decoded, and visible
            n_png += 1
            img = el.locator("img")
            if (not img.count() or not img.first.evaluate("i => i.complete && i.naturalWidth > 0")
                    or not img.first.is_visible()):
                problems.append(f"cell {j}: figure {k + 1} did not render as a visible image")
        else:  # a widget: its view rendered (not an error, not the text fallback)
            text = (el.text_content() or "").strip()
            view = el.locator(":scope > .jupyter-widgets")
            if "Error displaying widget" in text or not view.count() or not view.first.is_visible():
                problems.append(f"cell {j}: widget output {k + 1} did not render ({text[:100]!r})")
    if n_png < min_images:
        problems.append(f"only {n_png} figure(s) rendered; the solution notebook shows at least {min_images}")
    inner = page.locator(".jp-OutputArea .widget-output img")  # figures drawn by widgets (interact)
    for k in range(inner.count()):
        img = inner.nth(k)
        img.scroll_into_view_if_needed()
        if not img.evaluate("i => i.complete && i.naturalWidth > 0") or not img.is_visible():
            problems.append(f"a figure inside a widget output ({k + 1}) did not render as a visible image")
    return problems


def _progress_widget_problems(page, relpath: str, outputs) -> list[str]:
    """The progress widget (last code cell) renders and agrees with the checkers' verdicts printed in this run."""
    verdicts = {}
    for _, out in outputs:
        for number, name, what in VERDICT.findall("".join(out.get("text", ""))):
            verdicts[number] = (name, "passed" if what.startswith("all") else "not attempted")
    last_cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").last
    widget = last_cell.locator(".labutils-progress")
    if not widget.count() or not widget.first.is_visible():
        return ["the progress widget at the end did not render"]
    widget.first.scroll_into_view_if_needed()
    header = widget.first.locator("b").first.text_content() or ""
    rows = [[td.strip() for td in r] for r in
            widget.first.locator("tr").evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.textContent))")]
    shown = {r[1].removeprefix("Exercise ").strip(): (r[2], r[3].split(" (")[0]) for r in rows if len(r) >= 4}
    problems = []
    if shown != verdicts:
        problems.append(f"progress widget shows {shown}, but the checkers said {verdicts}")
    n_passed = sum(v[1] == "passed" for v in verdicts.values())
    if not header.startswith(f"{Path(relpath).stem}: {n_passed} of {len(shown)} exercises passed"):
        problems.append(f"progress widget header {header!r} does not say {n_passed} of {len(shown)} passed")
    return problems


def run_notebook(page, server: LabServer, relpath: str, *, timeout_s: float = 600, min_images: int = 0,
                 control_timeout_s: float = 60, screenshot: Path | None = None) -> list[str]:
    """Open ``relpath`` (under the server's root) in JupyterLab, run all cells, check everything; return problems."""
    problems, finished = _open_and_run_all(page, server, relpath, timeout_s)
    if not finished:
        return problems
    nb = _save_and_read_back(page, server, relpath)
    outputs = _file_outputs(nb)
    problems += _error_outputs(outputs)
    problems += _rendering_problems(page, nb, outputs, min_images)
    problems += _widget_problems(page, control_timeout_s)  # controls: visible, and moving each changes its cell
    problems += _progress_widget_problems(page, relpath, outputs)
    if screenshot is not None:
        _full_screenshot(page, screenshot)
    return problems


def _full_screenshot(page, path: Path) -> None:
    """The whole notebook in one picture: grow the viewport to the notebook's height, then shoot."""
    height = page.evaluate("""() => {
      const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')
              || document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
      return nb ? nb.scrollHeight : 900; }""")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height + 200, 900), 16000))})
    page.evaluate("""() => document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')
                                  .forEach(e => { e.scrollTop = 0; })""")
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
