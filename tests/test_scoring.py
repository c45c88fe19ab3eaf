"""labkit.scoring: responses, disentanglement, coverage and side effects, against answers known by construction."""

import math

import pytest
import torch

from labkit.diffusion import sample_at, timestep_at
from labkit.models import load_model
from labkit.scoring import ReadOut, coverage, digit_readout, disentanglement, score_directions


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir, dtype=torch.float64)


def linear_readout(w: torch.Tensor, scales: dict, circular=frozenset()) -> ReadOut:
    """m(x) = W x (one row of W per factor); re-render: the least-squares image W⁺ m."""
    names = list(scales)

    def read(images):
        m = images.flatten(1).double() @ w.T
        return {name: m[:, j] for j, name in enumerate(names)}

    def rerender(factors):
        m = torch.stack([factors[name] for name in names], dim=1)
        return (m @ torch.linalg.pinv(w).T).reshape(len(m), 1, 8, 8)

    return ReadOut(read=read, scales=scales, circular=frozenset(circular), rerender=rerender)


def test_naive_edit_at_t0_gives_the_exact_linear_response(tiny):
    # At t = 0 a naive edit returns x + γ v itself, so with m = W x: Δ_j(γ) = γ ⟨w_j, v⟩ exactly.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 64, generator=g, dtype=torch.float64)
    scales = {"a": 2.0, "b": 0.5, "c": 1.0}
    sample = sample_at(tiny, seed=0, t=0, num_steps=10)
    directions = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    gamma = torch.tensor([0.5, 1.5])
    s = score_directions(tiny, sample, directions, gamma, linear_readout(w, scales), method="naive")
    inner = directions.flatten(1) @ w.T  # (k, F) ⟨w_j, v_i⟩
    scale = torch.tensor(list(scales.values()), dtype=torch.float64)
    expected_changes = torch.tensor([-1.5, -0.5, 0.5, 1.5], dtype=torch.float64)[None, :, None] * inner[:, None] / scale
    assert torch.allclose(s.changes, expected_changes, atol=1e-9)
    expected = gamma.double().mean() * inner.abs() / scale  # mean of |γ| over ±γ
    assert torch.allclose(s.response, expected, atol=1e-9)
    assert torch.allclose(s.disentanglement, expected.amax(1) / expected.sum(1))
    assert s.top_factor == [list(scales)[j] for j in expected.argmax(1).tolist()]
    assert s.coverage == len(set(expected.argmax(1).tolist()))
    assert s.images.shape == (4, 5, 1, 8, 8)


def test_side_effect_is_zero_inside_the_world_and_exact_outside(tiny):
    # Re-render is the projection P onto W's row space, so e(x) = ‖(I − P) x‖ / 8. Along a row of W
    # the error does not change; along u ⟂ rows, e(x + γu) = ‖(I − P)x + γu‖ / 8.
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 64, generator=g, dtype=torch.float64)
    readout = linear_readout(w, {"a": 1.0, "b": 1.0})
    sample = sample_at(tiny, seed=2, t=0, num_steps=10)
    p = torch.linalg.pinv(w) @ w
    u = (torch.eye(64, dtype=torch.float64) - p) @ torch.randn(64, generator=g, dtype=torch.float64)
    u = u / u.norm()
    directions = torch.stack([w[0] / w[0].norm(), u]).reshape(2, 1, 8, 8)
    s = score_directions(tiny, sample, directions, [1.0], readout, method="naive")
    x = sample.x_t.reshape(-1)
    off = x - p @ x
    e0 = off.norm() / 8
    expected_u = ((off + u).norm() / 8 + (off - u).norm() / 8) / 2 - e0
    assert abs(s.side_effect[0].item()) < 1e-9
    assert s.side_effect[1].item() == pytest.approx(expected_u.item(), abs=1e-9)
    assert s.side_effect[1] > 0
    assert s.response[1].abs().max() < 1e-9  # u is invisible to the read-out


def test_circular_factor_changes_go_the_short_way_round():
    from labkit.scoring import factor_changes

    readout = ReadOut(read=lambda x: {}, scales={"hue": 0.5, "size": 2.0}, circular=frozenset({"hue"}))
    d = factor_changes(readout, {"hue": torch.tensor([0.95, 0.1]), "size": torch.tensor([3.0, 1.0])},
                       {"hue": torch.tensor([0.05, 0.9]), "size": torch.tensor([1.0, 1.0])})
    assert torch.allclose(d, torch.tensor([[-0.2, 1.0], [0.4, 0.0]], dtype=torch.float64), atol=1e-9)


def test_guidance_edits_run_and_strength_zero_is_the_sample(tiny):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 64, generator=g, dtype=torch.float64)
    sample = sample_at(tiny, seed=3, t=timestep_at(tiny, 0.6, num_steps=10), num_steps=10)
    directions = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    s = score_directions(tiny, sample, directions, [2.0], linear_readout(w, {"a": 1.0, "b": 1.0}), n_iter=2)
    assert s.response.shape == (2, 2) and torch.isfinite(s.response).all() and (s.response > 0).all()
    # the unedited frame is the same for every direction: the sample finished without an edit
    assert torch.allclose(s.images[0, 0], s.images[1, 0])


