"""The shapes miniature of Stable Diffusion as parts: each network's configuration, the noise schedule,
and the folder they are saved in, exactly the layout of a real Stable Diffusion checkpoint.

``labkit.train_sd`` trains these parts; ``labkit.models.load_model`` reads the folder
``save_pipeline`` writes (through the code that reads any SD 1.x/2.x checkpoint, labkit.latent).

- ``vae_config``: AutoencoderKL, 32×32×3 → 8×8×4;  ``text_config``: a small CLIPTextModel;
  ``unet_config``: UNet2DConditionModel on the latents;  ``noise_schedule``: SD 2.x's, v-prediction;
- ``save_pipeline``: one StableDiffusionPipeline folder in safetensors, with ``pipeline_manifest``
  (each file's size and SHA-256), which ``load_model`` checks.

Explained in: labkit/embedded/shapes/README.md (the model card's miniature section)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from labkit import worlds
from labkit.checks import check_bool, check_instance, check_int, check_path, show
from labkit.files import write_manifest

MAX_TOKENS = 24  # a caption has at most 18 words; with the start and end tokens, 20
UNET_WIDTHS = (48, 96)  # the shipped miniature's; a checkpoint from before the option was trained with these


def vae_config(tiny: bool = False) -> dict:
    """AutoencoderKL: 32×32×3 → 8×8×4 (three levels, two 2× downsamplings; attention in the mid-block)."""
    check_bool("tiny", tiny)
    channels = (8, 16, 16) if tiny else (32, 64, 64)
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=worlds.IMAGE_SIZE,
                down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                block_out_channels=channels, layers_per_block=1, norm_num_groups=4 if tiny else 16)


def text_config(vocab_size: int, tiny: bool = False) -> dict:
    """CLIPTextConfig arguments: a 2-layer transformer of width 64 (tiny: 1 layer, width 16)."""
    check_int("vocab_size", vocab_size, 3, 10**6, hint="the tokenizer's size, len(tokenizer)")
    check_bool("tiny", tiny)
    width = 16 if tiny else 64
    return dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width, projection_dim=width,
                num_hidden_layers=1 if tiny else 2, num_attention_heads=2 if tiny else 4,
                max_position_embeddings=MAX_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def unet_config(cross_attention_dim: int, tiny: bool = False, widths: tuple[int, int] = UNET_WIDTHS) -> dict:
    """UNet2DConditionModel on 8×8×4 latents: two levels of ``widths`` channels (default 48, 96; tiny
    8, 16 whatever ``widths``), cross-attention in the first down level, the mid-block, which runs at
    4×4, and the last up level: h has widths[1]·4·4 numbers (1,536 by default), z has 256. At 48, 96: 1.78 M parameters
    (7 MB in float32); 64, 128 (3.15 M) took 0.48 s per step against 0.40 s on 2 CPU cores and
    makes the folder 17 MB."""
    check_int("cross_attention_dim", cross_attention_dim, 1, 4096, hint="the text encoder's hidden_size")
    check_bool("tiny", tiny)
    check_widths(widths)
    channels = (8, 16) if tiny else tuple(widths)
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=cross_attention_dim, attention_head_dim=4 if tiny else 8,
                norm_num_groups=4 if tiny else 16)


def check_widths(widths: object) -> None:
    """The U-Net's ``widths``: two channel counts, multiples of 16 in 16..1024 (a list is taken as a tuple)."""
    hint = f"two channel counts, multiples of 16 (the U-Net's group norm has 16 groups); the miniature's: {UNET_WIDTHS}"
    if isinstance(widths, list):
        widths = tuple(widths)
    if len(check_instance("unet_widths", widths, tuple, hint)) != 2:
        raise ValueError(f"unet_widths must hold 2 widths, one per level, got {show(widths)}; {hint}")
    for i, width in enumerate(widths):
        if check_int(f"unet_widths[{i}]", width, 16, 1024, hint) % 16:
            raise ValueError(f"unet_widths[{i}] must be a multiple of 16, got {width}: try {16 * round(width / 16)}; "
                             f"{hint}")


def noise_schedule() -> DDIMScheduler:
    """SD 2.x's schedule: scaled-linear β from 0.00085 to 0.012 over T = 1000, v-prediction."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type="v_prediction", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def check_tokenizer_dir(tokenizer_dir: object) -> Path:
    """A folder holding a tokenizer written by ``labkit.captions.tokenizer_files``; returns it as a Path."""
    folder = check_path("tokenizer_dir", tokenizer_dir)
    if not (folder / "vocab.json").is_file():
        raise FileNotFoundError(f"tokenizer_dir: {str(folder)!r} holds no tokenizer (vocab.json); write one with "
                                "labkit.captions.tokenizer_files(folder)")
    return folder


def pipeline_manifest(out: Path) -> Path:
    """Write OUT/manifest.json over a pipeline folder: model_index.json and every file of the parts it
    names (unet/, vae/, text_encoder/, tokenizer/, scheduler/), not the checkpoints beside them.
    ``load_model`` checks the folder against it. Returns the manifest's path."""
    out = check_path("out", out)
    if not (out / "model_index.json").is_file():
        raise FileNotFoundError(f"out: {str(out)!r} holds no pipeline (model_index.json); save one with save_pipeline")
    index = json.loads((out / "model_index.json").read_text())
    parts = [name for name, value in index.items() if not name.startswith("_") and (out / name).is_dir()]
    files = [str(p.relative_to(out)) for part in parts for p in (out / part).rglob("*") if p.is_file()]
    return write_manifest(out, ("model_index.json", *sorted(files)))


def save_pipeline(out: Path, unet, vae, text_encoder, tokenizer_dir: Path) -> Path:
    """One StableDiffusionPipeline folder in safetensors (no safety checker), tokenizer files as SD ships
    them, and its manifest (``pipeline_manifest``), written last: over an earlier save, a kill before
    the end leaves the old manifest, which the new files no longer match, so ``load_model`` refuses
    the folder (naming a file) instead of taking parts of two pipelines for one."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    out = check_path("out", out)
    for name, part, kind in (("unet", unet, UNet2DConditionModel), ("vae", vae, AutoencoderKL),
                             ("text_encoder", text_encoder, CLIPTextModel)):
        if not isinstance(part, kind):
            raise TypeError(f"{name} must be a {kind.__name__}, got {type(part).__name__}")
    tokenizer_dir = check_tokenizer_dir(tokenizer_dir)
    pipe = StableDiffusionPipeline(vae=vae.cpu(), text_encoder=text_encoder.cpu(),
                                   tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir), unet=unet.cpu(),
                                   scheduler=noise_schedule(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, out / "tokenizer" / name)  # the files of SD's tokenizer/ folder
    pipeline_manifest(out)
    return out
