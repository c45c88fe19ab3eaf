"""The shipped miniature of Stable Diffusion (`load_model("shapes-sd")`): offline, fast, whole, and it follows prompts.

The model card (labkit/embedded/shapes/README.md) and benchmarks/sd_quality.py give its measured
quality on 1,000 samples; here a few samples check that the shipped weights are the trained ones.
"""

import json
import subprocess
import sys

import torch

from labkit import captions, worlds
from labkit.diffusion import QUALITY_BOOST, ddim_sample, sample_noise
from labkit.latent import DEFAULT_GUIDANCE, LatentDiffusionModel
from labkit.models import EMBEDDED_MODELS, SHIPPED_WITH_MANIFEST, load_model
from labkit.readout import load_readout, read_factors

FOLDER = EMBEDDED_MODELS["shapes-sd"]


def test_it_ships_in_stable_diffusions_layout_with_a_manifest():
    assert "shapes-sd" in SHIPPED_WITH_MANIFEST
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    listed = set(json.loads((FOLDER / "manifest.json").read_text())["files"])
    on_disk = {str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk  # no checkpoint folder, no stray file, nothing missing
    assert not list(FOLDER.rglob("*.bin")) and not list(FOLDER.rglob("*.pt"))


def test_it_loads_offline_in_under_a_second():
    # a fresh interpreter with the hub switched off, as a reader without a network has it; the
    # import of torch and diffusers is not the model's load and is timed apart
    code = ("import time; from labkit.models import load_model; t = time.perf_counter(); "
            "m = load_model('shapes-sd'); print(time.perf_counter() - t, type(m).__name__, m.prediction_type)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"}).stdout.split()
    assert out[1:] == ["LatentDiffusionModel", "v_prediction"]
    assert float(out[0]) < 1.0


def test_its_samples_follow_the_prompt():
    model = load_model("shapes-sd")
    assert isinstance(model, LatentDiffusionModel)
    words = captions.describe(worlds.sample_factors(1, seed=1), 0)
    prompt = captions.caption({name: words[name] for name in ("shape", "object_hue", "wall_hue")})
    bound = model.conditioned(prompt, guidance_scale=DEFAULT_GUIDANCE)
    z = ddim_sample(bound, sample_noise(model, 8, seed=0), 20,
                    eta_below=int(QUALITY_BOOST * model.num_train_timesteps), seed=0)
    with torch.no_grad():
        read = read_factors(model.decode(z).clamp(-1, 1), load_readout())
    named = captions.parse_caption(prompt)
    right = [all(bool(a) for a in captions.faithful(named, {k: v[i:i + 1] for k, v in read.items()}).values())
             for i in range(8)]
    unconditional = ddim_sample(model, sample_noise(model, 8, seed=0), 20,
                                eta_below=int(QUALITY_BOOST * model.num_train_timesteps), seed=0)
    assert sum(right) >= 6, (prompt, right)
    assert not torch.allclose(z, unconditional, atol=1e-3)  # the prompt reaches the samples
