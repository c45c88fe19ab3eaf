"""The install cell every chapter notebook opens with, so the book's Colab button works.

Colab has no labkit; the cell pip-installs the book's own version of the project from its
repository (the tag ``v<version>``: the version comes from pyproject.toml, the repository from
_config.yml's ``repository.url``, so the pin lives in one place). Where labkit is importable
(a local install, Binder, the book's build) the cell does nothing. ``LABKIT_INSTALL_SPEC``
overrides what pip installs (a fork, a local folder, extra pip flags).

In the web book the cell is removed from the page (tag ``remove-cell``) but still runs.

    python scripts/install_cell.py          # insert or refresh the cell in every chapter
    python scripts/install_cell.py --check  # exit 1 if a chapter lacks the current cell
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "book").glob("part*/*.ipynb"))
TAG = "remove-cell"
# Recognises an install cell written by an earlier version of this script (to refresh it).
MARK = "LABKIT_INSTALL_SPEC"


def install_spec(repo: Path = REPO) -> str:
    """pip's target for the book's version: ``git+<repository.url>@v<pyproject version>``."""
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    url = yaml.safe_load((repo / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    return f"git+{url}@v{version}"


def cell_source(spec: str | None = None) -> str:
    """The cell's code: installs ``spec`` (default: the book's version) when labkit is missing."""
    spec = spec or install_spec()
    return (
        "# On Colab: install this book's version of labkit if it is missing (where it is installed, nothing happens).\n"
        "import importlib.util, os, subprocess, sys  # noqa: E401 (one line keeps the cell short)\n"
        'if importlib.util.find_spec("labkit") is None:\n'
        f'    spec = os.environ.get("LABKIT_INSTALL_SPEC", "{spec}")\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *spec.split()], check=True)\n'
        "    importlib.invalidate_caches()  # so this kernel finds the package just installed"
    )


def first_code_cell(notebook: dict) -> dict | None:
    return next((cell for cell in notebook["cells"] if cell["cell_type"] == "code"), None)


def is_install_cell(cell: dict | None) -> bool:
    return cell is not None and MARK in "".join(cell["source"])


def with_install_cell(notebook: dict) -> dict:
    """``notebook`` with the current install cell as its first code cell; other cells untouched."""
    lines = cell_source().splitlines(keepends=True)
    first = first_code_cell(notebook)
    if is_install_cell(first):
        first["source"] = lines
        first["metadata"] = {"tags": [TAG]}
        return notebook
    ids = {cell.get("id") for cell in notebook["cells"]}
    new_id = next(i for i in (uuid.uuid4().hex[:8] for _ in range(100)) if i not in ids)
    cell = {"cell_type": "code", "execution_count": None, "id": new_id, "metadata": {"tags": [TAG]},
            "outputs": [], "source": lines}
    at = notebook["cells"].index(first) if first is not None else len(notebook["cells"])
    notebook["cells"].insert(at, cell)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report chapters whose install cell is missing or stale")
    args = parser.parse_args(argv)
    stale = []
    for path in CHAPTERS:
        text = path.read_text()
        updated = json.dumps(with_install_cell(json.loads(text)), indent=1, ensure_ascii=False) + "\n"
        if updated != text:
            stale.append(path.relative_to(REPO))
            if not args.check:
                path.write_text(updated)
    verb = "lack the current install cell" if args.check else "updated"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
