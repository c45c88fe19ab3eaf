"""Explorers: scrub through a sequence of images, live in JupyterLab and static in the web book.

A *frame explorer* shows one image of a sequence at a time (an edit strip at growing strength,
the points of an interpolation) under a slider. One object, two renderings:

- in JupyterLab (a live kernel) it is an ipywidgets slider with a play button; frames that are
  already computed show at once, frames that are not are computed in a background thread, one at
  a time, always the one the slider points at *now* (rapid slider moves never pile up work);
- in the web book (no kernel) it is a self-contained HTML player: the frames as base64 PNGs, an
  ``<input type=range>`` and a few lines of JavaScript. No CDN, nothing to download.

Both go out in one display bundle; the front end picks what it can show. JupyterLab prefers the
widget view; the book's ``_config.yml`` tells myst-nb to prefer ``text/html``
(``nb_mime_priority_overrides``).

The edit and interpolation explorers of Part II are built on `FrameExplorer`.

Explained in: book/part2-diffusion/05_editing.ipynb and 06_interpolation.ipynb
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from PIL import Image as PILImage
from tqdm.auto import tqdm

from labkit.diffusion import DiffusionModel
from labkit.editing import Interpolation, edit, interpolate, sample_at, sample_basis, timestep_at

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour) to about this many pixels

# An image as the explorers accept it: (H, W) grey, (H, W, 3) colour, (1|3, H, W) channels
# first as torch lays them out (numpy arrays or torch tensors), or finished PNG bytes.
Frame = Any


def to_png(image: Frame, value_range: tuple[float, float] = (0.0, 1.0), pixel_size: int | None = None) -> bytes:
    """Encode one image as PNG bytes.

    image: (H, W) grey or (H, W, 3) RGB; (1, H, W) and (3, H, W) (channels first, as torch
    stores images) are accepted too. Floats are mapped linearly from ``value_range`` to 0..255
    and clipped (use ``(-1, 1)`` for diffusion-model images); uint8 is taken as is. Bytes that
    are already a PNG are returned unchanged.
    pixel_size: each pixel becomes a pixel_size × pixel_size block (nearest neighbour, so digits
    stay crisp); None picks the factor that brings the longer side to about 256 pixels.
    """
    if isinstance(image, (bytes, bytearray)):
        if not bytes(image[:8]) == PNG_MAGIC:
            raise ValueError("bytes given as a frame must be a PNG file (they do not start with the PNG signature)")
        return bytes(image)
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # channels first -> channels last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(
            f"a frame must be an image of shape (H, W), (H, W, 3), (1, H, W) or (3, H, W), got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        low, high = value_range
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        array = np.clip((array.astype(np.float64) - low) / (high - low), 0.0, 1.0)
        array = np.round(array * 255).astype(np.uint8)
    if pixel_size is None:
        pixel_size = max(1, DISPLAY_SIZE // max(array.shape[:2]))
    if pixel_size < 1:
        raise ValueError(f"pixel_size must be a positive integer, got {pixel_size}")
    picture = PILImage.fromarray(array)
    if pixel_size > 1:
        picture = picture.resize((array.shape[1] * pixel_size, array.shape[0] * pixel_size), PILImage.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(fig, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes, ready to be a frame. The figure is left open."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def static_player(frames_png: Sequence[bytes], labels: Sequence[str], title: str = "", value: int = 0, interval_ms: int = 300) -> str:
    """A self-contained HTML player for PNG frames: an image, a range slider, a label, a play button.

    The frames are embedded as base64 data URLs and the script is inline, so the page needs no
    kernel and no network. Every call gets fresh element ids, so several players can share a page.
    Returns the HTML as a string.
    """
    if len(frames_png) == 0:
        raise ValueError("static_player needs at least one frame")
    if len(labels) != len(frames_png):
        raise ValueError(f"got {len(frames_png)} frames but {len(labels)} labels; give one label per frame")
    if not 0 <= value < len(frames_png):
        raise ValueError(f"value must index a frame (0..{len(frames_png) - 1}), got {value}")
    uid = "labkit-frames-" + uuid.uuid4().hex[:12]
    sources = ["data:image/png;base64," + base64.b64encode(png).decode("ascii") for png in frames_png]
    # json.dumps escapes quotes; escaping "</" keeps a label from closing the <script> element.
    data = json.dumps({"src": sources, "labels": list(labels), "interval": interval_ms}).replace("</", "<\\/")
    heading = f'<div style="font-weight:bold">{html.escape(title)}</div>' if title else ""
    return f"""<div class="labkit-frames" id="{uid}">{heading}
