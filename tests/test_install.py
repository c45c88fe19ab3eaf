"""`pip install labkit` from the repository, non-editable, into a bare venv: what a user gets.

The venv sees only the distributions that labkit's metadata asks for (and theirs), linked from
this test's environment, so nothing is downloaded (torch alone is about 1 GB) and an
undeclared dependency fails here as it would for a user. With the plain install every module
imports except ``labkit.widgets``, which names the extra to install, as ``labkit.data`` does for
the digits; after adding what the ``book`` extra declares, both work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def closure(requirements: list[str], extras: tuple[str, ...] = ("",)) -> set[str]:
    """The installed distributions that ``requirements`` need, transitively (markers evaluated here)."""
    found, todo = set(), [(r, extras) for r in requirements]
    while todo:
        text, active = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in active):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        todo += [(r, ("", *req.extras)) for r in metadata.distribution(req.name).requires or []]
    return found


def link_distributions(names: set[str], into: Path) -> None:
    """Symlink each distribution's top-level files and folders (site-packages entries) into ``into``."""
    into.mkdir(exist_ok=True)
    for name in names:
        dist = metadata.distribution(name)
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


def run_in(python: Path, code: str, cwd: Path) -> dict:
    result = subprocess.run([str(python), "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """(python of a venv with a non-editable labkit and only its declared dependencies, the folder of links)"""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # a copy, so that the build writes nothing into the working tree
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source / "pyproject.toml")
    shutil.copytree(REPO / "labkit", source / "labkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheels"), str(source)],
                   check=True, timeout=600)
    venv = tmp / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    *map(str, (tmp / "wheels").glob("labkit-*.whl"))], check=True, timeout=600)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    links = tmp / "dependencies"
    requires = run_in(python, "import json; from importlib import metadata; "
                              "print(json.dumps(metadata.requires('labkit')))", cwd=tmp)
    link_distributions(closure(requires), links)
    (site / "labkit_dependencies.pth").write_text(f"{links}\n")
    return python, links, requires, tmp


def test_a_plain_install_imports_every_module_and_names_the_extra_for_the_rest(bare):
    python, _, _, tmp = bare
    found = run_in(python, """
        import importlib, json, pkgutil
        import labkit
        names = sorted(m.name for m in pkgutil.iter_modules(labkit.__path__, "labkit.") if m.name != "labkit.widgets")
        failed = {}
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as err:
                failed[name] = f"{type(err).__name__}: {err}"
        try:
            import labkit.widgets
            widgets = "imported"
        except ImportError as err:
            widgets = str(err)
        import labkit.data
        try:
            labkit.data.load_digits()
            digits = "loaded"
        except ImportError as err:
            digits = str(err)
        model = labkit.load_model()
        print(json.dumps({"file": labkit.__file__, "names": names, "failed": failed, "widgets": widgets,
                          "digits": digits, "shape": list(model.sample_shape)}))
        """, cwd=tmp)
    assert str(python.parent.parent) in found["file"]  # the installed copy, not the working tree
    assert len(found["names"]) > 20 and found["failed"] == {}
    assert "pip install 'labkit[widgets]'" in found["widgets"]
    assert "pip install 'labkit[data]'" in found["digits"]
    assert found["shape"] == [1, 28, 28]  # the embedded weights are installed with it


def test_the_installed_package_holds_no_training_checkpoint(bare):
    python, _, _, tmp = bare
    files = run_in(python, """
        import json; from importlib import metadata
        print(json.dumps([str(f) for f in metadata.files("labkit")]))
        """, cwd=tmp)
    assert any(f.endswith("embedded/unet/diffusion_pytorch_model.safetensors") for f in files)
    assert not [f for f in files if "checkpoint" in f.split("/")]  # no checkpoint/ folder anywhere


def test_the_book_extra_brings_what_widgets_and_data_need(bare):
    python, links, requires, tmp = bare
    book = [r for r in requires if Requirement(r).marker and Requirement(r).marker.evaluate({"extra": "book"})]
    assert {canonicalize_name(Requirement(r).name) for r in book} == {"ipywidgets", "mlxtend"}
    link_distributions(closure(book, ("book",)), links)
    found = run_in(python, """
        import json
        import labkit.widgets
        from labkit.data import load_digits
        print(json.dumps({"explorer": labkit.widgets.EditExplorer.__name__, "digits": len(load_digits()[0])}))
        """, cwd=tmp)
    assert found == {"explorer": "EditExplorer", "digits": 5000}
