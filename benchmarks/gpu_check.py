"""The checks that need a GPU, in one short run: local bases at real sizes, and the miniature end to end.

    python benchmarks/gpu_check.py                       # on cuda; about 8 minutes at most (make gpu-check)
    python benchmarks/gpu_check.py --quick --device cpu  # the same code at toy sizes (the tests run this)

1. The CelebA-HQ-256 DDPM's architecture (``labkit.models.ARCHITECTURES``, random weights): the
   k = 10 local basis of h at t = 500 by block Krylov with forward-mode JVPs; wall time after one
   warm-up evaluation (goal ≤ 3 s on an H100), products, largest residual, peak memory.
2. A U-Net shaped as Stable Diffusion 1.5's (random weights, 860 M parameters) on 64×64×4 latents,
   with a prompt (a random 12-layer CLIP text encoder of SD 1.5's width, 77 tokens) and guidance
   scale 7.5: the k = 5 basis at t = 500; time and peak memory.
3. The miniature (``shapes-sd``, or ``--miniature DIR``), end to end on the device: load, bind a
   prompt, DDIM-sample 8 latents (50 steps), the k = 5 basis of one at 0.6 T, an x-space-guidance
   edit strip along v₁, decoding; each step's time. Skipped, and said so, when it is not trained yet.

Writes OUT/gpu_check_<device name>.json (default OUT: benchmarks/results). float32 throughout, in
IEEE float32 unless ``--tf32``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

from labkit import captions
from labkit.checks import out_dir_arg
from labkit.diffusion import ddim_sample, h_space, sample_noise, timestep_at
from labkit.editing import Sample, edit, sample_basis
from labkit.files import write_json
from labkit.latent import LatentDiffusionModel, from_parts
from labkit.models import (
    ARCHITECTURES,
    ModelUnavailableError,
    from_unet,
    load_model,
    resolve_device,
    set_fp32_precision,
)
from labkit.spectral import local_basis

REPO = Path(__file__).resolve().parents[1]
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, projection_dim=768)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# --quick: the same code at toy sizes, so that a CPU runs it in seconds
QUICK_CELEBA = dict(ARCHITECTURES["ddpm-celebahq-256"], sample_size=32, block_out_channels=(8, 8, 16, 16, 32, 32),
                    norm_num_groups=4)
QUICK_UNET = dict(SD15_UNET, sample_size=8, block_out_channels=(8, 16, 16, 16), cross_attention_dim=16,
                  norm_num_groups=4, layers_per_block=1)
QUICK_TEXT = dict(SD15_TEXT, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
QUICK_VAE = dict(SD15_VAE, block_out_channels=(8, 8, 16, 16), norm_num_groups=4, layers_per_block=1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn):
    """(result, seconds, peak GiB since the start of fn on a GPU, else None)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return result, round(seconds, 3), None if peak is None else round(peak, 2)


def basis_record(basis, seconds: float, peak) -> dict:
    return {"seconds": seconds, "peak_memory_gib": peak, "n_jvp": basis.n_jvp, "n_vjp": basis.n_vjp,
            "iterations": basis.iterations, "residual_max": float(basis.residual.max()),
            "sigma": [round(float(s), 5) for s in basis.sigma]}


def celeba_basis(device: torch.device, quick: bool, k: int) -> dict:
    with torch.device(device):
        torch.manual_seed(0)
        model = from_unet(UNet2DModel(**(QUICK_CELEBA if quick else ARCHITECTURES["ddpm-celebahq-256"])),
                          name="ddpm-celebahq-256 (random weights)")
    x = sample_noise(model, 1, seed=0)
    f = h_space(model, 500)
    _, warm, _ = timed(device, lambda: f(x))  # kernels chosen, memory allocated
    basis, seconds, peak = timed(device, lambda: local_basis(f, x, k, jvp_mode="forward"))
    return {"model": model.name, "x": list(model.sample_shape), "k": k, "t": 500, "warm_up_seconds": warm,
            "goal_seconds_h100": 3.0, **basis_record(basis, seconds, peak)}


