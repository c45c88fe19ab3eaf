"""Editing and interpolating diffusion samples along the directions of the local basis.

Given a sample's latent x_t at timestep t and a direction v in X (a right singular vector of
J = ∂h/∂x, see ``labkit.spectral.local_basis``):

- the **naive edit** moves the latent: x_t ← x_t + γ v;
- **x-space guidance** (Park et al.) moves it *by* the change that a step δv causes in the noise
  prediction, repeated N times at the same t:  x ← x + γ [ε(x + δ v, t) − ε(x, t)];

then DDIM finishes sampling from t to 0 (η = 0, with η = 1 for t ≤ 0.2 T: "quality boosting",
``labkit.diffusion.QUALITY_BOOST``).

Between samples, a direction found at sample A is carried to sample B by **parallel transport**
through H: push it forward with A's Jacobian, project onto B's tangent space in H, pull back
with B's pseudo-inverse. **Global directions** average the local bases of many samples (the
chordal mean on the Grassmann manifold). **Interpolation** between two latents goes by lerp,
slerp, or a geodesic of the pullback metric.

Explained in: book/part2-diffusion/05_editing.ipynb, 06_interpolation.ipynb, 07_semantic.ipynb
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from labkit.diffusion import (
    QUALITY_BOOST,
    Sample,
    check_latent,
    check_timestep,
    ddim_sample,
    h_space,
    invert_image,
    sample_at,
    timestep_at,
)
from labkit.geometry import curve_length, discrete_geodesic, lerp, slerp
from labkit.models import DiffusionModel
from labkit.spectral import LocalBasis, local_basis

EditMethod = Literal["guidance", "naive"]


# Sample, sample_at, invert_image and timestep_at live in labkit.diffusion; editing builds on them
# and re-exports them for code written against earlier versions.
__all__ = ["EditMethod", "Interpolation", "Sample", "edit", "global_directions", "interpolate", "invert_image",
           "load_basis", "naive_edit", "parallel_transport", "sample_at", "sample_basis", "save_basis", "timestep_at",
           "x_space_guidance"]


# --------------------------------------------------------------------------------------------
# One sample's local basis, cached on disk
# --------------------------------------------------------------------------------------------

def save_basis(basis: LocalBasis, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a local basis to a safetensors file, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(basis, name).detach().cpu().contiguous() for name in ("v", "sigma", "u", "residual")}
    meta = {"n_jvp": str(basis.n_jvp), "n_vjp": str(basis.n_vjp), "method": basis.method,
            "iterations": str(basis.iterations), **{k: str(v) for k, v in (metadata or {}).items()}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_basis(path: str | os.PathLike, device: str | torch.device = "cpu") -> LocalBasis:
    """Read a local basis written by ``save_basis``, its tensors on ``device``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    t = load_file(str(path), device=str(device))
    return LocalBasis(v=t["v"], sigma=t["sigma"], u=t["u"], residual=t["residual"], n_jvp=int(meta["n_jvp"]),
                      n_vjp=int(meta["n_vjp"]), method=meta["method"], iterations=int(meta["iterations"]))


