"""Build the single-page edition: the whole book, solutions included, on one HTML page (to read
offline, or to print or save as PDF from a browser).

    python scripts/build_single_page.py        # or: make singlehtml
    -> _build/single/_build/singlehtml/index.html

Like the student edition, it executes no notebook again: it reuses the full edition's executed
notebooks (building the full edition first if they are missing or stale) and runs Sphinx's
``singlehtml`` builder with the same strict flags as `make book`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml
from build_student_edition import REPO, build_from_executed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's root folder (default: this repository)")
    root = parser.parse_args().book.resolve()
    started = time.monotonic()
    config = yaml.safe_load((root / "_config.yml").read_text())
    built = build_from_executed(root, root / "_build" / "single", config, builder="singlehtml")
    print(f"single-page edition: {built / 'index.html'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
