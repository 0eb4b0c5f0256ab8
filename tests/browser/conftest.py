"""Fixtures of the browser layer: one JupyterLab server and one headless Chromium per session.

The layer needs Playwright for Python (pinned in requirements.txt) and a system Chromium — nothing
downloads a browser. Where either is missing the tests are skipped with a message saying how to
install it, except in CI (``CI=true``), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from labdriver import LabServer, chromium_args, chromium_path

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"  # ignored by git
INSTALL_HINT = ("install it with `sudo apt-get install chromium` (Debian/Ubuntu; other systems: any Chromium or "
                "Chrome, named by LABUTILS_CHROMIUM=/path/to/browser) and `.venv/bin/python -m pip install -r "
                "requirements.txt` (Playwright for Python). Do not run `playwright install`: the tests use the "
                "system browser.")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed"
    if chromium_path() is None:
        return "no Chromium found (looked for $LABUTILS_CHROMIUM, chromium, chromium-browser, google-chrome)"
    return None


@pytest.fixture(scope="session")
def browser():
    why = _missing()
    if why:
        message = f"browser layer: {why}; {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message + " (CI must run this layer: .ci/run installs the Debian package chromium)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=chromium_args())
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def lab(browser, tmp_path_factory):
    """A JupyterLab server over a temporary folder (notebooks are copied in; the repo is never written)."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")  # what the setup cell's advice points at
    server = LabServer(root)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()
        try:
            lab.shutdown_kernels()  # one kernel at a time on a 2-core machine
        except Exception:
            pass


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS
