"""What every explorer shares: the image, slider, status and progress, and one background worker.

An explorer shows one image at a time under controls. One object, two renderings:

- in JupyterLab (a live kernel) it is an ipywidgets box; results already computed show at once,
  others are computed in a background thread, one at a time, always for what the controls
  select *now* (rapid control changes never pile up work: `LatestWins`);
- in the web book (no kernel) it is the self-contained HTML player of `labkit.widgets.player`.

Both go out in one display bundle; the front end picks what it can show. JupyterLab prefers the
widget view; the book's ``_config.yml`` tells myst-nb to prefer ``text/html``
(``nb_mime_priority_overrides``).

A text-conditioned latent diffusion model (``labkit.latent``, Stable Diffusion and the shapes
miniature) reaches an explorer one way: bound to its prompt c and guidance scale w,
``EditExplorer(model.conditioned(prompt, guidance_scale=w))``, as every labkit function takes it.
Sampling, local bases, edits and paths then run in the VAE latent z under that prompt; the images
shown, saved and returned are D(z / s), decoded only for display (``labkit.latent.to_pixels``). The
web book's live explorers run pixel-space models exported to ONNX only, so for a latent model
``live_config`` refuses and the page carries the static player alone.

Explained in: book/part2-diffusion/05_editing.ipynb
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any

import ipywidgets as widgets

from labkit.checks import check_instance, check_int
from labkit.latent import LatentDiffusionModel
from labkit.models import DiffusionModel
from labkit.widgets.player import live_container

# The fix named when an explorer gets something else where the model or a seed goes: a prompt is
# bound to the model, never given to the explorer.
PROMPT_HINT = ("load a model with labkit.models.load_model(...); a Stable Diffusion pipeline's prompt and guidance "
               "scale are bound to it: EditExplorer(model.conditioned('a red square', guidance_scale=3.0))")


def check_model(model: object) -> DiffusionModel:
    """An explorer's model: a `labkit.models.DiffusionModel` (a latent one bound to its prompt)."""
    return check_instance("model", model, DiffusionModel, hint=PROMPT_HINT)


def check_seed(name: str, value: object, what: str = "a noise seed (an int)") -> object:
    """A noise seed in 0..2⁶³−1; a str here is most likely a prompt in the wrong place, and is told where it goes."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be {what}, got the str {value!r}; {PROMPT_HINT}")
    return check_int(name, value, 0, 2**63 - 1)


def condition_label(model: DiffusionModel) -> str:
    """What a latent model is bound to, for titles ("prompt 'a red square', w = 3"); "" for a pixel model."""
    if not isinstance(model, LatentDiffusionModel):
        return ""
    prompt = "prompt embeddings" if model.prompt is None else f"prompt {model.prompt!r}"
    return f"{prompt}, w = {model.guidance_scale:g}"


class LatestWins:
    """The explorers' background worker: one computation at a time, always of the newest request.

    A slider drag sends many requests. ``request(key)`` shows a cached result at once; otherwise
    it records ``key`` as wanted and starts a worker thread unless one is running. The worker
    computes the wanted key, then looks again and computes only the newest one, so dragging
    across ten uncomputed frames costs at most two computations, not ten.

    The explorer supplies, all called with ``lock`` held except ``compute``:
      cached(key) → bool   is the result there?
      show(key)            display a cached result
      compute(key)         compute it and cache it (taking ``lock`` to store): the slow part
      busy(key | None)     show that ``key`` is being computed, or (None) that nothing is
    An error in ``compute`` stops the worker, appears in ``status``, and ``wait()`` re-raises it.
    """

    def __init__(self, lock: threading.Lock, cached: Callable[[Any], bool], show: Callable[[Any], None],
                 compute: Callable[[Any], None], busy: Callable[[Any], None], status: widgets.Label, what: str):
        self.lock, self.cached, self.show, self.compute, self.busy = lock, cached, show, compute, busy
        self.status, self.what = status, what
        self.wanted: Any = None
        self.worker: threading.Thread | None = None
        self.error: BaseException | None = None

    def request(self, key: Any) -> None:
        with self.lock:
            self.wanted = key
            if self.cached(key):
                self.show(key)
                return
            if self.worker is not None:
                return  # the running worker picks up the new wanted key
            # Not a daemon: at interpreter exit Python waits for the running computation instead
            # of killing the thread inside torch, which aborts the process.
            self.worker = threading.Thread(target=self._work)
            self.worker.start()

    def _work(self) -> None:
        while True:
            with self.lock:
                key = self.wanted
                if self.cached(key):
                    self.show(key)
                    self.busy(None)
                    self.worker = None
                    return
                self.busy(key)
            try:
                self.compute(key)
            except Exception as error:  # shown in the widget, re-raised by wait()
                with self.lock:
                    self.error = error
                    self.busy(None)
                    self.status.value = f"computing {self.what} failed: {error!r}"
                    self.worker = None
                return

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running computation (if any) is done; re-raise its error."""
        worker = self.worker
        if worker is not None:
            worker.join(timeout)
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"computing {self.what} failed: {error!r}") from error


