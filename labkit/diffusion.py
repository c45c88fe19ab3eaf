"""Diffusion models for the book: h-space, DDIM sampling and inversion, samples on the way.

A DDPM's network ε_θ(x_t, t) is a U-Net (loaded by ``labkit.models``). Park et al. study the map

    f_t : X → H,   x_t ↦ h_t = output of the U-Net's mid-block,

whose Jacobian J = ∂h/∂x pulls the Euclidean metric of H back to the latent space X. This module
gives that map as a plain function of x (so torch.func can differentiate it), Tweedie's x̂₀, the
DDIM sampler and its inverse built on diffusers' schedulers, and a `Sample`: a latent x_t stopped
at timestep t on its way from noise (``sample_at``) or from an image (``invert_image``).

Explained in: book/part2-diffusion/03_diffusion.ipynb and 04_h_space.ipynb
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMInverseScheduler
from torch import Tensor
from tqdm.auto import tqdm

from labkit.checks import check_bool, check_float, check_int, check_tensor, show
from labkit.models import DiffusionModel, attention_for_forward_ad

# The paper's "quality boosting": the last DDIM steps, t ≤ QUALITY_BOOST · T, run with η = 1.
QUALITY_BOOST = 0.2

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
    mid block): the decoder does not influence h. For a text-conditioned model (labkit.latent),
    x is the VAE latent and the cross-attention blocks read the model's prompt: h is the
    mid-block output under that prompt.

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
        with attention_for_forward_ad(unet):  # a null context unless a fused processor was put back
            h = unet.conv_in(2 * x - 1 if unet.config.center_input_sample else x)
            for block in unet.down_blocks[:stop]:
                h, _ = block(hidden_states=h, temb=e, **model.block_inputs(block, x.shape[0]))  # the prompt, if any
            if layer == "mid":
                h = unet.mid_block(h, e, **model.block_inputs(unet.mid_block, x.shape[0]))
        return h

    return f


def posterior_mean(model: DiffusionModel, t: int) -> Callable[[Tensor], Tensor]:
    """The map x_t ↦ x̂₀(x_t) = E[x₀ | x_t], as a function of x alone (Tweedie's formula).

    For an ε-prediction model, x̂₀ = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, with ᾱ_t the
    cumulative product of the schedule's (1 − β); for a v-prediction model (both embedded models),
    x̂₀ = √ᾱ_t x_t − √(1 − ᾱ_t) v_θ(x_t, t), with no division. x: (B, C, H, W) → x̂₀: (B, C, H, W). Its
    Jacobian ∂x̂₀/∂x_t is the one LOCO-Edit (Chen et al., 2024) takes singular vectors of.

    Explained in: book/part2-diffusion/03_diffusion.ipynb (the formula); 04_h_space.ipynb (its Jacobian)
    """
    t = check_timestep(model, t)
    prediction = model.prediction_type
    if prediction not in ("epsilon", "sample", "v_prediction"):
        raise ValueError(f"posterior_mean: the model's prediction_type {prediction!r} is not one of "
                         "'epsilon', 'sample', 'v_prediction'")
    abar = float(model.alphas_cumprod[t])
    a, s = abar ** 0.5, (1.0 - abar) ** 0.5

    def x0_hat(x: Tensor) -> Tensor:
        _check_input(model, x)
        out = model.output(x, t)
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
    differentiable: bool = False,
) -> Tensor:
    """Run DDIM from x at timestep ``t_from`` down to timestep ``t_to`` (−1 means x_0).

    The steps taken are the DDIM timesteps t with t_to < t ≤ t_from, each mapping x_t to
    x_{t−Δ}, Δ = T / num_steps. ``t_from`` defaults to the first DDIM timestep (x is pure
    noise). ``eta`` is DDIM's stochasticity (0: deterministic ODE); with ``eta_below`` set,
    steps with t ≤ eta_below use η = 1 instead (the paper's "quality boosting" at the end).
    The η-noise comes from ``seed``; with ``shared_noise`` every batch element gets the same
    noise (an edit strip: its images then differ only by the edit). ``differentiable`` keeps the
    autograd graph, so that a gradient can flow from the image back to x (memory grows with steps).

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    check_latent(model, x)
    check_bool("differentiable", differentiable)
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
    with torch.set_grad_enabled(differentiable):
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
    t_to, _ = check_on_schedule(model, t_to, num_steps, name="t_to")
    inverse = DDIMInverseScheduler.from_config(model.schedule, clip_sample=False, prediction_type="epsilon")
    inverse.set_timesteps(num_steps)
    x = x0
    with torch.no_grad():
        todo = [int(t) for t in inverse.timesteps if t <= t_to]
        for t in tqdm(todo, desc="DDIM inversion", disable=not progress, leave=False):
            x = inverse.step(model.eps(x, t), t, x).prev_sample
    return x


# --------------------------------------------------------------------------------------------
# Samples: a latent stopped at timestep t
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """A sample's latent on its way from noise to image, stopped at timestep t.

    x_t: (1, C, H, W) the latent at timestep t;  seed: the noise seed it came from (or None);
    t: the timestep;  num_steps: the DDIM schedule it lies on.
    """

    x_t: Tensor
    t: int
    num_steps: int
    seed: int | None


def check_on_schedule(model: DiffusionModel, t: int, num_steps: int, name: str = "t") -> tuple[int, list[int]]:
    """t checked to be one of model.timesteps(num_steps); returns (t, that schedule). name: t's parameter."""
    t = check_timestep(model, t, name)
    steps = model.timesteps(num_steps)  # checks num_steps
    if t not in steps:
        raise ValueError(f"{name}={t} is not on the {num_steps}-step DDIM schedule; "
                         f"pick one of model.timesteps({num_steps})")
    return t, steps


def check_sample(model: DiffusionModel, sample: Sample) -> Sample:
    """Raise a clear error unless sample is a Sample of one latent of this model, at a timestep on
    its own DDIM schedule, with a valid seed (or None); returns it."""
    if not isinstance(sample, Sample):
        raise TypeError(f"sample must be a labkit Sample (from sample_at or invert_image), got {type(sample).__name__}")
    check_latent(model, sample.x_t, "sample.x_t", batch=1)
    check_on_schedule(model, sample.t, sample.num_steps, name="sample.t")
    if sample.seed is not None:
        check_int("sample.seed", sample.seed, 0, 2**63 - 1)
    return sample


def sample_at(model: DiffusionModel, seed: int, t: int, num_steps: int = 50, progress: bool = False) -> Sample:
    """Start from noise x_T(seed) and run DDIM down to timestep t (one of model.timesteps(num_steps)).

    Explained in: book/part2-diffusion/04_h_space.ipynb
    """
    t, steps = check_on_schedule(model, t, num_steps)
    x = sample_noise(model, 1, seed)
    if t != steps[0]:
        x = ddim_sample(model, x, num_steps, t_to=t, progress=progress)
    return Sample(x_t=x, t=t, num_steps=num_steps, seed=seed)


def invert_image(model: DiffusionModel, image: Tensor, t: int, num_steps: int = 50, progress: bool = False) -> Sample:
    """A given image x_0 (1, C, H, W) in [-1, 1] as a Sample at timestep t, by DDIM inversion.

    The returned latent is the x_t that deterministic DDIM maps back to (approximately) this image,
    so a real image can be edited like a generated one: ``labkit.editing.sample_basis`` then
    ``edit``. For a faithful round trip, edit with ``boost_below=None`` (η = 0 throughout): the
    default η = 1 near the end re-noises fine detail. The sample has no seed (seed=None); its
    basis is cached by content like any other.

    Explained in: book/part2-diffusion/05_editing.ipynb
    """
    t, _ = check_on_schedule(model, t, num_steps)
    check_latent(model, image, "image", batch=1)
    x_t = ddim_invert(model, image, t_to=t, num_steps=num_steps, progress=progress)
    return Sample(x_t=x_t, t=t, num_steps=num_steps, seed=None)


def timestep_at(model: DiffusionModel, fraction: float, num_steps: int = 50) -> int:
    """The DDIM timestep closest to fraction·T (the paper edits at 1.0 T, 0.8 T, 0.6 T).

    Explained in: book/part2-diffusion/03_diffusion.ipynb
    """
    check_float("fraction", fraction, 0.0, 1.0, hint="t as a fraction of T, e.g. 0.6")
    steps = model.timesteps(num_steps)
    return min(steps, key=lambda s: abs(s - fraction * model.num_train_timesteps))
