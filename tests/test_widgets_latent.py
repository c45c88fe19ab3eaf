"""The explorers on a text-conditioned latent diffusion model (labkit.latent), headless, on a tiny random
Stable Diffusion pipeline: every computation in the VAE latent under the model's prompt, the images
shown, returned, saved and embedded decoded to RGB pixels; the web book's live option refused."""

import html
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_latent import save_tiny_pipeline

from labkit.diffusion import QUALITY_BOOST, ddim_sample, sample_at, timestep_at
from labkit.editing import interpolate
from labkit.latent import to_pixels
from labkit.models import load_model
from labkit.widgets import EditExplorer, InterpolationExplorer

PROMPT, OTHER = "a small red square on the left", "a large blue ellipse tilted right"
STRENGTHS = [-4.0, 0.0, 4.0]
STEPS = 5  # a short DDIM schedule: each strip and path is a fraction of a second
SCALE = 8  # to_png enlarges a 32×32 image to 256×256


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return load_model(save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "pipeline"))


@pytest.fixture(scope="module")
def model(sd):
    return sd.conditioned(PROMPT, guidance_scale=2.0)


@pytest.fixture(scope="module")
def explorer(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    explorer = EditExplorer(model, seeds=(0, 1), t_fractions=(0.6,), k=2, strengths=STRENGTHS, num_steps=STEPS,
                            cache_dir=root / "bases", save_dir=root / "strips", edit_options={"n_iter": 4})
    explorer.wait(60)
    return explorer


@pytest.fixture(scope="module")
def paths(model):
    explorer = InterpolationExplorer(model, seed_a=0, seed_b=1, t_fraction=0.6, n=3, methods=("lerp", "slerp"),
                                     num_steps=STEPS)
    explorer.wait(60)
    return explorer


def decode_png(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def unedited(model, seed: int) -> torch.Tensor:
    """The sample finished from t as the explorer finishes every edit, then decoded: (1, 3, 32, 32)."""
    sample = sample_at(model, seed, timestep_at(model, 0.6, STEPS), STEPS)
    z0 = ddim_sample(model, sample.x_t, STEPS, t_from=sample.t,
                     eta_below=int(QUALITY_BOOST * model.num_train_timesteps), seed=seed, shared_noise=True)
    return model.decode(z0).clamp(-1, 1).detach()


# ---------------------------------------------------------------------------------------- the edit explorer

def test_edits_run_in_the_latent_and_show_decoded_rgb(explorer, model):
    sample, basis = explorer._bases[(0, 0.6)]
    assert sample.x_t.shape == (1, 4, 8, 8) and basis.v.shape == (2, 1, 4, 8, 8)  # z_t and directions in the latent
    strip = explorer.strip()
    assert strip.shape == (3, *model.image_shape) == (3, 3, 32, 32)  # decoded pixels, not the 4-channel latent
    assert strip.min() >= -1 and strip.max() <= 1
    pixels = decode_png(explorer.image.value)
    scale = 256 // (2 * 32 + 2)  # to_png enlarges the composed image to about 256 pixels wide
    assert pixels.shape == (32 * scale, (2 * 32 + 2) * scale, 3)  # the sample, a 2-pixel gap, the edit: RGB
    assert explorer.slider.value == 1  # it opens at γ = 0: the sample on both sides
    assert np.array_equal(pixels[:, : 32 * scale], pixels[:, -32 * scale:])
    assert PROMPT in explorer.caption.value and "w = 2" in explorer.caption.value


def test_strength_zero_is_the_unedited_decoded_sample(explorer, model):
    expected = unedited(model, 0)
    for method in ("guidance", "naive"):
        explorer.method.value = method
        explorer.wait(60)
        strip = explorer.strip()
        torch.testing.assert_close(strip[1:2], expected, atol=1e-4, rtol=1e-4)  # batched vs alone: float noise
        assert (strip[0] - strip[1]).abs().max() > 1e-3 and (strip[2] - strip[1]).abs().max() > 1e-3
    explorer.method.value = "guidance"
    explorer.wait(60)


def test_another_prompt_gives_other_images(explorer, sd):
    other = EditExplorer(sd.conditioned(OTHER, guidance_scale=2.0), seeds=(0,), t_fractions=(0.6,), k=2,
                         strengths=STRENGTHS, num_steps=STEPS, edit_options={"n_iter": 4})
    other.wait(60)
    a, b = explorer.strip(), other.strip()
    assert a.shape == b.shape
    assert (a - b).abs().max() > 1e-2  # the unedited sample and its edits change with the prompt
    torch.testing.assert_close(b[1:2], unedited(other.model, 0), atol=1e-4, rtol=1e-4)


def test_save_strip_writes_the_decoded_strip(explorer, tmp_path):
    path = explorer.save_strip(tmp_path / "strip.png")
    assert decode_png(open(path, "rb").read()).shape == (32 * 4, (3 * 32 + 2 * 2) * 4, 3)


def test_the_page_is_the_static_player_alone_and_live_config_refuses(explorer):
    bundle = explorer._repr_mimebundle_()
    page = bundle["text/html"]
    assert f"prompt {PROMPT!r}, w = 2" in bundle["text/plain"]
    assert "data-labkit-live" not in page  # no live option that would compute something else
    assert len(set(re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", page))) >= 2
    for png in explorer._frames[explorer.key]:
        assert decode_png(png).shape[-1] == 3
    assert f"prompt {PROMPT!r}, w = 2" in html.unescape(page)  # the title says what the model is bound to
    with pytest.raises(NotImplementedError, match="not exported to the web book"):
        explorer.live_config()


# ---------------------------------------------------------------------------------------- the interpolation explorer

def test_paths_join_latents_and_show_decoded_rgb(paths, model):
    t = timestep_at(model, 0.6, STEPS)
    a, b = sample_at(model, 0, t, STEPS), sample_at(model, 1, t, STEPS)
    for method in ("lerp", "slerp"):
        result = paths.interpolation(method)
        assert result.path.shape == (3, 1, 4, 8, 8)  # a path in z_t
        assert result.images.shape == (3, 4, 8, 8)  # the finished latents z_0, as labkit.editing returns them
        images = paths.images(method)
        assert images.shape == (3, 3, 32, 32)
        torch.testing.assert_close(images, to_pixels(model, result.images))
        assert decode_png(paths._frames[method][0]).shape == (32 * SCALE, 32 * SCALE, 3)
    expected = to_pixels(model, interpolate(model, a, b, n=3, method="lerp").images)
    torch.testing.assert_close(paths.images("lerp"), expected, atol=1e-4, rtol=1e-4)
    assert np.array_equal(decode_png(paths.image.value), decode_png(paths._frames["lerp"][0]))
    page = paths.to_html()
    assert "data-labkit-live" not in page and PROMPT in html.unescape(page)
    with pytest.raises(NotImplementedError, match="not exported to the web book"):
        paths.live_config()


def test_the_geodesic_runs_through_cross_attention(model):
    explorer = InterpolationExplorer(model, n=3, methods=("geodesic",), t_fraction=0.6, num_steps=STEPS,
                                     geodesic_steps=2)
    explorer.wait(60)
    result = explorer.interpolation("geodesic")
    assert explorer.images("geodesic").shape == (3, 3, 32, 32)
    assert result.h_length > 0 and np.isfinite(result.h_length)


# ---------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, error, message", [
    (lambda sd: EditExplorer("shapes-sd", num_steps=STEPS), TypeError, "model must be a DiffusionModel"),
    (lambda sd: InterpolationExplorer(sd.unet, num_steps=STEPS), TypeError, "model must be a DiffusionModel"),
    (lambda sd: EditExplorer(sd, "a red square", num_steps=STEPS), TypeError,
     r"seeds must be a list of noise seeds.*model\.conditioned\("),
    (lambda sd: InterpolationExplorer(sd, "a red square", num_steps=STEPS), TypeError,
     r"seed_a must be a noise seed.*model\.conditioned\("),
    (lambda sd: EditExplorer(sd.conditioned("a purple square"), num_steps=STEPS), ValueError,
     r"prompt='a purple square': \['purple'\] not in this model's vocabulary"),
    (lambda sd: InterpolationExplorer(sd.conditioned("a red square", guidance_scale=-1.0)), ValueError,
     r"guidance_scale must be in \[0, 100\]"),
    (lambda sd: EditExplorer(sd.conditioned("a red square", guidance_scale=float("nan"))), ValueError,
     "guidance_scale must be a finite number"),
    (lambda sd: InterpolationExplorer(sd.conditioned(prompt_embeds=torch.zeros(1, 4, 7))), ValueError,
     r"prompt_embeds must have shape \(1, any, 16\)"),
])
def test_bad_models_prompts_and_scales_are_refused_before_any_work(sd, call, error, message):
    calls = []
    hooks = [part.register_forward_pre_hook(lambda *args: calls.append(1))
             for part in (sd.unet, sd.text_encoder, sd.vae)]
    try:
        with pytest.raises(error, match=message):
            call(sd)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []  # refused before the text encoder, the U-Net or the VAE ran
