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

Explained in: book/part2-diffusion/05_editing.ipynb
"""

from __future__ import annotations

import base64
import html
import io
import json
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from PIL import Image as PILImage
from tqdm.auto import tqdm

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
        self._wanted = value
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self.computed: list[int] = []  # indices computed so far, in order (tests read it)

        self.image = widgets.Image(format="png")
        self.slider = widgets.IntSlider(value=value, min=0, max=count - 1, readout=False, description="frame",
                                        continuous_update=True)
        self.readout = widgets.Label(labels[value])
        self.progress = widgets.IntProgress(min=0, max=count, value=len(self._cache), layout={"visibility": "hidden"})
        self.status = widgets.Label("")
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
        # Show frame `index` at once if cached, else compute it in a background thread. While a
        # computation runs, newer requests only replace the wanted index; the worker then
        # computes just the latest one, so dragging the slider across ten uncomputed frames
        # costs at most two computations, not ten.
        with self._lock:
            self._wanted = index
            if index in self._cache:
                self._display(index)
                return
            if self._worker is not None:
                return  # the running worker picks up the new wanted index
            self._worker = threading.Thread(target=self._work, daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                index = self._wanted
                if index in self._cache:
                    self._display(index)
                    self._set_busy(None)
                    self._worker = None
                    return
                self._set_busy(index)
            try:
                png = self._encode(self._compute(index))
            except Exception as error:  # shown in the widget, re-raised by wait()
                with self._lock:
                    self._error = error
                    self._set_busy(None)
                    self.status.value = f"computing {self.labels[index]} failed: {error!r}"
                    self._worker = None
                return
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
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"computing a frame failed: {error!r}") from error

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
            png = self._encode(self._compute(index))
            with self._lock:
                self._cache[index] = png
                self.computed.append(index)
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
