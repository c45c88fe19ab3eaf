"""Editing and interpolating diffusion samples along the directions of the local basis.

Given a sample's latent x_t at timestep t and a direction v in X (a right singular vector of
J = ∂h/∂x, see ``labkit.spectral.local_basis``):

- the **naive edit** moves the latent: x_t ← x_t + γ v;
- **x-space guidance** (Park et al.) moves it *by* the change that a step δv causes in the noise
  prediction, repeated N times at the same t:  x ← x + γ [ε(x + δ v, t) − ε(x, t)];

then DDIM finishes sampling from t to 0 (η = 0, with η = 1 for t ≤ 0.2 T: "quality boosting",
``labkit.diffusion.QUALITY_BOOST``).

Between samples, a direction found at sample A is carried to sample B through H
(``transport_direction``, Park et al.'s "parallel transport"; one step, not the transport along a
curve of ``labkit.geometry.parallel_transport``): push it forward with A's Jacobian, project onto
B's tangent space in H, pull back with B's pseudo-inverse. **Global directions** average the
local bases of many samples (the chordal mean on the Grassmann manifold). **Interpolation**
between two latents goes by lerp, slerp, or a geodesic of the pullback metric.

Explained in: book/part2-diffusion/05_editing.ipynb, 06_interpolation.ipynb, 07_semantic.ipynb
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from labkit.cache import content_key
from labkit.checks import check_choice, check_float, check_int, check_nonzero, check_tensor, show
from labkit.diffusion import (
    QUALITY_BOOST,
    Sample,
    check_latent,
    check_sample,
    check_timestep,
    ddim_sample,
    h_space,
    invert_image,
    sample_at,
    timestep_at,
)
from labkit.files import atomic_write
from labkit.geometry import curve_length, discrete_geodesic, lerp, slerp
from labkit.models import DiffusionModel
from labkit.spectral import LocalBasis, local_basis

EditMethod = Literal["guidance", "naive"]


# Sample, sample_at, invert_image and timestep_at live in labkit.diffusion; editing builds on them
# and re-exports them for code written against earlier versions.
__all__ = ["EditMethod", "Interpolation", "Sample", "check_guidance_options", "check_strengths", "edit", "finish",
           "global_directions", "interpolate", "invert_image", "load_basis", "naive_edit", "sample_at",
           "sample_basis", "save_basis", "timestep_at", "transport_direction", "x_space_guidance"]


# --------------------------------------------------------------------------------------------
# One sample's local basis, cached on disk
# --------------------------------------------------------------------------------------------

MAX_STRENGTHS = 1024  # check_strengths: one batch of edited latents
RESERVED_METADATA = ("n_jvp", "n_vjp", "method", "iterations")  # save_basis writes these itself


def save_basis(basis: LocalBasis, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a local basis to a safetensors file, atomically (temporary file, then rename).

    ``metadata``: extra string-convertible values stored with it; its keys must be strings and
    not one of RESERVED_METADATA (the basis's own record, which ``load_basis`` reads back)."""
    if not isinstance(basis, LocalBasis):
        raise TypeError(f"basis must be a LocalBasis (from local_basis or sample_basis), got {type(basis).__name__}")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path (str or pathlib.Path), got {type(path).__name__} {show(path)}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of str keys, got {type(metadata).__name__}")
    metadata = metadata or {}
    if not all(isinstance(key, str) for key in metadata):
        raise TypeError(f"metadata keys must be strings, got {show(list(metadata))}")
    clash = sorted(set(metadata) & set(RESERVED_METADATA))
    if clash:
        raise ValueError(f"metadata must not use the reserved keys {clash}: save_basis writes "
                         f"{', '.join(RESERVED_METADATA)} itself; rename yours (e.g. 'my_{clash[0]}')")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a folder; "
                                f"give a file name such as {str(path / 'basis.safetensors')!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(basis, name).detach().cpu().contiguous() for name in ("v", "sigma", "u", "residual")}
    meta = {"n_jvp": str(basis.n_jvp), "n_vjp": str(basis.n_vjp), "method": basis.method,
            "iterations": str(basis.iterations), **{k: str(v) for k, v in metadata.items()}}
    with atomic_write(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def load_basis(path: str | os.PathLike, device: str | torch.device = "cpu") -> LocalBasis:
    """Read a local basis written by ``save_basis``, its tensors on ``device``.

    A file that is missing raises FileNotFoundError; one that is not a basis written by
    save_basis (damaged, truncated, or another file) raises ValueError naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"path {str(path)!r}: no such file (a basis written by save_basis)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        t = load_file(str(path), device=str(device))
        return LocalBasis(v=t["v"], sigma=t["sigma"], u=t["u"], residual=t["residual"], n_jvp=int(meta["n_jvp"]),
                          n_vjp=int(meta["n_vjp"]), method=meta["method"], iterations=int(meta["iterations"]))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{str(path)!r} is not a readable basis file ({type(err).__name__}: {err}); "
                         "delete it, or write it again with save_basis") from err


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
    With ``cache_dir``, the result is stored as safetensors under a key made of the content:
    a fingerprint of the weights, the dtype, t, the latent x_t itself, k, the method and every
    option (``progress`` aside), and read back on the next call with the same key. An unreadable
    cache entry is reported (a warning with its path) and computed again.
    """
    check_sample(model, sample)
    if cache_dir is None:
        return local_basis(h_space(model, sample.t), sample.x_t, k, method=method, **options)
    text, digest = content_key(weights=model.fingerprint(), dtype=str(model.dtype), layer="mid",
                               t=sample.t, x_t=sample.x_t, k=k, method=method,
                               options={n: v for n, v in options.items() if n != "progress"})
    path = Path(cache_dir) / f"basis-t{sample.t}-k{k}-{digest[:24]}.safetensors"
    if path.exists():
        try:
            basis = load_basis(path, device=sample.x_t.device)  # where a fresh basis would be: x_t's device
            with safe_open(str(path), framework="pt") as fh:
                stored = fh.metadata().get("cache_key")
            if stored == text and basis.v.shape == (k, *sample.x_t.shape):
                return basis
            problem = "it was written for another key"
        except ValueError as err:
            problem = f"it is unreadable ({err})"
        warnings.warn(f"basis cache entry {path}: {problem}; computing it again", RuntimeWarning, stacklevel=2)
    basis = local_basis(h_space(model, sample.t), sample.x_t, k, method=method, **options)
    save_basis(basis, path, {"model": model.name, "t": sample.t, "seed": sample.seed, "k": k, "cache_key": text})
    return basis


# --------------------------------------------------------------------------------------------
# Edits
# --------------------------------------------------------------------------------------------

def _check_direction(x: Tensor, v: Tensor, count: int = 1) -> Tensor:
    """v: one direction, shaped like one latent (C, H, W) or (1, C, H, W), finite and not zero; or,
    with ``count`` strengths, one direction per strength, (count, C, H, W), each not zero."""
    check_tensor("v", v, hint=f"a direction has the latent's shape {tuple(x.shape[1:])}, e.g. basis.v[i]")
    if v.shape == x.shape[1:]:
        v = v[None]
    if count > 1 and v.ndim == x.ndim and len(v) == count:
        v = check_tensor("v", v, shape=(count, *x.shape[1:]), finite=False)
        for row in v:
            check_nonzero("v", row, hint="every direction of a batch needs a length")
        return v.to(x)
    check_tensor("v", v, shape=(1, *x.shape[1:]), finite=False,
                 hint="pass one direction, or one per strength (S, C, H, W), e.g. basis.v[i]")
    return check_nonzero("v", v.to(x), hint="edit along a direction with a length, e.g. basis.v[i]")


def check_strengths(strength: Tensor | float, x: Tensor, name: str = "strength") -> Tensor:
    """Strengths γ as a column (S, 1, 1, 1) in x's dtype and device: finite, at least one."""
    if isinstance(strength, bool) or not isinstance(strength, Tensor | float | int | list | tuple):
        raise TypeError(f"{name} must be a number, a list of numbers or a 1-d tensor, got {type(strength).__name__}")
    try:
        gamma = torch.as_tensor(strength, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number, a list of numbers or a 1-d tensor, got {show(strength)}") from err
    check_tensor(name, gamma, hint="strengths are finite numbers, e.g. torch.linspace(-1, 1, 7)")
    if gamma.ndim > 1 or gamma.numel() == 0:
        raise ValueError(f"{name} must be a number or a non-empty 1-d list of numbers, got {show(gamma)}")
    if gamma.numel() > MAX_STRENGTHS:  # every strength is one latent of the batch sampled at once
        raise ValueError(f"{name} holds {gamma.numel()} strengths, at most {MAX_STRENGTHS} go in one batch; "
                         "split them over several calls")
    return gamma.reshape(-1, 1, 1, 1)


def naive_edit(model: DiffusionModel, x_t: Tensor, t: int, v: Tensor, strength: Tensor | float) -> Tensor:
    """x_t + γ v for each strength γ. x_t: (1, C, H, W); strength: scalar or (S,) → (S, C, H, W).

    v: one direction (C, H, W), or one per strength (S, C, H, W): the s-th image moves along v_s."""
    check_latent(model, x_t, "x_t", batch=1)
    check_timestep(model, t)
    gamma = check_strengths(strength, x_t)
    v = _check_direction(x_t, v, len(gamma))
    return x_t + gamma * v


def check_guidance_options(**options) -> None:
    """x_space_guidance's options, any of them (delta: δ in (0, 1000]; n_iter: 0..10,000), checked by name
    and value, so that a caller that passes them on (labkit.budget.match_budget) refuses them before any work."""
    unknown = sorted(set(options) - {"delta", "n_iter"})
    if unknown:
        raise ValueError(f"x-space guidance has no option(s) {unknown}; its options are delta (the probe step δ) "
                         "and n_iter (the number of iterations)")
    if "delta" in options:
        check_float("delta", options["delta"], 0.0, 1e3, low_open=True,
                    hint="the probe step δ > 0; a negative strength edits the other way")
    if "n_iter" in options:
        check_int("n_iter", options["n_iter"], 0, 10_000)


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
    v: one direction (C, H, W), or one per strength (S, C, H, W) (many edits in one batch).
    """
    check_latent(model, x_t, "x_t", batch=1)
    t = check_timestep(model, t)
    gamma = check_strengths(strength, x_t)
    v = _check_direction(x_t, v, len(gamma))
    check_guidance_options(delta=delta, n_iter=n_iter)
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

    v: one direction (C, H, W), or one per strength (S, C, H, W), so that many edits of one
    sample go through the U-Net as one batch (the η-noise is shared, as in a strip).

    method="guidance" is x-space guidance (options: delta, n_iter); "naive" is x_t + γ v. The
    edited latents are finished by DDIM on the sample's schedule, with η = 1 for t ≤
    boost_below·T (None: η = 0 throughout). Strength 0 reproduces the unedited image.
    """
    check_sample(model, sample)
    strengths = check_strengths(strengths, sample.x_t, "strengths").reshape(-1)
    check_choice("method", method, ("guidance", "naive"))
    if boost_below is not None:
        check_float("boost_below", boost_below, 0.0, 1.0, hint="a fraction of T below which η = 1, or None")
    if method == "guidance":
        x = x_space_guidance(model, sample.x_t, sample.t, v, strengths, **method_options)
    elif method == "naive":
        if method_options:
            raise ValueError(f"the naive edit takes no options, got {sorted(method_options)}")
        x = naive_edit(model, sample.x_t, sample.t, v, strengths)
    return finish(model, sample, x, boost_below)


def finish(model: DiffusionModel, sample: Sample, x: Tensor, boost_below: float | None = QUALITY_BOOST,
           differentiable: bool = False) -> Tensor:
    """Finish sampling edited latents x (S, C, H, W) of this sample from sample.t: images (S, C, H, W).

    DDIM on the sample's schedule, η = 1 for t ≤ boost_below·T (None: η = 0 throughout), with the
    sample's seed's η-noise shared by every image, so that they differ only by their edits.
    ``differentiable``: keep the graph, for gradients of the image with respect to x.
    """
    check_sample(model, sample)
    check_latent(model, x, "x")
    if boost_below is not None:
        check_float("boost_below", boost_below, 0.0, 1.0, hint="a fraction of T below which η = 1, or None")
    eta_below = None if boost_below is None else int(boost_below * model.num_train_timesteps)
    if sample.t == 0:
        return x
    return ddim_sample(model, x, sample.num_steps, t_from=sample.t, eta_below=eta_below, seed=sample.seed or 0,
                       shared_noise=True, differentiable=differentiable)


# --------------------------------------------------------------------------------------------
# Between samples: transport and global directions
# --------------------------------------------------------------------------------------------

def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def transport_direction(basis_a: LocalBasis, basis_b: LocalBasis, v: Tensor) -> Tensor:
    """Carry a direction v at sample A to sample B through H (Park et al., Sec. 3.3, "parallel transport").

    One projection step between two tangent spaces, not transport along a curve (that is
    ``labkit.geometry.parallel_transport``, which takes a path).

    u = J_A v is computed in A's basis (v's component outside span(V_A) is dropped: J_A is
    only known there); u is projected onto B's tangent space span(U_B) in H and pulled back by
    B's pseudo-inverse:  v_B = V_B Σ_B⁻¹ U_Bᵀ (U_A Σ_A V_Aᵀ v),  then normalised to unit length.
    (The reference code omits Σ_B⁻¹; with it, v_B is the direction whose image is the projection.)
    Returns a unit vector shaped like v. Transporting A's v_i from A to A returns v_i.

    Raises ValueError when there is nothing to transport: v (numerically) orthogonal to span(V_A),
    J_A v (numerically) zero, or J_A v orthogonal to span(U_B). Normalising what is left then would
    turn rounding noise into a unit vector; "relatively" means below √eps of the dtype.
    """
    for name, basis in (("basis_a", basis_a), ("basis_b", basis_b)):
        if not isinstance(basis, LocalBasis):
            raise TypeError(f"{name} must be a LocalBasis, got {type(basis).__name__}")
    if basis_a.v.shape[1:] != basis_b.v.shape[1:] or basis_a.u.shape[1:] != basis_b.u.shape[1:]:
        raise ValueError("basis_a and basis_b must come from the same map (same x and h shapes), got "
                         f"v {tuple(basis_a.v.shape[1:])} vs {tuple(basis_b.v.shape[1:])}")
    check_tensor("v", v)
    v = v.reshape(-1).to(basis_a.v)
    if v.numel() != _flat(basis_a.v).shape[1]:
        raise ValueError(f"v must have {_flat(basis_a.v).shape[1]} entries like the basis vectors, got {v.numel()}")
    check_nonzero("v", v, hint="transport a direction with a length, e.g. basis_a.v[i]")
    small = torch.finfo(v.dtype).eps ** 0.5
    coeff_a = _flat(basis_a.v) @ v                                     # V_Aᵀ v
    if coeff_a.norm() <= small * v.norm():
        raise ValueError(f"v is orthogonal to span(V_A) (only {coeff_a.norm() / v.norm():.1e} of its length lies "
                         "in it): J_A is unknown there, so there is nothing to transport; use a direction of basis_a")
    u = (_flat(basis_a.u).T * basis_a.sigma) @ coeff_a                 # J_A v
    if u.norm() <= small * basis_a.sigma.max() * coeff_a.norm():
        raise ValueError("J_A v is zero (v lies along singular values of about 0): nothing to transport")
    projected = _flat(basis_b.u) @ u                                   # U_Bᵀ u
    if projected.norm() <= small * u.norm():
        raise ValueError(f"J_A v is orthogonal to B's tangent space span(U_B) ({projected.norm() / u.norm():.1e} of it "
                         "lies there): nothing to transport; use a basis_b with more directions (larger k)")
    v_b = _flat(basis_b.v).T @ (projected / basis_b.sigma)            # V_B Σ_B⁻¹ U_Bᵀ u
    return (v_b / v_b.norm()).reshape(basis_a.v.shape[1:])


def global_directions(bases: list[LocalBasis], k: int | None = None) -> Tensor:
    """A mean subspace of many samples' local bases: the chordal (projection) mean on the Grassmannian.

    Minimises Σ_j ‖P − V_j V_jᵀ‖_F² over rank-k projections P; the minimiser spans the top-k
    eigenvectors of (1/N) Σ_j V_j V_jᵀ, found as the top right singular vectors of the stacked
    bases. Averaging the vectors themselves would be meaningless: each v_i is defined only up to
    sign, and near-equal σ's let v_i rotate within their span from sample to sample.
    Returns (k, *x.shape) orthonormal directions, each sign-normalised (largest entry positive).
    """
    if not isinstance(bases, list | tuple) or not bases or not all(isinstance(b, LocalBasis) for b in bases):
        raise TypeError(f"bases must be a non-empty list of LocalBasis, got {show(bases)}")
    if len({b.v.shape[1:] for b in bases}) > 1:
        shapes = sorted({tuple(b.v.shape[1:]) for b in bases})
        raise ValueError(f"bases must all come from the same map (same x shape), got {shapes}")
    stacked = torch.cat([_flat(b.v) for b in bases])
    k = bases[0].v.shape[0] if k is None else check_int("k", k, 1, min(stacked.shape))
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
    check_sample(model, a), check_sample(model, b)
    if a.t != b.t or a.num_steps != b.num_steps:
        raise ValueError(f"a and b must be at the same timestep on the same DDIM schedule, got (t, num_steps) = "
                         f"{(a.t, a.num_steps)} and {(b.t, b.num_steps)}")
    check_int("n", n, 2, 1000)
    check_choice("method", method, ("lerp", "slerp", "geodesic"))
    check_int("geodesic_steps", geodesic_steps, 0, 100_000)
    f = h_space(model, a.t)
    times = torch.linspace(0, 1, n)
    if method == "lerp":
        path = lerp(a.x_t, b.x_t, times)
    elif method == "slerp":
        path = slerp(a.x_t, b.x_t, times)
    else:
        path = discrete_geodesic(f, a.x_t, b.x_t, n_points=n, steps=geodesic_steps,
                                 init=slerp(a.x_t, b.x_t, times), progress=progress)
    with torch.no_grad():
        h_len = float(curve_length(path, f))
        x_len = float(curve_length(path))
        images = ddim_sample(model, path.reshape(n, *model.sample_shape), a.num_steps, t_from=a.t)
    return Interpolation(path=path, images=images, h_length=h_len, x_length=x_len)
