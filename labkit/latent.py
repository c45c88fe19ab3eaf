"""Text-conditioned latent diffusion (Stable Diffusion 1.x/2.x, and the shapes miniature) as a DiffusionModel.

A Stable Diffusion pipeline has four parts: a VAE (encoder E, decoder D) between pixels and a
latent z = s·E(x) (s: the VAE's ``scaling_factor``), a CLIP text encoder and its tokenizer that
turn a prompt into embeddings c (L tokens × D), and a ``UNet2DConditionModel`` ε_θ(z_t, t, c) whose
cross-attention layers read c. With classifier-free guidance (CFG) at scale w, sampling uses

    ε̃(z_t, t) = ε_θ(z_t, t, ∅) + w·(ε_θ(z_t, t, c) − ε_θ(z_t, t, ∅)),    ∅: the empty (or negative) prompt,

so w = 1 is the prompt's own prediction and w = 0 the unconditional one.

A ``LatentDiffusionModel`` is a ``DiffusionModel`` over the latent z bound to one prompt and one
scale: its ``output``/``eps`` is ε̃, so DDIM sampling and inversion, x-space guidance, naive edits,
transport and global directions all run on it unchanged. Its h-space is the mid-block output of
the U-Net under the prompt c (the conditional branch, as in Park et al.'s code; h does not depend
on w), so ``h_space``, ``local_basis`` and ``sample_basis`` work in the latent too. ``conditioned``
binds another prompt or scale (sharing the weights); ``load_model`` of a pipeline returns the
unconditional model (empty prompt, w = 1). ``decode``/``encode`` go to and from pixels, for display
and scoring only.

Loading reads each part with its own class (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
CLIPTokenizer), from safetensors only; no pipeline class, no custom code, no safety checker.

Explained in: book/part2-diffusion/09_text_conditioned.ipynb (and 10_scaling.ipynb: Stable Diffusion's
U-Net at full size)
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from torch import Tensor

from labkit import captions
from labkit.cache import content_key, weights_fingerprint
from labkit.checks import check_float, check_tensor, show
from labkit.models import DiffusionModel, ModelUnavailableError, prepare_for_forward_ad

# The parts of a Stable Diffusion 1.x/2.x pipeline folder, and the class each must be.
PARTS = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel",
         "tokenizer": "CLIPTokenizer", "scheduler": None}
# A tokenizer with fewer tokens than this holds a closed list of words (the miniature's): a prompt
# word that is not one of them is not a word of its world, and is refused (closed_vocabulary). A
# real CLIP tokenizer (49,408 tokens) spells out any text in sub-words.
CLOSED_VOCABULARY = 1000
MAX_GUIDANCE = 100.0
DEFAULT_GUIDANCE = 7.5  # Stable Diffusion's own default
DECODE_BATCH = 4  # latents decoded at once by to_pixels


def closed_vocabulary(tokenizer) -> tuple[str, ...]:
    """The words a small (closed-vocabulary) CLIP tokenizer was trained on.

    A BPE vocabulary also holds the fragments its merges pass through ("ct", "een"): each encodes
    as one token, but no training caption used it, so its embedding was never trained and a prompt
    with it would be read silently wrong. For the shapes world's tokenizer (every word of
    ``labkit.captions.WORDS`` one token) the words are exactly those; for another small tokenizer,
    every token that ends a word."""
    if all(len(tokenizer.tokenize(w)) == 1 for w in captions.WORDS):
        return captions.WORDS
    return tuple(k.removesuffix("</w>") for k in tokenizer.get_vocab() if k.endswith("</w>"))


class PromptError(ValueError):
    """A prompt, prompt embeddings or guidance scale this model cannot take (the command lines name the flag)."""


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LatentDiffusionModel(DiffusionModel):
    """A text-conditioned latent diffusion model bound to one prompt and one guidance scale.

    unet: UNet2DConditionModel ε_θ(z_t, t, c);  vae: AutoencoderKL;  text_encoder: CLIPTextModel;
    tokenizer: CLIPTokenizer;  prompt_embeds: c, (1, L, D);  negative_embeds: ∅, (1, L, D), the
    empty (or negative) prompt's;  guidance_scale: w;  prompt: the prompt's text (None when the
    embeddings were given). x (``sample_shape``) is the VAE latent z, not pixels.
    """

    vae: AutoencoderKL
    text_encoder: torch.nn.Module
    tokenizer: object
    prompt_embeds: Tensor
    negative_embeds: Tensor
    guidance_scale: float = 1.0
    prompt: str | None = ""

    # ---- the noise prediction and h-space under the prompt -----------------------------------

    def output(self, x: Tensor, t: int) -> Tensor:
        """The U-Net's raw output with classifier-free guidance: o(∅) + w (o(c) − o(∅)); shaped like x.

        Two U-Net passes (one when w is 0 or 1); each pass sees a batch of len(x), so a hook on the
        mid-block (``labkit.hspace.h_offset``) acts on both branches alike."""
        w = self.guidance_scale
        if w == 1.0:
            return self.unet(x, t, encoder_hidden_states=self._batch(self.prompt_embeds, x)).sample
        uncond = self.unet(x, t, encoder_hidden_states=self._batch(self.negative_embeds, x)).sample
        if w == 0.0:
            return uncond
        cond = self.unet(x, t, encoder_hidden_states=self._batch(self.prompt_embeds, x)).sample
        return uncond + w * (cond - uncond)

    def block_inputs(self, block: torch.nn.Module, batch: int) -> dict:
        """The prompt c for a block with cross-attention (the h-space map runs the blocks one by one)."""
        if getattr(block, "has_cross_attention", False):
            return {"encoder_hidden_states": self.prompt_embeds.expand(batch, -1, -1)}
        return {}

    def fingerprint(self) -> str:
        """The weights' fingerprint with the prompt's and the empty prompt's embeddings and w: a basis
        cached under one prompt is never read back under another."""
        _, digest = content_key(weights=weights_fingerprint(self.unet), c=self.prompt_embeds.float(),
                                negative=self.negative_embeds.float(), w=self.guidance_scale)
        return digest

    @staticmethod
    def _batch(embeds: Tensor, x: Tensor) -> Tensor:
        return embeds.expand(x.shape[0], -1, -1)

    # ---- prompts ------------------------------------------------------------------------------

    @property
    def max_prompt_tokens(self) -> int:
        """How many tokens of a prompt the text encoder reads (77 for SD, less the start and end tokens)."""
        return int(self.tokenizer.model_max_length) - 2

    def check_prompt(self, prompt: object, name: str = "prompt") -> str:
        """A prompt the text encoder reads whole: a str, at most ``max_prompt_tokens`` tokens, and for a
        closed vocabulary (the miniature's) only its words. Raises before any work otherwise."""
        if not isinstance(prompt, str):
            hint = " (one prompt per model: call conditioned once for each)" if isinstance(prompt, list | tuple) else ""
            raise TypeError(f"{name} must be a str, got {type(prompt).__name__} {show(prompt)}{hint}")
        tokens = self.tokenizer.tokenize(prompt)
        if len(tokens) > self.max_prompt_tokens:
            raise ValueError(f"{name} is {len(tokens)} tokens long, but the text encoder reads at most "
                             f"{self.max_prompt_tokens}: the rest would be cut off silently; shorten it")
        if len(self.tokenizer) < CLOSED_VOCABULARY:
            words = closed_vocabulary(self.tokenizer)
            unknown = [w for w in prompt.lower().replace(",", " , ").split() if w not in words]
            if unknown:
                raise ValueError(f"{name}={prompt!r}: {unknown} not in this model's vocabulary of "
                                 f"{len(words)} words; use only: {' '.join(sorted(words))}")
        return prompt

    def encode_prompt(self, prompt: str) -> Tensor:
        """c = text_encoder(tokens)'s last hidden state, (1, L, D), L = the tokenizer's padded length,
        as StableDiffusionPipeline computes it."""
        self.check_prompt(prompt)
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        mask = ids.attention_mask.to(self.device) if getattr(self.text_encoder.config, "use_attention_mask", False) \
            else None
        with torch.no_grad():
            return self.text_encoder(ids.input_ids.to(self.device), attention_mask=mask)[0].to(self.dtype)

    def check_embeds(self, embeds: object, name: str = "prompt_embeds") -> Tensor:
        """Prompt embeddings (1, L, D) or (L, D), D the U-Net's cross-attention width, finite; returned
        as (1, L, D) in the model's dtype and on its device."""
        dim = self.unet.config.cross_attention_dim
        check_tensor(name, embeds, hint=f"embeddings of one prompt, (1, L, {dim}), e.g. model.encode_prompt(text)")
        if embeds.ndim == 2:
            embeds = embeds[None]
        check_tensor(name, embeds, shape=(1, None, dim), finite=False,
                     hint=f"one prompt's embeddings have shape (1, L, {dim}): D = the U-Net's cross_attention_dim")
        if embeds.shape[1] == 0:
            raise ValueError(f"{name} holds no tokens (shape {tuple(embeds.shape)}); encode a prompt, even ''")
        return embeds.to(self.device, self.dtype)

    def conditioned(
        self,
        prompt: str | None = None,
        *,
        prompt_embeds: Tensor | None = None,
        guidance_scale: float = DEFAULT_GUIDANCE,
        negative_prompt: str = "",
        negative_embeds: Tensor | None = None,
    ) -> LatentDiffusionModel:
        """The same weights bound to a prompt (or its embeddings) and a guidance scale w ≥ 0.

        Give exactly one of ``prompt`` and ``prompt_embeds``; ``negative_prompt`` (default the empty
        prompt ∅) or ``negative_embeds`` is what CFG pushes away from. Everything is checked before
        the text encoder runs."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("give exactly one of prompt (a str) and prompt_embeds (a tensor), got "
                             f"{'both' if prompt is not None else 'neither'}")
        check_float("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE,
                    hint="w = 1 is the prompt's own prediction, 0 the unconditional one; SD's default is 7.5")
        if prompt is not None:
            self.check_prompt(prompt)
        else:
            prompt_embeds = self.check_embeds(prompt_embeds)
        if negative_embeds is not None:
            negative_embeds = self.check_embeds(negative_embeds, "negative_embeds")
        else:
            self.check_prompt(negative_prompt, "negative_prompt")
        c = self.encode_prompt(prompt) if prompt is not None else prompt_embeds
        empty = self.encode_prompt(negative_prompt) if negative_embeds is None else negative_embeds
        return dataclasses.replace(self, prompt_embeds=c, negative_embeds=empty, guidance_scale=float(guidance_scale),
                                   prompt=prompt, name=self.name)

    # ---- pixels -------------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the VAE decodes a latent to."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        c, h, w = self.sample_shape
        return (self.vae.config.out_channels, h * factor, w * factor)

    def decode(self, z: Tensor) -> Tensor:
        """Images D(z / s), (B, C, H, W) in about [-1, 1], of latents z (B, *sample_shape). Differentiable."""
        check_tensor("z", z, shape=(None, *self.sample_shape), hint="latents of this model, e.g. ddim_sample's output")
        return self.vae.decode(z / self.vae.config.scaling_factor).sample

    def encode(self, images: Tensor) -> Tensor:
        """Latents z = s·mean(E(x)), (B, *sample_shape), of images (B, *image_shape) in [-1, 1]."""
        check_tensor("images", images, shape=(None, *self.image_shape), hint="images in [-1, 1]")
        return self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mean * self.vae.config.scaling_factor

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        prompt = "embeddings" if self.prompt is None else repr(self.prompt)
        return (f"LatentDiffusionModel({self.name!r}, z: {self.sample_shape}, images: {self.image_shape}, "
                f"U-Net {n / 1e6:.2f}M parameters, prompt {prompt}, w={self.guidance_scale:g}, "
                f"T={self.num_train_timesteps}, {self.device}, {self.dtype})")


# --------------------------------------------------------------------------------------------
# Loading a pipeline folder or hub id
# --------------------------------------------------------------------------------------------

def pipeline_parts(source: str, local_only: bool) -> dict:
    """model_index.json of a pipeline (folder or hub id), checked to be a Stable Diffusion 1.x/2.x layout."""
    from diffusers import DiffusionPipeline

    source = _check_source(source, local_only)
    try:
        index = DiffusionPipeline.load_config(source, local_files_only=local_only)
    except (OSError, ValueError) as err:  # no model_index.json there, or not JSON (load_model catches both kinds)
        kind = FileNotFoundError if isinstance(err, OSError) else ValueError
        raise kind(f"source={source!r} is not a pipeline folder or hub id with a readable model_index.json "
                   f"({type(err).__name__}: {str(err)[:200]})") from err
    found = {name: (value[1] if isinstance(value, list | tuple) else None) for name, value in index.items()
             if not name.startswith("_")}
    if "text_encoder_2" in found or "unet" not in found:
        raise ModelUnavailableError(
            f"{source!r} is a {index.get('_class_name')}, not a Stable Diffusion 1.x/2.x pipeline (unet, vae, "
            "text_encoder, tokenizer, scheduler); SDXL and other layouts are not supported")
    wrong = {name: found.get(name) for name, cls in PARTS.items() if cls and found.get(name) != cls}
    if wrong:
        raise ModelUnavailableError(f"{source!r}: the pipeline's parts are {wrong}, labkit needs "
                                    f"{ {n: c for n, c in PARTS.items() if c} }")
    return index


def _check_source(source: object, local_only: object) -> str:
    if not isinstance(source, str | os.PathLike) or str(source) == "":
        raise TypeError(f"source must be a pipeline folder or a hub id (str), got {show(source)}")
    if not isinstance(local_only, bool):
        raise TypeError(f"local_only must be True or False, got {show(local_only)}")
    return str(source)


def read_pipeline(source: str, local_only: bool, dtype: torch.dtype, device: torch.device,
                  name: str) -> LatentDiffusionModel:
    """Load a StableDiffusionPipeline's parts one by one (safetensors only) as the unconditional model."""
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    from labkit.checks import check_weights

    source = _check_source(source, local_only)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (torch.float32), got {show(dtype)}")
    if not isinstance(device, torch.device):
        raise TypeError(f"device must be a torch.device (labkit.models.resolve_device), got {show(device)}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {show(name)}")
    pipeline_parts(source, local_only)
    common = dict(local_files_only=local_only, use_safetensors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        unet, info = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype,
                                                          low_cpu_mem_usage=False, output_loading_info=True, **common)
        check_weights(source, unet, info, ModelUnavailableError)
        vae, info = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, low_cpu_mem_usage=False,
                                                  output_loading_info=True, **common)
        check_weights(source, vae, info, ModelUnavailableError)
        bar = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # a bar per load would fill every notebook's output
        try:
            text_encoder, info = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype,
                                                               output_loading_info=True, **common)
        finally:
            if bar:
                transformers_logging.enable_progress_bar()
        # (old CLIP checkpoints carry a position_ids buffer that transformers now rebuilds: not a problem)
        check_weights(source, text_encoder, {"missing_keys": info.get("missing_keys"),
                                             "mismatched_keys": info.get("mismatched_keys")}, ModelUnavailableError)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", local_files_only=local_only)
        scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local_only)
    schedule = dict(scheduler.config)
    return from_parts(unet.to(device), vae.to(device), text_encoder.to(device), tokenizer, schedule, name)


