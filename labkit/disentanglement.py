"""Metrics of a response matrix: how many factors each direction moves, and by how many directions each factor is moved.

The response R (k directions × F factors, finite, R_ij ≥ 0) holds how much editing along direction
i moves factor j (``labkit.scoring`` measures it). Every metric here is a function of R alone and
is unchanged when R is multiplied by a positive constant:

- ``disentanglement``: max_j R_ij / Σ_j R_ij, the share of direction i's response on its top factor;
- ``top_two_gap``: (largest − second largest) / Σ_j R_ij per direction, a MIG-style gap;
- ``coverage``: the number of distinct top factors over the directions that move anything;
- ``dci``: disentanglement D and completeness C of Eastwood & Williams (ICLR 2018), R as importance.

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from labkit.checks import check_tensor, show


def _response(response: Tensor | np.ndarray) -> Tensor:
    """``response`` checked (2-D, non-empty, real, finite, ≥ 0) and returned as a float64 tensor."""
    if isinstance(response, np.ndarray):
        response = torch.from_numpy(response)
    response = check_tensor("response", response, ndim=2, floating=False,
                            hint="a (k directions, F factors) response matrix")
    if response.is_complex() or response.numel() == 0:
        raise ValueError(f"response must be a non-empty real (k, F) matrix, got {show(response)}; "
                         "give at least one direction and one factor")
    response = response.detach().to(torch.float64)
    if bool((response < 0).any()):
        raise ValueError(f"response has negative entries (min {response.min().item():g}): R_ij is a size of change "
                         "|Δ_j| / s_j, never negative; take absolute values before scoring")
    return response


def _share(response: Tensor, top: Tensor) -> Tensor:
    """top_i / Σ_j R_ij, NaN where row i is all zeros (a direction that moves nothing has no share)."""
    total = response.sum(1)
    return torch.where(total > 0, top / total, torch.full_like(total, math.nan))


def disentanglement(response: Tensor | np.ndarray) -> Tensor:
    """Per direction i, max_j R_ij / Σ_j R_ij: the share of its response on its top factor.

    1: it moves one factor only; 1/F: it moves all F equally. Returns a float64 tensor (k,), NaN for
    a direction whose row is all zeros.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    response = _response(response)
    return _share(response, response.amax(1))


def top_two_gap(response: Tensor | np.ndarray) -> Tensor:
    """Per direction i, (R_i(1) − R_i(2)) / Σ_j R_ij: its largest response minus its second largest, as a share.

    The mutual information gap of Chen et al. (NeurIPS 2018) adapted to a response matrix and taken
    per direction (the row-wise form, like MIG-sup of Li et al., ICLR 2020): 1 when the direction
    moves one factor, 0 when its top two factors tie. With F = 1 the second largest is 0.
    Returns a float64 tensor (k,), NaN for a row of zeros.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    response = _response(response)
    top = response.topk(min(2, response.shape[1]), dim=1).values
    second = top[:, 1] if top.shape[1] == 2 else torch.zeros_like(top[:, 0])
    return _share(response, top[:, 0] - second)


def coverage(response: Tensor | np.ndarray) -> int:
    """The number of distinct top factors argmax_j R_ij over the directions with any response (ties: first factor).

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    response = _response(response)
    moving = response.sum(1) > 0
    return len(set(response[moving].argmax(1).tolist()))


def _one_minus_entropy(p: Tensor, dim: int) -> Tensor:
    """1 − H_n(p) along ``dim`` (entropy in log base n, n = p.shape[dim], 0 log 0 = 0).

    With n = 1 there is one outcome, so the entropy is 0 and the score 1 (log base 1 is undefined,
    but nothing is uncertain)."""
    n = p.shape[dim]
    if n == 1:
        return torch.ones_like(p.sum(dim))
    return 1 + torch.special.xlogy(p, p).sum(dim) / math.log(n)


def dci(response: Tensor | np.ndarray) -> tuple[float, float]:
    """DCI disentanglement D and completeness C (Eastwood & Williams, ICLR 2018), R as the importance matrix.

    Codes are the k directions (rows), factors the F columns. With the total T = Σ_ij R_ij:

        p_ij = R_ij / Σ_j R_ij,   D_i = 1 − H_F(p_i·),   D = Σ_i ρ_i D_i,   ρ_i = Σ_j R_ij / T
        p̃_ij = R_ij / Σ_i R_ij,   C_j = 1 − H_k(p̃_·j),   C = Σ_j ρ̃_j C_j,   ρ̃_j = Σ_i R_ij / T

    H_n is the entropy in log base n (so each D_i, C_j lies in [0, 1]); for n = 1 it is 0, so with a
    single direction every factor it moves has C_j = 1. The paper weights D by each code's relative
    importance ρ_i and defines completeness per factor, C_j; we aggregate C with the mirror weights
    ρ̃_j (each factor's share of the total importance), as disentanglement_lib (Locatello et al.,
    ICML 2019) does, so that C, like D, is not pulled around by factors that no direction moves:
    a zero row or column has weight 0 and contributes nothing. D = C = 1 exactly when R is a
    scaled permutation (each direction moves one factor, each factor by one direction).
    Returns (D, C) as floats; (nan, nan) when R is all zeros.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    response = _response(response)
    total = response.sum()
    if total == 0:
        return math.nan, math.nan
    by_direction, by_factor = response.sum(1), response.sum(0)
    # a zero row (column) has p = 0/0; it is replaced by zeros, and its weight is 0 anyway
    p = torch.nan_to_num(response / by_direction[:, None])
    p_tilde = torch.nan_to_num(response / by_factor[None, :])
    d = (by_direction / total * _one_minus_entropy(p, 1)).sum()
    c = (by_factor / total * _one_minus_entropy(p_tilde, 0)).sum()
    return float(d), float(c)
