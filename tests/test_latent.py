"""labkit.latent: a Stable Diffusion pipeline folder as a DiffusionModel over the VAE latent, bound to a prompt.

A tiny random pipeline (the miniature's architecture at widths 8-16, the world's tokenizer) saved
in diffusers' layout with save_pretrained stands in for a real checkpoint; it loads through the
same code (load_model) as SD 1.x/2.x.
"""

import json
import shutil

import pytest
import torch
from diffusers.models.attention_processor import Attention

from labkit import captions
from labkit.diffusion import ddim_invert, ddim_sample, h_space, posterior_mean, sample_noise
from labkit.editing import Sample, edit, global_directions, sample_basis, transport_direction, x_space_guidance
from labkit.hspace import h_shape, h_space_edit
from labkit.latent import LatentDiffusionModel
from labkit.models import PIPELINE_FILES, ModelUnavailableError, load_model
from labkit.spectral import jvps, local_basis, vjps

# The same float32 network output computed along two paths (another batch shape, another caller)
# differs by a few 1e-7 on values near 1, and by more on another CPU's kernels (CI saw 4e-7).
FLOAT32 = {"rtol": 1e-5, "atol": 1e-5}
PROMPT = "a small red square tilted left on the right, on a blue wall above a green floor"


def save_tiny_pipeline(folder, prediction_type="v_prediction", seed=0):
    """A random tiny StableDiffusionPipeline folder, saved as labkit.sd_layout saves the miniature."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from labkit import sd_layout

    torch.manual_seed(seed)
    tokenizer_dir = captions.tokenizer_files(folder.parent / f"{folder.name}-tokenizer",
                                             max_length=sd_layout.MAX_TOKENS)
    text = CLIPTextModel(CLIPTextConfig(**sd_layout.text_config(len(json.loads((tokenizer_dir / "vocab.json")
                                                                             .read_text())), tiny=True)))
    unet = UNet2DConditionModel(**sd_layout.unet_config(text.config.hidden_size, tiny=True))
    vae = AutoencoderKL(**sd_layout.vae_config(tiny=True))
    sd_layout.save_pipeline(folder, unet, vae, text, tokenizer_dir)
    if prediction_type != "v_prediction":
        config_file = folder / "scheduler" / "scheduler_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "prediction_type": prediction_type}))
        sd_layout.pipeline_manifest(folder)  # as if saved so
    return folder


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("sd") / "pipeline")


@pytest.fixture(scope="module")
def sd(sd_dir):
    return load_model(sd_dir)


@pytest.fixture(scope="module")
def sd64(sd_dir):
    return load_model(sd_dir, dtype=torch.float64)


# ---------------------------------------------------------------------------------------- loading

def test_a_pipeline_folder_loads_as_the_unconditional_latent_model(sd_dir, sd):
    assert isinstance(sd, LatentDiffusionModel)
    assert sd.sample_shape == (4, 8, 8) and sd.image_shape == (3, 32, 32)
    assert sd.prediction_type == "v_prediction" and sd.schedule["beta_schedule"] == "scaled_linear"
    assert sd.prompt == "" and sd.guidance_scale == 1.0
    assert torch.equal(sd.prompt_embeds, sd.negative_embeds)
    for part in (sd.unet, sd.vae, sd.text_encoder):
        assert not part.training and not any(p.requires_grad for p in part.parameters())
    assert {p.name for p in (sd_dir / "tokenizer").iterdir()} >= {"vocab.json", "merges.txt"}
    assert not list(sd_dir.rglob("*.bin")) and list(sd_dir.rglob("*.safetensors"))
    assert json.loads((sd_dir / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_diffusers_own_pipeline_class_reads_the_same_folder(sd_dir, sd):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, use_safetensors=True, safety_checker=None)
    z = sample_noise(sd, 1, seed=1)
    c = sd.encode_prompt("a red square")
    embeds, _ = pipe.encode_prompt("a red square", "cpu", 1, False)
    assert torch.allclose(c, embeds, **FLOAT32)
    with torch.no_grad():
        assert torch.allclose(pipe.unet(z, 500, encoder_hidden_states=c).sample,
                              sd.conditioned("a red square", guidance_scale=1.0).output(z, 500), **FLOAT32)


def test_only_safetensors_are_read(sd_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sd_dir, copy)
    (copy / "manifest.json").unlink()  # a folder from elsewhere: the loader itself refuses the .bin
    weights = copy / "text_encoder" / "model.safetensors"
    torch.save({}, copy / "text_encoder" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        load_model(copy)


def test_an_epsilon_pipeline_loads_as_epsilon(tmp_path):
    model = load_model(save_tiny_pipeline(tmp_path / "eps", prediction_type="epsilon"))
    assert model.prediction_type == "epsilon"
    z = sample_noise(model, 1, seed=0)
    assert torch.equal(model.eps(z, 300), model.output(z, 300))


def test_a_saved_pipeline_has_a_manifest_over_every_part_and_round_trips(sd_dir, sd, tmp_path):
    from safetensors.torch import load_file

    from labkit.sd_layout import save_pipeline

    files = json.loads((sd_dir / "manifest.json").read_text())["files"]
    on_disk = {str(p.relative_to(sd_dir)) for p in sd_dir.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(files) == on_disk and set(PIPELINE_FILES) <= set(files)
    assert {name.split("/")[0] for name in files} == {"model_index.json", "unet", "vae", "text_encoder", "tokenizer",
                                                      "scheduler"}
    shipped = load_file(sd_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(sd.unet.state_dict()[k], shipped[k]) for k in shipped)
    # saved again from the loaded parts, beside a checkpoint as in the trainer's OUT: the same weights load
    (tmp_path / "again" / "checkpoint-vae").mkdir(parents=True)
    (tmp_path / "again" / "checkpoint-vae" / "state.json").write_text("{}")
    again = load_model(save_pipeline(tmp_path / "again", sd.unet, sd.vae, sd.text_encoder, sd_dir / "tokenizer"))
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["files"].keys() == files.keys()
    for part in ("unet", "vae", "text_encoder"):
        before, after = getattr(sd, part).state_dict(), getattr(again, part).state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), part


@pytest.mark.parametrize("damage", ["unet", "vae", "text_encoder", "truncated", "config"])
def test_a_changed_part_is_refused_naming_the_file_and_the_fix(sd_dir, tmp_path, damage):
    copy = shutil.copytree(sd_dir, tmp_path / "copy")
    name = {"unet": "unet/diffusion_pytorch_model.safetensors", "vae": "vae/diffusion_pytorch_model.safetensors",
            "config": "scheduler/scheduler_config.json"}.get(damage, "text_encoder/model.safetensors")
    data = bytearray((copy / name).read_bytes())
    if damage == "config":
        data = data.replace(b'"beta_end": 0.012', b'"beta_end": 0.013')  # another schedule, as many bytes
    else:
        data[-1] ^= 1  # one weight's last byte: the file still parses
    (copy / name).write_bytes(data[:-4] if damage == "truncated" else data)
    with pytest.raises(ModelUnavailableError) as err:
        load_model(copy)
    message = str(err.value)
    assert name in message and ("truncated" if damage == "truncated" else "SHA-256 changed") in message, message
    assert "save_pipeline" in message and "python -m labkit.train sd --out" in message, message
    if damage != "truncated":  # without the manifest the change loads silently: the manifest is what refuses it
        (copy / "manifest.json").unlink()
        assert load_model(copy).schedule["beta_end"] == (0.013 if damage == "config" else 0.012)


def test_a_shipped_miniature_must_have_its_manifest(sd_dir, tmp_path, monkeypatch):
    from labkit import models

    # the miniature in its place in a copy of labkit/embedded, shipped with a manifest as "mnist" and "shapes" are
    embedded = tmp_path / "labkit" / "embedded"
    shutil.copytree(sd_dir, embedded / "shapes" / "sd")
    monkeypatch.setattr(models, "EMBEDDED_MODEL", embedded)
    monkeypatch.setitem(models.EMBEDDED_MODELS, "shapes-sd", embedded / "shapes" / "sd")
    # "shapes-sd" is in SHIPPED_WITH_MANIFEST: a shipped miniature must have its manifest
    assert load_model("shapes-sd").name == "embedded:shapes-sd"
    (embedded / "shapes" / "sd" / "manifest.json").unlink()
    with pytest.raises(ModelUnavailableError, match="has no manifest.json") as err:
        load_model("shapes-sd")
    assert "reinstall labkit" in str(err.value)
    assert "python -m labkit.train sd --out labkit/embedded/shapes/sd" in str(err.value)


def test_the_missing_miniature_says_how_to_train_it(monkeypatch):
    from labkit import models

    monkeypatch.setitem(models.EMBEDDED_MODELS, "shapes-sd", models.EMBEDDED_MODEL / "shapes" / "no-such-folder")
    with pytest.raises(ModelUnavailableError, match="python -m labkit.train sd --out"):
        load_model("shapes-sd")


# ---------------------------------------------------------------------------------------- the prompt

def test_guidance_is_the_classifier_free_combination(sd):
    model = sd.conditioned(PROMPT, guidance_scale=3.0)
    z = sample_noise(sd, 2, seed=2)
    with torch.no_grad():
        cond = sd.unet(z, 400, encoder_hidden_states=model.prompt_embeds.expand(2, -1, -1)).sample
        uncond = sd.unet(z, 400, encoder_hidden_states=model.negative_embeds.expand(2, -1, -1)).sample
        assert torch.allclose(model.output(z, 400), uncond + 3.0 * (cond - uncond), **FLOAT32)
        assert torch.allclose(sd.conditioned(PROMPT, guidance_scale=1.0).output(z, 400), cond, **FLOAT32)
        assert torch.allclose(sd.conditioned(PROMPT, guidance_scale=0.0).output(z, 400), uncond, **FLOAT32)
        assert not torch.allclose(cond, uncond, atol=1e-4)  # the prompt reaches the U-Net


def test_prompt_embeddings_stand_in_for_the_prompt(sd):
    by_text = sd.conditioned("a blue ellipse", guidance_scale=2.0)
    by_embeds = sd.conditioned(prompt_embeds=by_text.prompt_embeds[0], guidance_scale=2.0)
    z = sample_noise(sd, 1, seed=4)
    assert by_embeds.prompt is None
    assert torch.equal(by_text.output(z, 700), by_embeds.output(z, 700))


def test_h_space_is_the_mid_block_output_under_the_prompt(sd):
    model = sd.conditioned(PROMPT, guidance_scale=5.0)
    z = sample_noise(sd, 2, seed=5)
    seen = []
    handle = sd.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            sd.unet(z, 600, encoder_hidden_states=model.prompt_embeds.expand(2, -1, -1))
    finally:
        handle.remove()
    h = h_space(model, 600)(z)
    assert h.shape == (2, *h_shape(model)) and torch.allclose(h, seen[0], **FLOAT32)
    assert not torch.allclose(h, h_space(sd.conditioned("a green triangle"), 600)(z), atol=1e-4)


def test_jvp_and_double_vjp_through_cross_attention_match_the_explicit_jacobian(sd64):
    model = sd64.conditioned("a large cyan triangle tilted right", guidance_scale=4.0)
    z = sample_noise(model, 1, seed=6)
    f = h_space(model, 500)
    y = f(z)
    J = torch.func.jacrev(f)(z).reshape(y.numel(), z.numel())
    V = torch.randn(2, *z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = (V.reshape(2, -1) @ J.T).reshape(2, *y.shape)
    assert torch.allclose(jvps(f, z, V, mode="forward"), expected, atol=1e-10)
    assert torch.allclose(jvps(f, z, V, mode="double-vjp"), expected, atol=1e-10)
    U = torch.randn(2, *y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(vjps(f, z, U), (U.reshape(2, -1) @ J).reshape(2, *z.shape), atol=1e-10)
    exact = local_basis(f, z, 3, method="exact")
    assert torch.allclose(exact.sigma, torch.linalg.svdvals(J)[:3], rtol=1e-10)
    # x̂₀ under guidance (three U-Net passes in one map): forward mode against finite differences
    pm = posterior_mean(model, 500)
    step = 1e-6
    difference = (pm(z + step * V[0]) - pm(z - step * V[0])) / (2 * step)
    assert torch.allclose(jvps(pm, z, V[:1], mode="forward")[0], difference, atol=1e-6)


def test_the_basis_cache_keeps_prompts_apart(sd, tmp_path):
    a, b = sd.conditioned("a red square"), sd.conditioned("a blue square")
    z = sample_noise(sd, 1, seed=7)
    t = sd.timesteps(10)[3]
    sample = Sample(x_t=z, t=t, num_steps=10, seed=None)
    basis_a = sample_basis(a, sample, 2, cache_dir=tmp_path)
    basis_b = sample_basis(b, sample, 2, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not torch.allclose(basis_a.sigma, basis_b.sigma)
    assert torch.equal(sample_basis(a, sample, 2, cache_dir=tmp_path).v, basis_a.v)


@pytest.mark.parametrize("which", ["unconditional", "prompted"])
def test_no_sdpa_kernel_runs_and_the_process_wide_backend_flags_stay_as_they_were(which, request, monkeypatch):
    """Forward-mode AD needs attention without fused SDPA kernels; labkit gets it from the plain
    AttnProcessor alone. A ``sdpa_kernel`` switch around the U-Net would set process-wide flags
    that another thread (an explorer's) sees mid-call, so inside the U-Net they must be untouched."""
    if which == "prompted":
        model = request.getfixturevalue("sd").conditioned(PROMPT, guidance_scale=3.0)
    else:
        model = request.getfixturevalue("tiny")

    def refuse(*args, **kwargs):
        raise AssertionError("a fused SDPA kernel ran inside the U-Net")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", refuse)
    before = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.mem_efficient_sdp_enabled())
    seen = []
    attention = [m for m in model.unet.modules() if isinstance(m, Attention)]
    assert attention, "the test needs a U-Net with attention"
    handles = [m.register_forward_hook(lambda *_: seen.append((torch.backends.cuda.flash_sdp_enabled(),
                                                                torch.backends.cuda.mem_efficient_sdp_enabled())))
               for m in attention]
    try:
        x = sample_noise(model, 1, seed=0)
        model.output(x, 500)
        torch.func.jvp(h_space(model, 500), (x,), (torch.ones_like(x),))
    finally:
        for handle in handles:
            handle.remove()
    assert seen and all(flags == before for flags in seen)


