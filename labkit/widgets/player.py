"""Frames as PNGs and the static player: how an explorer reaches a page without a kernel.

In the web book there is no kernel, so an explorer renders as a self-contained HTML player: its
frames as base64 PNGs, an ``<input type=range>`` and a few lines of JavaScript. No CDN, nothing
to download. The player sits in a `live_container` that carries the explorer's settings; the
book's JavaScript (book/_static/live/) offers to run the explorer live in the reader's browser.

Explained in: book/part2-diffusion/05_editing.ipynb
"""

from __future__ import annotations

import base64
import html
import io
import json
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image as PILImage

from labkit.checks import check_float, check_int, show

DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour) to about this many pixels
MAX_SIDE = 8192  # to_png: the longest side of a PNG, after enlarging (8192² RGB is 200 MB in memory)

# An image as the explorers accept it: (H, W) grey, (H, W, 3) colour, (1|3, H, W) channels
# first as torch lays them out (numpy arrays or torch tensors).
Frame = Any


def to_png(image: Frame, value_range: tuple[float, float] = (0.0, 1.0), pixel_size: int | None = None) -> bytes:
    """Encode one image as PNG bytes.

    image: (H, W) grey or (H, W, 3) RGB; (1, H, W) and (3, H, W) (channels first, as torch
    stores images) are accepted too. Floats are mapped linearly from ``value_range`` to 0..255
    and clipped (use ``(-1, 1)`` for diffusion-model images); uint8 is taken as is.
    pixel_size: each pixel becomes a pixel_size × pixel_size block (nearest neighbour, so digits
    stay crisp); None picks the factor that brings the longer side to about 256 pixels.
    NaN or infinite pixels, other integer types and sizes beyond MAX_SIDE are refused.
    """
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__} {show(image)}")
    array = image
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # channels first -> channels last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)):
        raise ValueError(
            f"a frame must be an image of shape (H, W), (H, W, 3), (1, H, W) or (3, H, W), got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"image must be floating point (mapped from value_range) or uint8 (taken as is), got "
                            f"{array.dtype}; convert it with .astype(np.float32) or .astype(np.uint8)")
        if not np.isfinite(array).all():
            raise ValueError(f"image contains NaN or infinite values (shape {array.shape}); check how it was computed")
        if not isinstance(value_range, tuple | list) or len(value_range) != 2:
            raise TypeError(f"value_range must be (low, high), got {show(value_range)}")
        low, high = check_float("value_range[0]", value_range[0]), check_float("value_range[1]", value_range[1])
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        array = np.clip((array.astype(np.float64) - low) / (high - low), 0.0, 1.0)
        array = np.round(array * 255).astype(np.uint8)
    if min(array.shape[:2]) == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if pixel_size is None:
        pixel_size = max(1, DISPLAY_SIZE // max(array.shape[:2]))
    pixel_size = check_int("pixel_size", pixel_size, 1, max(1, MAX_SIDE // max(array.shape[:2])),
                           hint=f"the PNG's longest side, pixel_size × {max(array.shape[:2])}, is at most {MAX_SIDE}")
    picture = PILImage.fromarray(array)
    if pixel_size > 1:
        picture = picture.resize((array.shape[1] * pixel_size, array.shape[0] * pixel_size), PILImage.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def static_player(
    frames_png: Sequence[bytes], labels: Sequence[str], title: str = "", value: int = 0, interval_ms: int = 300
) -> str:
    """A self-contained HTML player for PNG frames: an image, a range slider, a label, a play button.

    The frames are embedded as base64 data URLs and the script is inline, so the page needs no
    kernel and no network. Every call gets fresh element ids, so several players can share a page.
    Returns the HTML as a string.
    """
    if not isinstance(frames_png, Sequence) or not all(isinstance(png, bytes) for png in frames_png):
        raise TypeError(f"frames_png must be a list of PNG bytes (to_png(image)), got {show(frames_png)}")
    if len(frames_png) == 0:
        raise ValueError("static_player needs at least one frame")
    if not isinstance(labels, Sequence) or not all(isinstance(label, str) for label in labels):
        raise TypeError(f"labels must be a list of strings, one per frame, got {show(labels)}")
    if len(labels) != len(frames_png):
        raise ValueError(f"got {len(frames_png)} frames but {len(labels)} labels; give one label per frame")
    check_int("value", value, 0, len(frames_png) - 1, hint="value must index a frame: the one shown first")
    check_int("interval_ms", interval_ms, 10, 60_000)
    uid = "labkit-frames-" + uuid.uuid4().hex[:12]
    sources = ["data:image/png;base64," + base64.b64encode(png).decode("ascii") for png in frames_png]
    # json.dumps escapes quotes; escaping "</" keeps a label from closing the <script> element.
    data = json.dumps({"src": sources, "labels": list(labels), "interval": interval_ms}).replace("</", "<\\/")
    heading = f'<div style="font-weight:bold">{html.escape(title)}</div>' if title else ""
    return f"""<div class="labkit-frames" id="{uid}">{heading}
<img id="{uid}-img" src="{sources[value]}" alt="{html.escape(labels[value], quote=True)}"
 style="image-rendering:pixelated;max-width:100%">
<div style="display:flex;align-items:center;gap:0.5em">
<button id="{uid}-play" type="button">play</button>
<input id="{uid}-slider" type="range" min="0" max="{len(sources) - 1}" step="1" value="{value}" aria-label="frame"
 style="flex:1 1 auto;max-width:20em">
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



def live_container(config: dict[str, Any], players_html: str) -> str:
    """Wrap an explorer's static player(s) in an element whose ``data-labkit-live`` attribute holds
    ``config`` as JSON: what the web book's live explorer (book/_static/live/explorer.js) needs to
    compute the same images in the reader's browser. Pages without that JavaScript show the player.
    """
    if not isinstance(config, dict) or config.get("explorer") not in ("edit", "interpolation"):
        raise ValueError(f"config must be a dict with explorer 'edit' or 'interpolation', got {config!r}")
    data = html.escape(json.dumps(config, separators=(",", ":")), quote=True)
    return f'<div class="labkit-live-explorer" data-labkit-live="{data}">\n{players_html}\n</div>'
