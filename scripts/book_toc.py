"""The book's table of contents (_toc.yml) as a list of pages, for the scripts and the tests."""

from __future__ import annotations

from pathlib import Path

import yaml


def toc_pages(toc_file: Path) -> list[str]:
    """Every document of a Jupyter Book _toc.yml, root first, in reading order.

    Docnames without suffix, relative to the book's root (e.g. "book/part1-geometry/01_manifolds").
    """
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    found.append(str(node[key]).removesuffix(".md").removesuffix(".ipynb"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(Path(toc_file).read_text()))
    return found