# ---------------------------------------------------------------------------------------- sampling and editing

def test_ddim_sampling_inversion_and_decoding_under_guidance(sd):
    model = sd.conditioned("a small green ellipse", guidance_scale=3.0)
    z0 = ddim_sample(model, sample_noise(model, 2, seed=8), num_steps=10)
    assert z0.shape == (2, 4, 8, 8) and torch.isfinite(z0).all()
    t = model.timesteps(20)[10]
    back = ddim_sample(model, ddim_invert(model, z0[:1], t_to=t, num_steps=20), num_steps=20, t_from=t)
    assert (back - z0[:1]).norm() / z0[:1].norm() < 0.05  # first-order inversion of a random net
    images = model.decode(z0)
    assert images.shape == (2, 3, 32, 32)
    assert model.encode(images).shape == z0.shape


def test_edits_transport_and_global_directions_run_in_the_latent(sd):
    model = sd.conditioned("a yellow square on the left", guidance_scale=2.0)
    steps = model.timesteps(5)
    samples = [Sample(x_t=ddim_sample(model, sample_noise(model, 1, seed=s), 5, t_to=steps[1]), t=steps[1],
                      num_steps=5, seed=s) for s in (0, 1)]
    bases = [sample_basis(model, s, 2, tol=1e-3) for s in samples]
    v = bases[0].v[0]
    assert x_space_guidance(model, samples[0].x_t, steps[1], v, [0.0, 1.0], n_iter=2).shape == (2, 4, 8, 8)
    strip = edit(model, samples[0], v, [-1.0, 0.0, 1.0], n_iter=2)
    assert strip.shape == (3, 4, 8, 8) and torch.isfinite(strip).all()
    assert torch.allclose(edit(model, samples[0], v, [0.0], method="naive", boost_below=None),
                          ddim_sample(model, samples[0].x_t, 5, t_from=steps[1]), atol=1e-5)
    moved = transport_direction(bases[0], bases[1], v)
    assert moved.shape == v.shape and abs(moved.norm().item() - 1) < 1e-5
    assert global_directions(bases, k=2).shape == (2, 1, 4, 8, 8)
    d = torch.randn(h_shape(model), generator=torch.Generator().manual_seed(0))
    assert h_space_edit(model, samples[0], d, [0.0, 1.0]).shape == (2, 4, 8, 8)


