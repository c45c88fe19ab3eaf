"""Loading diffusion models: the embedded MNIST DDPM, a saved folder, a hub id, or a bare U-Net.

A `DiffusionModel` is a noise-prediction U-Net ε_θ(x_t, t) with the noise schedule it was trained
with. ``load_model`` reads one from disk (safetensors only) or the Hugging Face hub; ``from_unet``
wraps a U-Net built in code (e.g. from ``ARCHITECTURES``, the hub models' configurations, with
random weights). Both prepare the U-Net for torch.func, which needs two fixes for forward-mode AD
(torch.func.jvp) through diffusers' U-Nets:

- attention: fused scaled-dot-product kernels have no forward-mode derivative, so every
  attention module gets diffusers' plain ``AttnProcessor`` (matmul + softmax), which calls no
  SDPA kernel at all. Only if a fused processor is put back later do labkit's maps select the
  math SDPA backend (``attention_for_forward_ad``): a process-wide switch, which another thread,
  such as an explorer's, sees while it is on, so it is not entered otherwise;
- GroupNorm: some attention blocks hand GroupNorm a non-contiguous tensor, which ``group_norm``
  rejects under jvp; a forward pre-hook makes its input contiguous.

Nothing here changes process-wide state (but for that one case): on a GPU, call ``set_fp32_precision`` yourself (the
CLI, the benchmarks and the notebooks do, in their first lines).

Explained in: book/part2-diffusion/03_diffusion.ipynb and 10_scaling.ipynb
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from labkit.cache import weights_fingerprint
from labkit.checks import check_int, check_weights, show
from labkit.files import verified_folder
from labkit.hub import hub_problem

EMBEDDED_MODEL = Path(__file__).parent / "embedded"
# The models this project trains and ships, by name: load_model(None) is MNIST.
EMBEDDED_MODELS = {"mnist": EMBEDDED_MODEL, "shapes": EMBEDDED_MODEL / "shapes" / "ddpm",
                   "shapes-sd": EMBEDDED_MODEL / "shapes" / "sd"}
# How each embedded model is trained again, for the message when it is missing or damaged.
TRAIN_COMMANDS = {"mnist": "ddpm", "shapes": "ddpm --data shapes", "shapes-sd": "sd"}
# The embedded models that ship with a manifest, which they must then have: a DDPM's unet/manifest.json
# (labkit.train ddpm writes it), a Stable Diffusion pipeline's manifest.json over every part
# (labkit.train_sd writes it).
SHIPPED_WITH_MANIFEST = ("mnist", "shapes", "shapes-sd")
UNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors")  # OUT/unet, as save_pretrained writes it
# A Stable Diffusion pipeline folder: the files labkit.latent.read_pipeline reads
PIPELINE_FILES = ("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                  "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json",
                  *(f"{part}/{name}" for part in ("unet", "vae") for name in UNET_FILES))
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# The hub models' architectures (their config.json): ``UNet2DModel(**config)`` builds one with
# random weights, no download; the book and the benchmark measure their cost this way.
ARCHITECTURES = {
    "ddpm-cifar10-32": dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                            block_out_channels=(128, 256, 256, 256),
                            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    "ddpm-celebahq-256": dict(sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
                              block_out_channels=(128, 128, 256, 256, 512, 512),
                              down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                              up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4),
}


class ModelUnavailableError(RuntimeError):
    """The model asked for cannot be loaded here (not on disk, and the hub is unreachable)."""


@dataclass(frozen=True)
class DiffusionModel:
    """A noise-prediction U-Net and the noise schedule it was trained with.

    unet:       diffusers UNet2DModel, ε_θ(x_t, t), in eval mode, gradients off for its weights
    schedule:   the training scheduler's config (β schedule, T, prediction type)
    name:       where it came from ("embedded", a folder, or a hub id)
    """

    unet: UNet2DModel
    schedule: dict
    name: str

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one latent x_t."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else size
        return (self.unet.config.in_channels, height, width)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.schedule["num_train_timesteps"])

    @property
    def prediction_type(self) -> str:
        """What the U-Net outputs: "epsilon" (ε), "v_prediction" (v = √ᾱ ε − √(1−ᾱ) x₀) or "sample" (x₀)."""
        return self.schedule.get("prediction_type", "epsilon")

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_t for t = 0..T−1 (float64, CPU), the training schedule's cumulative product of 1 − β."""
        return DDPMScheduler.from_config(self.schedule).alphas_cumprod.double()

    def output(self, x: Tensor, t: int) -> Tensor:
        """The U-Net's raw output at (x_t, t): ε, v or x₀ as ``prediction_type`` says; shaped like x."""
        with attention_for_forward_ad(self.unet):
            return self.unet(x, t).sample

    def block_inputs(self, block: torch.nn.Module, batch: int) -> dict:
        """Inputs a U-Net block takes besides (h, t's embedding): none here; a text-conditioned model
        (labkit.latent) gives its cross-attention blocks the prompt."""
        return {}

    def fingerprint(self) -> str:
        """A key of everything the map x_t ↦ ε or h depends on besides x and t: here the weights."""
        return weights_fingerprint(self.unet)

    def eps(self, x: Tensor, t: int) -> Tensor:
        """ε_θ(x_t, t): the predicted noise, same shape as x (batched (B, C, H, W)), whatever the U-Net predicts.

        With x_t = a x₀ + s ε (a = √ᾱ_t, s = √(1−ᾱ_t)): from v, ε = a v + s x_t; from x₀, ε = (x_t − a x₀)/s.
        """
        out = self.output(x, t)
        if self.prediction_type == "epsilon":
            return out
        abar = float(self.alphas_cumprod[t])
        a, s = abar ** 0.5, (1.0 - abar) ** 0.5
        if self.prediction_type == "v_prediction":
            return a * out + s * x
        return (x - a * out) / s

    def ddim(self, num_steps: int) -> DDIMScheduler:
        """A DDIM scheduler on this model's training schedule, set to ``num_steps`` steps."""
        check_int("num_steps", num_steps, 1, self.num_train_timesteps, hint="the number of DDIM steps")
        # No clipping of the predicted x_0: it makes a step non-invertible, and DDIM inversion
        # must retrace exactly the path that sampling takes.
        # prediction_type="epsilon": the steps are given ``eps``, which is ε whatever the U-Net predicts.
        scheduler = DDIMScheduler.from_config(self.schedule, clip_sample=False, prediction_type="epsilon")
        scheduler.set_timesteps(num_steps)
        return scheduler

    def timesteps(self, num_steps: int) -> list[int]:
        """The DDIM timesteps for ``num_steps`` steps, descending (e.g. 980, 960, …, 0 for 50)."""
        return [int(t) for t in self.ddim(num_steps).timesteps]

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.unet.parameters())
        return (f"DiffusionModel({self.name!r}, x: {self.sample_shape}, {n / 1e6:.2f}M parameters, "
                f"T={self.num_train_timesteps}, {self.device}, {self.dtype})")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device) -> torch.device:
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a name like 'cpu' or 'cuda', got {type(device).__name__} {show(device)}")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a device name: use 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was asked for, but this torch build sees no CUDA GPU "
            f"(torch {torch.__version__}). Use device='cpu', or install a CUDA build of torch (README, 'GPU')."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device='mps' was asked for, but MPS is not available; use device='cpu'.")
    return device


