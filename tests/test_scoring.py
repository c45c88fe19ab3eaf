"""labkit.scoring: edits of one size, responses, side effects and the on-manifold share, against known answers."""

import math

import pytest
import torch

from labkit import worlds
from labkit.budget import BudgetedEdits, match_budget
from labkit.diffusion import Sample, sample_at
from labkit.models import load_model
from labkit.scoring import (
    Instrument,
    basis_summary,
    factor_changes,
    mean_difference,
    score_directions,
    score_edits,
    select,
    world_instrument,
)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir, dtype=torch.float64)


def finished(seed: int) -> Sample:
    """A finished 8×8 'image' inside [-1, 1] at t = 0 (where an edit is its own finished image)."""
    x = 0.2 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Sample(x_t=x, t=0, num_steps=10, seed=seed)


def linear_instrument(w: torch.Tensor, scales: dict, circular=frozenset(), categorical=frozenset()) -> Instrument:
    """m(x) = W x (one row of W per factor); re-render: the least-squares image W⁺ m."""
    names = list(scales)

    def read(images):
        m = images.flatten(1).double() @ w.T
        return {name: m[:, j] for j, name in enumerate(names)}

    def rerender(factors):
        m = torch.stack([factors[name] for name in names], dim=1)
        return (m @ torch.linalg.pinv(w).T).reshape(len(m), 1, 8, 8)

    return Instrument(read=read, scales=scales, circular=frozenset(circular), categorical=frozenset(categorical),
                      rerender=rerender)


def test_at_t0_a_naive_edit_is_matched_at_once_and_its_response_is_exact(tiny):
    # At t = 0 the naive edit returns x + γ v itself: the RMS change of an 8×8 image is |γ|·‖v‖/8
    # exactly, so the power law through the probes is exact, γ = 8b, and Δ_j = γ ⟨w_j, v⟩ / s_j.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 64, generator=g, dtype=torch.float64)
    scales = {"a": 2.0, "b": 0.5, "c": 1.0}
    sample = finished(0)
    directions = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    budgets = [0.05, 0.1]
    s = score_directions(tiny, sample, directions, budgets, linear_instrument(w, scales), how="naive")
    e = s.edits
    assert e.matched.all() and (e.rounds == 1).all()
    assert torch.allclose(e.change, e.budget, rtol=1e-9)
    assert torch.allclose(e.strength, e.sign * 8 * e.budget, rtol=1e-9)
    unit = directions.flatten(1) / directions.flatten(1).norm(dim=1, keepdim=True)
    inner = unit @ w.T / torch.tensor(list(scales.values()), dtype=torch.float64)  # (k, F)
    assert torch.allclose(s.changes, e.strength[:, None] * inner[e.direction], atol=1e-9)
    mean_gamma = 8 * sum(budgets) / len(budgets)
    assert torch.allclose(s.response, mean_gamma * inner.abs(), atol=1e-9)
    assert torch.allclose(e.moved, e.strength.abs(), rtol=1e-9)  # a unit direction moves x_t by |γ|


