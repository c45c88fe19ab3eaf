"""Scoring directions against measured factors: does an edit along v move one factor, and only it?

For a sample x_t at timestep t, directions v_1..v_k and strengths ±γ_1..±γ_S, every direction
is edited and sampling finished (``labkit.editing.edit``), and a read-out m (factors m_1..m_F,
each with a scale s_j: its standard deviation over the data) reads the images. The response of
factor j to direction i is the mean size of the change, in units of s_j:

    R_ij = mean over the 2S strengths γ of |Δ_j(γ)| / s_j,    Δ_j(γ) = m_j(edit(γ)) − m_j(edit(0)),

with Δ taken the short way round the circle for a circular factor (a hue: d(a, b) = ((a − b + ½)
mod 1) − ½, see labkit.readout). From R (k × F):

- disentanglement of direction i: max_j R_ij / Σ_j R_ij, the share of its response on its top
  factor (1: it moves one factor only; 1/F: it moves all equally);
- coverage of the basis: the number of distinct top factors argmax_j R_ij over the directions;
- side effect of direction i (when the read-out can re-render what it read, as in the world):
  the mean over strengths of e(edit(γ)) − e(edit(0)), where e(x) = √(mean_pixels (x − render(read(x)))²)
  is the re-render error: how far the image is from any scene of the world. Positive: the edit
  leaves the world.

The read-out is pluggable (``ReadOut``): ``world_readout()`` reads the scenes of labkit.worlds
with the trained CNN of labkit.readout; ``digit_readout()`` uses the digit measures of
labkit.measures on MNIST (no re-render there, so no side effects).

Explained in: book/part2-diffusion/08_known_factors.ipynb (and 07_semantic.ipynb for MNIST)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from labkit.checks import check_choice, check_float, show
from labkit.diffusion import Sample
from labkit.editing import EditMethod, edit
from labkit.hspace import h_shape, h_space_edit
from labkit.models import DiffusionModel


@dataclass(frozen=True)
class ReadOut:
    """What the scorer measures: read(images (N, C, H, W)) → {name: (N,)}, and each factor's scale.

    scales: {name: s_j > 0} of the factors that enter the response (the order of its columns);
    read may return more (e.g. the world's categorical shape, which only re-rendering uses).
    circular: the names among them measured on a circle of circumference 1 (hues).
    rerender: factors → images (N, C, H, W), or None when the read-out cannot draw what it read.
    """

    read: Callable[[Tensor], dict[str, Tensor]]
    scales: dict[str, float]
    circular: frozenset[str] = frozenset()
    rerender: Callable[[dict[str, Tensor]], Tensor] | None = None

    def __post_init__(self):
        bad = {k: v for k, v in self.scales.items() if not (isinstance(v, float | int) and math.isfinite(v) and v > 0)}
        if not self.scales or bad:
            raise ValueError(f"scales must map at least one factor name to a positive finite number, got {bad or {}}")
        unknown = set(self.circular) - set(self.scales)
        if unknown:
            raise ValueError(f"circular names {sorted(unknown)} are not among the scales' names {list(self.scales)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.scales)


def world_readout(readout=None) -> ReadOut:
    """The world's read-out: the trained CNN (labkit.readout; default: the shipped one) on scenes.

    Scales: each continuous factor's standard deviation under labkit.worlds.sample_factors
    ((high − low)/√12; for a hue, 1/√12, the root-mean-square circular distance of a uniform hue).
    The categorical shape is read (for re-rendering) but not in the response.
    """
    from labkit import readout as readout_module
    from labkit import worlds

    model = readout if readout is not None else readout_module.load_readout()
    return ReadOut(
        read=lambda images: readout_module.read_factors(images, model),
        scales={name: worlds.FACTORS[name].std for name in worlds.CONTINUOUS},
        circular=frozenset(name for name in worlds.CONTINUOUS if worlds.FACTORS[name].kind == "circular"),
        rerender=worlds.render,
    )


def digit_readout() -> ReadOut:
    """MNIST's read-out: the digit measures (labkit.measures), scaled by their std over the 5,000 training digits."""
    from labkit.data import load_digits
    from labkit.measures import digit_measures

    images, _ = load_digits()
    stds = {name: float(v[torch.isfinite(v)].std()) for name, v in digit_measures(images).items()}
    return ReadOut(read=digit_measures, scales=stds)


def rerender_error(images: Tensor, readout: ReadOut) -> Tensor:
    """e(x) = √(mean over pixels of (x − render(read(x)))²), (N,): how far each image is from the read-out's world."""
    if readout.rerender is None:
        raise ValueError("this read-out cannot re-render what it reads (rerender is None), "
                         "so it has no re-render error")
    redrawn = readout.rerender(readout.read(images)).to(images)
    return ((images - redrawn) ** 2).flatten(1).mean(1).sqrt()


def factor_changes(readout: ReadOut, read: dict[str, Tensor], reference: dict[str, Tensor]) -> Tensor:
    """(N, F) changes read − reference in units of each factor's scale (circular ones the short way round)."""
    columns = []
    for name, scale in readout.scales.items():
        if name not in read:
            raise ValueError(f"the read-out returned no {name!r}; it returned {sorted(read)}")
        delta = read[name].double() - reference[name].double()
        if name in readout.circular:
            delta = torch.remainder(delta + 0.5, 1.0) - 0.5
        columns.append(delta / scale)
    return torch.stack(columns, dim=1)


@dataclass(frozen=True)
class DirectionScores:
    """The scores of k directions at one sample.

    factors: the F factor names (columns);  strengths: (S',) the nonzero strengths used;
    changes: (k, S', F) signed changes Δ_j(γ)/s_j;  response: (k, F) R_ij = mean_γ |Δ_j(γ)|/s_j;
    side_effect: (k,) mean_γ e(edit(γ)) − e(edit(0)), or None without a re-render;
    images: (k, S'+1, C, H, W) the unedited image (index 0) then the edits, for strips.
    """

    factors: tuple[str, ...]
    strengths: Tensor
    changes: Tensor
    response: Tensor
    side_effect: Tensor | None
    images: Tensor

    @property
    def top_factor(self) -> list[str]:
        return [self.factors[j] for j in self.response.argmax(1).tolist()]

    @property
    def disentanglement(self) -> Tensor:
        return disentanglement(self.response)

    @property
    def coverage(self) -> int:
        return coverage(self.response)


def disentanglement(response: Tensor) -> Tensor:
    """Per direction (row of the (k, F) response): max_j R_ij / Σ_j R_ij; NaN for a row of zeros."""
    total = response.sum(1)
    return torch.where(total > 0, response.amax(1) / total, torch.full_like(total, float("nan")))


def coverage(response: Tensor) -> int:
    """The number of distinct factors that are the top factor of some direction (rows with any response)."""
    moving = response.sum(1) > 0
    return len(set(response[moving].argmax(1).tolist()))


def score_directions(
    model: DiffusionModel,
    sample: Sample,
    directions: Tensor,
    strengths: Tensor | list[float],
    readout: ReadOut,
    method: EditMethod | Literal["h"] = "guidance",
    boost_below: float | None = 0.2,
    **edit_options,
) -> DirectionScores:
    """Edit the sample along each direction at ±strengths, finish sampling, read and score (see module doc).

    directions: (k, C, H, W) or (k, 1, C, H, W), each edited on its own; strengths: (S,) positive
    numbers γ, used as −γ and +γ (a symmetric budget); method, boost_below and edit_options go to
    ``labkit.editing.edit``. method="h" edits in H instead (``labkit.hspace.h_space_edit``), with
    directions (k, c_h, H_h, W_h). Costs k edits of 2S + 1 images each.
    """
    if not isinstance(readout, ReadOut):
        raise TypeError(f"readout must be a labkit.scoring.ReadOut (world_readout(), digit_readout()), got "
                        f"{type(readout).__name__}")
    check_choice("method", method, ("guidance", "naive", "h"))
    shape = h_shape(model) if method == "h" else model.sample_shape
    where = "(directions in H, method='h')" if method == "h" else "(directions in X)"
    directions = torch.as_tensor(directions)
    if directions.dim() == len(shape) + 2:
        directions = directions.squeeze(1)
    if directions.dim() != len(shape) + 1 or tuple(directions.shape[1:]) != shape:
        raise ValueError(f"directions must have shape (k, {', '.join(map(str, shape))}) {where}, "
                         f"got {tuple(directions.shape)}")
    gamma = torch.as_tensor(strengths, dtype=torch.float64).reshape(-1)
    if len(gamma) == 0 or not (torch.isfinite(gamma).all() and (gamma > 0).all()):
        raise ValueError(f"strengths must be positive finite numbers (each used as −γ and +γ), got {gamma.tolist()}")
    signed = torch.cat([-gamma.flip(0), gamma])  # −γ_S..−γ_1, γ_1..γ_S
    used = torch.cat([torch.zeros(1, dtype=signed.dtype), signed])

    changes, side, images = [], [], []
    for v in directions:
        edited = _edit(model, sample, v, used.tolist(), method, boost_below, **edit_options)
        read = readout.read(edited)
        base = {name: value[:1].expand(len(value)) for name, value in read.items()}
        changes.append(factor_changes(readout, {k: v[1:] for k, v in read.items()},
                                      {k: v[1:] for k, v in base.items()}))
        if readout.rerender is not None:
            error = rerender_error(edited, readout)
            side.append((error[1:] - error[0]).mean())
        images.append(edited.detach().cpu())
    changes_t = torch.stack(changes)
    return DirectionScores(
        factors=readout.names,
        strengths=signed,
        changes=changes_t,
        response=changes_t.abs().mean(1),
        side_effect=torch.stack(side) if side else None,
        images=torch.stack(images),
    )


def _edit(model: DiffusionModel, sample: Sample, v: Tensor, strengths: list[float], method: str,
          boost_below: float | None, **edit_options) -> Tensor:
    if method == "h":
        return h_space_edit(model, sample, v, strengths, boost_below=boost_below, **edit_options)
    return edit(model, sample, v, strengths, method=method, boost_below=boost_below, **edit_options)


# A probe strength per edit method, in that method's own units, small enough to stay near linear
# for unit directions (x_t has norm ≈ √(C·H·W); h's entries are of order 1).
PROBE_STRENGTHS = {"guidance": 0.5, "naive": 2.0, "h": 2.0}


def image_change(edited: Tensor, unedited: Tensor) -> Tensor:
    """(S,) root-mean-square pixel change √(mean_pixels (x_s − x₀)²) of images (S, C, H, W) from x₀ (1, C, H, W)."""
    if not (isinstance(edited, Tensor) and isinstance(unedited, Tensor)) or edited.shape[1:] != unedited.shape[1:] \
            or unedited.shape[0] != 1:
        raise ValueError(f"image_change needs edited (S, C, H, W) and unedited (1, C, H, W) images of one size, got "
                         f"{show(edited)} and {show(unedited)}")
    return ((edited - unedited) ** 2).flatten(1).mean(1).sqrt()


def strength_for_change(
    model: DiffusionModel,
    sample: Sample,
    direction: Tensor,
    change: float,
    method: EditMethod | Literal["h"] = "guidance",
    boost_below: float | None = 0.2,
) -> float:
    """The strength γ at which an edit along ``direction`` changes the finished image by ``change``, to first order.

    One probe edit at p = PROBE_STRENGTHS[method] gives the change c(p) (``image_change``, RMS
    pixel); then γ = p · change / c(p). Edits are not linear in γ, so the change actually made at
    γ differs somewhat: measure it (``image_change``) where it matters. This is the common edit
    budget of the method comparison (book chapter 08_known_factors): every method's edits change
    the image by the same amount. Raises ValueError when the probe changes nothing.
    """
    check_choice("method", method, ("guidance", "naive", "h"))
    check_float("change", change, 0.0, 2.0, low_open=True, hint="an RMS pixel change of images in [-1, 1], e.g. 0.1")
    probe = PROBE_STRENGTHS[method]
    images = _edit(model, sample, direction, [0.0, probe], method, boost_below)
    measured = image_change(images[1:], images[:1]).item()
    if not measured > 0:
        raise ValueError(f"an edit along this direction at strength {probe} ({method}) does not change the image, "
                         "so no strength reaches the change asked for; pick another direction")
    return probe * change / measured
