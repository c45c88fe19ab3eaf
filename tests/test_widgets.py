"""labkit.widgets, headless: the slider drives the image, the static player is self-contained."""

import base64
import io
import re
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.widgets import FrameExplorer, figure_png, frame_explorer, static_player, to_png


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


def test_slider_changes_displayed_image_and_label():
    frames = grey_frames()
    explorer = frame_explorer(frames, labels=[f"γ = {g}" for g in range(5)], value=1)
    assert decode(explorer.image.value)[0, 0] == round(255 * 1 / 4)
    explorer.slider.value = 4
    assert explorer.image.value == to_png(frames[4])
    assert decode(explorer.image.value)[0, 0] == 255
    assert explorer.readout.value == "γ = 4"
    explorer.show(0)
    assert explorer.slider.value == 0 and decode(explorer.image.value)[0, 0] == 0


def test_computed_frames_are_cached_and_rapid_moves_coalesce():
    calls = []
    started = threading.Event()

    def compute(i: int) -> np.ndarray:
        calls.append(i)
        started.set()
        time.sleep(0.2)  # slow enough that all slider moves arrive while it runs
        return grey_frames(10)[i]

    explorer = frame_explorer(compute=compute, labels=[str(i) for i in range(10)])
    assert started.wait(5)
    for value in range(1, 10):  # a fast drag across nine uncomputed frames
        explorer.slider.value = value
    explorer.wait(10)
    # frame 0 (already running) and the latest request, nothing in between
    assert calls == [0, 9]
    assert explorer.image.value == to_png(grey_frames(10)[9])
    assert explorer.readout.value == "9"
    explorer.slider.value = 0  # cached: shown at once, not recomputed
    assert explorer.image.value == to_png(grey_frames(10)[0])
    assert calls == [0, 9]
    assert explorer.progress.layout.visibility == "hidden"


def test_compute_errors_reach_the_caller():
    def compute(i: int) -> np.ndarray:
        if i == 2:
            raise ArithmeticError("no frame 2")
        return np.zeros((4, 4))

    explorer = frame_explorer(compute=compute, labels=["a", "b", "c"])
    explorer.wait(5)
    explorer.slider.value = 2
    with pytest.raises(RuntimeError, match="no frame 2"):
        explorer.wait(5)
    assert "failed" in explorer.status.value


def test_static_player_embeds_every_frame_and_nothing_external():
    frames = grey_frames()
    explorer = frame_explorer(frames, labels=list("abcde"), title="<edit> strip")
    page = explorer.to_html()
    for frame in frames:
        assert base64.b64encode(to_png(frame)).decode() in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "http" not in page.replace("data:image/png;base64,", "")
    assert 'type="range"' in page and 'max="4"' in page
    assert "&lt;edit&gt; strip" in page  # the title is escaped, not markup
    # two players on one page do not share element ids
    ids = lambda html: set(re.findall(r'id="([^"]+)"', html))  # noqa: E731
    assert ids(page) and not ids(page) & ids(explorer.to_html())


def test_one_bundle_carries_widget_static_player_and_text():
    explorer = frame_explorer(grey_frames(3), title="demo")
    bundle = explorer._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    assert len(data_urls(bundle["text/html"])) == 3
    assert bundle["text/plain"] == "FrameExplorer(3 frames: demo)"


def test_lazy_explorer_static_player_computes_all_frames_once():
    calls = []
    explorer = frame_explorer(compute=lambda i: calls.append(i) or grey_frames(4)[i], labels=list("wxyz"))
    page = explorer.to_html()
    assert sorted(calls) == [0, 1, 2, 3]
    assert len(data_urls(page)) == 4
    explorer.to_html()
    assert sorted(calls) == [0, 1, 2, 3]


def test_matplotlib_figures_and_png_bytes_are_frames():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    png = figure_png(fig)
    plt.close(fig)
    explorer = frame_explorer([png, png])
    assert explorer.image.value == png


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(frames=[]), "at least one frame"),
        (dict(frames=grey_frames(3), labels=["a", "b"]), "3 frames but 2 labels"),
        (dict(frames=grey_frames(3), value=3), "value must index a frame"),
        (dict(), "exactly one of"),
        (dict(frames=grey_frames(2), compute=lambda i: None), "exactly one of"),
        (dict(compute=lambda i: np.zeros((2, 2))), "give `labels` too"),
        (dict(frames=[np.zeros((2, 2, 2, 2))]), "shape"),
        (dict(frames=[b"GIF89a not a png"]), "PNG"),
    ],
)
def test_bad_input_fails_early_and_says_what_to_do(kwargs, message):
    with pytest.raises(ValueError, match=message):
        frame_explorer(**kwargs)


def test_static_player_checks_its_input():
    with pytest.raises(ValueError, match="at least one frame"):
        static_player([], [])
    with pytest.raises(ValueError, match="one label per frame"):
        static_player([to_png(np.zeros((2, 2)))], ["a", "b"])
    assert isinstance(frame_explorer(np.zeros((3, 4, 4))), FrameExplorer)  # a stacked batch
