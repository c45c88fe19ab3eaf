"""The built web book in headless Chromium: every page of the toc loads cleanly and shows its
figures and formulas, and the static players of the explorers scrub frames without a kernel.

Needs the built book (`make book` -> _build/html; `make test` builds it first) and Debian's
/usr/bin/chromium. Screenshots go to artifacts/book/ (git-ignored) for a human to look at.
Set CURVED_LATENTS_BOOK to another book folder (with _toc.yml and _build/html) to check a
scratch build.

Waits are on conditions (page loaded, MathJax done, frame shown), never fixed sleeps, within
bounds meant for a 2-core machine that other work keeps busy; a timeout says what it waited for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from book_toc import toc_pages
from browser_support import REPO, chromium, screenshot_path, static_server, waiting_for

from labkit.widgets import static_player, to_png

pytestmark = [pytest.mark.slow, pytest.mark.browser]

BOOK = Path(os.environ.get("CURVED_LATENTS_BOOK", REPO))
HTML = BOOK / "_build" / "html"
# Chapters whose explorers must reach the web book as static players (once they are in the toc).
CHAPTERS_WITH_PLAYERS = ["book/part2-diffusion/05_editing", "book/part2-diffusion/06_interpolation"]
WAIT_S = 120  # any one wait (a page load, MathJax typesetting a page, a frame shown), on a busy machine
PAGES = toc_pages(BOOK / "_toc.yml")


def player_pages() -> list[str]:
    pages = [HTML / f"{doc}.html" for doc in PAGES]
    return [doc for doc, page in zip(PAGES, pages) if page.is_file() and 'class="labkit-frames"' in page.read_text()]


@pytest.fixture(scope="module")
def book_url():
    if not (HTML / "index.html").is_file():
        pytest.skip(f"no built book at {HTML}: run `make book` first")
    with static_server(HTML) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)  # generous: the CI machine may be busy
    yield page
    context.close()


def watch(page, local: str) -> list[str]:
    """Collect what goes wrong on a page: console errors, uncaught exceptions, failed local requests."""
    problems: list[str] = []

    def on_console(msg) -> None:
        # Chromium asks every site for /favicon.ico; the book has no icon, and that is fine.
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"console {msg.type}: {msg.text} at {msg.location.get('url')}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed request: {request.url} ({request.failure})")
            if request.url.startswith(local) else None)
    page.on("response", lambda response: problems.append(f"HTTP {response.status}: {response.url}")
            if response.url.startswith(local) and response.status >= 400 else None)
    return problems


BROKEN_IMAGES = """async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener("load", done); img.addEventListener("error", done);
  })));
  const broken = images.filter(img => img.naturalWidth === 0);
  return {count: images.length, broken: broken.map(img => (img.currentSrc || img.outerHTML).slice(0, 120))};
}"""

UNRENDERED_MATH = """async () => {
  await MathJax.startup.promise;
  const formulas = [...document.querySelectorAll("span.math, div.math")];
  return {count: formulas.length,
          raw: formulas.filter(el => !el.querySelector("mjx-container")).map(el => el.textContent.slice(0, 80)),
          errors: [...document.querySelectorAll("mjx-merror")].map(el => el.textContent.slice(0, 80))};
}"""


def test_toc_pages_are_built():
    if not HTML.is_dir():
        pytest.skip(f"no built book at {HTML}: run `make book` first")
    missing = [doc for doc in PAGES if not (HTML / f"{doc}.html").is_file()]
    assert not missing, f"toc pages with no HTML: {missing}"


def test_root_redirects_to_the_first_page(page, book_url):
    page.goto(book_url + "/")
    with waiting_for(f"the root page to redirect to {PAGES[0]}.html", WAIT_S):
        page.wait_for_url(f"**/{PAGES[0]}.html")
    assert page.title()


@pytest.mark.parametrize("doc", PAGES)
def test_page_loads_cleanly_with_figures_and_math(page, book_url, doc):
    problems = watch(page, book_url)
    with waiting_for(f"{doc}.html to load", WAIT_S):
        page.goto(f"{book_url}/{doc}.html", wait_until="load")
    images = page.evaluate(BROKEN_IMAGES)
    assert not images["broken"], f"{doc}: images that did not load: {images['broken']}"
    if page.locator("span.math, div.math").count():
        with waiting_for(f"MathJax to start on {doc}.html", WAIT_S):
            page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        math = page.evaluate(UNRENDERED_MATH)
        assert math["count"] > 0 and not math["raw"], f"{doc}: formulas MathJax did not typeset: {math['raw']}"
        assert not math["errors"], f"{doc}: TeX errors: {math['errors']}"
    page.screenshot(path=screenshot_path("book", f"{doc}.png"))
    assert not problems, f"{doc}: " + "\n".join(problems)


SHOWN = "([img, src]) => img.getAttribute('src') !== src && img.complete && img.naturalWidth > 0"


def scrub(page, player, name: str) -> None:
    """Move a static player's slider with the keyboard; its frame must change, and come back.

    A player may open on a middle frame (the edit explorer opens on γ = 0), so "back" means
    stepping from the first frame to where it started."""
    player.scroll_into_view_if_needed()
    image, slider, label = player.locator("img"), player.locator("input[type=range]"), player.locator("[id$='-label']")
    first_src, first_label = image.get_attribute("src"), label.inner_text()
    start = int(slider.input_value())
    before = player.screenshot(path=screenshot_path("players", f"{name}-first.png"))
    slider.focus()
    page.keyboard.press("End")
    assert slider.input_value() == slider.get_attribute("max")
    with waiting_for(f"{name}: the last frame to be shown", WAIT_S):  # decoding the new image may lag on a busy machine
        page.wait_for_function(SHOWN, arg=[image.element_handle(), first_src])
    after = player.screenshot(path=screenshot_path("players", f"{name}-last.png"))
    last_src = image.get_attribute("src")
    assert last_src != first_src and label.inner_text() != first_label
    assert before != after, f"{name}: moving the slider did not change what is on screen"
    page.keyboard.press("Home")
    assert slider.input_value() == slider.get_attribute("min") and image.get_attribute("src") != last_src
    for _ in range(start):
        page.keyboard.press("ArrowRight")
    assert image.get_attribute("src") == first_src and label.inner_text() == first_label
    # play steps through the frames on its own
    player.locator("[id$='-play']").click()
    with waiting_for(f"{name}: play to step to another frame", WAIT_S):
        page.wait_for_function("([img, src]) => img.getAttribute('src') !== src",
                               arg=[image.element_handle(), first_src])
    player.locator("[id$='-play']").click()


def test_static_players_in_the_book_scrub_frames(page, book_url):
    pages = player_pages()
    required = [doc for doc in CHAPTERS_WITH_PLAYERS if doc in PAGES]
    missing = [doc for doc in required if doc not in pages]
    assert not missing, f"these chapters show explorers but their pages have no static player: {missing}"
    if not pages:
        pytest.skip("no page in the toc shows an explorer yet (Part II's editing chapter adds them)")
    for doc in pages:
        problems = watch(page, book_url)
        with waiting_for(f"{doc}.html to load", WAIT_S):
            page.goto(f"{book_url}/{doc}.html", wait_until="load")
        players = page.locator(".labkit-frames")
        for i in range(players.count()):
            scrub(page, players.nth(i), f"{doc.replace('/', '_')}-{i}")
        assert not problems, f"{doc}: " + "\n".join(problems)


def test_labkit_static_player_works_in_chromium(browser, tmp_path):
    """The player's own JavaScript, on a bare page (runs even before the book has explorers)."""
    frames = [to_png(np.eye(8) * level) for level in (0.3, 0.6, 1.0)]
    players = "\n".join(static_player(frames, ["dim", "mid", "bright"], title=f"player {k}") for k in range(2))
    (tmp_path / "index.html").write_text(f"<!doctype html><html><body>{players}</body></html>")
    with static_server(tmp_path) as url:
        page = browser.new_page()
        problems = watch(page, url)
        page.goto(url + "/index.html")
        assert page.locator(".labkit-frames").count() == 2
        scrub(page, page.locator(".labkit-frames").nth(1), "bare-1")
        # the first player is independent: still on its first frame
        assert page.locator(".labkit-frames").nth(0).locator("[id$='-label']").inner_text() == "dim"
        assert not problems, "\n".join(problems)
        page.close()