# ---------------------------------------------------------------------------------------- bad input

def test_bad_prompts_embeddings_and_scales_fail_before_any_work(sd):
    calls = []
    handle = sd.text_encoder.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        bad = [
            (dict(prompt=3), TypeError, "prompt must be a str"),
            (dict(prompt=["a red square"]), TypeError, "one prompt per model"),
            (dict(prompt="a purple square"), ValueError, r"\['purple'\] not in this model's vocabulary"),
            # BPE fragments of the world's words encode as one token each but were never trained
            (dict(prompt="a ct"), ValueError, r"\['ct'\] not in this model's vocabulary of 23 words"),
            (dict(prompt="a red d"), ValueError, r"\['d'\] not in"),
            (dict(prompt=" ".join(["a red square"] * 10)), ValueError, "reads at most 22"),
            (dict(), ValueError, "exactly one of prompt"),
            (dict(prompt="a red square", prompt_embeds=sd.prompt_embeds), ValueError, "exactly one of prompt"),
            (dict(prompt_embeds=torch.zeros(1, 5, 7)), ValueError, r"shape \(1, any, 16\)"),
            (dict(prompt_embeds=torch.zeros(2, 5, 16)), ValueError, "shape"),
            (dict(prompt_embeds=torch.full((1, 5, 16), float("nan"))), ValueError, "NaN"),
            (dict(prompt_embeds=torch.zeros(1, 0, 16)), ValueError, "no tokens"),
            (dict(prompt_embeds=torch.zeros(1, 5, 16, dtype=torch.int64)), TypeError, "floating-point"),
            (dict(prompt="a red square", guidance_scale=float("nan")), ValueError, "guidance_scale"),
            (dict(prompt="a red square", guidance_scale=-1.0), ValueError, "guidance_scale must be in"),
            (dict(prompt="a red square", guidance_scale=True), TypeError, "guidance_scale"),
            (dict(prompt="a red square", guidance_scale="7.5"), TypeError, "guidance_scale"),
            (dict(prompt="a red square", negative_prompt="a mauve floor"), ValueError, "negative_prompt"),
        ]
        for kwargs, error, message in bad:
            with pytest.raises(error, match=message):
                sd.conditioned(**kwargs)
        assert calls == []  # every refusal came before the text encoder ran
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------- command lines