def test_side_effect_is_zero_inside_the_world_and_exact_outside(tiny):
    # Re-render is the projection P onto W's row space, so e(x) = ‖(I − P) x‖ / 8: along a row of W the
    # error does not change; along u ⟂ rows, e(x + γu) = ‖(I − P)x + γu‖ / 8.
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 64, generator=g, dtype=torch.float64)
    instrument = linear_instrument(w, {"a": 1.0, "b": 1.0})
    sample = finished(2)
    x = sample.x_t.flatten().double()
    p = torch.linalg.pinv(w) @ w
    u = (torch.eye(64, dtype=torch.float64) - p) @ torch.randn(64, generator=g, dtype=torch.float64)
    directions = torch.stack([w[0], u]).reshape(2, 1, 8, 8)
    s = score_directions(tiny, sample, directions, [0.05], instrument, how="naive")
    residual = (torch.eye(64, dtype=torch.float64) - p) @ x
    expected = torch.stack([((residual + g_ * (u / u.norm())).norm() - residual.norm()) / 8
                            for g_ in s.edits.strength])
    along_w = s.edits.direction == 0
    assert torch.allclose(s.side_effect[along_w], torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(s.side_effect[~along_w], expected[~along_w], atol=1e-9)


def test_every_matched_edit_is_within_tolerance_and_unmatched_ones_enter_no_mean(tiny):
    sample = sample_at(tiny, seed=3, t=500, num_steps=10)
    directions = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    e = match_budget(tiny, sample, directions, [0.05, 0.2], "guidance", max_rounds=1)
    assert ((e.change / e.budget - 1).abs() <= 0.1).eq(e.matched).all()  # matched ⇔ within ±10%
    e = match_budget(tiny, sample, directions, [0.05, 0.2], "guidance", max_rounds=6)
    assert e.matched.float().mean() >= 0.75, e.change / e.budget
    assert ((e.change[e.matched] / e.budget[e.matched] - 1).abs() <= 0.1).all()
    w = torch.randn(2, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    instrument = linear_instrument(w, {"a": 1.0, "b": 1.0})
    # mark direction 0's edits unmatched by hand: its response row is NaN, the counts say so
    forced = BudgetedEdits(**{**e.__dict__, "matched": e.matched & (e.direction != 0)})
    s = score_edits(instrument, forced)
    assert torch.isnan(s.response[0]).all() and torch.isfinite(s.response[1:]).all()
    summary = basis_summary(s)
    assert summary["unmatched"] == int((~forced.matched).sum()) and summary["matched"] == int(forced.matched.sum())


def test_select_splits_a_batch_back_into_methods(tiny):
    sample = finished(0)
    directions = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w = torch.randn(2, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    instrument = linear_instrument(w, {"a": 1.0, "b": 1.0})
    both = score_directions(tiny, sample, directions, [0.05, 0.1], instrument, how="naive")
    first, rest = select(both, range(0, 2)), select(both, range(2, 5))
    assert torch.allclose(torch.cat([first.response, rest.response]), both.response)
    alone = score_directions(tiny, sample, directions[2:], [0.05, 0.1], instrument, how="naive")
    assert torch.allclose(rest.response, alone.response, atol=1e-9)
    small = select(both, range(0, 5), [0.05])
    assert (small.edits.budget == 0.05).all() and len(small.edits.budget) == 5 * 2
    with pytest.raises(ValueError, match="budgets"):
        select(both, range(0, 5), [0.3])
    with pytest.raises(ValueError, match="range"):
        select(both, range(3, 9))


def test_factor_changes_circular_short_way_and_categorical_flips():
    instrument = Instrument(read=lambda x: {}, scales={"hue": 0.25, "size": 2.0, "shape": 2 / 3},
                            circular=frozenset({"hue"}), categorical=frozenset({"shape"}))
    read = {"hue": torch.tensor([0.95, 0.1]), "size": torch.tensor([1.0, 3.0]), "shape": torch.tensor([2, 1])}
    ref = {"hue": torch.tensor([0.05, 0.1]), "size": torch.tensor([0.0, 0.0]), "shape": torch.tensor([2, 0])}
    changes = factor_changes(instrument, read, ref)
    assert torch.allclose(changes, torch.tensor([[-0.1 / 0.25, 0.5, 0.0], [0.0, 1.5, 1.5]], dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        factor_changes(instrument, {**read, "size": torch.tensor([math.nan, 1.0])}, ref)


def test_mean_difference_is_exact_and_the_world_scales_are_the_mean_differences_of_random_scenes():
    x = torch.randn(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    brute = (x[:, None] - x[None, :]).abs().sum() / (300 * 299)
    assert math.isclose(mean_difference(x), float(brute), rel_tol=1e-12)
    scales = world_instrument().scales
    a, b = worlds.sample_factors(20000, seed=1), worlds.sample_factors(20000, seed=2)
    for name, f in worlds.FACTORS.items():
        if f.kind == "categorical":
            empirical = (a[name] != b[name]).double().mean()
        elif f.kind == "circular":
            empirical = (torch.remainder(a[name] - b[name] + 0.5, 1.0) - 0.5).abs().double().mean()
        else:
            empirical = (a[name] - b[name]).abs().double().mean()
        assert math.isclose(float(empirical), scales[name], rel_tol=0.02), name


def test_tangent_basis_spans_the_finite_differences_of_the_render():
    f = worlds.sample_factors(2, seed=3)
    q = worlds.tangent_basis(f)
    assert q.shape == (2, 3 * 32 * 32, 6)
    assert torch.allclose(q.transpose(1, 2) @ q, torch.eye(6, dtype=q.dtype).expand(2, 6, 6), atol=1e-10)
    for j, name in enumerate(worlds.CONTINUOUS):
        h = 1e-4
        plus, minus = dict(f), dict(f)
        plus[name], minus[name] = f[name].double() + h, f[name].double() - h
        plus = {n: (v.double() if n != "shape" else v) for n, v in plus.items()}
        minus = {n: (v.double() if n != "shape" else v) for n, v in minus.items()}
        column = ((worlds.render(plus) - worlds.render(minus)) / (2 * h)).flatten(1)  # (2, D)
        inside = torch.einsum("ndr,nd->nr", q, column)
        assert torch.allclose(inside.norm(dim=1), column.norm(dim=1), rtol=1e-5), name


def test_on_manifold_share_is_one_along_the_world_and_small_for_noise():
    instrument = world_instrument()
    f = worlds.sample_factors(1, seed=4)
    f["scale"] = torch.tensor([0.35])
    unedited = worlds.render(f)
    moved = dict(f, x_position=f["x_position"] + 0.01)
    noise = 0.02 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    images = torch.cat([worlds.render(moved), unedited + noise])
    e = BudgetedEdits(direction=torch.tensor([0, 1]), sign=torch.ones(2, dtype=torch.float64),
                      budget=torch.full((2,), 0.05, dtype=torch.float64), strength=torch.ones(2, dtype=torch.float64),
                      change=torch.full((2,), 0.05, dtype=torch.float64), matched=torch.ones(2, dtype=torch.bool),
                      rounds=torch.ones(2, dtype=torch.long), moved=torch.ones(2, dtype=torch.float64), images=images,
                      unedited=unedited)
    s = score_edits(instrument, e)
    assert s.on_manifold[0] > 0.95          # a small move of one factor stays in the tangent space
    assert s.on_manifold[1] < 0.05          # white noise: about 6/3072 of it lies there
    assert s.response[0].argmax() == list(instrument.names).index("x_position")


def test_bad_input_is_refused(tiny):
    sample = finished(0)
    v = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="budgets"):
        match_budget(tiny, sample, v, [], "naive")
    with pytest.raises(ValueError, match="budgets"):
        match_budget(tiny, sample, v, [1.5], "naive")
    with pytest.raises(ValueError, match="how"):
        match_budget(tiny, sample, v, [0.05], "sideways")
    with pytest.raises(ValueError, match="length"):
        match_budget(tiny, sample, torch.zeros(2, 1, 8, 8, dtype=torch.float64), [0.05], "naive")
    with pytest.raises(ValueError, match="directions"):
        match_budget(tiny, sample, torch.ones(2, 3, 8, 8, dtype=torch.float64), [0.05], "naive")
    with pytest.raises(TypeError, match="Instrument"):
        score_directions(tiny, sample, v, [0.05], "world", how="naive")
    with pytest.raises(ValueError, match="scales"):
        Instrument(read=lambda x: {}, scales={"a": -1.0})
    with pytest.raises(ValueError, match="categorical"):
        Instrument(read=lambda x: {}, scales={"a": 1.0}, categorical=frozenset({"b"}))
