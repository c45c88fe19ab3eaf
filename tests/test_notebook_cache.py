"""One execution per content: nbval's run feeds the book build (book/conftest.py), in a jupyter-cache
folder keyed by the contents a notebook depends on (book/_ext/notebook_cache.py)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def load_extension(root: Path):
    path = root / "book" / "_ext" / "notebook_cache.py"
    spec = importlib.util.spec_from_file_location("notebook_cache_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A one-page book laid out like this repository (outside git), whose notebook reads a labkit file."""
    (tmp_path / "book" / "_ext").mkdir(parents=True)
    shutil.copy2(REPO / "book" / "conftest.py", tmp_path / "book" / "conftest.py")
    shutil.copy2(REPO / "book" / "_ext" / "notebook_cache.py", tmp_path / "book" / "_ext" / "notebook_cache.py")
    (tmp_path / "labkit").mkdir()
    (tmp_path / "labkit" / "factor.txt").write_text("3")
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Page"),
        nbformat.v4.new_code_cell("from pathlib import Path\nfactor = int(Path('../labkit/factor.txt').read_text())"),
        nbformat.v4.new_code_cell("print(f'answer {factor * 7}')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, tmp_path / "book" / "page.ipynb")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/page\n")
    (tmp_path / "_config.yml").write_text(
        "title: t\nexecute:\n  execute_notebooks: cache\n  raise_on_error: true\n"
        "sphinx:\n  local_extensions:\n    notebook_cache: book/_ext\n")
    return tmp_path


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def build(root: Path) -> tuple[str, str]:
    log = run([str(BIN / "jupyter-book"), "build", ".", "--warningiserror"], root)
    return log, (root / "_build" / "html" / "book" / "page.html").read_text()


def test_the_key_follows_the_inputs_and_ignores_build_outputs(book):
    extension = load_extension(book)
    key = extension.content_key(book)
    (book / "_build").mkdir()
    (book / "_build" / "out.txt").write_text("a build output")
    (book / "labkit" / "__pycache__").mkdir()
    (book / "labkit" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert extension.content_key(book) == key
    page = nbformat.read(book / "book" / "page.ipynb", as_version=4)
    page.cells[0].source = "# Another title"  # prose: jupyter-cache matches the code cells anyway
    nbformat.write(page, book / "book" / "page.ipynb")
    assert extension.content_key(book) == key
    (book / "labkit" / "factor.txt").write_text("4")
    assert extension.content_key(book) != key
    (book / "labkit" / "factor.txt").write_text("3")
    assert extension.content_key(book) == key


def test_a_new_content_gets_a_new_folder_and_old_ones_go(book):
    extension = load_extension(book)
    first = extension.cache_folder(book)
    (book / "labkit" / "factor.txt").write_text("5")
    second = extension.cache_folder(book)
    assert second != first and second.is_dir() and not first.exists()


@pytest.mark.slow
def test_the_book_build_reuses_what_nbval_executed_and_never_a_stale_output(book):
    run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q", "book"],
        book)
    log, page = build(book)
    assert "Using cached notebook" in log and "Executing notebook" not in log, log[-3000:]
    assert "answer 21" in page
    # What the notebook reads changed: the cached outputs no longer apply, so the build executes it.
    (book / "labkit" / "factor.txt").write_text("4")
    log, page = build(book)
    assert "Executing notebook" in log and "answer 28" in page and "answer 21" not in page


@pytest.mark.slow
def test_a_notebook_nbval_did_not_run_whole_is_executed_by_the_build(book):
    run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
         "book/page.ipynb::Cell 0"], book)
    log, page = build(book)
    assert "Executing notebook" in log and "answer 21" in page