def test_directions_and_analyze_take_a_prompt_and_a_guidance_scale(sd_dir, tmp_path, capsys):
    from labkit.__main__ import main

    main(["directions", "--model", str(sd_dir), "--prompt", "a red square", "--guidance-scale", "2", "--k", "1",
          "--steps", "5", "--fraction", "0.4", "--columns", "2", "--out", str(tmp_path / "d")])
    assert (tmp_path / "d" / "strip.png").exists() and (tmp_path / "d" / "basis.safetensors").exists()
    main(["analyze", "--model", str(sd_dir), "--prompt", "a blue ellipse", "--samples", "1", "--fraction", "0.5",
          "--k", "2", "--steps", "5", "--out", str(tmp_path / "a")])
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["prompt"] == "a blue ellipse" and results["guidance_scale"] is None


def test_a_bad_prompt_or_scale_is_a_usage_error_before_any_work(sd_dir, tiny_dir, tmp_path, capsys):
    from labkit.__main__ import main

    cases = [(["--model", str(sd_dir), "--prompt", "a purple square"], "not in this model's vocabulary"),
             (["--model", str(sd_dir), "--prompt", "a red square", "--guidance-scale", "-2"], "--guidance-scale"),
             (["--model", str(tiny_dir), "--prompt", "a red square"], "is not text-conditioned")]
    for command in ("directions", "analyze"):
        for flags, message in cases:
            with pytest.raises(SystemExit) as exit_info:
                main([command, *flags, "--out", str(tmp_path / command)])
            assert exit_info.value.code == 2 and message in capsys.readouterr().err
        assert not list((tmp_path / command).rglob("*.safetensors"))


