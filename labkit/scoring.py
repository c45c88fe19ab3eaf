"""Scoring directions against measured factors: does an edit along v move one factor, and only it?

An **instrument** (``Instrument``) reads named factors m_1..m_F off images, each with a scale s_j.
For a sample x_t at timestep t and a direction v, an edit (``labkit.editing.edit``, or an edit in
H, ``labkit.hspace.h_space_edit``) at strength γ is finished by DDIM, and its change to factor j is

    Δ_j(γ) = m_j(edit(γ)) − m_j(edit(0))                       (a continuous factor)
    Δ_j(γ) = d(m_j(edit(γ)), m_j(edit(0)))                     (a hue: the short way round the circle)
    Δ_j(γ) = 1 if the category changed, else 0                 (a categorical factor: a flip)

in units of s_j. The scale makes the kinds comparable: s_j is the **mean difference** of factor j
between two independent scenes of the world, E|m_j(X) − m_j(Y)| (Gini's mean difference; for a hue
with the circular distance; for a category, the probability that two scenes differ). So |Δ_j| = 1
means "as different as two random scenes" for every kind of factor. (A circular standard deviation
would not do as the hues' scale: for a uniform hue it is infinite.)

**Edits of one size** come from ``labkit.budget.match_budget``: every edit along every direction
changes the finished image by the same RMS amount, within ±10%, or is marked unmatched.

The **response** of factor j to direction i is R_ij = mean over its matched edits of |Δ_j|: a
(k × F) matrix that ``labkit.disentanglement`` turns into disentanglement, DCI and coverage. Per
edit the scorer also records the side effect (the change in re-render error e(x) = RMS(x −
render(read(x))): > 0 leaves the world), the on-manifold share of the image change (the part in
the world's tangent space, ``labkit.worlds.tangent_basis``), the read-out's self-consistency on
the edited image, and how far the latent moved.

Explained in: book/part2-diffusion/08_known_factors.ipynb (and 07_semantic.ipynb for MNIST)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import Tensor

from labkit.budget import BudgetedEdits, EditKind, match_budget
from labkit.checks import check_callable, check_float, check_tensor, show
from labkit.diffusion import Sample
from labkit.disentanglement import coverage, dci, disentanglement, top_two_gap
from labkit.models import DiffusionModel


@dataclass(frozen=True)
class Instrument:
    """What the scorer measures: read(images (N, C, H, W)) → {name: (N,)}, and each factor's scale.

    scales: {name: s_j > 0}, the factors that enter the response, in order (see the module doc);
    circular: the names measured on a circle of circumference 1 (hues); categorical: the names
    whose change is a flip (0 or 1); rerender: factors → images, or None when the instrument cannot
    draw what it read; tangent: factors → (N, D, r) orthonormal bases of the world's tangent space
    at render(factors), or None.
    """

    read: Callable[[Tensor], dict[str, Tensor]]
    scales: dict[str, float]
    circular: frozenset[str] = frozenset()
    categorical: frozenset[str] = frozenset()
    rerender: Callable[[dict[str, Tensor]], Tensor] | None = None
    tangent: Callable[[dict[str, Tensor]], Tensor] | None = None

    def __post_init__(self):
        check_callable("read", self.read, hint="images (N, C, H, W) → {name: (N,) tensor}")
        for name in ("rerender", "tangent"):
            if getattr(self, name) is not None:
                check_callable(name, getattr(self, name), hint="factors {name: (N,)} → tensor, or None")
        if not isinstance(self.scales, dict):
            raise TypeError(f"scales must be a dict {{factor name: scale}}, got {type(self.scales).__name__} "
                            f"{show(self.scales)}")
        bad = {k: v for k, v in self.scales.items()
               if not (isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) and v > 0)}
        if not self.scales or bad:
            raise ValueError(f"scales must map at least one factor name to a positive finite number, got {bad or {}}")
        for kind in ("circular", "categorical"):
            names = getattr(self, kind)
            if isinstance(names, str) or not isinstance(names, Collection):
                raise TypeError(f"{kind} must be a set of factor names, e.g. frozenset({{'hue'}}), got "
                                f"{type(names).__name__} {show(names)} (a string would be read letter by letter)")
            unknown = set(names) - set(self.scales)
            if unknown:
                raise ValueError(f"{kind} names {sorted(unknown)} are not among the scales' names {list(self.scales)}")
        both = set(self.circular) & set(self.categorical)
        if both:
            raise ValueError(f"{sorted(both)} are both circular and categorical; a factor is one kind: remove it from "
                             "one of the two")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.scales)


def mean_difference(values: Tensor) -> float:
    """Gini's mean difference E|X − Y| of a sample (n,), exactly, from the sorted values: O(n log n)."""
    x = check_tensor("values", values, ndim=1).double().sort().values
    n = len(x)
    if n < 2:
        raise ValueError(f"values must hold at least 2 numbers to have a mean difference, got {n}")
    weights = 2 * torch.arange(1, n + 1, dtype=x.dtype) - n - 1
    return float(2 * (weights * x).sum() / (n * (n - 1)))


