"""Build the single-page edition: the whole book, solutions included, on one HTML page (to read
offline, or to print or save as PDF from a browser).

    python scripts/build_single_page.py        # or: make singlehtml
    -> _build/single/_build/singlehtml/index.html

Sphinx's ``singlehtml`` builder writes the whole book into the page of the root document,
``_toc.yml``'s ``root`` (``book/intro.html``), but writes every link on it (stylesheets, scripts,
MathJax, figures, the page's own anchors) relative to the output folder, as if the page were
``index.html``; ``index.html`` itself is only a redirect. So this script moves the page to
``index.html``, where every link resolves, makes its links to itself plain anchors, drops the
theme's links to index and search pages that singlehtml does not write (and its search buttons and
search dialog, whose form posts to that missing page), puts the book's title
back in the theme's logo text (singlehtml passes the theme no ``docstitle``, so it reads "None"),
and leaves a redirect at the old place. Like the student edition, it executes no notebook again:
it reuses the full edition's executed notebooks (building the full edition first if they are
missing or stale), with the same strict flags as `make book`.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
from pathlib import Path

import yaml
from book_toc import toc_pages
from build_student_edition import REPO, build_from_executed


def move_to_index(built: Path, root: Path, title: str) -> Path:
    """Move the whole-book page from the root document's place to ``built/index.html``; return it."""
    name = f"{toc_pages(root / '_toc.yml')[0]}.html"
    page = built / name
    text = page.read_text(encoding="utf-8").replace(f'href="{name}#', 'href="#')
    # singlehtml gives the theme no document title, so its logo text reads "None"
    logo = '<p class="title logo__title">{}</p>'
    text = text.replace(logo.format("None"), logo.format(html.escape(title)))
    # singlehtml writes no index or search pages; the theme still links them (use the browser's find)
    for tag in ('<link rel="index" title="Index" href="genindex.html" />',
                '<link rel="search" title="Search" href="search.html" />', '<script src="searchindex.js"></script>'):
        text = text.replace(tag, "")
    # The theme's search buttons open a dialog whose form submits to search.html; drop both. A
    # button holds only an icon and spans, never another button, so the shortest match is the whole.
    text = re.sub(r'<button[^>]*search-button__button[^>]*>.*?</button>', "", text, flags=re.S)
    text = re.sub(r'<dialog id="pst-search-dialog">.*?</dialog>', "", text, flags=re.S)
    index = built / "index.html"
    index.write_text(text, encoding="utf-8")
    up = "../" * name.count("/")
    page.write_text(f'<meta http-equiv="Refresh" content="0; url={up}index.html" />\n', encoding="utf-8")
    return index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's root folder (default: this repository)")
    root = parser.parse_args().book.resolve()
    started = time.monotonic()
    config = yaml.safe_load((root / "_config.yml").read_text())
    built = build_from_executed(root, root / "_build" / "single", config, builder="singlehtml")
    page = move_to_index(built, root, config["title"])
    print(f"single-page edition: {page} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
