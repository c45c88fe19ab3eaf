"""Edits of one size: scale each edit until it changes the finished image by a given budget.

Comparing directions by what their edits do is only fair at equal size. The size of an edit is
the change it makes to the finished image, the RMS pixel difference

    c(γ) = √(mean (edit(γ) − edit(0))²)            (images in [-1, 1])

``match_budget`` searches, per direction, sign and budget b, for the strength γ with
|c(γ)/b − 1| ≤ 10%. c grows with |γ| but not in proportion, and often lopsidedly (a shape grows
more easily than it shrinks), so each direction and sign keeps its own history of tries and the
next try interpolates log c against log |γ| between the tries on either side of b. All the
pending edits of a sample go through the U-Net as one batch per round. An edit that cannot be
matched in ``max_rounds`` tries (the image can jump: a shape flips) is kept and marked unmatched;
``labkit.scoring`` leaves it out of every mean and counts it.

Explained in: book/part2-diffusion/08_known_factors.ipynb ("Edits of one size")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from labkit.checks import check_choice, check_float, check_int, check_tensor, show
from labkit.diffusion import QUALITY_BOOST, Sample, check_sample
from labkit.editing import check_guidance_options, finish, naive_edit, x_space_guidance
from labkit.hspace import h_shape, h_space_edit
from labkit.models import DiffusionModel

EditKind = Literal["guidance", "naive", "h"]
TOLERANCE = 0.1  # an edit is matched when its image change is within ±10% of the budget
# A first strength per edit kind, in that kind's own units, for unit directions: the budget
# search starts here (x_t has norm ≈ √(C·H·W); h's entries are of order 1).
PROBE_STRENGTHS = {"guidance": 0.5, "naive": 2.0, "h": 2.0}



def image_change(edited: Tensor, unedited: Tensor) -> Tensor:
    """(S,) root-mean-square pixel change √(mean_pixels (x_s − x₀)²) of images (S, C, H, W) from x₀ (1, C, H, W)."""
    hint = "image_change needs edited (S, C, H, W) and unedited (1, C, H, W) images of one size"
    unedited = check_tensor("unedited", unedited, shape=(1, None, None, None), hint=hint)
    edited = check_tensor("edited", edited, shape=(None, *unedited.shape[1:]), hint=hint)
    return _rms_change(edited, unedited)


def _rms_change(edited: Tensor, unedited: Tensor) -> Tensor:
    """image_change unchecked: inside the search, an edit that blew up must come back as NaN (unmatched)."""
    return ((edited - unedited) ** 2).flatten(1).mean(1).sqrt()


@dataclass(frozen=True)
class BudgetedEdits:
    """Edits of k directions, each matched to every budget with both signs: E = k · 2 · B edits.

    direction, sign, budget: (E,) which direction (0..k−1), ±1, and the target change b;
    strength: (E,) the final signed γ;  change: (E,) the RMS image change it made;  matched: (E,)
    |change/b − 1| ≤ tolerance;  rounds: (E,) edits tried;  moved: (E,) ‖x_t' − x_t‖, how far the
    latent moved (NaN for an edit in H);  images: (E, C, H, W) the finished edits;  unedited: (1, C, H, W).
    """

    direction: Tensor
    sign: Tensor
    budget: Tensor
    strength: Tensor
    change: Tensor
    matched: Tensor
    rounds: Tensor
    moved: Tensor
    images: Tensor
    unedited: Tensor


def _edit_batch(model: DiffusionModel, sample: Sample, directions: Tensor, gamma: Tensor, how: str,
                chunk: int, **options) -> tuple[Tensor, Tensor]:
    """Finished images (n, C, H, W) and latent distances (n,) of edits along directions (n, ...) at γ (n,)."""
    images, moved = [], []
    for d, g in zip(directions.split(chunk), gamma.split(chunk)):
        if how == "h":
            images.append(h_space_edit(model, sample, d, g, boost_below=QUALITY_BOOST))
            moved.append(torch.full((len(g),), math.nan, dtype=torch.float64))
            continue
        if how == "guidance":
            x = x_space_guidance(model, sample.x_t, sample.t, d, g, **options)
        else:
            x = naive_edit(model, sample.x_t, sample.t, d, g, **options)
        images.append(finish(model, sample, x))
        moved.append((x - sample.x_t).flatten(1).norm(dim=1).double().cpu())
    return torch.cat(images), torch.cat(moved)


def _next_strength(points: list[tuple[float, float]], b: float) -> float:
    """The next |γ| to try for an image change b, from the (|γ|, c) tried so far along one direction and sign.

    Between the strongest try below b and the weakest above it: interpolation of log c against
    log |γ| (the geometric mean where c does not grow with |γ| there). Otherwise: extrapolation from the two
    tries nearest b (one try: c ∝ |γ|), the slope kept in [0.25, 4] and the step within ×10.
    """
    seen = [(g, c) for g, c in points if c > 0 and math.isfinite(c)]
    if not seen:  # nothing moved the image yet
        return max(g for g, _ in points) * 10
    below = [p for p in seen if p[1] < b]
    above = [p for p in seen if p[1] >= b]
    if below and above:
        # the bracket: the strongest try that fell short and the weakest that reached b
        (g0, c0), (g1, c1) = max(below), min(above)
        if g0 >= g1:  # c is not increasing here: halve the bracket in log |γ|
            return math.sqrt(g0 * g1)
        slope = math.log(c1 / c0) / math.log(g1 / g0)
        guess = g0 * (b / c0) ** (1 / slope)
        return guess if g0 < guess < g1 else math.sqrt(g0 * g1)
    near = sorted(seen, key=lambda p: abs(math.log(p[1] / b)))[:2]
    (g0, c0) = near[0]
    slope = 1.0
    if len(near) == 2 and near[1][0] != g0 and near[1][1] != c0:
        slope = min(max(math.log(near[1][1] / c0) / math.log(near[1][0] / g0), 0.25), 4.0)
    return g0 * min(max((b / c0) ** (1 / slope), 0.1), 10.0)


def match_budget(
    model: DiffusionModel,
    sample: Sample,
    directions: Tensor,
    budgets: list[float],
    how: EditKind = "guidance",
    tolerance: float = TOLERANCE,
    max_rounds: int = 5,
    chunk: int = 128,
    **options,
) -> BudgetedEdits:
    """Scale every edit along ``directions`` (k, ...) until it changes the finished image by each budget.

    One probe edit per direction and sign, at |γ| = p (p = PROBE_STRENGTHS[how]), starts that
    direction and sign's history of (|γ|, c); every edit tried along it joins the history, whatever
    budget it aimed at. Each round, every unmatched edit tries the next strength from that history
    (``_next_strength``: log–log interpolation between the tries on either side of b, else
    extrapolation) until |c/b − 1| ≤ tolerance or ``max_rounds`` edits were tried. All the
    round's edits go through the U-Net as one batch (in chunks of ``chunk``).
    Directions are in X (k, C, H, W) for "guidance" and "naive", in H (k, c_h, H_h, W_h) for "h".
    ``options`` go to the edit (delta, n_iter of x-space guidance; the other kinds take none).
    """
    check_sample(model, sample)
    check_choice("how", how, ("guidance", "naive", "h"))
    if how == "guidance":
        check_guidance_options(**options)
    elif options:
        raise ValueError(f"how={how!r} edits take no options, got {sorted(options)}; delta and n_iter are x-space "
                         "guidance's (how='guidance')")
    shape = h_shape(model) if how == "h" else model.sample_shape
    directions = check_tensor("directions", directions, shape=(None, *shape),
                              hint="k directions, (k, C, H, W) in X or (k, c_h, H_h, W_h) in H for how='h'")
    norms = directions.flatten(1).norm(dim=1)
    if not bool((norms > 1e-6).all()):
        raise ValueError(f"every direction needs a length (norms {norms.tolist()}); normalise them to unit length")
    directions = directions / norms.view(-1, *([1] * len(shape)))  # unit length: γ is the step's size
    if not isinstance(budgets, list | tuple) or not budgets:
        raise ValueError(f"budgets must be a non-empty list of RMS image changes, got {show(budgets)}")
    for b in budgets:
        check_float("budgets", b, 0.0, 1.0, low_open=True, hint="an RMS change of images in [-1, 1], e.g. 0.05")
    check_float("tolerance", tolerance, 0.0, 1.0, low_open=True, hint="a relative tolerance, e.g. 0.1 for ±10%")
    check_int("max_rounds", max_rounds, 1, 50)
    check_int("chunk", chunk, 1, 100_000)
    if how == "h" and sample.t <= QUALITY_BOOST * model.num_train_timesteps:
        raise ValueError(f"sample.t={sample.t} is at or below {QUALITY_BOOST}·T: no step is left to edit h in; "
                         "score edits in H at a larger t")
    k, probe = len(directions), PROBE_STRENGTHS[how]
    unedited = finish(model, sample, sample.x_t)
    # one probe per direction and sign: the response is often lopsided (a shape grows more easily
    # than it shrinks), so each sign keeps its own history of (|γ|, c), shared by all its budgets
    probe_g = torch.tensor([probe, -probe], dtype=torch.float64).repeat(k)
    probes, _ = _edit_batch(model, sample, directions.repeat_interleave(2, 0), probe_g.to(model.dtype), how,
                            chunk, **options)
    c_probe = _rms_change(probes, unedited).double().cpu().reshape(k, 2)
    history = {(i, s): [(probe, float(c_probe[i, j]))] for i in range(k) for j, s in enumerate((1, -1))}

    index = torch.tensor([(i, s, b) for i in range(k) for s in (-1, 1) for b in range(len(budgets))])
    direction, sign = index[:, 0], index[:, 1].double()
    budget = torch.tensor(budgets, dtype=torch.float64)[index[:, 2]]
    E = len(index)
    strength = torch.full((E,), math.nan, dtype=torch.float64)
    change, moved = torch.full((E,), math.nan, dtype=torch.float64), torch.full((E,), math.nan, dtype=torch.float64)
    rounds, matched = torch.zeros(E, dtype=torch.long), torch.zeros(E, dtype=torch.bool)
    images = unedited.expand(E, *unedited.shape[1:]).clone()
    for _ in range(max_rounds):
        todo = (~matched).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        g = torch.tensor([_next_strength(history[(int(direction[e]), int(sign[e]))], float(budget[e]))
                          for e in todo], dtype=torch.float64)
        out, dist = _edit_batch(model, sample, directions[direction[todo]], (sign[todo] * g).to(model.dtype), how,
                                chunk, **options)
        c = _rms_change(out, unedited).double().cpu()
        images[todo], change[todo], moved[todo], strength[todo] = out.to(images.dtype), c, dist, sign[todo] * g
        rounds[todo] += 1
        matched[todo] = (c / budget[todo] - 1).abs() <= tolerance
        for e, g_e, c_e in zip(todo.tolist(), g.tolist(), c.tolist()):
            history[(int(direction[e]), int(sign[e]))].append((g_e, c_e))
    return BudgetedEdits(direction=direction, sign=sign, budget=budget, strength=strength, change=change,
                         matched=matched, rounds=rounds, moved=moved, images=images, unedited=unedited)


# --------------------------------------------------------------------------------------------
# Scores of the edits
# --------------------------------------------------------------------------------------------