def sd15_model(device: torch.device, quick: bool) -> LatentDiffusionModel:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = captions.tokenizer_files(Path(tempfile.mkdtemp()) / "tokenizer", max_length=77)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    schedule = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                             set_alpha_to_one=False, clip_sample=False).config
    with torch.device(device):
        torch.manual_seed(0)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1,
                                            **(QUICK_TEXT if quick else SD15_TEXT)))
        unet = UNet2DConditionModel(**(QUICK_UNET if quick else SD15_UNET))
        vae = AutoencoderKL(**(QUICK_VAE if quick else SD15_VAE))
    return from_parts(unet, vae, text, tokenizer, dict(schedule), name="SD 1.5-shaped (random weights)")


def sd15_basis(device: torch.device, quick: bool, k: int) -> dict:
    (model, load_s, _) = timed(device, lambda: sd15_model(device, quick))
    model = model.conditioned("a small red square tilted left, on a blue wall above a green floor",
                              guidance_scale=7.5)
    z = sample_noise(model, 1, seed=0)
    f = h_space(model, 500)
    _, warm, _ = timed(device, lambda: f(z))
    basis, seconds, peak = timed(device, lambda: local_basis(f, z, k, jvp_mode="forward"))
    parameters = sum(p.numel() for p in model.unet.parameters())
    return {"model": model.name, "unet_parameters": parameters, "z": list(model.sample_shape),
            "prompt_tokens": int(model.prompt_embeds.shape[1]), "guidance_scale": 7.5, "k": k, "t": 500,
            "build_seconds": load_s, "warm_up_seconds": warm, **basis_record(basis, seconds, peak)}


def miniature(device: torch.device, source: str | None) -> dict:
    try:
        (model, load_s, _) = timed(device, lambda: load_model(source or "shapes-sd", device=device))
    except ModelUnavailableError as err:
        return {"skipped": str(err)}
    model = model.conditioned("a large blue ellipse tilted right, on a yellow wall", guidance_scale=7.5)
    z, sample_s, _ = timed(device, lambda: ddim_sample(model, sample_noise(model, 8, seed=0), 50))
    t = timestep_at(model, 0.6, 50)
    sample = Sample(x_t=ddim_sample(model, sample_noise(model, 1, seed=0), 50, t_to=t), t=t, num_steps=50, seed=0)
    basis, basis_s, peak = timed(device, lambda: sample_basis(model, sample, 5, jvp_mode="forward"))
    strip, edit_s, _ = timed(device, lambda: edit(model, sample, basis.v[0], [-1.0, 0.0, 1.0]))
    with torch.no_grad():
        images, decode_s, _ = timed(device, lambda: model.decode(torch.cat([z, strip])).clamp(-1, 1))
    return {"model": source or "shapes-sd", "load_seconds": load_s, "sample_8_seconds": sample_s,
            "basis_k5": basis_record(basis, basis_s, peak), "edit_strip_3_seconds": edit_s,
            "decode_11_seconds": decode_s, "images_finite": bool(torch.isfinite(images).all())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="toy sizes, for a CPU")
    parser.add_argument("--tf32", action="store_true", help="TF32 matmuls and convolutions (default IEEE float32)")
    parser.add_argument("--miniature", default=None, help="a folder with the miniature (default: shapes-sd)")
    parser.add_argument("--out", type=out_dir_arg, default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as err:
        parser.error(f"argument --device: {err}")
    set_fp32_precision(device, tf32=args.tf32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start = time.perf_counter()
    report = {"device": name, "torch": torch.__version__, "quick": args.quick, "tf32": args.tf32,
              "cpu_load_average": os.getloadavg()[0]}
    report["celeba_256_k10"] = celeba_basis(device, args.quick, k=2 if args.quick else 10)
    print("CelebA-256 k=10:", json.dumps(report["celeba_256_k10"]), flush=True)
    report["sd15_k5_prompt"] = sd15_basis(device, args.quick, k=2 if args.quick else 5)
    print("SD 1.5 k=5:", json.dumps(report["sd15_k5_prompt"]), flush=True)
    report["miniature"] = miniature(device, args.miniature)
    print("miniature:", json.dumps(report["miniature"]), flush=True)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    path = Path(args.out) / f"gpu_check_{slug}{'_quick' if args.quick else ''}.json"
    write_json(path, report)
    print(f"{report['total_seconds']} s; wrote {path}")
    return report


if __name__ == "__main__":
    main()
