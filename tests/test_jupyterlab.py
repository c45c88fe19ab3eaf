"""End to end in JupyterLab: open the editing chapter, run it, move the explorer's slider, see
the image change.

Starts a real JupyterLab on 127.0.0.1 (free port, a token, a temporary root folder holding a copy
of the notebook and private settings), drives it with Playwright and Debian's /usr/bin/chromium,
and always shuts the server and its kernel down. Screenshots go to artifacts/jupyterlab/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from browser_support import REPO, chromium, free_port, screenshot_path
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NOTEBOOK = REPO / "book" / "part2-diffusion" / "05_editing.ipynb"
RUN_TIMEOUT_S = 180  # running every cell of the notebook in JupyterLab's kernel, on a busy CPU


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {process.returncode} before it answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} within {timeout} s")


@pytest.fixture
def lab(tmp_path):
    """A running JupyterLab serving a copy of NOTEBOOK; yields (base URL, token, notebook name)."""
    root, settings = tmp_path / "root", tmp_path / "settings"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    # No "receive Jupyter news?" toast over the notebook.
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "MPLBACKEND": "Agg"}
    log = (tmp_path / "lab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{base}/api/status?token={token}", process)
        yield base, token, NOTEBOOK.name
    finally:
        # Ask the server to stop (it shuts its kernels down too); force it if it will not.
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST", data=b"")
            urllib.request.urlopen(request, timeout=5).close()
            process.wait(timeout=15)
        except Exception:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        log.close()


def run_all(page, attempts: int = 3) -> None:
    """Run > Run All Cells, until the first code cell is queued or has run."""
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    for _ in range(attempts):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(r"el => /\[(\*|\d+)\]/.test(el.textContent)",
                                   arg=prompts.first.element_handle(), timeout=15_000)
            return
        except PlaywrightTimeout:  # the click came before the kernel was ready: try again
            continue
    raise AssertionError(f"Run All Cells did not start the notebook after {attempts} tries")


def test_explorer_slider_changes_the_image_in_jupyterlab(lab):
    base, token, name = lab
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            kernel_frames = []  # messages from the kernel's websocket: it is connected once one arrives
            page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: kernel_frames.append(frame))
                    if "/api/kernels/" in ws.url else None)
            page.goto(f"{base}/lab/tree/{name}?token={token}", wait_until="commit")
            # JupyterLab's first load is slow on a busy 2-core machine (20-60 s measured)
            page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=60_000)
            deadline = time.monotonic() + 60
            while not kernel_frames and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            assert kernel_frames, "the notebook's kernel never answered over its websocket"

            run_all(page)

            # every code cell has run (a slider move would otherwise wait behind the queued cells)
            page.wait_for_function(
                r"""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                          .every(prompt => /\[\d+\]/.test(prompt.textContent))""",
                timeout=RUN_TIMEOUT_S * 1000)
            explorer = page.locator(".labkit-explorer").first
            explorer.wait_for()
            image = explorer.locator("img").first
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            explorer.scroll_into_view_if_needed()
            before_src = image.get_attribute("src")
            before = explorer.screenshot(path=screenshot_path("jupyterlab", "explorer-before.png"))

            handle = explorer.locator(".labkit-frame-slider .noUi-handle").first
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            # the new frame arrives from the kernel: wait for the image to be replaced and loaded
            page.wait_for_function(
                "([img, src]) => img.getAttribute('src') !== src && img.complete && img.naturalWidth > 0",
                arg=[image.element_handle(), before_src], timeout=30_000)
            after = explorer.screenshot(path=screenshot_path("jupyterlab", "explorer-after.png"))
            page.screenshot(path=screenshot_path("jupyterlab", "notebook.png"))
            assert before != after, "the slider moved but the explorer looks the same"
            stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert not stderr.count(), "a cell wrote to stderr: " + stderr.first.inner_text()
        except Exception:
            page.screenshot(path=screenshot_path("jupyterlab", "failure.png"))
            raise