def world_instrument(network=None) -> Instrument:
    """The world's instrument: the read-out CNN of labkit.readout (``network``; default: the shipped one).

    Scales, exact under labkit.worlds.sample_factors (uniform factors): a continuous factor on
    [low, high] has mean difference (high − low)/3; a uniform hue, mean circular distance 1/4; the
    shape, with three equally likely values, differs between two scenes with probability 2/3.
    """
    from labkit import readout as readout_module
    from labkit import worlds

    if network is not None and not isinstance(network, readout_module.FactorReadout):
        raise TypeError(f"network must be a labkit.readout.FactorReadout (load_readout()) or None for the shipped "
                        f"one, got {type(network).__name__} {show(network)}")
    model = network if network is not None else readout_module.load_readout()
    scales = {}
    for name, f in worlds.FACTORS.items():
        scales[name] = {"circular": 0.25, "continuous": (f.high - f.low) / 3,
                        "categorical": 1 - 1 / len(f.values) if f.values else math.nan}[f.kind]
    return Instrument(
        read=lambda images: readout_module.read_factors(images, model),
        scales=scales,
        circular=frozenset(n for n, f in worlds.FACTORS.items() if f.kind == "circular"),
        categorical=frozenset(n for n, f in worlds.FACTORS.items() if f.kind == "categorical"),
        rerender=worlds.render,
        tangent=worlds.tangent_basis,
    )


def digit_instrument() -> Instrument:
    """MNIST's instrument: the digit measures (labkit.measures), each scaled by its mean difference
    over the 5,000 training digits."""
    from labkit.data import load_digits
    from labkit.measures import digit_measures

    images, _ = load_digits()
    scales = {name: mean_difference(v[torch.isfinite(v)].double()) for name, v in digit_measures(images).items()}
    return Instrument(read=digit_measures, scales=scales)


def _check_instrument(instrument: object) -> Instrument:
    if not isinstance(instrument, Instrument):
        raise TypeError(f"instrument must be a labkit.scoring.Instrument (world_instrument(), digit_instrument()), "
                        f"got {type(instrument).__name__} {show(instrument)}")
    return instrument


def _check_images(name: str, images: object) -> Tensor:
    images = check_tensor(name, images, ndim=4, hint="images (N, C, H, W) in [-1, 1]")
    if images.abs().max() > 4:  # far outside [-1, 1]: uint8 pixels, or an edit that blew up
        raise ValueError(f"{name} must be images in [-1, 1] (a finished sample), got values up to "
                         f"{images.abs().max().item():.3g}; rescale uint8 images (x / 127.5 − 1), or check the "
                         "edit's strength")
    return images


def rerender_error(images: Tensor, instrument: Instrument) -> Tensor:
    """e(x) = √(mean over pixels of (x − render(read(x)))²), (N,): how far each image is from the world."""
    _check_instrument(instrument)
    images = _check_images("images", images)
    if instrument.rerender is None:
        raise ValueError("this instrument cannot re-render what it reads (rerender is None), "
                         "so it has no re-render error")
    redrawn = instrument.rerender(instrument.read(images)).to(images)
    return ((images - redrawn) ** 2).flatten(1).mean(1).sqrt()


