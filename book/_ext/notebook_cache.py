"""Execute every notebook once per content: nbval's run and the book build share one cache.

`make test` used to execute each notebook twice, once under nbval and once in the strict book
build (about 8 minutes each on 2 cores). Now the book builds with ``execute_notebooks: cache``
(jupyter-cache, through myst-nb) and nbval stores every notebook it ran without a failure in the
same cache (book/conftest.py), so the build that follows reuses those executions.

jupyter-cache matches a notebook by its code cells alone, so a cache that outlived a change to
labkit, to the shipped models or to a benchmark's results would serve stale outputs. The cache
therefore lives in a folder named by :func:`content_key`, a hash of everything a notebook's outputs
can depend on; a change anywhere starts a new, empty folder, and older folders are removed.

Enabled in _config.yml under ``sphinx: local_extensions``; with any other execution mode it does
nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sphinx.application import Sphinx

REPO = Path(__file__).resolve().parents[2]
CACHES = Path("_build") / ".jupyter_cache"
# What a notebook reads besides its own cells: the package, the book's files (data, extensions),
# the benchmarks' committed results, and the pinned requirements.
INPUTS = ("labkit", "book", "benchmarks", "requirements.txt", "pyproject.toml")
# Text the notebooks do not read: the pages, and the notebooks themselves (jupyter-cache matches a
# notebook by its code cells, so a change to a notebook's prose keeps every execution).
TEXT_ONLY = (".ipynb", ".md")
# Packages whose version changes numbers or figures in an output.
PACKAGES = ("torch", "numpy", "scipy", "diffusers", "matplotlib", "ipywidgets")
SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints"}


def _input_files(root: Path) -> list[str]:
    """The INPUTS' files but TEXT_ONLY ones, relative to ``root``: git's tracked and
    untracked-but-not-ignored files (so build outputs under ignored folders do not count), or every
    file outside a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *INPUTS],
                                cwd=root, capture_output=True, check=True, timeout=60).stdout
        names = {name for name in listed.decode().split("\0") if name}
    except (OSError, subprocess.SubprocessError):
        names = {str(path.relative_to(root)) for item in INPUTS for path in
                 ([root / item] if (root / item).is_file() else (root / item).rglob("*"))}
    return sorted(name for name in names if (root / name).is_file() and not name.endswith(TEXT_ONLY)
                  and not SKIPPED_PARTS & set(Path(name).parts))


def content_key(root: Path = REPO) -> str:
    """A 16-hex-digit hash of the contents of everything a notebook's outputs depend on under
    ``root`` (the INPUTS), the Python version and the PACKAGES' versions."""
    digest = hashlib.sha256()
    for name in _input_files(root):
        digest.update(name.encode() + b"\0" + hashlib.sha256((root / name).read_bytes()).digest())
    for package in PACKAGES:
        try:
            digest.update(f"{package}=={version(package)}\0".encode())
        except PackageNotFoundError:
            digest.update(f"{package} missing\0".encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


def cache_folder(root: Path = REPO) -> Path:
    """The jupyter-cache folder for the current contents of ``root``; folders left by other
    contents are removed (they can never match again, and each holds every notebook's figures)."""
    folder = root / CACHES / content_key(root)
    if folder.parent.is_dir():
        for other in folder.parent.iterdir():
            if other != folder and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def use_content_keyed_cache(app: Sphinx, config) -> None:
    if config.nb_execution_mode == "cache":
        config.nb_execution_cache_path = str(cache_folder(REPO))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_content_keyed_cache)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
