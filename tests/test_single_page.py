"""The single-page edition (`make singlehtml`): every page of the web book, in reading order, on
one HTML page, with its figures, built from the executed notebooks without running them again.

Needs the full edition (`make book` -> _build/html; `make test` builds it first).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

pytestmark = pytest.mark.slow

BOOK = Path(os.environ.get("CURVED_LATENTS_BOOK", Path(__file__).resolve().parent.parent))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build_single_page.py"
FULL = BOOK / "_build" / "html"
SINGLE = BOOK / "_build" / "single" / "_build" / "singlehtml"


def test_single_page_holds_every_page_with_its_figures():
    if not (FULL / "index.html").is_file():
        pytest.skip(f"no full edition at {FULL}: run `make book` first")
    done = subprocess.run([sys.executable, str(SCRIPT), "--book", str(BOOK)], capture_output=True, text=True,
                          timeout=1200, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "reusing the outputs of" in log and "Executing" not in log, "notebooks were executed again"

    single = BeautifulSoup((SINGLE / "index.html").read_text(), "html.parser")
    main = single.select_one("main") or single
    headings = [h.get_text(" ", strip=True).rstrip("#").strip() for h in main.select("h1")]
    full_titles = []
    for page in sorted(FULL.joinpath("book").rglob("*.html")):
        h1 = BeautifulSoup(page.read_text(), "html.parser").select_one("main h1")
        if h1 is not None:
            full_titles.append(h1.get_text(" ", strip=True).rstrip("#").strip())
    assert full_titles, "the full edition has no page titles to compare"
    missing = [title for title in full_titles if not any(title in heading for heading in headings)]
    assert not missing, f"pages missing from the single page: {missing}"

    images = [img["src"] for img in main.select("img")]
    full_images = sum(len(BeautifulSoup(p.read_text(), "html.parser").select("main img"))
                      for p in FULL.joinpath("book").rglob("*.html"))
    assert len(images) >= full_images > 0, f"{len(images)} images on the single page, {full_images} in the book"
    broken = [src for src in images if not src.startswith("data:") and not (SINGLE / src).is_file()]
    assert not broken, f"images the single page links to but does not have: {broken[:5]}"
