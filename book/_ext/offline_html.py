"""Make the built HTML work offline and load without console errors (the browser tests check it).

Two fixes, both for every HTML page of the book:

1. MathJax from the book itself. Sphinx loads MathJax 3 from a CDN by default; offline, every
   formula stays raw TeX. MathJax 3 is on PyPI as ``django-static-mathjax`` (the upstream es5
   build; Django is not needed): we copy the parts a page uses (the tex-mml-chtml bundle, its
   fonts and the components it loads on demand) to ``_static/mathjax/`` and point
   ``mathjax_path`` there.
2. No script twice. With Sphinx 7, inline scripts that extensions register (sphinx-thebe's
   ``const THEBE_JS_URL = …``, togglebutton's selector) reach each page twice, and a second
   ``const`` is a JavaScript error on every page. We keep the first copy of each script.

Enabled in _config.yml under ``sphinx: local_extensions``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx

# Paths inside MathJax's es5 folder that a page can request (the speech engine `sre` is left
# out: 4 MB, loaded only if a reader turns on speech in MathJax's menu).
MATHJAX_PARTS = ["tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors"]


def mathjax_es5() -> Path:
    try:
        import mathjax  # the PyPI package django-static-mathjax
    except ImportError as err:
        raise ImportError(
            "the book serves MathJax itself: pip install django-static-mathjax (it is in requirements.txt)"
        ) from err
    folder = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (folder / "tex-mml-chtml.js").is_file():
        raise FileNotFoundError(f"no tex-mml-chtml.js in {folder}: reinstall django-static-mathjax")
    return folder


def use_local_mathjax(app: Sphinx, config) -> None:
    # A relative mathjax_path is relative to the built _static folder.
    config.mathjax_path = "mathjax/tex-mml-chtml.js"


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_es5(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / part, target / part)


def drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen, kept = set(), []
    for script in sorted(context.get("script_files", []), key=lambda script: script.priority):
        # An inline script's filename is None or "" depending on the path that added it.
        key = (str(script.filename or ""), tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app: Sphinx) -> dict:
    mathjax_es5()  # fail at the start of the build, not after it
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