def factor_changes(instrument: Instrument, read: dict[str, Tensor], reference: dict[str, Tensor]) -> Tensor:
    """(N, F) changes read − reference in units of each factor's scale: the short way round for a hue,
    a flip (0 or 1) for a category. NaN reads are refused (a read-out that failed must not score).
    read, reference: {name: (N,)}, every factor of the instrument, all of one length N."""
    _check_instrument(instrument)
    lengths = {}
    for which, values in (("read", read), ("reference", reference)):
        if not isinstance(values, dict):
            raise TypeError(f"{which} must be a dict {{factor name: (N,) tensor}}, as instrument.read returns, got "
                            f"{type(values).__name__} {show(values)}")
        for name in instrument.names:
            if name not in values:
                raise ValueError(f"{which} has no {name!r}: it holds {sorted(values)}, the instrument measures "
                                 f"{list(instrument.names)}; pass what the same instrument read")
            value = check_tensor(f"{which}[{name!r}]", values[name], ndim=1, floating=False, finite=False,
                                 hint="one value per image, (N,)")
            lengths[f"{which}[{name!r}]"] = len(value)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"read and reference must hold one value per image for the same N images, got lengths "
                         f"{show(lengths)}; expand a reference of one image with .expand(N)")
    columns = []
    for name, scale in instrument.scales.items():
        a, b = read[name].double(), reference[name].double()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise ValueError(f"the instrument read NaN or infinite values of {name!r}: the images are outside "
                             "what it can read; check them (image_grid) before scoring")
        if name in instrument.categorical:
            delta = (a != b).double()
        elif name in instrument.circular:
            delta = torch.remainder(a - b + 0.5, 1.0) - 0.5
        else:
            delta = a - b
        columns.append(delta / scale)
    return torch.stack(columns, dim=1)


@dataclass(frozen=True)
class EditScores:
    """What the instrument reads off budgeted edits (see the module doc; E edits, k directions, F factors).

    changes: (E, F) signed Δ_j in units of s_j;  response: (k, F) R_ij = mean |Δ_j| over direction
    i's matched edits (a NaN row when none matched);  side_effect: (E,) e(edit) − e(unedited), or
    None without a re-render;  on_manifold: (E,) ‖P_T Δx‖²/‖Δx‖² of the image change Δx, T the world's
    tangent space at the unedited image's read factors, or None;  consistency: (E,) the instrument's
    self-consistency on the edited image, mean_j |m_j(render(read(x))) − m_j(x)| / s_j, or None.
    """

    factors: tuple[str, ...]
    edits: BudgetedEdits
    changes: Tensor
    response: Tensor
    side_effect: Tensor | None
    on_manifold: Tensor | None
    consistency: Tensor | None


def _response(changes: Tensor, edits: BudgetedEdits, k: int) -> Tensor:
    """R (k, F): each direction's mean |Δ| over its matched edits; a NaN row where none matched."""
    response = torch.full((k, changes.shape[1]), math.nan, dtype=torch.float64)
    for i in range(k):
        rows = (edits.direction == i) & edits.matched
        if rows.any():
            response[i] = changes[rows].abs().mean(0)
    return response


def score_edits(instrument: Instrument, edits: BudgetedEdits) -> EditScores:
    """Read budgeted edits with the instrument and score them (module doc). Unmatched edits are
    scored too (their rows are kept) but enter no response."""
    instrument = _check_instrument(instrument)
    if not isinstance(edits, BudgetedEdits):
        raise TypeError(f"edits must be the BudgetedEdits of match_budget, got {type(edits).__name__}")
    images = _check_images("edits.images", edits.images.clamp(-1, 1))
    unedited = _check_images("edits.unedited", edits.unedited.clamp(-1, 1))
    read, base = instrument.read(images), instrument.read(unedited)
    changes = factor_changes(instrument, read, {n: v.expand(len(images)) for n, v in base.items()})
    response = _response(changes, edits, int(edits.direction.max()) + 1)
    side = on_manifold = consistency = None
    if instrument.rerender is not None:
        redrawn = instrument.rerender(read).to(images)
        error = ((images - redrawn) ** 2).flatten(1).mean(1).sqrt()
        side = (error - rerender_error(unedited, instrument)).double().cpu()
        consistency = factor_changes(instrument, instrument.read(redrawn.clamp(-1, 1)), read).abs().mean(1)
    if instrument.tangent is not None:
        q = instrument.tangent(base).to(torch.float64)[0]  # (D, r), orthonormal columns
        delta = (images - unedited).flatten(1).double().cpu()
        on_manifold = (delta @ q).pow(2).sum(1) / delta.pow(2).sum(1).clamp_min(1e-30)
    return EditScores(factors=instrument.names, edits=edits, changes=changes, response=response, side_effect=side,
                      on_manifold=on_manifold, consistency=consistency)


