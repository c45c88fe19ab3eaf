"""Ship the live explorers with the book: book/_static/ into the build, and the loader on the pages
that show an explorer.

An explorer's static player (labkit.widgets) sits in an element with a ``data-labkit-live``
configuration. On those pages only, this adds ``_static/live/live.js``, which offers a "Run live"
button; the rest (explorer.js, onnxruntime-web, the exported models) loads when the reader presses
it, from ``_static/live/`` in the build: book/_static/live/ holds the JavaScript, and its
``generated/`` folder the files scripts/export_onnx.py writes (`make live`, run by `make book`).

Enabled in _config.yml under ``sphinx: local_extensions``.
"""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

STATIC = Path(__file__).resolve().parent.parent / "_static"
MANIFEST = STATIC / "live" / "generated" / "manifest.json"


def add_static(app: Sphinx, config) -> None:
    if not MANIFEST.is_file():
        raise ExtensionError(f"the live explorers' files are missing ({MANIFEST} does not exist): run `make live` "
                             "(python scripts/export_onnx.py, after `npm ci`); `make book` does both")
    config.html_static_path.append(str(STATIC))


def add_loader(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    # Only pages with an explorer load the (small) loader; it loads nothing else by itself.
    if "data-labkit-live" in context.get("body", ""):
        app.add_js_file("live/live.js", type="module")


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", add_static)
    app.connect("html-page-context", add_loader)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