def test_h_space_directions_are_scored_through_h_space_edit(tiny):
    from labkit.hspace import h_shape, h_space_edit

    g = torch.Generator().manual_seed(4)
    w = torch.randn(2, 64, generator=g, dtype=torch.float64)
    readout = linear_readout(w, {"a": 1.0, "b": 0.5})
    sample = sample_at(tiny, seed=4, t=timestep_at(tiny, 0.8, num_steps=10), num_steps=10)
    directions = torch.randn(2, *h_shape(tiny), generator=g, dtype=torch.float64)
    s = score_directions(tiny, sample, directions, [3.0], readout, method="h")
    images = h_space_edit(tiny, sample, directions[1], [0.0, -3.0, 3.0])
    assert torch.allclose(s.images[1], images, atol=1e-12)
    m = images.flatten(1) @ w.T
    expected = ((m[1:] - m[0]).abs() / torch.tensor([1.0, 0.5], dtype=torch.float64)).mean(0)
    assert torch.allclose(s.response[1], expected, atol=1e-9)
    with pytest.raises(ValueError, match=r"directions must have shape \(k, 16, 2, 2\) \(directions in H"):
        score_directions(tiny, sample, torch.ones(2, 1, 8, 8), [1.0], readout, method="h")


def test_summaries_and_errors():
    r = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(disentanglement(r), torch.tensor([0.75, 0.5, 1.0]))
    assert coverage(r) == 2
    assert math.isnan(disentanglement(torch.zeros(1, 3))[0].item()) and coverage(torch.zeros(1, 3)) == 0
    with pytest.raises(ValueError, match="scales"):
        ReadOut(read=lambda x: {}, scales={"a": 0.0})
    with pytest.raises(ValueError, match="circular names"):
        ReadOut(read=lambda x: {}, scales={"a": 1.0}, circular=frozenset({"b"}))


def test_bad_input_is_refused(tiny):
    readout = linear_readout(torch.ones(1, 64, dtype=torch.float64), {"a": 1.0})
    sample = sample_at(tiny, seed=0, t=0, num_steps=10)
    with pytest.raises(ValueError, match="directions must have shape"):
        score_directions(tiny, sample, torch.zeros(2, 3, 8, 8), [1.0], readout)
    with pytest.raises(ValueError, match="strengths must be positive"):
        score_directions(tiny, sample, torch.zeros(2, 1, 8, 8), [0.0], readout)
    with pytest.raises(TypeError, match="readout must be"):
        score_directions(tiny, sample, torch.zeros(2, 1, 8, 8), [1.0], lambda x: x)


def test_on_mnist_the_digit_measures_are_the_readout():
    model = load_model()
    readout = digit_readout()
    assert readout.names == ("ink_mass", "slant", "thickness", "width")
    assert 25 < readout.scales["ink_mass"] < 45 and 2.5 < readout.scales["width"] < 5.5  # the measures' doc: 33, 4.0
    sample = sample_at(model, seed=0, t=timestep_at(model, 0.6, num_steps=10), num_steps=10)
    directions = torch.linalg.qr(torch.randn(784, 2, generator=torch.Generator().manual_seed(0)))[0].T
    s = score_directions(model, sample, directions.reshape(2, 1, 28, 28), [4.0], readout, method="naive")
    assert s.response.shape == (2, 4) and torch.isfinite(s.response).all()
    assert s.side_effect is None
    assert ((s.disentanglement >= 0.25) & (s.disentanglement <= 1)).all()


def test_strength_for_change_hits_the_budget_exactly_where_the_edit_is_linear(tiny):
    # At t = 0 the naive edit returns x + γ v, so the RMS change is γ ‖v‖ / √64 exactly.
    from labkit.scoring import image_change, strength_for_change

    sample = sample_at(tiny, seed=1, t=0, num_steps=10)
    v = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    gamma = strength_for_change(tiny, sample, v, 0.1, method="naive")
    assert gamma == pytest.approx(0.1 * 8 / v.norm().item(), rel=1e-9)
    from labkit.editing import edit

    images = edit(tiny, sample, v, [0.0, gamma], method="naive")
    assert image_change(images[1:], images[:1]).item() == pytest.approx(0.1, rel=1e-9)
    # later in sampling the edit is not linear: the budget is met to first order only, and is measured
    later = sample_at(tiny, seed=1, t=timestep_at(tiny, 0.6, num_steps=10), num_steps=10)
    gamma = strength_for_change(tiny, later, v, 0.05, method="guidance")
    images = edit(tiny, later, v, [0.0, gamma])
    assert 0.02 < image_change(images[1:], images[:1]).item() < 0.1
    with pytest.raises(ValueError, match="change must be in"):
        strength_for_change(tiny, sample, v, 0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        strength_for_change(tiny, sample, v, 0.1, method="sideways")
