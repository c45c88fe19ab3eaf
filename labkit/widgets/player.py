"""Frames as PNGs and the static player: how an explorer reaches a page without a kernel.

In the web book there is no kernel, so an explorer renders as a self-contained HTML player: its
frames as base64 PNGs, an ``<input type=range>`` and a few lines of JavaScript. No CDN, nothing
to download.

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

DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour) to about this many pixels

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
    """
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


def static_player(
    frames_png: Sequence[bytes], labels: Sequence[str], title: str = "", value: int = 0, interval_ms: int = 300
) -> str:
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