<img id="{uid}-img" src="{sources[value]}" alt="{html.escape(labels[value], quote=True)}" style="image-rendering:pixelated;max-width:100%">
<div style="display:flex;align-items:center;gap:0.5em">
<button id="{uid}-play" type="button">play</button>
<input id="{uid}-slider" type="range" min="0" max="{len(sources) - 1}" step="1" value="{value}" aria-label="frame" style="flex:1 1 auto;max-width:20em">
<span id="{uid}-label">{html.escape(labels[value])}</span>
</div>
<script>
(function () {{
  const data = {data};
  const img = document.getElementById("{uid}-img");
  const slider = document.getElementById("{uid}-slider");
  const label = document.getElementById("{uid}-label");
  const play = document.getElementById("{uid}-play");
  let timer = null;
  function show(i) {{
    img.src = data.src[i]; img.alt = data.labels[i]; label.textContent = data.labels[i]; slider.value = i;
  }}
  slider.addEventListener("input", () => show(Number(slider.value)));
  play.addEventListener("click", () => {{
    if (timer) {{ clearInterval(timer); timer = null; play.textContent = "play"; return; }}
    play.textContent = "pause";
    timer = setInterval(() => show((Number(slider.value) + 1) % data.src.length), data.interval);
  }});
}})();
</script>
</div>"""


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


class FrameExplorer:
    """A slider over a sequence of frames; live widget in JupyterLab, static player in the book.

    Give either the frames themselves or ``compute(i) -> frame`` plus the labels (one per frame);
    computed frames are cached, so each is computed at most once. Display the object (leave it as
    the last expression of a cell) to show it. Useful attributes: ``slider`` (its ``value`` is
    the frame index), ``image`` (an ipywidgets.Image holding the PNG shown), ``widget`` (the
    whole box). Build one with `frame_explorer`.
    """

    def __init__(
        self,
        frames: Sequence[Frame] | None = None,
        labels: Sequence[str] | None = None,
        *,
        compute: Callable[[int], Frame] | None = None,
        title: str = "",
        value: int = 0,
        play: bool = True,
        interval_ms: int = 300,
        value_range: tuple[float, float] = (0.0, 1.0),
        pixel_size: int | None = None,
    ) -> None:
        if (frames is None) == (compute is None):
            raise ValueError("give exactly one of `frames` (the images) or `compute` (a function i -> image)")
        if compute is not None and labels is None:
            raise ValueError("with `compute`, give `labels` too: one per frame; their number is the number of frames")
        if isinstance(frames, np.ndarray) or hasattr(frames, "detach"):
            frames = list(frames)  # a stacked batch: one frame per leading index
        count = len(frames) if frames is not None else len(labels)
        if count == 0:
            raise ValueError("a frame explorer needs at least one frame")
        labels = [f"frame {i}" for i in range(count)] if labels is None else [str(label) for label in labels]
        if len(labels) != count:
            raise ValueError(f"got {count} frames but {len(labels)} labels; give one label per frame")
        if not 0 <= value < count:
            raise ValueError(f"value must index a frame (0..{count - 1}), got {value}")
        self.labels = labels
        self.title = title
        self.interval_ms = interval_ms
        self._encode = lambda frame: to_png(frame, value_range=value_range, pixel_size=pixel_size)
        self._compute = compute
        self._cache: dict[int, bytes] = {}
        if frames is not None:
            self._cache = {i: self._encode(frame) for i, frame in enumerate(frames)}
        self._lock = threading.Lock()
        self.computed: list[int] = []  # indices computed so far, in order (tests read it)

        self.image = widgets.Image(format="png")
        self.slider = widgets.IntSlider(value=value, min=0, max=count - 1, readout=False, description="frame",
                                        continuous_update=True)
        self.readout = widgets.Label(labels[value])
        self.progress = widgets.IntProgress(min=0, max=count, value=len(self._cache), layout={"visibility": "hidden"})
        self.status = widgets.Label("")
        self._worker = LatestWins(self._lock, cached=lambda index: index in self._cache, show=self._display,
                                  compute=self._compute_frame, busy=self._set_busy, status=self.status, what="a frame")
        controls = [self.slider, self.readout]
        if play and count > 1:
            self.play = widgets.Play(value=value, min=0, max=count - 1, interval=interval_ms, description="play")
            # jslink runs in the browser: playing needs no kernel round trip per frame.
            self._play_link = widgets.jslink((self.play, "value"), (self.slider, "value"))
            controls.insert(0, self.play)
        heading = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = widgets.VBox([*heading, self.image, widgets.HBox(controls), widgets.HBox([self.progress, self.status])],
                                   layout={"align_items": "flex-start"})  # images at their own size, not stretched
        # CSS classes let the JupyterLab test find the explorer and its frame slider on the page.
        self.widget.add_class("labkit-explorer")
        self.slider.add_class("labkit-frame-slider")
        self.slider.observe(self._on_slider, names="value")
        self._request(value)

    def __len__(self) -> int:
        return len(self.labels)

    # The live path ---------------------------------------------------------------------------

    def show(self, index: int) -> None:
        """Move the slider to frame ``index`` (as a reader would); the frame follows."""
        if not 0 <= index < len(self):
            raise ValueError(f"index must be in 0..{len(self) - 1}, got {index}")
        if self.slider.value == index:
            self._request(index)
        else:
            self.slider.value = index  # the observer calls _request

    def _on_slider(self, change: dict) -> None:
        self._request(change["new"])

    def _request(self, index: int) -> None:
        self._worker.request(index)

    def _compute_frame(self, index: int) -> None:
        png = self._encode(self._compute(index))
        with self._lock:
            self._cache[index] = png
            self.computed.append(index)

    def _display(self, index: int) -> None:
        self.image.value = self._cache[index]
        self.readout.value = self.labels[index]

    def _set_busy(self, index: int | None) -> None:
        self.progress.value = len(self._cache)
        self.progress.layout.visibility = "hidden" if index is None else "visible"
        self.status.value = "" if index is None else f"computing {self.labels[index]} …"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background computation (if any) is done; re-raise its error."""
        self._worker.wait(timeout)

    # All frames at once ----------------------------------------------------------------------

    def precompute(self, progress: bool = False) -> list[bytes]:
        """Compute every frame not yet cached (the progress bar shows it); return all PNGs in order.

        progress: also show a tqdm bar (useful before the explorer is on screen).
        """
        self.wait()
        missing = [i for i in range(len(self)) if i not in self._cache]
        if missing:
            self.progress.layout.visibility = "visible"
        for index in tqdm(missing, desc="frames", disable=not progress):
            self.status.value = f"computing {self.labels[index]} …"
            self._compute_frame(index)
            self.progress.value = len(self._cache)
        self._set_busy(None)
        self._request(self.slider.value)
        return [self._cache[i] for i in range(len(self))]

    def to_html(self) -> str:
        """The static player (all frames computed and embedded), for pages without a kernel."""
        return static_player(self.precompute(), self.labels, title=self.title, value=self.slider.value,
                             interval_ms=self.interval_ms)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        # One output, two renderings: JupyterLab draws the widget view, the web book (whose
        # myst-nb priority puts text/html first) the static player.
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/html"] = self.to_html()
        bundle["text/plain"] = f"FrameExplorer({len(self)} frames{': ' + self.title if self.title else ''})"
        return bundle


