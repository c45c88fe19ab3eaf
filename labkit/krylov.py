"""Thick-restart block Lanczos for the top singular triplets of J, given only products with J and Jᵀ.

The iteration works on the symmetric matrix A = JᵀJ (n × n). It keeps an orthonormal basis K
(rows) of a subspace of X together with its images J K and A K, so that the Rayleigh–Ritz step
and the residual of every Ritz vector cost no products at all:

    J Kᵀ = Û Σ Ŵᵀ  (SVD, d × m)   →   v_i = Ŵ_iᵀ K,  σ_i,  u_i = Û_i,   A v_i = Ŵ_iᵀ (A K)
    residual_i = ‖A v_i − σ_i² v_i‖ / σ_i².

Each iteration extends K by a block: the residuals A v_i − σ_i² v_i of the leading Ritz vectors
that have not yet converged (the largest residuals first), made orthogonal to K. In exact
arithmetic these residuals span the same new directions as the next block of block Lanczos,
(I − K ᵀK) A Q_last, so this is block Lanczos; choosing only unconverged vectors shrinks the
block as the top vectors converge (deflation: no products are spent on directions that are
already done). When K would exceed ``max_dim`` rows it is cut back to the leading Ritz vectors
(a thick restart, as in Wu & Simon 2000): their images are linear combinations of the stored
ones, so the restart is free.

Precision: the products run in the caller's dtype (a float32 U-Net stays float32), everything
else in float64. After each block of products the block is made exactly orthonormal to K in
float64 by a linear map, and the same map is applied to its images (products are linear), so
basis and images stay consistent to the rounding of the products themselves. This is what lets
a float32 model reach residuals near 1e-7; float32 Rayleigh–Ritz stalls near 1e-6.

Explained in: book/part1-geometry/05_svd.ipynb
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

# Stop early when the residual, already below STALL_LEVEL · eps of the product dtype, has not
# halved in STALL_WINDOW iterations: it sits at the rounding level of the products.
STALL_LEVEL, STALL_WINDOW = 1e2, 8
Product = Callable[[Tensor], Tensor]  # rows (b, n) → rows (b, m), or (b, m) → (b, n)


def block_lanczos(J: Product, Jt: Product, start: Tensor, k: int, *, tol: float, max_iter: int, max_dim: int,
                  oversample: int, dtype: torch.dtype, progress: bool = False):
    """Top-k singular triplets of J from row-block products J(rows) and Jt(rows).

    start: (p, n) starting block (any full-rank rows); p is the largest block. tol: stop when
    the top-k residuals are all ≤ tol. max_iter: most blocks. max_dim: most basis rows kept
    (thick restart beyond). oversample: Ritz vectors beyond k kept converging, so that the
    block never shrinks below (unconverged among top k) + oversample. dtype: of the products.

    Returns (v (k, n), sigma (k,), u (k, m), residual (k,), products, iterations, stalled), the
    tensors in float64; ``products`` counts rows pushed through J (the same number went through
    Jᵀ); ``stalled`` is True if it stopped early because the residual had stopped falling at the
    rounding level of the products (about 1e-7 to 1e-6 for a float32 network): more iterations
    would not reach tol there.
    """
    n, p = start.shape[1], len(start)
    P = orthonormal_rows(start.double())
    K = JK = AK = None
    products, history, stalled = 0, [], False
    floor = STALL_LEVEL * torch.finfo(dtype).eps
    # A block smaller than k needs ⌈k / p⌉ blocks before there are k Ritz vectors.
    max_iter = max(max_iter, -(-k // p))
    bar = tqdm(range(1, max_iter + 1), desc="block Lanczos", disable=not progress)
    for iteration in bar:
        B = P.to(dtype)
        JB = J(B)
        AB = Jt(JB)
        products += len(B)
        B, JB, AB = B.double(), JB.double(), AB.double()
        if K is None:
            K, JK, AK = (B[:0], JB[:0], AB[:0])
        B, JB, AB = _orthonormalise_against(K, JK, AK, B, JB, AB)
        K, JK, AK = torch.cat([K, B]), torch.cat([JK, JB]), torch.cat([AK, AB])
        if len(K) < k:
            P = _complete(K, n)[:p] if len(K) + p >= n else orthonormal_rows(_project_out(K, AB))
            continue
        Y, sigma, U = _ritz(JK)
        V, AV = Y @ K, Y @ AK
        residual = relative_residual(AV, V, sigma)
        bar.set_postfix(residual=f"{residual[:k].max().item():.1e}", dim=len(K))
        history.append(residual[:k].max().item())
        stalled = len(history) > STALL_WINDOW and floor > history[-1] > 0.5 * history[-1 - STALL_WINDOW]
        if residual[:k].max() <= tol or len(K) >= n or iteration == max_iter or stalled:
            break
        # The next block: residuals of unconverged Ritz vectors, smaller as the top converge. Among
        # the leading k + oversample the worst go first: one already at the products' rounding
        # floor has a residual that is only noise, and spending the block on it stalls the rest.
        open_ = torch.nonzero(residual > tol).flatten()
        b = min(p, int((open_ < k).sum()) + oversample, len(open_))
        lead = open_[open_ < k + oversample]
        chosen = torch.cat([lead[torch.argsort(residual[lead], descending=True)], open_[open_ >= k + oversample]])[:b]
        R = AV[chosen] - sigma[chosen, None] ** 2 * V[chosen]
        if len(K) + b > max_dim:  # thick restart: keep the leading Ritz vectors and their images
            keep = max(k + oversample, max_dim - 2 * p)
            K, JK, AK = V[:keep], sigma[:keep, None] * U[:keep], AV[:keep]
        P = _complete(K, n)[:p] if len(K) + b >= n else orthonormal_rows(_project_out(K, R))
    bar.close()
    return V[:k], sigma[:k], U[:k], residual[:k], products, iteration, stalled


def _ritz(JK: Tensor):
    """SVD of J restricted to span(K): JK = Wh S Uh, i.e. (J Kᵀ) = Uhᵀ S Whᵀ. Returns the Ritz
    coefficients Y (rows: v_i = Y_i K), the σ_i and the u_i (rows)."""
    Wh, S, Uh = torch.linalg.svd(JK, full_matrices=False)
    return Wh.T, S, Uh


def relative_residual(AV: Tensor, V: Tensor, sigma: Tensor) -> Tensor:
    """The certificate of Ritz vectors v_i (rows of V): ‖A v_i − σ_i² v_i‖ / σ_i², A = JᵀJ, rows of AV
    the A v_i. σ_i² is floored at eps·σ_1², so a zero singular value gives a large (not infinite)
    residual. Returns (k,); zero exactly when v_i is a right singular vector with singular value σ_i."""
    floor = torch.finfo(sigma.dtype).eps * sigma[0] ** 2
    lam = (sigma**2).clamp_min(floor).clamp_min(torch.finfo(sigma.dtype).tiny)
    return torch.linalg.vector_norm(AV - sigma[:, None] ** 2 * V, dim=1) / lam


def _orthonormalise_against(K, JK, AK, B, JB, AB):
    """Make the rows of B orthonormal and orthogonal to K by a linear map, applied to JB and AB too.

    B is nearly so already (it was orthonormal before rounding to the product dtype). Block
    Gram–Schmidt twice ("twice is enough"), then B = Rᵀ Q by QR, so Q = R⁻ᵀ B.
    """
    for _ in range(2):
        C = B @ K.T
        B, JB, AB = B - C @ K, JB - C @ JK, AB - C @ AK
    Rt = torch.linalg.qr(B.T).R.T
    return tuple(torch.linalg.solve_triangular(Rt, M, upper=False) for M in (B, JB, AB))


def _project_out(K: Tensor, R: Tensor) -> Tensor:
    for _ in range(2):
        R = R - (R @ K.T) @ K
    return R


def orthonormal_rows(rows: Tensor) -> Tensor:
    """An orthonormal basis (as rows) of the span of the rows (b, n), by QR: (b, n) for b ≤ n."""
    return torch.linalg.qr(rows.T).Q.T


def _complete(K: Tensor, n: int) -> Tensor:
    """The rest of X: orthonormal rows spanning the complement of span(K)."""
    return torch.linalg.qr(K.T, mode="complete").Q.T[len(K):]
