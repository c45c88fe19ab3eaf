"""The single-page edition (`make singlehtml`): every page of the web book, in reading order, on
one HTML page (`index.html`), with its figures, built from the executed notebooks without running
them again, every local link resolving.

Needs the full edition (`make book` -> _build/html; `make test` builds it first).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from book_toc import toc_pages
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

BOOK = Path(os.environ.get("CURVED_LATENTS_BOOK", Path(__file__).resolve().parent.parent))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_single_page.py"
FULL = BOOK / "_build" / "html"
SINGLE = BOOK / "_build" / "single" / "_build" / "singlehtml"


def title(page: Path) -> str:
    h1 = BeautifulSoup(page.read_text(), "html.parser").select_one("main h1")
    return "" if h1 is None else h1.get_text(" ", strip=True).rstrip("#").strip()


def test_single_page_holds_every_page_with_its_figures():
    if not (FULL / "index.html").is_file():
        pytest.skip(f"no full edition at {FULL}: run `make book` first")
    done = subprocess.run([sys.executable, str(SCRIPT), "--book", str(BOOK)], capture_output=True, text=True,
                          timeout=1200, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "reusing the outputs of" in log and "Executing" not in log, "notebooks were executed again"

    single = BeautifulSoup((SINGLE / "index.html").read_text(), "html.parser")
    assert single.select_one(".logo__title").get_text(strip=True) == "Curved Latents"
    main = single.select_one("main") or single
    # Each included page keeps its title as a heading, nested one level under the root's.
    headings = [h.get_text(" ", strip=True).rstrip("#").strip() for h in main.select("h1, h2")]
    titles = [title(FULL / f"{doc}.html") for doc in toc_pages(BOOK / "_toc.yml")]
    assert all(titles), "a page of the full edition has no title to compare"
    found = [next((i for i, heading in enumerate(headings) if t in heading), None) for t in titles]
    missing = [t for t, i in zip(titles, found, strict=True) if i is None]
    assert not missing, f"pages missing from the single page: {missing}"
    assert found == sorted(found), f"pages out of reading order: {[t for _, t in sorted(zip(found, titles))]}"

    # The content's figures; the launch buttons' logos (_static/images) are page chrome, not content.
    images = [img["src"] for img in main.select("img") if "_static/" not in img["src"]]
    # counted over the table of contents' pages: a page removed from the book may linger in _build
    full_images = sum(1 for doc in toc_pages(BOOK / "_toc.yml")
                      for img in BeautifulSoup((FULL / f"{doc}.html").read_text(), "html.parser").select("main img")
                      if "_static/" not in img["src"])
    assert len(images) >= full_images > 0, f"{len(images)} images on the single page, {full_images} in the book"
    # Every local link resolves from the page's own folder: figures, stylesheets, scripts, MathJax.
    links = [tag.get("src") or tag.get("href") for tag in single.select("img[src], script[src], link[href]")]
    local = [link.split("?")[0] for link in links if not link.startswith(("data:", "http:", "https:", "#"))]
    assert any("mathjax" in link for link in local), "the single page loads no local MathJax"
    broken = [link for link in local if not (SINGLE / link).is_file()]
    assert not broken, f"links on the single page that do not resolve: {broken[:5]}"
    # Nothing leads to the search and index pages singlehtml does not write: no link, no form.
    targets = [tag.get("href") or tag.get("action") or "" for tag in single.select("a[href], link[href], form")]
    dead = [target for target in targets if target.split("?")[0] in ("search.html", "genindex.html")]
    assert not dead and not single.select(".search-button__button"), f"search leads nowhere: {dead}"
    anchors = [a["href"] for a in single.select("a[href]") if a["href"].startswith("book/")]
    assert not anchors, f"links back into the old page's place: {anchors[:5]}"
