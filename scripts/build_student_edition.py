"""Build the student edition: the same book with every exercise solution removed.

    python scripts/build_student_edition.py        # or: make student
    -> _build/student/_build/html/index.html

No notebook is executed again. The full edition (`make book`, or nbval in `make test`) leaves
each notebook's execution in the book's jupyter-cache (book/_ext/notebook_cache.py, one folder per
content); this script copies the book's sources to _build/student/src, gives every notebook the
outputs of its cached execution, and builds that copy with execution off and sphinx-exercise's
``hide_solutions: true`` (same strict flags as `make book`). If a notebook has no execution for
the current contents (its code or anything it reads changed), the full edition is built first; a
change to prose only, e.g. to a solution, needs no re-run.

``hide_solutions`` removes a ``{solution}`` directive, but of a *gated* solution (sphinx-exercise's
``{solution-start}`` … ``{solution-end}``, whose code runs in cells of its own) it removes only the
start: the cells in between, with the solution's code and outputs, would stay on the page. So the
student edition also drops those cells from each notebook before building (`without_solutions`),
and the lines from start to end from each markdown page (`page_without_solutions`).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml
from book_toc import toc_pages
from jupyter_cache import get_cache

REPO = Path(__file__).resolve().parent.parent
STRICT = ["--warningiserror", "--nitpick", "--keep-going"]
# The opening line of a gated solution's directives (backtick or colon fence, as MyST allows).
SOLUTION_START = re.compile(r"^\s*(`{3,}|:{3,})\{solution-start\}", re.M)
SOLUTION_END = re.compile(r"^\s*(`{3,}|:{3,})\{solution-end\}", re.M)


def jupyter_book() -> str:
    """The jupyter-book command of this Python environment."""
    found = Path(sys.executable).with_name("jupyter-book")
    return str(found) if found.exists() else "jupyter-book"


def toc_notebooks(root: Path) -> list[str]:
    """Docnames of the toc entries that are notebooks (book/part1-geometry/01_manifolds, …)."""
    return [name for name in toc_pages(root / "_toc.yml") if (root / f"{name}.ipynb").exists()]


def execution_cache(root: Path):
    """The book's jupyter-cache for the current contents of ``root`` (book/_ext/notebook_cache.py,
    loaded from its file: it is a Sphinx extension, not a package)."""
    spec = importlib.util.spec_from_file_location("notebook_cache", root / "book" / "_ext" / "notebook_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return get_cache(str(module.cache_folder(root)))


def executed_notebooks(root: Path) -> dict[str, object] | None:
    """docname -> source notebook (its current text) with its cached execution's outputs, for
    every toc notebook; None if any has no execution for the current contents."""
    cache = execution_cache(root)
    merged = {}
    for name in toc_notebooks(root):
        try:
            _, merged[name] = cache.merge_match_into_notebook(nbformat.read(root / f"{name}.ipynb", as_version=4))
        except KeyError:
            print(f"not executed for the current contents: {name}")
            return None
    return merged


def without_solutions(notebook, name: str = "notebook"):
    """``notebook`` without its gated solutions: the cells from each markdown cell that opens with a
    ``{solution-start}`` directive through the markdown cell holding its ``{solution-end}`` (the
    same cell if it holds both), whatever their type; every other cell is kept, in order.

    The solution's cells are removed whole, so a start cell must hold nothing before the directive
    and an end cell nothing after it (that text would be lost); a start without its end (or before
    it), and an end without a start, are refused too. ``name`` names the notebook in those errors.
    Returns a copy; ``notebook`` is unchanged.
    """
    kept, opened = [], None
    for index, cell in enumerate(notebook.cells):
        text = cell.source if cell.cell_type == "markdown" else ""
        start, end = SOLUTION_START.search(text), SOLUTION_END.search(text)
        where = f"{name}, cell {index}"
        if start:
            if opened is not None:
                raise ValueError(f"{where}: a solution-start before the solution-end of the solution opened in "
                                 f"cell {opened}")
            if text[:start.start()].strip():
                raise ValueError(f"{where}: text before {{solution-start}} would be removed with the solution; "
                                 "give the directive a cell of its own")
            opened = index
        if opened is None:
            if end:
                raise ValueError(f"{where}: a solution-end without a solution-start before it")
            kept.append(cell)
        elif end:
            if not re.fullmatch(r"[^\n]*\n\s*" + re.escape(end.group(1)) + r"\s*", text[end.end():]):
                raise ValueError(f"{where}: text after {{solution-end}} would be removed with the solution; "
                                 "give the directive a cell of its own")
            opened = None
    if opened is not None:
        raise ValueError(f"{name}, cell {opened}: a solution-start without its solution-end")
    stripped = copy.copy(notebook)  # a new notebook node, sharing the kept cells
    stripped.cells = kept
    return stripped


def page_without_solutions(text: str, name: str = "page") -> str:
    """A markdown page's ``text`` without its gated solutions: each from the line that opens its
    ``{solution-start}`` directive through the closing fence of its ``{solution-end}`` directive
    (the page counterpart of `without_solutions`; the lines in between, prose or ``{code-cell}``,
    go with it). A start without its end (or before it), and an end without a start, are refused;
    ``name`` names the page in those errors."""
    def line(found: re.Match) -> int:  # the line number of a directive's opening fence
        return text.count("\n", 0, found.start(1)) + 1

    kept, position = [], 0
    while True:
        start, end = SOLUTION_START.search(text, position), SOLUTION_END.search(text, position)
        if end and (not start or end.start(1) < start.start(1)):
            raise ValueError(f"{name}, line {line(end)}: a solution-end without a solution-start before it; "
                             "open the solution with {solution-start} or remove the end")
        if not start:
            kept.append(text[position:])
            return "".join(kept)
        if not end:
            raise ValueError(f"{name}, line {line(start)}: a solution-start without its solution-end; "
                             "close the solution with a {solution-end} directive")
        following = SOLUTION_START.search(text, start.end())
        if following and following.start(1) < end.start(1):
            raise ValueError(f"{name}, line {line(following)}: a solution-start before the solution-end of the "
                             f"solution opened on line {line(start)}; close that one first")
        closing = re.compile(r"^[ \t]*" + re.escape(end.group(1)) + r"[ \t]*(\n|\Z)", re.M).search(text, end.end())
        if not closing:
            raise ValueError(f"{name}, line {line(end)}: a solution-end directive without its closing fence; "
                             f"add a line {end.group(1)} after it")
        kept.append(text[position:text.rfind("\n", 0, start.start(1)) + 1])
        position = closing.end()


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


def build_from_executed(root: Path, out: Path, config: dict, builder: str = "html",
                        keep_solutions: bool = True) -> Path:
    """Build the book at ``root`` into ``out`` with ``config`` and execution off, from the full
    edition's executed notebooks (building the full edition first if they are missing or stale).
    With ``keep_solutions=False`` (the student edition) every notebook loses its gated solutions'
    cells first (`without_solutions`), and every markdown page its gated solutions' lines
    (`page_without_solutions`). Returns the built folder, ``out/_build/<builder>``."""
    notebooks = executed_notebooks(root)
    if notebooks is None:
        build_full_edition(root)
        notebooks = executed_notebooks(root)
        if notebooks is None:
            raise SystemExit("the full build left no cached execution of every notebook for the current contents")

    source = out / "src"
    shutil.rmtree(out, ignore_errors=True)  # a fresh build: no page or source left over
    shutil.copytree(root / "book", source / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    shutil.copy2(root / "_toc.yml", source / "_toc.yml")
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    for name, notebook in notebooks.items():
        nbformat.write(notebook if keep_solutions else without_solutions(notebook, name), source / f"{name}.ipynb")
    for name in ([] if keep_solutions else toc_pages(root / "_toc.yml")):
        page = source / f"{name}.md"
        if page.is_file():
            page.write_text(page_without_solutions(page.read_text(), f"{name}.md"))
    print(f"reusing the outputs of {len(notebooks)} executed notebooks; building {builder} …", flush=True)
    subprocess.run([jupyter_book(), "build", str(source), "--builder", builder, "--path-output", str(out), *STRICT],
                   check=True)
    return out / "_build" / builder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's root folder (default: this repository)")
    root = parser.parse_args().book.resolve()
    started = time.monotonic()
    built = build_from_executed(root, root / "_build" / "student", student_config(root), keep_solutions=False)
    print(f"student edition: {built / 'index.html'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