def from_parts(unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: torch.nn.Module, tokenizer: object,
               schedule: dict, name: str = "latent") -> LatentDiffusionModel:
    """The unconditional model (empty prompt, w = 1) from parts in memory, prepared as ``load_model``
    prepares a loaded one: eval mode, weights frozen, plain attention for torch.func."""
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"unet must be a diffusers UNet2DConditionModel, got {type(unet).__name__}")
    if not isinstance(vae, AutoencoderKL):
        raise TypeError(f"vae must be a diffusers AutoencoderKL, got {type(vae).__name__}")
    if not isinstance(text_encoder, torch.nn.Module):
        raise TypeError(f"text_encoder must be a torch module (transformers' CLIPTextModel), got "
                        f"{type(text_encoder).__name__}")
    if not (callable(getattr(tokenizer, "tokenize", None)) and hasattr(tokenizer, "model_max_length")):
        raise TypeError(f"tokenizer must be a tokenizer (transformers' CLIPTokenizer), got {type(tokenizer).__name__}")
    if not isinstance(schedule, dict) or "num_train_timesteps" not in schedule:
        raise ValueError(f"schedule must be a scheduler config (a dict) with num_train_timesteps, got {show(schedule)}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {show(name)}")
    config = unet.config
    extra = {k: config.get(k) for k in ("class_embed_type", "addition_embed_type", "encoder_hid_dim_type",
                                        "time_cond_proj_dim") if config.get(k) is not None}
    if extra:
        raise ModelUnavailableError(f"{name!r}: this U-Net takes more than a prompt ({extra}); labkit supports the "
                                    "text-only conditioning of Stable Diffusion 1.x/2.x")
    for module in (unet, vae, text_encoder):
        prepare_for_forward_ad(module)
        if unet.dtype == torch.float64:  # see models.from_unet: no float32 "upcast" in a float64 model
            for m in module.modules():
                if isinstance(m, Attention):
                    m.upcast_softmax = m.upcast_attention = False
        module.eval()
        module.requires_grad_(False)
    empty = torch.zeros(1, 1, config.cross_attention_dim, device=unet.device, dtype=unet.dtype)
    model = LatentDiffusionModel(unet=unet, schedule=dict(schedule), name=name, vae=vae, text_encoder=text_encoder,
                                 tokenizer=tokenizer, prompt_embeds=empty, negative_embeds=empty)
    c = model.encode_prompt("")
    return dataclasses.replace(model, prompt_embeds=c, negative_embeds=c)