def score_directions(
    model: DiffusionModel,
    sample: Sample,
    directions: Tensor,
    budgets: list[float],
    instrument: Instrument,
    how: EditKind = "guidance",
    **options,
) -> EditScores:
    """Match every edit along ``directions`` to the budgets (``match_budget``), then score them (``score_edits``)."""
    _check_instrument(instrument)
    return score_edits(instrument, match_budget(model, sample, directions, budgets, how, **options))


def basis_summary(scores: EditScores) -> dict[str, float]:
    """One basis's numbers: means over its directions (or matched edits) of every measure.

    disentanglement, top_two_gap: mean over directions with a matched edit; coverage; dci_d, dci_c
    (``labkit.disentanglement.dci`` of the response); side_effect, on_manifold, consistency, change,
    moved: means over matched edits; matched, unmatched: counts of edits. NaN where nothing matched.
    """
    if not isinstance(scores, EditScores):
        raise TypeError(f"scores must be the EditScores of score_edits, got {type(scores).__name__}")
    ok = torch.isfinite(scores.response).all(1)
    matched = scores.edits.matched
    out: dict[str, float] = {"matched": int(matched.sum()), "unmatched": int((~matched).sum())}
    if ok.any():
        response = scores.response[ok]
        out["disentanglement"] = float(disentanglement(response).nanmean())
        out["top_two_gap"] = float(top_two_gap(response).nanmean())
        out["coverage"] = coverage(response)
        out["dci_d"], out["dci_c"] = dci(response)
    else:
        out.update(disentanglement=math.nan, top_two_gap=math.nan, coverage=0, dci_d=math.nan, dci_c=math.nan)
    for name in ("side_effect", "on_manifold", "consistency"):
        value = getattr(scores, name)
        out[name] = float(value[matched].mean()) if value is not None and matched.any() else math.nan
    for name in ("change", "moved"):
        value = getattr(scores.edits, name)
        out[name] = float(value[matched].mean()) if matched.any() else math.nan
    return out


def select(scores: EditScores, directions: range, budgets: list[float] | None = None) -> EditScores:
    """The scores of some of the directions (renumbered from 0) and, optionally, some of the budgets.

    Many methods' directions are matched and scored as one batch (one pass through the U-Net per
    round); this splits the result back into each method's own scores, response included."""
    if not isinstance(scores, EditScores):
        raise TypeError(f"scores must be the EditScores of score_edits, got {type(scores).__name__}")
    e = scores.edits
    if not isinstance(directions, range) or directions.step != 1 or not 0 <= directions.start < directions.stop \
            or directions.stop > int(e.direction.max()) + 1:
        raise ValueError(f"directions must be a range of the scored directions 0..{int(e.direction.max())}, "
                         f"got {directions!r}")
    keep = (e.direction >= directions.start) & (e.direction < directions.stop)
    if budgets is not None:
        if not isinstance(budgets, list | tuple) or not budgets:
            error = ValueError if isinstance(budgets, list | tuple) else TypeError
            raise error(f"budgets must be a non-empty list of the scored budgets (RMS image changes), or None for "
                        f"all, got {type(budgets).__name__} {show(budgets)}")
        for budget in budgets:
            check_float("budgets", budget, 0.0, 1.0, low_open=True, hint="one of the budgets matched, e.g. 0.05")
        wanted = torch.tensor(budgets, dtype=torch.float64)
        if not torch.isin(wanted, e.budget).all():
            raise ValueError(f"budgets {budgets} are not all among the scored budgets {sorted(set(e.budget.tolist()))}")
        keep &= torch.isin(e.budget, wanted)
    fields = {name: getattr(e, name)[keep] for name in BudgetedEdits.__dataclass_fields__ if name != "unedited"}
    fields["direction"] = fields["direction"] - directions.start
    edits = BudgetedEdits(**fields, unedited=e.unedited)
    changes = scores.changes[keep]
    return EditScores(factors=scores.factors, edits=edits, changes=changes,
                      response=_response(changes, edits, len(directions)),
                      side_effect=None if scores.side_effect is None else scores.side_effect[keep],
                      on_manifold=None if scores.on_manifold is None else scores.on_manifold[keep],
                      consistency=None if scores.consistency is None else scores.consistency[keep])
