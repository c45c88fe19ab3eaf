"""Directions known to move one factor: the ceiling of the method comparison, and LOCO-Edit's directions.

**Oracle directions** (world only): the first-order ceiling. Let m(x_t) ∈ R⁷ be the read-out's
smooth coordinates of the factors (``labkit.readout.smooth_factors``) of the image that sampling
finishes from x_t, and M = ∂m/∂x_t (7 × D, by backpropagation through the sampler and the read-out).
The direction d_j = M⁺ e_j, normalised, is the shortest step that changes factor j and, to first
order, no other: disentangled by construction near x_t. Scored like every method at the same
budget, it shows what "disentangled" can look like here, and how much of it the edit's
nonlinearity destroys.

**LOCO-Edit** (Chen et al., NeurIPS 2024). With the posterior mean x̂₀(x_t) and a mask Ω of the
region to edit, the directions are the top-k right singular vectors of J_Ω = ∂(Ω ⊙ x̂₀)/∂x_t,
each projected onto the null space of the top-r right singular vectors of J_Ωᶜ = ∂((1 − Ω) ⊙ x̂₀)/∂x_t
(so that, to first order, an edit changes little outside Ω), then normalised.

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

import torch
from torch import Tensor

from labkit.checks import check_int, check_tensor, show
from labkit.diffusion import Sample, check_sample, posterior_mean
from labkit.editing import finish
from labkit.models import DiffusionModel
from labkit.spectral import local_basis


def oracle_directions(model: DiffusionModel, sample: Sample, network=None) -> Tensor:
    """One unit direction in X per factor of labkit.worlds.FACTORS at this sample: (7, C, H, W) (module doc).

    network: the read-out CNN, a labkit.readout.FactorReadout (default: the shipped one). Costs one
    differentiable finish of the sample and seven backward passes through it.
    """
    from labkit import worlds
    from labkit.readout import FactorReadout, load_readout, smooth_factors

    check_sample(model, sample)
    if network is not None and not isinstance(network, FactorReadout):
        raise TypeError(f"network must be a labkit.readout.FactorReadout (load_readout()) or None for the shipped "
                        f"one, got {type(network).__name__} {show(network)}")
    if tuple(model.sample_shape) != (3, worlds.IMAGE_SIZE, worlds.IMAGE_SIZE):
        raise ValueError(f"oracle directions need a model of the world's scenes (3, 32, 32), got a model of "
                         f"{tuple(model.sample_shape)}; use load_model('shapes')")
    network = load_readout() if network is None else network
    x = sample.x_t.detach().clone().requires_grad_(True)
    m = smooth_factors(network(finish(model, sample, x, differentiable=True).clamp(-1, 1)))[0]  # (7,)
    rows = [torch.autograd.grad(m[j], x, retain_graph=j < len(m) - 1)[0].flatten() for j in range(len(m))]
    jacobian = torch.stack(rows).double()  # M, (7, D)
    directions = torch.linalg.pinv(jacobian).T  # row j: M⁺ e_j
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return directions.to(model.dtype).reshape(len(m), *sample.x_t.shape[1:])


def loco_directions(model: DiffusionModel, sample: Sample, mask: Tensor, k: int, rank_outside: int = 5,
                    **basis_options) -> Tensor:
    """LOCO-Edit's k directions at this sample (module doc): (k, C, H, W), unit length.

    mask: (1, 1, H, W) or (1, C, H, W) in [0, 1], 1 where the edit should act; rank_outside: r, the
    number of directions of J_Ωᶜ projected out. basis_options go to labkit.spectral.local_basis.
    """
    check_sample(model, sample)
    check_int("k", k, 1, 64)
    check_int("rank_outside", rank_outside, 0, 256)
    shape = tuple(sample.x_t.shape)
    mask = check_tensor("mask", mask, shape=(1, None, *shape[2:]), hint="a (1, 1, H, W) mask of the region to edit")
    if mask.shape[1] not in (1, shape[1]) or mask.min() < 0 or mask.max() > 1 or not mask.max() > 0:
        raise ValueError(f"mask must be (1, 1 or {shape[1]}, H, W) with values in [0, 1] and some region set, "
                         f"got shape {tuple(mask.shape)} in [{mask.min().item():.3g}, {mask.max().item():.3g}]")
    mask = mask.to(sample.x_t)
    x0_hat = posterior_mean(model, sample.t)
    inside = local_basis(lambda x: mask * x0_hat(x), sample.x_t, k, **basis_options).v.reshape(k, -1)
    if rank_outside > 0:
        outside = local_basis(lambda x: (1 - mask) * x0_hat(x), sample.x_t, rank_outside, **basis_options).v
        w = outside.reshape(rank_outside, -1)
        inside = inside - (inside @ w.T) @ w
    norms = inside.norm(dim=1, keepdim=True)
    if not bool((norms > 1e-6).all()):
        raise ValueError("a LOCO direction lies in the span projected out (rank_outside too large for this mask); "
                         "pass a smaller rank_outside")
    return (inside / norms).reshape(k, *shape[1:])