def test_a_hub_id_loads_from_the_local_cache_offline_and_fails_fast_when_absent(sd_dir, tmp_path):
    import os
    import subprocess
    import sys

    commit = "0123456789abcdef" * 2 + "01234567"  # a cached snapshot is named by a 40-digit commit hash
    snapshot = tmp_path / "hub" / "models--labkit--tiny-sd" / "snapshots" / commit
    shutil.copytree(sd_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    code = """
import time
from labkit.models import ModelUnavailableError, load_model
model = load_model("labkit/tiny-sd")
print(type(model).__name__, model.name, model.prediction_type)
start = time.perf_counter()
try:
    load_model("labkit/no-such-sd")
except ModelUnavailableError as err:
    print(round(time.perf_counter() - start, 2), "HF_HUB_OFFLINE" in str(err))
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = result.stdout.split()
    assert lines[:3] == ["LatentDiffusionModel", "labkit/tiny-sd", "v_prediction"], result.stderr[-2000:]
    assert float(lines[3]) < 1.0 and lines[4] == "True"


def test_an_sd2_shaped_unet_linear_projections_and_upcast_attention_differentiates_exactly(sd64):
    """SD 2.x's U-Net differs from 1.x in linear projections around attention and (2.1) attention upcast."""
    from diffusers import UNet2DConditionModel

    from labkit import sd_layout
    from labkit.latent import from_parts

    torch.manual_seed(1)
    unet = UNet2DConditionModel(**sd_layout.unet_config(16, tiny=True), use_linear_projection=True,
                                upcast_attention=True).double()
    model = from_parts(unet, sd64.vae, sd64.text_encoder, sd64.tokenizer, sd64.schedule, "sd2-shaped")
    model = model.conditioned("a large red triangle", guidance_scale=7.5)
    z = sample_noise(model, 1, seed=9)
    f = h_space(model, 300)
    J = torch.func.jacrev(f)(z).reshape(-1, z.numel())
    v = torch.randn(1, *z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(jvps(f, z, v, mode="forward")[0].reshape(-1), J @ v.reshape(-1), atol=1e-10)


def test_the_readme_calls_run_on_a_pipeline(sd):
    from labkit.diffusion import sample_at, timestep_at

    model = sd.conditioned("a small red square", guidance_scale=7.5)
    sample = sample_at(model, seed=0, t=timestep_at(model, 0.6, 10), num_steps=10)
    basis = sample_basis(model, sample, k=2, tol=1e-3)
    with torch.no_grad():
        images = model.decode(edit(model, sample, basis.v[0], [-1.0, 0.0, 1.0], n_iter=1))
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
