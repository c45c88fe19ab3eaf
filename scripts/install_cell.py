"""The install cell every chapter notebook opens with, so the book's Colab button works.

Colab has no labkit; the cell pip-installs it, with the ``book`` extra (ipywidgets, mlxtend),
from the repository named in _config.yml's ``repository.url``. Where labkit is importable (a
local install, Binder, the book's build) the cell does nothing. ``LABKIT_INSTALL_SPEC``
overrides what pip installs (a fork, a local folder, extra pip flags).

Which code it installs: the cell committed in the notebooks names no ref, so pip takes the
repository's default branch, which always exists (the Colab button opens the notebooks of that
branch too). The Pages workflow writes the exact commit it builds into its copies of the cells
(``--ref $GITHUB_SHA``, never committed), so the published book installs the code that built
it, and no cell can point at a ref that does not exist.

In the web book the cell is removed from the page (tag ``remove-cell``) but still runs.

    python scripts/install_cell.py              # insert or refresh the cell in every chapter
    python scripts/install_cell.py --check      # exit 1 if a chapter lacks the current cell
    python scripts/install_cell.py --ref SHA    # the Pages build: install commit SHA (do not commit)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "book").glob("part*/*.ipynb"))
TAG = "remove-cell"
# Recognises an install cell written by an earlier version of this script (to refresh it).
MARK = "LABKIT_INSTALL_SPEC"


def install_spec(repo: Path = REPO, ref: str | None = None) -> str:
    """pip's target: ``labkit[book]@git+<repository.url>``, at commit ``ref`` when one is given."""
    url = yaml.safe_load((repo / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    return f"labkit[book]@git+{url}" + (f"@{ref}" if ref else "")


def cell_source(spec: str | None = None) -> str:
    """The cell's code: installs ``spec`` (default: the committed cell's) when labkit is missing."""
    spec = spec or install_spec()
    return (
        "# On Colab: install this book's version of labkit if it is missing (where it is installed, nothing happens).\n"
        "import importlib.util, os, subprocess, sys  # noqa: E401 (one line keeps the cell short)\n"
        'if importlib.util.find_spec("labkit") is None:\n'
        f'    spec = os.environ.get("LABKIT_INSTALL_SPEC", "{spec}")\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *spec.split()], check=True)\n'
        "    importlib.invalidate_caches()  # so this kernel finds the package just installed"
    )


def commit_arg(text: str) -> str:
    """argparse type: a commit id (7 to 40 hex digits), the one thing a build can pin that exists."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", text):
        raise argparse.ArgumentTypeError(f"must be a commit id (7 to 40 lowercase hex digits, e.g. $GITHUB_SHA), "
                                         f"got {text!r}: a branch moves and a tag may not exist")
    return text


def first_code_cell(notebook: dict) -> dict | None:
    return next((cell for cell in notebook["cells"] if cell["cell_type"] == "code"), None)


def is_install_cell(cell: dict | None) -> bool:
    return cell is not None and MARK in "".join(cell["source"])


def with_install_cell(notebook: dict, spec: str | None = None) -> dict:
    """``notebook`` with the current install cell (of ``spec``) as its first code cell; other cells untouched."""
    lines = cell_source(spec).splitlines(keepends=True)
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
    parser.add_argument("--ref", type=commit_arg, default=None,
                        help="write a cell that installs this commit (the Pages build; do not commit the result)")
    args = parser.parse_args(argv)
    spec = install_spec(ref=args.ref)
    stale = []
    for path in CHAPTERS:
        text = path.read_text()
        updated = json.dumps(with_install_cell(json.loads(text), spec), indent=1, ensure_ascii=False) + "\n"
        if updated != text:
            stale.append(path.relative_to(REPO))
            if not args.check:
                path.write_text(updated)
    verb = "lack the current install cell" if args.check else f"updated to install {spec}"
    for path in stale:
        print(f"{path}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
