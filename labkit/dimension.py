"""The data manifold's dimension, read off the model's score (Stanczuk et al., ICML 2024).

If the data lie on a d-dimensional manifold M in R^D, then at a small noise level the score
∇ log p_t(x) near M points back to M: it lies (almost) in the normal space N_{x₀}M, of dimension
D − d, and its tangential part vanishes as t → 0 (their theorem). So perturb one point x₀ of M
many times,

    x_t^(i) = √ᾱ_t x₀ + √(1 − ᾱ_t) z_i,     z_i ~ N(0, I),   i = 1..n,

stack the n scores s_i = ∇ log p_t(x_t^(i)) = −ε(x_t^(i), t) / √(1 − ᾱ_t) as the rows of an n × D
matrix S, and take its singular values σ_1 ≥ σ_2 ≥ …: about D − d of them are large (the normal
space: with n > D draws all of them show) and d are small (what is left along the tangent space). The
estimate is d̂ = D − k, where the largest drop in the spectrum lies between σ_k and σ_{k+1}.

Stanczuk et al. (Algorithm 1; arXiv:2212.12611) take the largest *difference*, k = argmax_i
(σ_i − σ_{i+1}), and perturb as x₀ + σ_t z (a variance-exploding model). Here the model is
variance preserving: x₀ is scaled by √ᾱ_t ≈ 1 before the noise is added, which moves the point
along a ray, not off the manifold's shape, and the scaled manifold √ᾱ_t M has the same dimension.
``drops`` gives the drops both ways: ``gap="log"`` (the default) is log₁₀ σ_i − log₁₀ σ_{i+1},
the drop in decades, which does not favour the large values; ``gap="linear"`` is the paper's
σ_i − σ_{i+1}. With n not much above D the normal block's smallest singular values thin out
towards zero (the lower edge of the Marchenko–Pastur law of an n × (D − d) Gaussian matrix is at
(1 − √((D − d)/n)) times its centre), and there a linear difference between two normal values can
outgrow the drop to the tangent block; a ratio does not grow with the values' size.

One departure from the paper, on by default (``centred``): the mean score over the n draws is
subtracted before the SVD (see ``singular_values`` for why).

``normal_space_spectrum`` does all this with a DiffusionModel; ``score_matrix`` and
``singular_values`` with any noise prediction ε(x) and ᾱ (an analytic one, in the tests).

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from labkit.checks import check_bool, check_callable, check_choice, check_float, check_int, check_tensor
from labkit.diffusion import check_latent, check_timestep
from labkit.models import DiffusionModel

GAPS = ("linear", "log")


def score_matrix(
    eps: Callable[[Tensor], Tensor], x0: Tensor, alpha_bar: float, n: int, seed: int = 0, batch_size: int = 256
) -> Tensor:
    """The n scores around x0 as the rows of an (n, D) float64 matrix S (D = x0[0].numel(), on the CPU).

    eps: the noise prediction ε(x_t) at one fixed t, a batch (B, *x0.shape[1:]) → the same shape;
    x0: (1, ...) the point; alpha_bar: ᾱ_t of that t, in (0, 1). Row i is the score
    −ε(x_t^(i)) / √(1 − ᾱ_t) at x_t^(i) = √ᾱ_t x0 + √(1 − ᾱ_t) z_i; the z_i are drawn in x0's dtype
    on the CPU from a generator seeded with ``seed``, ``batch_size`` at a time (the draws do not
    depend on the batch size).

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    check_callable("eps", eps, hint="the noise prediction at one t, e.g. lambda x: model.eps(x, t)")
    x0 = check_tensor("x0", x0, hint="one point with a batch dimension of 1, e.g. (1, C, H, W)")
    if x0.ndim < 2 or x0.shape[0] != 1:
        raise ValueError(f"x0 must be one point with a leading batch dimension of 1, got shape {tuple(x0.shape)}; "
                         "use x0[None] (or x0[i:i + 1] for the i-th of a batch)")
    alpha_bar = check_float("alpha_bar", alpha_bar, 0.0, 1.0, low_open=True, high_open=True,
                            hint="ᾱ_t of the timestep, e.g. float(model.alphas_cumprod[t])")
    n = check_int("n", n, 2, 10_000_000, hint="the number of noise draws; n ≥ D sees the whole normal space")
    check_int("seed", seed, 0, 2**63 - 1)
    batch_size = check_int("batch_size", batch_size, 1, 1_000_000)
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            z = torch.randn((min(batch_size, n - start), *x0.shape[1:]), generator=gen, dtype=x0.dtype)
            x_t = a * x0 + s * z.to(x0.device)
            out = eps(x_t)
            if not isinstance(out, Tensor) or out.shape != x_t.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"eps must return a tensor shaped like its input {tuple(x_t.shape)}, got {got}")
            rows.append((-out / s).flatten(1).double().cpu())
    return torch.cat(rows)


