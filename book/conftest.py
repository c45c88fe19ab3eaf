"""nbval's executions, kept for the book build (see book/_ext/notebook_cache.py for why and how).

When nbval (`make nbval`) has run every code cell of a notebook and none failed or was skipped,
the notebook with the outputs nbval received goes into the content-keyed jupyter-cache folder that
the book build (``execute_notebooks: cache``) reads, so `make test` executes each notebook once.
A notebook with any failed, skipped or deselected cell is not stored; the build then executes it.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import nbformat
import pytest
from _ext.notebook_cache import cache_folder
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from nbval.plugin import IPyNbCell


class NotebookExecutions:
    """Collects each notebook's cells as nbval runs them; stores the notebook when its last cell ends."""

    def __init__(self) -> None:
        self.cells: dict[Path, list[IPyNbCell]] = {}
        self.started: dict[Path, float] = {}
        self.incomplete: set[str] = set()  # node ids of the notebooks with a cell that did not pass
        self.folder: Path | None = None  # computed at the first stored notebook (it hashes the repository)

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if isinstance(item, IPyNbCell):
            self.started.setdefault(item.parent.path, time.monotonic())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.outcome != "passed":
            self.incomplete.add(report.nodeid.split("::")[0])

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        if not isinstance(item, IPyNbCell):
            return
        path = item.parent.path
        self.cells.setdefault(path, []).append(item)
        if nextitem is not None and nextitem.parent is item.parent:
            return
        cells = self.cells.pop(path)
        if item.parent.nodeid not in self.incomplete:
            self.store(path, cells, time.monotonic() - self.started.get(path, time.monotonic()))

    def store(self, path: Path, cells: list[IPyNbCell], seconds: float) -> None:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        if len(code) != len(cells) or any(a.source != b.cell.source or b.test_outputs is None
                                          for a, b in zip(code, cells)):
            return  # only some cells ran (a -k selection) or the file changed meanwhile: nothing to reuse
        for count, (cell, item) in enumerate(zip(code, cells), start=1):
            cell.execution_count = count
            cell.outputs = [nbformat.from_dict(dict(output)) for output in item.test_outputs]
        try:
            nbformat.validate(notebook)
        except nbformat.ValidationError as error:
            warnings.warn(f"{path}: nbval's outputs do not form a valid notebook, so the book build will execute it "
                          f"again ({error.message})", stacklevel=1)
            return
        if self.folder is None:
            self.folder = cache_folder()
        bundle = CacheBundleIn(notebook, str(path), data={"execution_seconds": seconds})
        get_cache(str(self.folder)).cache_notebook_bundle(bundle, check_validity=False, overwrite=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(NotebookExecutions(), "notebook-executions")