def frame_explorer(
    frames: Sequence[Frame] | None = None,
    labels: Sequence[str] | None = None,
    *,
    compute: Callable[[int], Frame] | None = None,
    title: str = "",
    value: int = 0,
    play: bool = True,
    interval_ms: int = 300,
    value_range: tuple[float, float] = (0.0, 1.0),
    pixel_size: int | None = None,
) -> FrameExplorer:
    """A slider over frames: the images themselves, or ``compute(i)`` that makes frame i on demand.

    frames: a sequence (or a stacked array/tensor) of images of shape (H, W), (H, W, 3),
    (1, H, W) or (3, H, W), or PNG bytes (e.g. from `figure_png`).
    labels: one string per frame, shown next to the slider (default "frame i"); required with
    ``compute``, whose frames are numbered 0..len(labels)-1.
    value_range: the range of float pixel values that maps to black..white, e.g. (-1, 1).
    Returns a `FrameExplorer`; display it to get the widget (JupyterLab) or the static player
    (web book).

    Explained in: book/part2-diffusion/05_editing.ipynb
    """
    return FrameExplorer(frames, labels, compute=compute, title=title, value=value, play=play,
                         interval_ms=interval_ms, value_range=value_range, pixel_size=pixel_size)


# --------------------------------------------------------------------------------------------
# The edit explorer (Part II, chapter 5)
# --------------------------------------------------------------------------------------------