def singular_values(scores: Tensor, centred: bool = True) -> Tensor:
    """σ_1 ≥ σ_2 ≥ … of the (n, D) score matrix (its mean row removed first when ``centred``): (min(n, D),) float64.

    centred=False is Stanczuk et al.'s matrix. centred=True (the default) subtracts the mean score
    over the n draws first: what does not vary with the noise (the model's bias at x0, and the
    density's gradient along the manifold, which points the same way for every draw) is one
    rank-one term that can stand far above the normal space or between it and the tangent space,
    and so be taken for the largest drop. The spread of the scores spans the normal space alone.
    (On the shapes model the uncentred σ_1 is several times σ_2, and the paper's rule reads
    d̂ = D − 1: benchmarks/manifold_dimension.py.) Centring costs one degree of freedom: the
    centred matrix has rank ≤ n − 1, so take n > D to see all D − d normal directions.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    scores = check_tensor("scores", scores, ndim=2, hint="an (n, D) matrix of scores, e.g. from score_matrix")
    check_bool("centred", centred)
    scores = scores.double()
    return torch.linalg.svdvals(scores - scores.mean(0) if centred else scores)


def normal_space_spectrum(
    model: DiffusionModel, x0: Tensor, t: int, n: int, seed: int = 0, batch_size: int = 256, centred: bool = True
) -> Tensor:
    """The spectrum of the model's scores around x0 at timestep t: (min(n, D),) float64, descending.

    x0: (1, C, H, W) a clean image (a finished sample, or a true render) in the model's dtype and
    device; t: a small timestep of the training schedule (0..T−1); n: noise draws (n ≥ D = C·H·W
    to see every normal direction). The score is −ε_θ(x_t, t)/√(1 − ᾱ_t), with ε from
    ``model.eps``, which turns a v-prediction (both embedded models) or an x₀-prediction into the
    predicted noise. ``score_matrix`` draws the x_t; ``singular_values`` (``centred``) takes the SVD.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    check_latent(model, x0, "x0", batch=1)
    t = check_timestep(model, t)
    check_bool("centred", centred)
    scores = score_matrix(lambda x: model.eps(x, t), x0, float(model.alphas_cumprod[t]), n, seed, batch_size)
    return singular_values(scores, centred)


def _check_spectrum(spectrum: object) -> Tensor:
    spectrum = check_tensor("spectrum", spectrum, ndim=1, hint="singular values, e.g. from normal_space_spectrum")
    if len(spectrum) < 2:
        raise ValueError(f"spectrum must hold at least two singular values to have a drop, got {len(spectrum)}")
    s = spectrum.double().cpu()
    if bool((s < 0).any()) or not bool(s[0] > 0):
        raise ValueError("spectrum must hold non-negative singular values with σ_1 > 0, "
                         f"got {s[:4].tolist()} ... {s[-2:].tolist()}")
    if not bool((s[1:] <= s[:-1]).all()):
        raise ValueError("spectrum must be sorted in descending order (as torch.linalg.svdvals returns it); "
                         "sort it with spectrum.sort(descending=True).values")
    return s


def drops(spectrum: Tensor, gap: str = "log") -> Tensor:
    """The drops between consecutive singular values: (L − 1,) float64, entry i−1 for σ_i → σ_{i+1}.

    gap="log": log₁₀ σ_i − log₁₀ σ_{i+1}, in decades, with singular values below σ_1·2⁻⁵² (zero to
    float64's resolution) raised to that floor; gap="linear": σ_i − σ_{i+1} (Stanczuk et al.'s rule).
    spectrum: (L,) non-negative, descending, σ_1 > 0.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    s = _check_spectrum(spectrum)
    check_choice("gap", gap, GAPS)
    if gap == "log":
        s = s.clamp_min(float(s[0]) * torch.finfo(torch.float64).eps).log10()
    return s[:-1] - s[1:]


def estimate_dimension(spectrum: Tensor, dim: int | None = None, gap: str = "log") -> int:
    """d̂ = D − k, k the position of the largest drop: the largest of ``drops(spectrum, gap)`` lies
    between σ_k and σ_{k+1} (1-based; the first, if two are equal).

    k counts the singular values above the drop, the normal space's dimension; D is the ambient
    dimension, ``dim`` (default: len(spectrum), the spectrum of n ≥ D scores). gap: "log" (the
    drop in decades) or "linear" (the paper's rule); see ``drops``. Returns d̂ in 1..D−1.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    steps = drops(spectrum, gap)
    if dim is None:
        dim = len(steps) + 1
    dim = check_int("dim", dim, len(steps) + 1, None,
                    hint="the ambient dimension D = x0[0].numel(), at least the number of singular values")
    return dim - (int(steps.argmax()) + 1)