def with_prompt(model: DiffusionModel, prompt: str | None = None,
                guidance_scale: float | None = None) -> DiffusionModel:
    """``model`` bound to a prompt and a guidance scale (default DEFAULT_GUIDANCE), as the command lines
    take them; unchanged when both are None. Raises PromptError before any work for a model without
    text conditioning, or a prompt or scale it refuses."""
    if prompt is None and guidance_scale is None:
        return model
    if not isinstance(model, LatentDiffusionModel):
        raise PromptError(f"{model.name!r} is not text-conditioned: a prompt and a guidance scale need a Stable "
                          "Diffusion pipeline (e.g. the miniature 'shapes-sd')")
    try:
        return model.conditioned("" if prompt is None else prompt,
                                 guidance_scale=DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale)
    except (TypeError, ValueError) as err:
        raise PromptError(str(err)) from err


def to_pixels(model: DiffusionModel, x: Tensor) -> Tensor:
    """Images to show for x (B, *sample_shape): x itself for a pixel-space model, and for a latent model
    its decoded images D(z / s) clamped to [-1, 1], (B, *image_shape). For display and scoring only:
    no gradient, and everything before it (sampling, bases, edits) stays in the latent."""
    check_tensor("x", x, shape=(None, *model.sample_shape), hint="a batch of this model's samples or latents")
    if not isinstance(model, LatentDiffusionModel):
        return x
    with torch.no_grad():
        # in chunks: the VAE decoder's activations grow with the batch, and at SD's 512² they are large
        return torch.cat([model.decode(z.to(model.device, model.dtype)) for z in x.split(DECODE_BATCH)]).clamp(-1, 1)