EDIT_METHODS = ("guidance", "naive")
GAP = 2  # pixels of mid-grey between the original and the edit in the composed image


def _side_by_side(images: Sequence[torch.Tensor], gap: int = GAP) -> np.ndarray:
    """Images (C, H, W) in [-1, 1] in one row, separated by mid-grey columns: (H, W', C) float32."""
    columns = []
    for i, image in enumerate(images):
        array = image.detach().cpu().float().permute(1, 2, 0).numpy()
        if i > 0:
            columns.append(np.zeros((array.shape[0], gap, array.shape[2]), dtype=np.float32))  # 0: mid-grey in [-1, 1]
        columns.append(array)
    return np.concatenate(columns, axis=1)


class EditExplorer:
    """Edit a sample along one of its local directions; live widget in JupyterLab, static player in the book.

    Controls: sample (seed), t (a fraction of T), direction i (v_i of the sample's local basis),
    method (x-space guidance or the naive x_t + γ v) and the strength γ (sign included: γ < 0
    moves along −v_i). The image shows the unedited sample (left) and the edit (right).

    What is computed when (all in one background thread that always serves the newest request,
    so rapid control changes never pile up work):
    - a new (seed, t): the latent x_t (`labkit.editing.sample_at`) and its top-k local basis
      (`labkit.editing.sample_basis`, read from ``cache_dir`` when it is there);
    - a new (seed, t, direction, method): every strength in one batched `labkit.editing.edit`;
    - a strength-slider move: nothing; the cached frame is shown at once.

    Attributes for tests and notebooks: ``slider`` (strength index, CSS class
    "labkit-frame-slider"), ``image`` (ipywidgets.Image with the PNG shown), ``widget`` (the box,
    CSS class "labkit-explorer"), ``seed``, ``t``, ``direction``, ``method`` (the other controls),
    ``computed`` (the (seed, t_fraction, direction, method) keys edited so far, in order),
    ``wait()``. Build one with `edit_explorer`.

    Explained in: book/part2-diffusion/05_editing.ipynb
    """

    def __init__(
        self,
        model: DiffusionModel,
        seeds: Sequence[int] = (0, 1, 2, 3),
        t_fractions: Sequence[float] = (1.0, 0.8, 0.6),
        k: int = 5,
        strengths: torch.Tensor | Sequence[float] | None = None,
        method: str = "guidance",
        cache_dir: str | os.PathLike | None = None,
        num_steps: int = 50,
        save_dir: str | os.PathLike = ".",
        edit_options: dict | None = None,
    ) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the number of directions) must be a positive integer, got {k!r}")
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds is empty: give at least one noise seed, e.g. seeds=(0, 1)")
        t_fractions = [float(f) for f in t_fractions]
        if not t_fractions or not all(0.0 <= f <= 1.0 for f in t_fractions):
            raise ValueError(f"t_fractions must be a non-empty list of fractions of T in [0, 1], got {t_fractions}")
        if method not in EDIT_METHODS:
            raise ValueError(f"method must be one of {EDIT_METHODS}, got {method!r}")
        strengths = torch.linspace(-1.0, 1.0, 9) if strengths is None else torch.as_tensor(strengths, dtype=torch.float32)
        strengths = strengths.reshape(-1)
        if len(strengths) == 0 or not torch.isfinite(strengths).all():
            raise ValueError("strengths must be a non-empty list of finite numbers, e.g. torch.linspace(-1, 1, 9)")
        self.model = model
        self.k = k
        self.strengths = strengths
        # rounded, so that linspace's 1e-8 in place of 0 reads "+0"; adding 0.0 turns -0.0 into 0.0
        self.labels = [f"γ = {round(g, 4) + 0.0:+g}" for g in strengths.tolist()]
        self.cache_dir = cache_dir
        self.num_steps = num_steps
        self.save_dir = save_dir
        self.edit_options = dict(edit_options or {})
        self._bases: dict[tuple[int, float], tuple[Any, Any]] = {}  # (seed, fraction) → (Sample, LocalBasis)
        self._frames: dict[tuple, list[bytes]] = {}  # (seed, fraction, direction, method) → PNG per strength
        self._strips: dict[tuple, Any] = {}  # same key → (S + 1, C, H, W) images, the original last
        self.computed: list[tuple] = []
        self._lock = threading.Lock()

        start = int(torch.argmin(strengths.abs()))  # open at the strength nearest 0: the sample itself
        t_options = [(f"{f:g} T (t = {self._timestep(f)})", f) for f in t_fractions]
        self.seed = widgets.Dropdown(options=seeds, value=seeds[0], description="sample")
        self.t = widgets.Dropdown(options=t_options, value=t_fractions[0], description="t")
        self.direction = widgets.Dropdown(options=[(f"v{i + 1}", i) for i in range(k)], value=0, description="direction")
        self.method = widgets.ToggleButtons(options=list(EDIT_METHODS), value=method, description="method")
        self.slider = widgets.IntSlider(value=start, min=0, max=len(strengths) - 1, readout=False,
                                        description="strength", continuous_update=True)
        self.readout = widgets.Label(self.labels[start])
        self.image = widgets.Image(format="png")
        self.caption = widgets.Label("left: the sample; right: the edit")
        self.progress = widgets.IntProgress(min=0, max=2, value=0, layout={"visibility": "hidden"})
        self.status = widgets.Label("")
        self.save_button = widgets.Button(description="save strip", tooltip="write every strength as one PNG")
        self.saved = widgets.Label("")
        self._worker = LatestWins(self._lock, cached=lambda key: key in self._frames, show=self._display_if_selected,
                                  compute=self._compute, busy=self._idle_when_done, status=self.status, what="the edit")
        self.widget = widgets.VBox(
            [widgets.HBox([self.seed, self.t]), widgets.HBox([self.direction, self.method]), self.image, self.caption,
             widgets.HBox([self.slider, self.readout]), widgets.HBox([self.progress, self.status]),
             widgets.HBox([self.save_button, self.saved])],
            layout={"align_items": "flex-start"})
        self.widget.add_class("labkit-explorer")
        self.slider.add_class("labkit-frame-slider")
        for control in (self.seed, self.t, self.direction, self.method):
            control.observe(lambda change: self._request(), names="value")
        self.slider.observe(lambda change: self._show(), names="value")
        self.save_button.on_click(lambda button: self.save_strip())
        self._request()

    def __len__(self) -> int:
        return len(self.strengths)

    def _timestep(self, fraction: float) -> int:
        return timestep_at(self.model, fraction, self.num_steps)

    @property
    def key(self) -> tuple:
        """(seed, t_fraction, direction index, method): what the controls select now."""
        return (self.seed.value, self.t.value, self.direction.value, self.method.value)

    # The live path ---------------------------------------------------------------------------

    def _request(self) -> None:
        self._worker.request(self.key)

    def _show(self) -> None:
        self.readout.value = self.labels[self.slider.value]
        with self._lock:
            self._display_if_selected(self.key)

    def _display_if_selected(self, key: tuple) -> None:
        # A strip finished after the controls moved on is cached, not shown.
        if key == self.key and key in self._frames:
            self._display(key)

    def _compute(self, key: tuple) -> None:
        seed, fraction, direction, method = key
        if (seed, fraction) not in self._bases:
            self._busy(0, f"sample {seed}: x_t and its top-{self.k} directions at {fraction:g} T …")
            sample = sample_at(self.model, seed, self._timestep(fraction), self.num_steps)
            self._bases[(seed, fraction)] = (sample, sample_basis(self.model, sample, self.k, cache_dir=self.cache_dir))
        sample, basis = self._bases[(seed, fraction)]
        self._busy(1, f"editing along v{direction + 1} ({method}), {len(self)} strengths …")
        # One batch: every strength, and γ = 0 last (the unedited sample, finished the same way).
        gammas = torch.cat([self.strengths, torch.zeros(1)])
        options = self.edit_options if method == "guidance" else {}
        images = edit(self.model, sample, basis.v[direction], gammas, method=method, **options).detach().cpu()
        frames = [to_png(_side_by_side([images[-1], image]), value_range=(-1, 1)) for image in images[:-1]]
        with self._lock:
            self._strips[key] = images
            self._frames[key] = frames
            self.computed.append(key)

    def _display(self, key: tuple) -> None:
        self.image.value = self._frames[key][self.slider.value]
        self.readout.value = self.labels[self.slider.value]

    def _idle_when_done(self, key: tuple | None) -> None:
        # The worker's busy hook: _compute reports its own two stages, so only the end is shown here.
        if key is None:
            self._busy(None)

    def _busy(self, stage: int | None, message: str = "") -> None:
        self.progress.value = 0 if stage is None else stage
        self.progress.layout.visibility = "hidden" if stage is None else "visible"
        self.status.value = message

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background computation (if any) is done; re-raise its error."""
        self._worker.wait(timeout)

    # Results -----------------------------------------------------------------------------------

    def strip(self) -> torch.Tensor:
        """The current selection's images, (S, C, H, W) in [-1, 1], one per strength (computed if needed)."""
        self.wait()
        if self.key not in self._frames:
            self._compute(self.key)
        return self._strips[self.key][:-1]

    def save_strip(self, path: str | os.PathLike | None = None) -> str:
        """Write the current selection's whole strength strip as one PNG; return its path.

        Default path: save_dir/edit-seed{seed}-t{t}-v{i}-{method}.png.
        """
        seed, fraction, direction, method = self.key
        if path is None:
            path = Path(self.save_dir) / f"edit-seed{seed}-t{self._timestep(fraction)}-v{direction + 1}-{method}.png"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_png(_side_by_side(list(self.strip())), value_range=(-1, 1), pixel_size=4))
        self.saved.value = f"saved {path}"
        return str(path)

    def to_html(self) -> str:
        """The static player over the strengths of the current selection, for pages without a kernel."""
        self.strip()  # computes the selection if it is not cached yet
        seed, fraction, direction, method = self.key
        title = (f"sample {seed}, t = {self._timestep(fraction)} ({fraction:g} T), direction v{direction + 1}, "
                 f"{method}; left: the sample, right: the edit")
        return static_player(self._frames[self.key], self.labels, title=title, value=self.slider.value)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        # As FrameExplorer: JupyterLab draws the widget view, the web book the static player.
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/html"] = self.to_html()
        bundle["text/plain"] = f"EditExplorer({len(self.seed.options)} samples, k={self.k}, {len(self)} strengths)"
        return bundle


