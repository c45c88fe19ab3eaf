"""Diffusion models for the book: loading, h-space, DDIM sampling and DDIM inversion.

A DDPM's network ε_θ(x_t, t) is a U-Net. Park et al. study the map

    f_t : X → H,   x_t ↦ h_t = output of the U-Net's mid-block,

whose Jacobian J = ∂h/∂x pulls the Euclidean metric of H back to the latent space X. This module
gives that map as a plain function of x (so torch.func can differentiate it), and the DDIM
sampler and its inverse built on diffusers' schedulers.

Two fixes make forward-mode AD (torch.func.jvp) work through diffusers' U-Nets:
- attention: fused scaled-dot-product kernels have no forward-mode derivative, so every
  attention module gets diffusers' plain ``AttnProcessor`` (matmul + softmax), and h-space
  evaluations also run under the math SDPA backend;
- GroupNorm: some attention blocks hand GroupNorm a non-contiguous tensor, which ``group_norm``
  rejects under jvp; a forward pre-hook makes its input contiguous.

Explained in: book/part2-diffusion/03_diffusion.ipynb and 04_h_space.ipynb
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from labkit.checks import check_bool, check_float, check_int, check_tensor, check_weights, show
from labkit.hub import hub_problem

EMBEDDED_MODEL = Path(__file__).parent / "embedded"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


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

    def eps(self, x: Tensor, t: int) -> Tensor:
        """ε_θ(x_t, t): the predicted noise, same shape as x (batched (B, C, H, W))."""
        with sdpa_kernel([SDPBackend.MATH]):
            return self.unet(x, t).sample

    def ddim(self, num_steps: int) -> DDIMScheduler:
        """A DDIM scheduler on this model's training schedule, set to ``num_steps`` steps."""
        check_int("num_steps", num_steps, 1, self.num_train_timesteps, hint="the number of DDIM steps")
        # No clipping of the predicted x_0: it makes a step non-invertible, and DDIM inversion
        # must retrace exactly the path that sampling takes.
        scheduler = DDIMScheduler.from_config(self.schedule, clip_sample=False)
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