class Explorer(ABC):
    """The base of the explorers: a slider over the frames of the current selection, and a worker.

    A subclass sets ``model`` (checked with `check_model`) and its own controls, then calls
    ``_start(children, controls)`` with the widgets to show, and provides: ``key`` (what the
    controls select now), ``_cached(key)``, ``_compute(key)`` (the slow part; it stores its result
    taking ``_lock``), ``_display(key)`` (show frame ``slider.value`` of a cached key),
    ``_busy(key | None)``, ``to_html()`` (the static player, through ``_page``), ``live_config()``
    (calling ``_check_exported`` first) and ``__repr__``. Attributes: ``slider`` (CSS class
    "labkit-frame-slider"), ``frame_label`` (the text beside it: which frame is shown; the
    slider's own readout is off), ``image`` (an ipywidgets.Image with the PNG shown),
    ``progress``, ``status``, ``widget`` (the whole box, CSS class "labkit-explorer").
    """

    def __init__(self, slider_name: str, count: int, value: int, what: str) -> None:
        self._lock = threading.Lock()
        self.image = widgets.Image(format="png")
        self.slider = widgets.IntSlider(value=value, min=0, max=count - 1, readout=False, description=slider_name,
                                        continuous_update=True)
        self.frame_label = widgets.Label("")
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout={"visibility": "hidden"})
        self.status = widgets.Label("")
        self._worker = LatestWins(self._lock, cached=self._cached, show=self._display_if_selected,
                                  compute=self._compute, busy=self._busy, status=self.status, what=what)

    def _start(self, children: list[widgets.Widget], controls: list[widgets.Widget]) -> None:
        """Lay out ``children`` as the explorer's box; any change of ``controls`` requests a computation."""
        # images at their own size, not stretched
        self.widget = widgets.VBox(children, layout={"align_items": "flex-start"})
        # CSS classes let the JupyterLab test find the explorer and its frame slider on the page.
        self.widget.add_class("labkit-explorer")
        self.slider.add_class("labkit-frame-slider")
        for control in controls:
            control.observe(lambda change: self._request(), names="value")
        self.slider.observe(lambda change: self._show(), names="value")
        self._request()

    @property
    @abstractmethod
    def key(self) -> Hashable:
        """What the controls select now."""

    @abstractmethod
    def _cached(self, key: Hashable) -> bool:
        ...

    @abstractmethod
    def _compute(self, key: Hashable) -> None:
        ...

    @abstractmethod
    def _display(self, key: Hashable) -> None:
        ...

    @abstractmethod
    def _busy(self, key: Hashable | None) -> None:
        ...

    @abstractmethod
    def to_html(self) -> str:
        ...

    @abstractmethod
    def live_config(self) -> dict:
        ...

    # The live path ---------------------------------------------------------------------------

    def _request(self) -> None:
        self._worker.request(self.key)

    def _show(self) -> None:
        with self._lock:
            self._display_if_selected(self.key)

    def _display_if_selected(self, key: Hashable) -> None:
        # A result finished after the controls moved on is cached, not shown.
        if key == self.key and self._cached(key):
            self._display(key)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background computation (if any) is done; re-raise its error."""
        self._worker.wait(timeout)

    def _check_exported(self) -> None:
        """Refuse ``live_config`` for a latent diffusion model: the web book cannot run it yet."""
        if isinstance(self.model, LatentDiffusionModel):
            raise NotImplementedError(
                f"live_config: {self.model.name!r} is a text-conditioned latent diffusion model "
                f"({condition_label(self.model)}), which is not exported to the web book yet: its live explorers "
                "run pixel-space models exported to ONNX (scripts/export_onnx.py). to_html() gives this "
                "explorer's static player, without the live option")

    def _page(self, players_html: str) -> str:
        """The static player(s) in a `live_container` with ``live_config()``; alone for a latent model."""
        if isinstance(self.model, LatentDiffusionModel):
            return players_html
        return live_container(self.live_config(), players_html)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        # One output, two renderings: JupyterLab draws the widget view, the web book (whose
        # myst-nb priority puts text/html first) the static player.
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/html"] = self.to_html()
        bundle["text/plain"] = repr(self)
        return bundle