def set_fp32_precision(device: str | torch.device, tf32: bool) -> None:
    """On CUDA: float32 convolutions and matmuls in TF32 (``tf32=True``) or in IEEE float32.

    Sets global torch flags (the ``fp32_precision`` API of torch ≥ 2.9), so call it where your
    program starts. torch's default lets cuDNN convolutions use TF32 (inputs rounded to 10 mantissa
    bits, about 1e-3 relative error per layer), which breaks the book's 1e-4 agreement checks;
    ``tf32=False`` gives IEEE float32 in both; ``tf32=True`` is faster on Ampere and later GPUs.
    Park et al.'s code (torch 2.1) sets neither flag, so it ran on torch's defaults: TF32 allowed
    in cuDNN convolutions (``torch.backends.cudnn.allow_tf32``, default True), not in matmuls
    (``torch.backends.cuda.matmul.allow_tf32``, default False). Does nothing on other devices.

    Explained in: book/part2-diffusion/10_scaling.ipynb
    """
    if torch.device(device).type == "cuda":
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if torch.is_tensor(a) else a for a in args)


def attention_for_forward_ad(unet: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The context to run ``unet`` in so that forward-mode AD works through its attention.

    A null context when every ``Attention`` has the plain ``AttnProcessor`` (as
    ``prepare_for_forward_ad`` leaves them). If a fused processor was put back (e.g. diffusers'
    ``AttnProcessor2_0``, which calls ``scaled_dot_product_attention``, whose fused kernels have no
    forward-mode rule), the math SDPA backend: a process-wide switch, seen by other threads while
    it is on. Explained in: book/part2-diffusion/02_attention.ipynb
    """
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"unet must be a torch.nn.Module (a diffusers U-Net), got {show(unet)}; "
                        "pass the U-Net itself, e.g. model.unet")
    fused = any(isinstance(m, Attention) and not isinstance(m.processor, AttnProcessor) for m in unet.modules())
    return sdpa_kernel([SDPBackend.MATH]) if fused else contextlib.nullcontext()


def prepare_for_forward_ad(unet: UNet2DModel) -> UNet2DModel:
    """Make ``unet`` differentiable by torch.func.jvp: plain attention, contiguous GroupNorm input.

    Idempotent. Returns the same module. See the module docstring for why each fix is needed.
    """
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
        elif isinstance(module, torch.nn.GroupNorm) and not getattr(module, "_labkit_contiguous", False):
            module.register_forward_pre_hook(_contiguous_input)
            module._labkit_contiguous = True
    return unet


def _load(source: str, local_only: bool, dtype: torch.dtype, device: torch.device, name: str) -> DiffusionModel:
    """Read a diffusers model in either layout: pipeline (unet/, scheduler/) or flat (root)."""
    with warnings.catch_warnings():
        # diffusers passes a deprecated argument to huggingface_hub; the warning is not the user's to fix
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        return _read_model(source, local_only, dtype, device, name)


def _read_model(source: str, local_only: bool, dtype: torch.dtype, device: torch.device, name: str) -> DiffusionModel:
    kwargs = dict(use_safetensors=True, local_files_only=local_only, low_cpu_mem_usage=False, torch_dtype=dtype)
    # (low_cpu_mem_usage=False: the default needs `accelerate` and warns without it)
    path = Path(source)
    if path.is_dir():
        subfolder = "unet" if (path / "unet" / "config.json").exists() else None
        if subfolder is None and not (path / "config.json").exists():
            raise ModelUnavailableError(
                f"{source!r} is a folder but holds no diffusers model (no config.json, no unet/config.json). "
                "Pass a folder saved with save_pretrained, a hub id, or nothing for the embedded model."
            )
        sched_sub = "scheduler" if (path / "scheduler" / "scheduler_config.json").exists() else None
    else:
        try:
            UNet2DModel.load_config(source, local_files_only=local_only)
            subfolder = sched_sub = None
        except OSError:
            subfolder, sched_sub = "unet", "scheduler"
    found = UNet2DModel.load_config(source, subfolder=subfolder, local_files_only=local_only).get("_class_name")
    if found == "UNet2DConditionModel" and subfolder == "unet":  # a Stable Diffusion pipeline
        from labkit.latent import read_pipeline

        return read_pipeline(source, local_only, dtype, device, name)
    if found not in (None, "UNet2DModel"):
        raise ModelUnavailableError(
            f"{source!r} holds a {found}, not a UNet2DModel: labkit needs a DDPM's noise-prediction U-Net. "
            "Pass a DDPM pipeline (folder or hub id with unet/ and scheduler/), or nothing for the embedded model."
        )
    unet, info = UNet2DModel.from_pretrained(source, subfolder=subfolder, output_loading_info=True, **kwargs)
    check_weights(source, unet, info, ModelUnavailableError)
    schedule = DDPMScheduler.from_pretrained(source, subfolder=sched_sub, local_files_only=local_only).config
    return from_unet(unet.to(device), dict(schedule), name)


def _verify(folder: Path, fix: str | None = None, shipped: bool = False) -> None:
    """Check a model folder against the manifest its trainer wrote (``labkit.files.verified_folder``):
    a Stable Diffusion pipeline's (it has text_encoder/) at its root, over every part; a DDPM's in unet/."""
    if (folder / "text_encoder").is_dir():
        where, files = folder, PIPELINE_FILES
        fix = fix or "save it again (labkit.sd_layout.save_pipeline) or train it: python -m labkit.train sd --out DIR"
    else:
        where, files = folder / "unet", UNET_FILES
        fix = fix or "save or train the model again"
    verified_folder("name_or_path", where, files, fix, shipped=shipped, error=ModelUnavailableError)


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusionModel:
    """Load a diffusion model: an embedded one (None, "mnist", "shapes", "shapes-sd"), a folder, or a hub id.

    - ``None`` or ``"mnist"``: the small MNIST DDPM this project trains and ships (labkit/embedded);
      ``"shapes"``: the colour DDPM of labkit.worlds' scenes (labkit/embedded/shapes/ddpm). No
      network. ``"shapes-sd"``: the text-conditioned latent model of the same world
      (labkit/embedded/shapes/sd). (These names win over a folder of the same name: pass
      ``"./shapes"`` for that.)
    - a folder saved by diffusers (``save_pretrained``), in pipeline layout (unet/, scheduler/)
      or flat layout (config.json and scheduler_config.json at the root);
    - a Stable Diffusion 1.x/2.x pipeline (folder or hub id, ε- or v-prediction): returns a
      ``labkit.latent.LatentDiffusionModel`` over the VAE latent, unconditional (empty prompt)
      until ``model.conditioned(prompt, guidance_scale=...)``; it carries the VAE, the text
      encoder and the tokenizer;
    - a hub id such as ``"google/ddpm-cifar10-32"`` or ``"google/ddpm-ema-celebahq-256"``:
      taken from the local Hugging Face cache if it is there, else downloaded. Offline, this
      fails at once with one clear message (no retry loop).

    Weights are read from safetensors only. A folder is checked against its manifest where it has
    one (``labkit.files.verified_folder``), a DDPM's in ``unet/`` (the embedded DDPMs ship one,
    ``python -m labkit.train ddpm`` writes one), a Stable Diffusion pipeline's at its root over every
    part (``python -m labkit.train sd`` writes one), so a truncated or changed file is refused by
    name. The U-Net is put in eval mode, its parameters are frozen, and it is prepared for
    forward-mode AD (``from_unet``). No global torch state is touched: on a GPU, choose the float32
    precision with ``set_fp32_precision``.

    Explained in: book/part2-diffusion/10_scaling.ipynb (hub ids, offline, other models) and
    01_unet.ipynb (the embedded model's U-Net), 08_known_factors.ipynb ("shapes")
    """
    device = resolve_device(device)
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {show(dtype)}")
    if name_or_path is None or name_or_path in EMBEDDED_MODELS:
        key = name_or_path or "mnist"
        folder = EMBEDDED_MODELS[key]
        where = folder.relative_to(EMBEDDED_MODEL.parent.parent)
        train = f"train it again: python -m labkit.train {TRAIN_COMMANDS[key]} --out {where}"
        _verify(folder, train, shipped=key in SHIPPED_WITH_MANIFEST)
        if not (folder / "unet" / "config.json").exists():
            raise ModelUnavailableError(
                f"the embedded {key} model is missing from {folder}; reinstall labkit from the repository, "
                f"or {train}"
            )
        source, name, local_only = str(folder), "embedded" if key == "mnist" else f"embedded:{key}", True
    else:
        if not isinstance(name_or_path, str | os.PathLike):
            raise TypeError(f"name_or_path must be a folder, a hub id, an embedded name ({', '.join(EMBEDDED_MODELS)}) "
                            f"or None, got {type(name_or_path).__name__}")
        source, name = str(name_or_path), str(name_or_path)
        is_dir = Path(source).is_dir()
        if is_dir:  # when it has a manifest (diffusers' save_pretrained writes none)
            _verify(Path(source))
        if not is_dir and not HUB_ID.match(source):
            raise ModelUnavailableError(
                f"name_or_path={source!r} is neither a folder nor a hub id like 'google/ddpm-cifar10-32'. "
                f"Pass an existing folder, a hub id, an embedded name ({', '.join(EMBEDDED_MODELS)}), "
                "or nothing for the embedded MNIST model."
            )
        local_only = True
        if not is_dir:
            try:  # the local cache first: fast, and works offline
                return _load(source, True, dtype, device, name)
            except ModelUnavailableError:
                raise
            except (OSError, ValueError):
                local_only = False
            problem = hub_problem(source)
            if problem is not None:
                raise ModelUnavailableError(
                    f"cannot load {source!r}: it is not in the local Hugging Face cache, and {problem}. "
                    f"Download it where you have internet (hf download {source} --local-dir DIR) and pass DIR, "
                    "or call load_model() for the embedded model."
                )
    try:
        return _load(source, local_only, dtype, device, name)
    except ModelUnavailableError:
        raise
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(
            f"cannot load {source!r}: {str(err).splitlines()[0]} "
            "(is the id right, and does the repository have safetensors weights?)"
        ) from err


def from_unet(unet: UNet2DModel, schedule: dict | None = None, name: str = "unet") -> DiffusionModel:
    """A `DiffusionModel` from a U-Net built in code, prepared as ``load_model`` prepares a loaded one.

    unet: a diffusers UNet2DModel, on its device and in its dtype (the meta device works: shapes
    and FLOPs without memory); schedule: a DDPM scheduler config (default: diffusers'
    ``DDPMScheduler()``, Ho et al.'s linear β from 1e-4 to 0.02 over T = 1000); name: how it is
    shown. Returns the model with the U-Net in eval mode, its weights frozen, ready for torch.func
    (``prepare_for_forward_ad``). E.g. ``from_unet(UNet2DModel(**ARCHITECTURES["ddpm-cifar10-32"]))``.

    Explained in: book/part2-diffusion/10_scaling.ipynb
    """
    if not isinstance(unet, UNet2DModel):
        raise TypeError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
    schedule = dict(DDPMScheduler().config if schedule is None else schedule)
    if "num_train_timesteps" not in schedule:
        raise ValueError(f"schedule must be a DDPM scheduler config (with num_train_timesteps), "
                         f"got keys {sorted(schedule)}; pass None for the default linear schedule")
    unet = prepare_for_forward_ad(unet)
    if unet.dtype == torch.float64:
        # diffusers "upcasts" attention softmax to float32, which for a float64 model is a
        # downcast: it would cap every derivative check at float32 precision.
        for module in unet.modules():
            if isinstance(module, Attention):
                module.upcast_softmax = module.upcast_attention = False
    unet.eval()
    unet.requires_grad_(False)
    return DiffusionModel(unet=unet, schedule=schedule, name=name)