def _resolve_device(device: str | torch.device) -> torch.device:
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

    Global torch flags (the ``fp32_precision`` API of torch ≥ 2.9). Does nothing on other devices.
    """
    if torch.device(device).type == "cuda":
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision


def _contiguous_input(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if torch.is_tensor(a) else a for a in args)


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


def _load_unet_and_schedule(source: str, local_only: bool, dtype: torch.dtype) -> tuple[UNet2DModel, dict]:
    """Read a diffusers model in either layout: pipeline (unet/, scheduler/) or flat (root)."""
    with warnings.catch_warnings():
        # diffusers passes a deprecated argument to huggingface_hub; the warning is not the user's to fix
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        return _read_model(source, local_only, dtype)


def _read_model(source: str, local_only: bool, dtype: torch.dtype) -> tuple[UNet2DModel, dict]:
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
    if found not in (None, "UNet2DModel"):
        raise ModelUnavailableError(
            f"{source!r} holds a {found}, not a UNet2DModel: labkit needs a DDPM's noise-prediction U-Net. "
            "Pass a DDPM pipeline (folder or hub id with unet/ and scheduler/), or nothing for the embedded model."
        )
    unet, info = UNet2DModel.from_pretrained(source, subfolder=subfolder, output_loading_info=True, **kwargs)
    check_weights(source, unet, info, ModelUnavailableError)
    schedule = DDPMScheduler.from_pretrained(source, subfolder=sched_sub, local_files_only=local_only).config
    return unet, dict(schedule)


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    tf32: bool = False,
) -> DiffusionModel:
    """Load a DDPM: the embedded model (None), a local folder, or a Hugging Face hub id.

    - ``None``: the small MNIST DDPM this project trains and ships (labkit/embedded); no network.
    - a folder saved by diffusers (``save_pretrained``), in pipeline layout (unet/, scheduler/)
      or flat layout (config.json and scheduler_config.json at the root);
    - a hub id such as ``"google/ddpm-cifar10-32"`` or ``"google/ddpm-ema-celebahq-256"``:
      taken from the local Hugging Face cache if it is there, else downloaded. Offline, this
      fails at once with one clear message (no retry loop).

    Weights are read from safetensors only. The U-Net is put in eval mode, its parameters are
    frozen, and it is prepared for forward-mode AD (``prepare_for_forward_ad``).

    On a CUDA device, convolutions and matrix products run in true float32, as in Park et al.'s
    code: torch's default lets cuDNN convolutions use TF32 (inputs rounded to 10 mantissa bits,
    about 1e-3 relative error per layer), which breaks the book's 1e-4 agreement checks. This
    sets torch's global precision flags; ``tf32=True`` keeps TF32 instead (faster on Ampere and
    later GPUs).
    """
    device = _resolve_device(device)
    if dtype not in DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {show(dtype)}")
    check_bool("tf32", tf32)
    set_fp32_precision(device, tf32)
    if name_or_path is None:
        if not (EMBEDDED_MODEL / "unet" / "config.json").exists():
            raise ModelUnavailableError(
                f"the embedded model is missing from {EMBEDDED_MODEL}; reinstall labkit from the repository, "
                "or train it: python -m labkit.train ddpm --out labkit/embedded"
            )
        source, name, local_only = str(EMBEDDED_MODEL), "embedded", True
    else:
        if not isinstance(name_or_path, str | os.PathLike):
            raise TypeError(f"name_or_path must be a folder, a hub id or None, got {type(name_or_path).__name__}")
        source, name = str(name_or_path), str(name_or_path)
        is_dir = Path(source).is_dir()
        if not is_dir and not HUB_ID.match(source):
            raise ModelUnavailableError(
                f"name_or_path={source!r} is neither a folder nor a hub id like 'google/ddpm-cifar10-32'. "
                "Pass an existing folder, a hub id, or nothing for the embedded model."
            )
        local_only = True
        if not is_dir:
            try:  # the local cache first: fast, and works offline
                unet, schedule = _load_unet_and_schedule(source, local_only=True, dtype=dtype)
                return _finish(unet, schedule, name, device, dtype)
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
        unet, schedule = _load_unet_and_schedule(source, local_only=local_only, dtype=dtype)
    except ModelUnavailableError:
        raise
    except (OSError, ValueError) as err:
        raise ModelUnavailableError(
            f"cannot load {source!r}: {str(err).splitlines()[0]} "
            "(is the id right, and does the repository have safetensors weights?)"
        ) from err
    return _finish(unet, schedule, name, device, dtype)


def _finish(unet: UNet2DModel, schedule: dict, name: str, device: torch.device, dtype: torch.dtype) -> DiffusionModel:
    unet = prepare_for_forward_ad(unet).to(device=device)
    if dtype == torch.float64:
        # diffusers "upcasts" attention softmax to float32, which for a float64 model is a
        # downcast: it would cap every derivative check at float32 precision.
        for module in unet.modules():
            if isinstance(module, Attention):
                module.upcast_softmax = module.upcast_attention = False
    unet.eval()
    unet.requires_grad_(False)
    return DiffusionModel(unet=unet, schedule=schedule, name=name)


# --------------------------------------------------------------------------------------------
# Checks shared by every function that takes a latent or a timestep
# --------------------------------------------------------------------------------------------

def check_latent(model: DiffusionModel, x: Tensor, name: str = "x", batch: int | None = None) -> Tensor:
    """Raise a clear error unless x is a finite batch of latents (batch, C, H, W) of the model's
    shape, dtype and device (``batch``: the number of latents required, None for any)."""
    check_tensor(name, x, shape=(batch, *model.sample_shape),
                 hint=f"a latent of {model.name!r} has shape (batch, {', '.join(map(str, model.sample_shape))}); "
                      "add a batch dimension with x[None] if needed")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); give at least one latent")
    if x.dtype != model.dtype or x.device != model.device:
        raise TypeError(f"{name} is {x.dtype} on {x.device}, the model {model.dtype} on {model.device}; "
                        f"use {name}.to(model.device, model.dtype)")
    return x


def check_timestep(model: DiffusionModel, t: int, name: str = "t") -> int:
    """Raise a clear error unless t is an integer timestep in 0..T−1; returns int(t)."""
    if isinstance(t, Tensor) and t.numel() == 1:
        t = t.item()
    if isinstance(t, float):
        if not t.is_integer():
            raise ValueError(f"{name} must be an integer timestep, got {t}; model.timesteps(n) lists the DDIM ones")
        t = int(t)
    return check_int(name, t, 0, model.num_train_timesteps - 1,
                     hint="a timestep is an integer in 0..T-1; model.timesteps(n) lists the DDIM ones")


def _check_input(model: DiffusionModel, x: Tensor) -> None:
    """The checks of check_latent that read no data, so a map can run them under torch.func.vmap."""
    check_tensor("x", x, shape=(None, *model.sample_shape), finite=False)
    if x.dtype != model.dtype or x.device != model.device:
        raise TypeError(f"x is {x.dtype} on {x.device}, the model {model.dtype} on {model.device}; "
                        "use x.to(model.device, model.dtype)")


# --------------------------------------------------------------------------------------------
# h-space
# --------------------------------------------------------------------------------------------

def h_space(model: DiffusionModel, t: int, layer: str = "mid") -> Callable[[Tensor], Tensor]:
    """The map f_t: x_t ↦ h_t, as a function of x alone (for torch.func.jvp/vjp/vmap).

    x: (B, C, H, W) → h: (B, c_h, H_h, W_h); for the embedded model (1, 1, 28, 28) → (1, 64, 7, 7).
    ``layer="mid"`` is the mid-block output (the paper's h); ``"down.i"`` is the output of
    down-block i. Only the encoder half of the U-Net runs (time embedding, conv_in, down blocks,
    mid block): the decoder does not influence h.

    Explained in: book/part2-diffusion/04_h_space.ipynb
    """
    t = check_timestep(model, t)
    unet = model.unet
    n_down = len(unet.down_blocks)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be 'mid' or 'down.i', got {type(layer).__name__} {show(layer)}")
    if layer == "mid":
        stop = n_down
    elif re.fullmatch(r"down\.\d+", layer) and int(layer.split(".")[1]) < n_down:
        stop = int(layer.split(".")[1]) + 1
    else:
        raise ValueError(f"layer must be 'mid' or 'down.i' with i in 0..{n_down - 1}, got {layer!r}")

    with torch.no_grad():
        t_emb = unet.time_proj(torch.tensor([t], device=model.device)).to(model.dtype)
        emb = unet.time_embedding(t_emb)  # depends on t only: computed once

    def f(x: Tensor) -> Tensor:
        _check_input(model, x)
        e = emb.expand(x.shape[0], -1)
        with sdpa_kernel([SDPBackend.MATH]):
            h = unet.conv_in(2 * x - 1 if unet.config.center_input_sample else x)
            for block in unet.down_blocks[:stop]:
                h, _ = block(hidden_states=h, temb=e)
            if layer == "mid":
                h = unet.mid_block(h, e)
        return h

    return f


def posterior_mean(model: DiffusionModel, t: int) -> Callable[[Tensor], Tensor]:
    """The map x_t ↦ x̂₀(x_t) = E[x₀ | x_t], as a function of x alone (Tweedie's formula).

    For an ε-prediction model, x̂₀ = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, with ᾱ_t the
    cumulative product of the schedule's (1 − β). x: (B, C, H, W) → x̂₀: (B, C, H, W). Its
    Jacobian ∂x̂₀/∂x_t is the one LOCO-Edit (Chen et al., 2024) takes singular vectors of.

    Explained in: book/part2-diffusion/04_h_space.ipynb
    """
    t = check_timestep(model, t)
    prediction = model.schedule.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"posterior_mean: the model's prediction_type {prediction!r} is not one of "
                         "'epsilon', 'sample', 'v_prediction'")
    abar = DDPMScheduler.from_config(model.schedule).alphas_cumprod[t].item()
    a, s = abar ** 0.5, (1.0 - abar) ** 0.5

    def x0_hat(x: Tensor) -> Tensor:
        _check_input(model, x)
        out = model.eps(x, t)
        if prediction == "epsilon":
            return (x - s * out) / a
        if prediction == "sample":
            return out
        return a * x - s * out  # v-prediction: v = a ε − s x₀, so x₀ = a x − s v

    return x0_hat


# --------------------------------------------------------------------------------------------
# Sampling and inversion
# --------------------------------------------------------------------------------------------

def sample_noise(model: DiffusionModel, batch: int = 1, seed: int = 0) -> Tensor:
    """x_T ~ N(0, I), shape (batch, C, H, W), reproducible from ``seed`` on any device."""
    check_int("batch", batch, 1, 100_000)
    check_int("seed", seed, 0, 2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *model.sample_shape), generator=g).to(model.device, model.dtype)


def ddim_sample(
    model: DiffusionModel,
    x: Tensor,
    num_steps: int = 50,
    t_from: int | None = None,
    t_to: int = -1,
    eta: float = 0.0,
    eta_below: int | None = None,
    seed: int = 0,
    shared_noise: bool = False,
    progress: bool = False,
) -> Tensor:
    """Run DDIM from x at timestep ``t_from`` down to timestep ``t_to`` (−1 means x_0).

    The steps taken are the DDIM timesteps t with t_to < t ≤ t_from, each mapping x_t to
    x_{t−Δ}, Δ = T / num_steps. ``t_from`` defaults to the first DDIM timestep (x is pure
    noise). ``eta`` is DDIM's stochasticity (0: deterministic ODE); with ``eta_below`` set,
    steps with t ≤ eta_below use η = 1 instead (the paper's "quality boosting" at the end).
    The η-noise comes from ``seed``; with ``shared_noise`` every batch element gets the same
    noise (an edit strip: its images then differ only by the edit).

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    check_latent(model, x)
    check_float("eta", eta, 0.0, 1.0, hint="DDIM's η: 0 is deterministic, 1 is DDPM-like")
    if eta_below is not None:
        check_int("eta_below", eta_below, -1, model.num_train_timesteps - 1)
    check_int("seed", seed, 0, 2**63 - 1)
    check_bool("shared_noise", shared_noise)
    scheduler = model.ddim(num_steps)
    steps = [int(t) for t in scheduler.timesteps]
    t_from = steps[0] if t_from is None else check_timestep(model, t_from, "t_from")
    if t_to != -1:
        t_to = check_timestep(model, t_to, "t_to")
    if t_to >= t_from:
        raise ValueError(f"t_to ({t_to}) must be below t_from ({t_from}); DDIM runs from noise towards data")
    gen = torch.Generator().manual_seed(seed)
    todo = [t for t in steps if t_to < t <= t_from]
    with torch.no_grad():
        for t in tqdm(todo, desc="DDIM", disable=not progress, leave=False):
            step_eta = 1.0 if (eta_below is not None and t <= eta_below) else eta
            shape = (1, *x.shape[1:]) if shared_noise else x.shape
            noise = torch.randn(shape, generator=gen).to(x).expand_as(x) if step_eta > 0 else None
            x = scheduler.step(model.eps(x, t), t, x, eta=step_eta, variance_noise=noise).prev_sample
    return x


def ddim_invert(
    model: DiffusionModel, x0: Tensor, t_to: int, num_steps: int = 50, progress: bool = False
) -> Tensor:
    """DDIM inversion: run the deterministic DDIM ODE backwards from data x0 up to timestep ``t_to``.

    Returns x_{t_to} such that ``ddim_sample(model, x_{t_to}, num_steps, t_from=t_to)`` ≈ x0
    (each inverse step uses ε at the current point, the standard first-order approximation).
    ``t_to`` must be one of ``model.timesteps(num_steps)``.

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    check_latent(model, x0, "x0")
    t_to = check_timestep(model, t_to, "t_to")
    if t_to not in model.timesteps(num_steps):
        raise ValueError(f"t_to={t_to} is not a DDIM timestep for num_steps={num_steps}; pick one of model.timesteps({num_steps})")
    inverse = DDIMInverseScheduler.from_config(model.schedule, clip_sample=False)
    inverse.set_timesteps(num_steps)
    x = x0
    with torch.no_grad():
        for t in tqdm([int(t) for t in inverse.timesteps if t <= t_to], desc="DDIM inversion", disable=not progress, leave=False):
            x = inverse.step(model.eps(x, t), t, x).prev_sample
    return x
