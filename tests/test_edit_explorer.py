"""labkit.widgets.EditExplorer, headless, on a tiny random U-Net: controls drive the image,
strips are computed once per selection, the static player carries every strength."""

import base64
import html
import io
import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.cache import weights_fingerprint
from labkit.diffusion import QUALITY_BOOST, ddim_sample, sample_at, timestep_at
from labkit.widgets import EditExplorer

STRENGTHS = torch.tensor([-8.0, -4.0, 0.0, 4.0, 8.0])
STEPS = 10  # a short DDIM schedule keeps each strip at a few milliseconds
# The tiny random U-Net's images are far outside [-1, 1], so most edits vanish in the clipped
# PNG; γ = -8 (slider index 0) along v1 or v2 of sample 0 is visible, so the tests look there.


@pytest.fixture
def explorer(tiny, tmp_path) -> EditExplorer:
    explorer = EditExplorer(tiny, seeds=(0, 1, 2, 3), t_fractions=(0.6, 1.0), k=2, strengths=STRENGTHS,
                             cache_dir=tmp_path / "bases", save_dir=tmp_path / "strips", num_steps=STEPS)
    explorer.wait(30)
    return explorer


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_opens_at_strength_zero_with_the_sample_on_both_sides(explorer):
    assert explorer.slider.value == 2 and explorer.frame_label.value == "γ = +0"
    pixels = decode(explorer.image.value)
    scale = pixels.shape[0] // 8  # 8×8 latents, enlarged
    left, right = pixels[:, : 8 * scale], pixels[:, -8 * scale:]
    assert pixels.shape[1] == (16 + 2) * scale  # original, a 2-pixel gap, the edit
    assert np.array_equal(left, right)
    assert "labkit-explorer" in explorer.widget._dom_classes
    assert "labkit-frame-slider" in explorer.slider._dom_classes


def test_strength_slider_changes_the_image_without_computing(explorer):
    before = bytes(explorer.image.value)
    explorer.slider.value = 0
    assert bytes(explorer.image.value) != before  # shown at once: no wait()
    assert explorer.frame_label.value == "γ = -8"
    pixels = decode(explorer.image.value)
    assert not np.array_equal(pixels[:, : pixels.shape[0]], pixels[:, -pixels.shape[0]:])  # the edit differs
    explorer.slider.value = 4
    assert bytes(explorer.image.value) == explorer._frames[explorer.key][4]
    assert explorer.computed == [(0, 0.6, 0, "guidance")]


def test_strength_zero_frame_is_the_unedited_sample(tiny, explorer):
    sample = sample_at(tiny, 0, timestep_at(tiny, 0.6, STEPS), STEPS)
    unedited = ddim_sample(tiny, sample.x_t, sample.num_steps, t_from=sample.t,
                           eta_below=int(QUALITY_BOOST * tiny.num_train_timesteps), seed=0, shared_noise=True)
    for method in ("guidance", "naive"):
        explorer.method.value = method
        explorer.wait(30)
        strip = explorer.strip()
        assert strip.shape == (5, 1, 8, 8)
        torch.testing.assert_close(strip[2:3], unedited, atol=1e-4, rtol=1e-5)  # batched vs alone: float noise
        assert (strip[0] - strip[2]).abs().max() > 1e-3  # and γ ≠ 0 does change it


def test_new_direction_recomputes_and_going_back_is_instant(explorer):
    explorer.slider.value = 0
    first = bytes(explorer.image.value)
    explorer.direction.value = 1
    explorer.wait(30)
    assert explorer.computed == [(0, 0.6, 0, "guidance"), (0, 0.6, 1, "guidance")]
    assert bytes(explorer.image.value) != first
    explorer.direction.value = 0
    assert bytes(explorer.image.value) == first  # from the cache, at once
    assert explorer._worker.worker is None  # no thread started
    assert len(explorer.computed) == 2


