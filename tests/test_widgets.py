"""labkit.widgets.player and .base: frames as PNGs, a self-contained static player, the latest-wins worker."""

import base64
import html
import io
import json
import re
import threading
import time

import ipywidgets as widgets
import numpy as np
import pytest
import torch
from PIL import Image

from labkit.widgets.base import LatestWins
from labkit.widgets.player import live_container, static_player, to_png


def grey_frames(n: int = 5, size: int = 8) -> list[np.ndarray]:
    """Frame i is a constant image of grey level i/(n-1): every frame differs from every other."""
    return [np.full((size, size), i / (n - 1)) for i in range(n)]


def data_urls(page: str) -> set[str]:
    """The distinct PNG frames embedded in a page."""
    return set(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page))


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_to_png_maps_value_range_and_enlarges_pixels():
    image = torch.tensor([[-1.0, 0.0], [1.0, 3.0]])  # 3.0 is out of range: clipped to white
    pixels = decode(to_png(image, value_range=(-1, 1), pixel_size=3))
    assert pixels.shape == (6, 6)
    assert pixels[0, 0] == 0 and pixels[0, 3] == 128 and pixels[3, 0] == 255 and pixels[5, 5] == 255
    # channels first (as torch stores images) and channels last give the same picture
    rgb = np.random.default_rng(0).random((4, 5, 3))
    assert to_png(rgb, pixel_size=1) == to_png(torch.from_numpy(rgb).permute(2, 0, 1), pixel_size=1)
    assert decode(to_png(np.zeros((1, 28, 28)))).shape == (252, 252)  # auto: 28 * 9 pixels


def test_static_player_embeds_every_frame_and_nothing_external():
    frames = grey_frames()
    page = static_player([to_png(frame) for frame in frames], labels=list("abcde"), title="<edit> strip")
    for frame in frames:
        assert base64.b64encode(to_png(frame)).decode() in page
    assert len(data_urls(page)) == len(frames)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "http" not in page.replace("data:image/png;base64,", "")
    assert 'type="range"' in page and 'max="4"' in page
    assert "&lt;edit&gt; strip" in page  # the title is escaped, not markup
    # two players on one page do not share element ids
    ids = lambda html: set(re.findall(r'id="([^"]+)"', html))  # noqa: E731
    again = static_player([to_png(frame) for frame in frames], labels=list("abcde"))
    assert ids(page) and not ids(page) & ids(again)


def test_to_png_rejects_what_is_not_an_image():
    with pytest.raises(ValueError, match="shape"):
        to_png(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="value_range"):
        to_png(np.zeros((2, 2)), value_range=(1, 1))


def test_static_player_checks_its_input():
    with pytest.raises(ValueError, match="at least one frame"):
        static_player([], [])
    with pytest.raises(ValueError, match="one label per frame"):
        static_player([to_png(np.zeros((2, 2)))], ["a", "b"])
    with pytest.raises(ValueError, match="value must index a frame"):
        static_player([to_png(np.zeros((2, 2)))], ["a"], value=1)


def test_latest_wins_computes_the_running_and_the_newest_request_only():
    lock, cache, shown, calls = threading.Lock(), {}, [], []
    started = threading.Event()

    def compute(key):
        calls.append(key)
        started.set()
        time.sleep(0.2)  # slow enough that every later request arrives while it runs
        if key == "bad":
            raise ArithmeticError("no such frame")
        with lock:
            cache[key] = f"frame {key}"

    status = widgets.Label("")
    worker = LatestWins(lock, cached=lambda key: key in cache, show=shown.append, compute=compute,
                        busy=lambda key: None, status=status, what="a frame")
    worker.request(0)
    assert started.wait(5)
    for key in range(1, 10):  # a fast drag across nine uncomputed frames
        worker.request(key)
    worker.wait(10)
    assert calls == [0, 9] and shown[-1] == 9  # the one running, then the newest, nothing in between
    worker.request(0)  # cached: shown at once, not recomputed
    assert calls == [0, 9] and shown[-1] == 0
    worker.request("bad")
    with pytest.raises(RuntimeError, match="no such frame"):
        worker.wait(5)
    assert "failed" in status.value


def test_live_container_carries_its_settings_as_escaped_json():
    player = static_player([to_png(np.zeros((2, 2)))], ["a"])
    config = {"explorer": "edit", "seeds": [0, 1], "note": "</div> & 'quotes' \"too\""}
    page = live_container(config, player)
    (attribute,) = re.findall(r'data-labkit-live="([^"]*)"', page)
    assert json.loads(html.unescape(attribute)) == config and player in page
    with pytest.raises(ValueError, match="explorer"):
        live_container({"explorer": "something else"}, player)
