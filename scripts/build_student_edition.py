"""Build the student edition: the same book with every exercise solution removed.

    python scripts/build_student_edition.py        # or: make student
    -> _build/student/_build/html/index.html

No notebook is executed again. The full edition (`make book`) leaves each executed notebook in
_build/jupyter_execute/; this script copies the book's sources to _build/student/src, gives every
notebook the outputs of its executed copy, and builds that copy with execution off and
sphinx-exercise's ``hide_solutions: true`` (same strict flags as `make book`). If the full
edition is missing, or a notebook's code changed since it was built, the full edition is built
first (a text-only change, e.g. to a solution, needs no re-run).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml
from book_toc import toc_pages

REPO = Path(__file__).resolve().parent.parent
STRICT = ["--warningiserror", "--nitpick", "--keep-going"]


def jupyter_book() -> str:
    """The jupyter-book command of this Python environment."""
    found = Path(sys.executable).with_name("jupyter-book")
    return str(found) if found.exists() else "jupyter-book"


def toc_notebooks(root: Path) -> list[str]:
    """Docnames of the toc entries that are notebooks (book/part1-geometry/01_manifolds, …)."""
    return [name for name in toc_pages(root / "_toc.yml") if (root / f"{name}.ipynb").exists()]


def code_of(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def with_outputs(source, executed):
    """The source notebook (its current text) carrying the executed copy's outputs, or None if
    their code differs (the executed copy is stale)."""
    if code_of(source) != code_of(executed):
        return None
    outputs = iter(cell for cell in executed.cells if cell.cell_type == "code")
    for cell in source.cells:
        if cell.cell_type == "code":
            ran = next(outputs)
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
    if "widgets" in executed.metadata:
        source.metadata["widgets"] = executed.metadata["widgets"]
    return source


def executed_notebooks(root: Path) -> dict[str, object] | None:
    """docname -> source notebook with outputs, for every toc notebook; None if any is stale."""
    merged = {}
    for name in toc_notebooks(root):
        copy = root / "_build" / "jupyter_execute" / f"{name}.ipynb"
        if not copy.exists():
            print(f"not executed yet: {name}")
            return None
        notebook = with_outputs(nbformat.read(root / f"{name}.ipynb", as_version=4), nbformat.read(copy, as_version=4))
        if notebook is None:
            print(f"code changed since the full build: {name}")
            return None
        merged[name] = notebook
    return merged


def student_config(root: Path) -> dict:
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["title"] = f"{config.get('title', 'Book')} (student edition)"
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["hide_solutions"] = True
    # The page sources (_sources/, the download button) would still hold the solutions.
    sphinx_config["html_copy_source"] = False
    sphinx_config["html_theme_options"] = {"use_download_button": False}
    config["sphinx"]["recursive_update"] = True  # merge those theme options, keep the others
    return config


def build_full_edition(root: Path) -> None:
    print("building the full edition first (executes every notebook) …", flush=True)
    subprocess.run([jupyter_book(), "build", str(root), *STRICT], check=True)


def build_from_executed(root: Path, out: Path, config: dict, builder: str = "html") -> Path:
    """Build the book at ``root`` into ``out`` with ``config`` and execution off, from the full
    edition's executed notebooks (building the full edition first if they are missing or stale).
    Returns the built folder, ``out/_build/<builder>``."""
    notebooks = executed_notebooks(root)
    if notebooks is None:
        build_full_edition(root)
        notebooks = executed_notebooks(root)
        if notebooks is None:
            raise SystemExit("the full build did not leave executed copies of every notebook in _build/jupyter_execute")

    source = out / "src"
    shutil.rmtree(out, ignore_errors=True)  # a fresh build: no page or source left over
    shutil.copytree(root / "book", source / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    shutil.copy2(root / "_toc.yml", source / "_toc.yml")
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    for name, notebook in notebooks.items():
        nbformat.write(notebook, source / f"{name}.ipynb")
    print(f"reusing the outputs of {len(notebooks)} executed notebooks; building {builder} …", flush=True)
    subprocess.run([jupyter_book(), "build", str(source), "--builder", builder, "--path-output", str(out), *STRICT],
                   check=True)
    return out / "_build" / builder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's root folder (default: this repository)")
    root = parser.parse_args().book.resolve()
    started = time.monotonic()
    built = build_from_executed(root, root / "_build" / "student", student_config(root))
    print(f"student edition: {built / 'index.html'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