def edit_explorer(
    model: DiffusionModel,
    seeds: Sequence[int] = (0, 1, 2, 3),
    t_fractions: Sequence[float] = (1.0, 0.8, 0.6),
    k: int = 5,
    strengths: torch.Tensor | Sequence[float] | None = None,
    method: str = "guidance",
    cache_dir: str | os.PathLike | None = None,
    num_steps: int = 50,
    save_dir: str | os.PathLike = ".",
    edit_options: dict | None = None,
) -> EditExplorer:
    """An explorer of edits along a sample's local directions (see `EditExplorer`).

    model: a `labkit.diffusion.DiffusionModel`; seeds: the noise seeds of the samples offered;
    t_fractions: the edit times offered, as fractions of T (each snapped to the DDIM schedule by
    `labkit.editing.timestep_at`); k: how many directions v_1..v_k to offer;
    strengths: the γ values, signed (default torch.linspace(-1, 1, 9));
    method: the initial method, "guidance" (x-space guidance) or "naive" (x_t + γ v);
    cache_dir: where local bases are cached (safetensors); save_dir: where "save strip" writes;
    edit_options: passed to x-space guidance (delta, n_iter).
    Returns an `EditExplorer`; display it (last expression of a cell) to show it.

    Explained in: book/part2-diffusion/05_editing.ipynb
    """
    return EditExplorer(model, seeds=seeds, t_fractions=t_fractions, k=k, strengths=strengths, method=method,
                        cache_dir=cache_dir, num_steps=num_steps, save_dir=save_dir, edit_options=edit_options)


