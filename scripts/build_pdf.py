"""Build the PDF edition: the single-page edition (`make singlehtml`), printed to PDF by the same
Chromium the browser tests drive, once MathJax has typeset every formula.

    python scripts/build_pdf.py        # or: make pdf (builds the single page first)
    -> _build/curved-latents.pdf

Jupyter Book 1's own `--builder pdfhtml` does the same with Playwright's downloaded Chromium
(`playwright install`, which needs the network); this uses the installed one instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from browser_support import CHROMIUM_ARGS, find_chromium  # noqa: E402 (the tests' way of finding Chromium)

# Let a cell's input or output break across pages only when it must (as Jupyter Book's pdfhtml does).
PRINT_CSS = "div.cell_input, div.cell_output { break-inside: avoid; }"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's root folder (default: this repository)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the page and MathJax")
    args = parser.parse_args()
    page_file = args.book.resolve() / "_build" / "single" / "_build" / "singlehtml" / "index.html"
    pdf = args.book.resolve() / "_build" / "curved-latents.pdf"
    if not page_file.is_file():
        raise SystemExit(f"no single-page edition at {page_file}: run `make singlehtml` first")
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium: run `bash scripts/ensure_browser.sh` or set CHROMIUM=/path/to/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(args.timeout * 1000)
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
        page.add_style_tag(content=PRINT_CSS)
        page.pdf(path=str(pdf), format="A4", margin={"top": "0.5in", "bottom": "0.5in"}, print_background=True)
        browser.close()
    print(f"PDF edition: {pdf} ({pdf.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
