"""Shared by the browser tests: Debian's Chromium driven by Playwright, a local static server,
and waits that say what they waited for.

Playwright cannot download its own browser here, so it drives Chromium found as
scripts/ensure_browser.sh finds it (`make test` runs that first, and installs Debian's package
`chromium` when it can): $CHROMIUM (default /usr/bin/chromium), else `chromium` on PATH. A
missing browser is a failure, not a skip: CI must run these tests.

Every wait is on a condition, never a fixed sleep, with bounds generous enough for a 2-core
machine that other work keeps busy; on timeout the error names the condition.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"  # screenshots; git-ignored
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def find_chromium() -> str | None:
    """$CHROMIUM (default /usr/bin/chromium) if executable, else `chromium` on PATH, else None."""
    default = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    return default if os.access(default, os.X_OK) else shutil.which("chromium")


@contextlib.contextmanager
def chromium():
    """A headless Chromium under Playwright; fails the test if none is installed."""
    executable = find_chromium()
    if executable is None:
        pytest.fail("no Chromium: run `bash scripts/ensure_browser.sh` (it installs Debian's `chromium` when it can, "
                    "or says what to install), or set CHROMIUM=/path/to/chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # a busy machine can take a while to start a browser: Playwright's default is 30 s
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=180_000)
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output readable
        pass


@contextlib.contextmanager
def static_server(folder: Path):
    """Serve ``folder`` on 127.0.0.1 at a free port, in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot_path(*parts: str) -> Path:
    path = ARTIFACTS.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def waiting_for(what: str, seconds: float) -> Iterator[None]:
    """Turn a Playwright timeout inside the block into one that says what was waited for, and how long."""
    try:
        yield
    except PlaywrightTimeout as error:
        raise TimeoutError(f"waited {seconds:g} s for {what}; Playwright said: {str(error).splitlines()[0]}") from None


def poll(condition: Callable[[], bool], what: str, seconds: float, pause: Callable[[], None] | None = None) -> None:
    """Check ``condition`` until it holds; after ``seconds``, fail naming ``what``.

    ``pause`` runs between checks (default: 0.25 s of sleep). Pass ``lambda: page.wait_for_timeout(250)``
    when the condition depends on Playwright events: they are only delivered while Playwright waits."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds:g} s for {what}")
        (pause or (lambda: time.sleep(0.25)))()