# --------------------------------------------------------------------------------------------
# The interpolation explorer (Part II, chapter 6)
# --------------------------------------------------------------------------------------------

INTERPOLATION_METHODS = ("lerp", "slerp", "geodesic")


class InterpolationExplorer:
    """Walk along an interpolation between two samples; live widget in JupyterLab, static player in the book.

    Controls: the method (lerp, slerp, or a geodesic of the pullback metric, see
    `labkit.editing.interpolate`) and a slider over the n points of the path. The image is the
    finished sample (DDIM from t to 0) of the point the slider selects; a label gives the path's
    length in X and in H, and the point's latent norm ‖x_t‖ (typical Gaussian latents have
    ‖x‖ ≈ √n, n = the latent's size).

    What is computed when (one background thread that always serves the newest request):
    - a new method: the whole path and all n images, in one `labkit.editing.interpolate` call;
    - a slider move: nothing; the cached frame is shown at once.

    Attributes for tests and notebooks: ``slider`` (point index, CSS class "labkit-frame-slider"),
    ``method`` (the method control), ``image`` (ipywidgets.Image with the PNG shown), ``lengths``
    (the label with the path lengths), ``widget`` (the box, CSS class "labkit-explorer"),
    ``computed`` (methods computed so far, in order), ``interpolation(method)``, ``wait()``.
    Build one with `interpolation_explorer`.

    Explained in: book/part2-diffusion/06_interpolation.ipynb
    """

    def __init__(
        self,
        model: DiffusionModel,
        seed_a: int = 0,
        seed_b: int = 1,
        t_fraction: float = 1.0,
        n: int = 9,
        methods: Sequence[str] = INTERPOLATION_METHODS,
        num_steps: int = 50,
        geodesic_steps: int = 60,
        interpolations: dict[str, Interpolation] | None = None,
    ) -> None:
        methods = list(methods)
        if not methods or any(m not in INTERPOLATION_METHODS for m in methods):
            raise ValueError(f"methods must be a non-empty list drawn from {INTERPOLATION_METHODS}, got {methods}")
        if not isinstance(n, int) or n < 2:
            raise ValueError(f"n (the number of path points) must be an integer ≥ 2, got {n!r}")
        if not 0.0 <= t_fraction <= 1.0:
            raise ValueError(f"t_fraction must be a fraction of T in [0, 1], got {t_fraction}")
        interpolations = dict(interpolations or {})
        for method, result in interpolations.items():
            if method not in methods:
                raise ValueError(f"interpolations has a path for {method!r}, which is not among methods {methods}")
            if len(result.images) != n:
                raise ValueError(f"the given {method} interpolation has {len(result.images)} points, but n={n}; "
                                 "compute it with the same n")
        self.model = model
        self.n = n
        self.geodesic_steps = geodesic_steps
        t = timestep_at(model, t_fraction, num_steps)
        self.a = sample_at(model, seed_a, t, num_steps)
        self.b = sample_at(model, seed_b, t, num_steps)
        self.title = f"samples {seed_a} → {seed_b} at t = {t} ({t_fraction:g} T)"
        self._results: dict[str, Interpolation] = {}
        self._frames: dict[str, list[bytes]] = {}
        for method, result in interpolations.items():
            self._store(method, result)
        self.computed: list[str] = []  # methods computed here (not given), in order
        self._lock = threading.Lock()

        self.method = widgets.ToggleButtons(options=methods, value=methods[0], description="method")
        self.slider = widgets.IntSlider(value=0, min=0, max=n - 1, readout=False, description="point",
                                        continuous_update=True)
        self.readout = widgets.Label("")
        self.image = widgets.Image(format="png")
        self.lengths = widgets.Label("")
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout={"visibility": "hidden"})
        self.status = widgets.Label("")
        self._worker = LatestWins(self._lock, cached=lambda method: method in self._frames,
                                  show=self._display_if_selected, compute=self._compute, busy=self._busy,
                                  status=self.status, what="the interpolation")
        self.widget = widgets.VBox(
            [widgets.HTML(f"<b>{html.escape(self.title)}</b>"), self.method, self.image,
             widgets.HBox([self.slider, self.readout]), self.lengths, widgets.HBox([self.progress, self.status])],
            layout={"align_items": "flex-start"})
        self.widget.add_class("labkit-explorer")
        self.slider.add_class("labkit-frame-slider")
        self.method.observe(lambda change: self._request(), names="value")
        self.slider.observe(lambda change: self._show(), names="value")
        self._request()

    def __len__(self) -> int:
        return self.n

    def _store(self, method: str, result: Interpolation) -> None:
        self._results[method] = result
        self._frames[method] = [to_png(image, value_range=(-1, 1)) for image in result.images.detach().cpu()]

    def _point_label(self, method: str, index: int) -> str:
        norm = float(self._results[method].path[index].norm())
        return f"point {index + 1} of {self.n}: ‖x_t‖ = {norm:.3g}"

    def _lengths_label(self, method: str) -> str:
        result = self._results[method]
        return (f"{method}: length in X {result.x_length:.4g}, in H {result.h_length:.4g} "
                f"(typical ‖x_t‖ ≈ √n = {math.sqrt(self.a.x_t.numel()):.3g})")

    # The live path ---------------------------------------------------------------------------

    def _request(self) -> None:
        self._worker.request(self.method.value)

    def _show(self) -> None:
        with self._lock:
            self._display_if_selected(self.method.value)

    def _display_if_selected(self, method: str) -> None:
        # A path finished after the reader picked another method is cached, not shown.
        if method == self.method.value and method in self._frames:
            self._display(method)

    def _compute(self, method: str) -> None:
        result = interpolate(self.model, self.a, self.b, n=self.n, method=method, geodesic_steps=self.geodesic_steps)
        with self._lock:
            self._store(method, result)
            self.computed.append(method)

    def _display(self, method: str) -> None:
        self.image.value = self._frames[method][self.slider.value]
        self.readout.value = self._point_label(method, self.slider.value)
        self.lengths.value = self._lengths_label(method)

    def _busy(self, method: str | None) -> None:
        self.progress.layout.visibility = "hidden" if method is None else "visible"
        self.status.value = "" if method is None else f"computing the {method} path and its {self.n} images …"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background computation (if any) is done; re-raise its error."""
        self._worker.wait(timeout)

    # Results -----------------------------------------------------------------------------------

    def interpolation(self, method: str) -> Interpolation:
        """The `labkit.editing.Interpolation` (path, images, lengths) of one method, computed if needed."""
        if method not in self.method.options:
            raise ValueError(f"method must be one of {list(self.method.options)}, got {method!r}")
        self.wait()
        if method not in self._results:
            self._compute(method)
        return self._results[method]

    def to_html(self) -> str:
        """One static player per method (all paths computed), for pages without a kernel."""
        players = []
        for method in self.method.options:
            self.interpolation(method)
            labels = [self._point_label(method, i) for i in range(self.n)]
            title = f"{self.title}, {self._lengths_label(method)}"
            players.append(static_player(self._frames[method], labels, title=title, value=self.slider.value))
        return "\n".join(players)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        # As FrameExplorer: JupyterLab draws the widget view, the web book the static players.
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/html"] = self.to_html()
        bundle["text/plain"] = f"InterpolationExplorer({self.title}, {self.n} points, {', '.join(self.method.options)})"
        return bundle


def interpolation_explorer(
    model: DiffusionModel,
    seed_a: int = 0,
    seed_b: int = 1,
    t_fraction: float = 1.0,
    n: int = 9,
    methods: Sequence[str] = INTERPOLATION_METHODS,
    num_steps: int = 50,
    geodesic_steps: int = 60,
    interpolations: dict[str, Interpolation] | None = None,
) -> InterpolationExplorer:
    """An explorer of the paths between two samples (see `InterpolationExplorer`).

    model: a `labkit.diffusion.DiffusionModel`; seed_a, seed_b: the noise seeds of the two
    samples; t_fraction: where on the way from noise to image they are interpolated, as a fraction
    of T (snapped to the DDIM schedule; 1.0 = the starting noise); n: points on each path;
    methods: the methods offered ("lerp", "slerp", "geodesic"); num_steps: the DDIM schedule;
    geodesic_steps: L-BFGS iterations for the geodesic; interpolations: paths already computed
    with `labkit.editing.interpolate` for the same samples and n, keyed by method (shown without
    recomputing).
    Returns an `InterpolationExplorer`; display it (last expression of a cell) to show it.

    Explained in: book/part2-diffusion/06_interpolation.ipynb
    """
    return InterpolationExplorer(model, seed_a=seed_a, seed_b=seed_b, t_fraction=t_fraction, n=n, methods=methods,
                                 num_steps=num_steps, geodesic_steps=geodesic_steps, interpolations=interpolations)