def sample_basis(
    model: DiffusionModel,
    sample: Sample,
    k: int,
    method: str = "krylov",
    cache_dir: str | os.PathLike | None = None,
    **options,
) -> LocalBasis:
    """The local basis of f_t: x_t ↦ h_t at this sample: top-k singular triplets of ∂h/∂x.

    v: (k, 1, C, H, W) directions in X;  u: (k, *h.shape);  sigma: (k,).
    With ``cache_dir``, the result is stored as safetensors under a key made of the model,
    t, seed, k and method, and read back on the next call.
    """
    check_latent(model, sample.x_t)
    path = None
    if cache_dir is not None:
        key = json.dumps([model.name, sample.t, sample.num_steps, sample.seed, k, method, sorted(options.items())],
                         default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"basis-t{sample.t}-k{k}-seed{sample.seed}-{digest}.safetensors"
        if sample.seed is not None and path.exists():
            return load_basis(path, device=sample.x_t.device)  # where a fresh basis would be: x_t's device
    basis = local_basis(h_space(model, sample.t), sample.x_t, k, method=method, **options)
    if path is not None and sample.seed is not None:
        save_basis(basis, path, {"model": model.name, "t": sample.t, "seed": sample.seed, "k": k})
    return basis


# --------------------------------------------------------------------------------------------
# Edits
# --------------------------------------------------------------------------------------------

def _check_direction(x: Tensor, v: Tensor) -> Tensor:
    if v.shape == x.shape[1:]:
        v = v[None]
    if v.shape[-x.dim() + 1:] != x.shape[1:]:
        raise ValueError(f"direction v must have the latent's shape {tuple(x.shape[1:])}, got {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("direction v contains NaN or infinite values")
    return v.to(x)


def naive_edit(model: DiffusionModel, x_t: Tensor, t: int, v: Tensor, strength: Tensor | float) -> Tensor:
    """x_t + γ v for each strength γ. x_t: (1, C, H, W); strength: scalar or (S,) → (S, C, H, W)."""
    check_latent(model, x_t)
    check_timestep(model, t)
    v = _check_direction(x_t, v)
    gamma = torch.as_tensor(strength, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1, 1, 1)
    return x_t + gamma * v


def x_space_guidance(
    model: DiffusionModel,
    x_t: Tensor,
    t: int,
    v: Tensor,
    strength: Tensor | float,
    delta: float = 1.0,
    n_iter: int = 16,
) -> Tensor:
    """Park et al.'s edit, repeated n_iter times at the same t, for each strength γ:

        x ← x + γ [ε(x + δ v, t) − ε(x, t)].

    For small δ the bracket is δ·(∂ε/∂x) v: the latent moves by γ times the change in the network's
    prediction that a step along v causes, recomputed at the current x on every iteration.
    x_t: (1, C, H, W); strength: scalar or (S,); returns (S, C, H, W). All strengths run as one batch.
    """
    check_latent(model, x_t)
    t = check_timestep(model, t)
    v = _check_direction(x_t, v)
    if n_iter < 0:
        raise ValueError(f"n_iter must be ≥ 0, got {n_iter}")
    gamma = torch.as_tensor(strength, dtype=x_t.dtype, device=x_t.device).reshape(-1, 1, 1, 1)
    x = x_t.expand(len(gamma), *x_t.shape[1:]).clone()
    with torch.no_grad():
        for _ in range(n_iter):
            eps = model.eps(torch.cat([x + delta * v, x]), t)
            x = x + gamma * (eps[: len(x)] - eps[len(x):])
    return x


def edit(
    model: DiffusionModel,
    sample: Sample,
    v: Tensor,
    strengths: Tensor | list[float] | float,
    method: EditMethod = "guidance",
    boost_below: float | None = QUALITY_BOOST,
    **method_options,
) -> Tensor:
    """Edit a sample along v and finish sampling: images (S, C, H, W) in [-1, 1], one per strength.

    method="guidance" is x-space guidance (options: delta, n_iter); "naive" is x_t + γ v. The
    edited latents are finished by DDIM on the sample's schedule, with η = 1 for t ≤
    boost_below·T (None: η = 0 throughout). Strength 0 reproduces the unedited image.
    """
    strengths = torch.as_tensor(strengths, dtype=sample.x_t.dtype).reshape(-1)
    if method == "guidance":
        x = x_space_guidance(model, sample.x_t, sample.t, v, strengths, **method_options)
    elif method == "naive":
        if method_options:
            raise ValueError(f"the naive edit takes no options, got {sorted(method_options)}")
        x = naive_edit(model, sample.x_t, sample.t, v, strengths)
    else:
        raise ValueError(f"method must be 'guidance' or 'naive', got {method!r}")
    eta_below = None if boost_below is None else int(boost_below * model.num_train_timesteps)
    if sample.t == 0:
        return x
    return ddim_sample(model, x, sample.num_steps, t_from=sample.t, eta_below=eta_below, seed=sample.seed or 0,
                       shared_noise=True)


# --------------------------------------------------------------------------------------------
# Between samples: transport and global directions
# --------------------------------------------------------------------------------------------

def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def parallel_transport(basis_a: LocalBasis, basis_b: LocalBasis, v: Tensor) -> Tensor:
    """Carry a direction v at sample A to sample B through H (Park et al., Sec. 3.3).

    u = J_A v is computed in A's basis (v's component outside span(V_A) is dropped: J_A is
    only known there); u is projected onto B's tangent space span(U_B) in H and pulled back by
    B's pseudo-inverse:  v_B = V_B Σ_B⁻¹ U_Bᵀ (U_A Σ_A V_Aᵀ v),  then normalised to unit length.
    (The reference code omits Σ_B⁻¹; with it, v_B is the direction whose image is the projection.)
    Returns a unit vector shaped like v. Transporting A's v_i from A to A returns v_i.
    """
    if basis_a.v.shape[1:] != basis_b.v.shape[1:] or basis_a.u.shape[1:] != basis_b.u.shape[1:]:
        raise ValueError("both bases must come from the same map (same x and h shapes)")
    v = v.reshape(-1).to(basis_a.v)
    if v.numel() != _flat(basis_a.v).shape[1]:
        raise ValueError(f"v must have {_flat(basis_a.v).shape[1]} entries like the basis vectors, got {v.numel()}")
    u = (_flat(basis_a.u).T * basis_a.sigma) @ (_flat(basis_a.v) @ v)  # J_A v
    coeff = (_flat(basis_b.u) @ u) / basis_b.sigma                      # Σ_B⁻¹ U_Bᵀ u
    v_b = _flat(basis_b.v).T @ coeff
    norm = v_b.norm()
    if norm == 0:
        raise ValueError("the direction's image is orthogonal to B's tangent space: nothing to transport")
    return (v_b / norm).reshape(basis_a.v.shape[1:])


def global_directions(bases: list[LocalBasis], k: int | None = None) -> Tensor:
    """A mean subspace of many samples' local bases: the chordal (projection) mean on the Grassmannian.

    Minimises Σ_j ‖P − V_j V_jᵀ‖_F² over rank-k projections P; the minimiser spans the top-k
    eigenvectors of (1/N) Σ_j V_j V_jᵀ, found as the top right singular vectors of the stacked
    bases. Averaging the vectors themselves would be meaningless: each v_i is defined only up to
    sign, and near-equal σ's let v_i rotate within their span from sample to sample.
    Returns (k, *x.shape) orthonormal directions, each sign-normalised (largest entry positive).
    """
    if not bases:
        raise ValueError("need at least one local basis")
    k = k or bases[0].v.shape[0]
    stacked = torch.cat([_flat(b.v) for b in bases])
    if k > min(stacked.shape):
        raise ValueError(f"k={k} is larger than the stacked bases allow ({min(stacked.shape)})")
    _, _, vh = torch.linalg.svd(stacked, full_matrices=False)
    mean = vh[:k]
    sign = torch.sign(mean.gather(1, mean.abs().argmax(1, keepdim=True)))
    return (mean * sign).reshape(k, *bases[0].v.shape[1:])


# --------------------------------------------------------------------------------------------
# Interpolation
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interpolation:
    """A path between two latents at timestep t and where it leads.

    path: (n, 1, C, H, W) latents; images: (n, C, H, W) finished samples;
    h_length: length of the path measured in H (the pullback metric), x_length: in X.
    """

    path: Tensor
    images: Tensor
    h_length: float
    x_length: float


def interpolate(
    model: DiffusionModel,
    a: Sample,
    b: Sample,
    n: int = 9,
    method: Literal["lerp", "slerp", "geodesic"] = "slerp",
    geodesic_steps: int = 60,
    progress: bool = False,
) -> Interpolation:
    """Interpolate between two samples' latents at the same t, then finish each with DDIM.

    lerp: straight line; slerp: great circle (keeps the norm typical of Gaussian latents);
    geodesic: a discrete curve of least energy in the pullback metric of f_t (started from
    slerp), found by ``labkit.geometry.discrete_geodesic``.
    """
    if a.t != b.t or a.num_steps != b.num_steps:
        raise ValueError("both samples must be at the same timestep on the same DDIM schedule")
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    f = h_space(model, a.t)
    times = torch.linspace(0, 1, n)
    if method == "lerp":
        path = lerp(a.x_t, b.x_t, times)
    elif method == "slerp":
        path = slerp(a.x_t, b.x_t, times)
    elif method == "geodesic":
        path = discrete_geodesic(f, a.x_t, b.x_t, n_points=n, steps=geodesic_steps,
                                 init=slerp(a.x_t, b.x_t, times), progress=progress)
    else:
        raise ValueError(f"method must be 'lerp', 'slerp' or 'geodesic', got {method!r}")
    with torch.no_grad():
        h_len = float(curve_length(path, f))
        x_len = float(curve_length(path))
        images = ddim_sample(model, path.reshape(n, *model.sample_shape), a.num_steps, t_from=a.t)
    return Interpolation(path=path, images=images, h_length=h_len, x_length=x_len)
