"""Block power iteration for the top singular triplets of J: Park et al.'s method, and a port of their code.

Both iterate Q ← orth(Jᵀ(J Q)) on a block of k directions (subspace iteration on A = JᵀJ), take
the Rayleigh–Ritz approximations within span(Q) every sweep, and stop on the residual certificate
‖A v_i − σ_i² v_i‖ / σ_i² that ``labkit.krylov`` uses too, so their product counts compare:

- ``block_power`` works from row-block products J(rows) and Jt(rows), like ``block_lanczos``: a
  sweep costs k JVPs and k VJPs, batched, and nothing else.
- ``reference_power`` is a faithful port of the reference implementation's power method, kept to
  measure against: each JVP is a separate ``jacfwd`` of a ↦ f(x + a v) (the primal recomputed per
  direction) and the VJPs are k sequential backward passes. Its own stopping rule (the vectors
  stop changing) fails under sign flips, so here it stops on the residual like the others.

Both return (v (k, n), sigma (k,), u (k, m), residual (k,), sweeps), rows flattened;
``labkit.spectral.local_basis`` (method "power" or "reference") makes a LocalBasis of them.

Explained in: book/part1-geometry/05_svd.ipynb
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from labkit.krylov import Product, orthonormal_rows, relative_residual


def block_power(J: Product, Jt: Product, Q: Tensor, k: int, tol: float, max_iter: int, progress: bool = False):
    """Block subspace iteration on JᵀJ from the orthonormal start rows Q (k, n): Q ← orth(Jᵀ(J Q)),
    with Rayleigh–Ritz every sweep, at most ``max_iter`` sweeps. The Ritz step and its residual
    reuse the products of the sweep."""
    bar = tqdm(range(1, max_iter + 1), desc="power", disable=not progress)
    for sweep in bar:
        JQ = J(Q)
        W = Jt(JQ)  # rows of (JᵀJ Q)ᵀ
        v, sigma, u, residual = _rayleigh_ritz(Q, JQ, W, k)
        bar.set_postfix(residual=f"{residual.max().item():.1e}")
        if residual.max() <= tol:
            break
        Q = orthonormal_rows(W)
    bar.close()
    return v, sigma, u, residual, sweep


def reference_power(f: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, k: int, tol: float, max_iter: int,
                    seed: int, progress: bool = False):
    """The reference code's power method at x (y = f(x)), product for product (see the module
    docstring); the start block is seeded like local_basis's."""
    n, m = x.numel(), y.numel()
    generator = torch.Generator().manual_seed(seed)
    Q = orthonormal_rows(torch.randn(k, n, generator=generator, dtype=x.dtype).to(x.device))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)

    def jvp_one(v: Tensor) -> Tensor:  # d/da f(x + a v) at a = 0, primal recomputed every time
        return torch.func.jacfwd(lambda a: f(x + a * v.reshape(x.shape)))(zero).reshape(m)

    bar = tqdm(range(1, max_iter + 1), desc="reference power", disable=not progress)
    for sweep in bar:
        JQ = torch.stack([jvp_one(q) for q in Q])
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = f(xg)
            W = torch.stack([
                torch.autograd.grad(out, xg, row.reshape(y.shape), retain_graph=i < k - 1)[0].reshape(n)
                for i, row in enumerate(JQ)
            ])
        v, sigma, u, residual = _rayleigh_ritz(Q, JQ, W.detach(), k)
        bar.set_postfix(residual=f"{residual.max().item():.1e}")
        if residual.max() <= tol:
            break
        Q = orthonormal_rows(W.detach())
    bar.close()
    return v, sigma, u, residual, sweep


def _rayleigh_ritz(K: Tensor, JK: Tensor, JtJK: Tensor, k: int):
    """Best approximations to the top-k singular triplets of J within span(rows of K).

    K: (d, n) orthonormal rows; JK: (d, m) rows J K_i; JtJK: (d, n) rows JᵀJ K_i.
    The SVD of J restricted to the subspace, (J Kᵀ) = Û Σ Ŵᵀ, gives v = Ŵᵀ K, u = Û, σ;
    then JᵀJ v = Ŵᵀ (JᵀJ K) gives the residual for free.
    """
    Wh, S, Uh = torch.linalg.svd(JK, full_matrices=False)  # JK = Wh S Uh, i.e. (J Kᵀ) = Uhᵀ S Whᵀ
    top = Wh[:, :k].T  # (k, d)
    v, sigma, u = top @ K, S[:k], Uh[:k]
    return v, sigma, u, relative_residual(top @ JtJK, v, sigma)