def test_rapid_control_changes_compute_only_the_newest(explorer):
    compute = explorer._worker.compute

    def slow_compute(key):
        time.sleep(0.3)  # every change below arrives while this runs
        compute(key)

    explorer._worker.compute = slow_compute
    for seed in (1, 2, 3):
        explorer.seed.value = seed
    explorer.wait(30)
    seeds = [key[0] for key in explorer.computed]
    # Latest wins: the worker, when free, takes the newest selection. Whichever of 1 or 2 was
    # newest when it started may run (on a busy machine the worker can start after seed 2 is
    # set), but never both, and the last computation is the final selection.
    assert seeds in ([0, 1, 3], [0, 2, 3], [0, 3])
    assert explorer.image.value == explorer._frames[(3, 0.6, 0, "guidance")][explorer.slider.value]
    assert explorer.progress.layout.visibility == "hidden" and explorer.status.value == ""


def test_bases_are_cached_on_disk(tiny, explorer, tmp_path):
    assert len(list((tmp_path / "bases").glob("*.safetensors"))) == 1
    again = EditExplorer(tiny, seeds=(0,), t_fractions=(0.6,), k=2, strengths=STRENGTHS, cache_dir=tmp_path / "bases",
                          num_steps=STEPS)
    again.wait(30)
    assert bytes(again.image.value) == bytes(explorer.image.value)


def test_static_player_holds_every_strength(explorer):
    bundle = explorer._repr_mimebundle_()
    page = bundle["text/html"]
    for png in explorer._frames[explorer.key]:
        assert base64.b64encode(png).decode() in page
    labels = json.dumps(["γ = -8", "γ = -4", "γ = +0", "γ = +4", "γ = +8"])  # as the player's script holds them
    assert 'max="4"' in page and labels in page
    assert "direction v1" in page and "guidance" in page
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id
    assert bundle["text/plain"] == "EditExplorer(4 samples, k=2, 5 strengths)"


def test_save_strip_writes_every_strength(explorer, tmp_path):
    explorer.save_button.click()
    path = tmp_path / "strips" / f"edit-seed0-t{timestep_at(explorer.model, 0.6, STEPS)}-v1-guidance.png"
    assert path.exists() and str(path) in explorer.saved.value
    assert decode(path.read_bytes()).shape == (8 * 4, (5 * 8 + 4 * 2) * 4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(k=0), "k must be in 1..64"),
        (dict(seeds=()), "at least one noise seed"),
        (dict(seeds=(0, -1)), "seeds\\[1\\] must be in"),
        (dict(method="magic"), "method must be one of"),
        (dict(t_fractions=(1.5,)), "t_fractions\\[0\\] must be in \\[0, 1\\].*a fraction of T"),
        (dict(t_fractions=()), "t_fractions is empty"),
        (dict(strengths=[]), "1 to 101 finite numbers"),
        (dict(strengths=[0.0, float("nan")]), "with NaN"),
        (dict(edit_options={"deltaa": 1.0}), "edit_options takes"),
    ],
)
def test_bad_input_fails_early_and_says_what_to_do(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EditExplorer(tiny, **{"num_steps": STEPS, **kwargs})


def test_static_player_carries_the_live_settings(explorer, tiny):
    # what the web book's live explorer reads (book/_static/live/explorer.js): the explorer's own settings
    page = explorer._repr_mimebundle_()["text/html"]
    (attribute,) = re.findall(r'data-labkit-live="([^"]*)"', page)
    config = json.loads(html.unescape(attribute))
    assert config == explorer.live_config()
    assert config["explorer"] == "edit" and config["model"] == tiny.name
    assert config["weights"] == weights_fingerprint(tiny.unet)[:16]
    assert config["seeds"] == [0, 1, 2, 3] and config["t_fractions"] == [0.6, 1.0] and config["k"] == 2
    assert config["strengths"] == STRENGTHS.tolist() and config["strength_index"] == explorer.slider.value == 2
    assert config["num_steps"] == STEPS and config["boost_below"] == QUALITY_BOOST
    assert (config["delta"], config["n_iter"]) == (1.0, 16)  # x_space_guidance's defaults
