"""Edits made in H itself: add a direction to the mid-block output while sampling (the Asyrp/Haas family).

Park et al. edit x_t and let the U-Net carry the change to h. The h-space methods before them
edit h directly: Asyrp (Kwon et al., 2023) adds a learned Δh to the mid-block output at every
denoising step in an editing interval [t_edit, T]; Haas et al. (2023) take Δh along principal
components of h over many samples. Here, for a sample x_t and a unit direction d in H:

    in every DDIM step from t down to (but not including) boost_below·T:   h ← h + γ d,

and the steps below boost_below·T run unedited with η = 1, the same "quality boosting" that
``labkit.editing.edit`` ends with. ``h_offset`` is the mechanism (a forward hook on the
mid-block, removed on exit); ``h_space_edit`` the edit; ``h_principal_components`` the
directions of Haas et al.

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from labkit.checks import check_float, check_int, check_nonzero, check_tensor
from labkit.diffusion import QUALITY_BOOST, Sample, check_on_schedule, check_sample, ddim_sample, h_space, sample_noise
from labkit.editing import check_strengths
from labkit.models import DiffusionModel


def h_shape(model: DiffusionModel) -> tuple[int, ...]:
    """The shape (c_h, H_h, W_h) of one mid-block output h, found with a meta-device-free dry run."""
    with torch.no_grad():
        x = torch.zeros(1, *model.sample_shape, device=model.device, dtype=model.dtype)
        return tuple(h_space(model, model.num_train_timesteps - 1)(x).shape[1:])


@contextmanager
def h_offset(model: DiffusionModel, offset: Tensor) -> Iterator[None]:
    """Inside the block, every U-Net call outputs from h + offset instead of h (h: the mid-block output).

    offset: (B, c_h, H_h, W_h), one per batch element, or (1, c_h, H_h, W_h) for all. The hook
    is removed on exit, also when the block raises.
    """
    offset = check_tensor("offset", offset, hint="an offset in H, e.g. strength * direction[None]")
    shape = h_shape(model)
    if offset.ndim != len(shape) + 1 or tuple(offset.shape[1:]) != shape:
        raise ValueError(f"offset must have shape (B, {', '.join(map(str, shape))}) (one h per batch element, "
                         f"or B = 1 for all), got {tuple(offset.shape)}")

    def add(_module, _inputs, output: Tensor) -> Tensor:
        return output + offset.to(output)

    handle = model.unet.mid_block.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _check_h_direction(model: DiffusionModel, d: Tensor, name: str = "direction", count: int = 1) -> Tensor:
    """One direction in H, (1, c_h, H_h, W_h); or one per strength, (count, c_h, H_h, W_h)."""
    shape = h_shape(model)
    d = check_tensor(name, d)
    if count > 1 and tuple(d.shape) == (count, *shape):
        for row in d:
            check_nonzero(name, row, hint="every direction of a batch needs a length")
        return d.to(model.device, model.dtype)
    if tuple(d.shape) not in (shape, (1, *shape)):
        raise ValueError(f"{name} must be a direction in H of shape {shape} (or (1, {', '.join(map(str, shape))}), "
                         f"or one per strength), got {tuple(d.shape)}; for a direction in X use labkit.editing.edit")
    check_nonzero(name, d, hint="a zero direction in H edits nothing")
    return d.reshape(1, *shape).to(model.device, model.dtype)


def h_space_edit(
    model: DiffusionModel,
    sample: Sample,
    direction: Tensor,
    strengths: Tensor | list[float] | float,
    boost_below: float | None = QUALITY_BOOST,
) -> Tensor:
    """Edit a sample in H and finish sampling: images (S, C, H, W) in [-1, 1], one per strength γ.

    direction: d in H, (c_h, H_h, W_h), used as given (unit length makes γ the size of Δh), or one
    per strength, (S, c_h, H_h, W_h), so that many edits run as one batch;
    strengths: (S,) γ's, 0 reproduces the unedited image. Every DDIM step from sample.t down to
    the last step above boost_below·T adds γ d to the mid-block output; the later steps run
    unedited with η = 1 (boost_below=None: the edit runs in every step, η = 0 throughout). The
    η-noise is the sample's seed's, shared across the strip.
    """
    check_sample(model, sample)
    t, steps = sample.t, model.timesteps(sample.num_steps)
    gamma = check_strengths(strengths, sample.x_t, "strengths")
    d = _check_h_direction(model, direction, count=len(gamma))
    if boost_below is not None:
        check_float("boost_below", boost_below, 0.0, 1.0, hint="a fraction of T below which η = 1, or None")
    boundary = -1 if boost_below is None else int(boost_below * model.num_train_timesteps)
    if t <= boundary:
        raise ValueError(f"sample.t={t} is at or below boost_below·T = {boundary}: no step is left to edit h in; "
                         "edit at a larger t, or pass a smaller boost_below")
    x = sample.x_t.expand(len(gamma), *sample.x_t.shape[1:]).clone()
    seed = sample.seed or 0
    with h_offset(model, gamma * d):
        x = ddim_sample(model, x, sample.num_steps, t_from=t, t_to=boundary, seed=seed, shared_noise=True)
    rest = [s for s in steps if s <= boundary]
    if not rest:
        return x
    return ddim_sample(model, x, sample.num_steps, t_from=rest[0], eta_below=boundary, seed=seed, shared_noise=True)


def h_principal_components(
    model: DiffusionModel, t: int, k: int, n: int = 64, seed: int = 0, num_steps: int = 50, batch_size: int = 32
) -> tuple[Tensor, Tensor]:
    """Principal components of h at timestep t over n samples (Haas et al., 2023).

    The samples start from noise seeds ``sample_noise(model, n, seed)`` and run DDIM to t (one of
    ``model.timesteps(num_steps)``). Returns (components, explained): (k, c_h, H_h, W_h) unit
    directions in H, the top-k right singular vectors of the centred (n, dim H) matrix of h's, and
    (k,) the share of the total variance each explains.
    """
    t, steps = check_on_schedule(model, t, num_steps)
    check_int("n", n, 2, 100_000)
    check_int("k", k, 1, n - 1, hint="at most n − 1 components are defined by n samples")
    check_int("batch_size", batch_size, 1, 100_000)
    x = sample_noise(model, n, seed)
    f = h_space(model, t)
    shape = h_shape(model)
    hs = []
    with torch.no_grad():
        for chunk in x.split(batch_size):
            if t != steps[0]:
                chunk = ddim_sample(model, chunk, num_steps, t_to=t)
            hs.append(f(chunk).flatten(1).double())
    h = torch.cat(hs)
    _, s, vh = torch.linalg.svd(h - h.mean(0), full_matrices=False)
    explained = s[:k] ** 2 / (s ** 2).sum()
    components = vh[:k].to(model.dtype).reshape(k, *shape)
    return components, explained.to(model.dtype)
