"""labkit.oracle: LOCO-Edit's masked, projected directions and the world's oracle directions."""

import pytest
import torch

from labkit.budget import match_budget
from labkit.diffusion import posterior_mean, sample_at, timestep_at
from labkit.models import load_model
from labkit.oracle import loco_directions, oracle_directions
from labkit.scoring import score_edits, world_instrument
from labkit.spectral import local_basis


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir, dtype=torch.float64)


def test_loco_directions_are_unit_and_orthogonal_to_the_outside_directions(tiny):
    sample = sample_at(tiny, seed=1, t=500, num_steps=10)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., 2:6, 2:6] = 1
    v = loco_directions(tiny, sample, mask, k=3, rank_outside=4)
    assert v.shape == (3, 1, 8, 8)
    assert torch.allclose(v.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))
    x0_hat = posterior_mean(tiny, sample.t)
    outside = local_basis(lambda x: (1 - mask) * x0_hat(x), sample.x_t, 4).v.reshape(4, -1)
    assert (v.flatten(1) @ outside.T).abs().max() < 1e-8  # the null-space projection
    # with nothing projected out, they are the masked Jacobian's own top right singular vectors
    plain = loco_directions(tiny, sample, mask, k=2, rank_outside=0).flatten(1)
    inside = local_basis(lambda x: mask * x0_hat(x), sample.x_t, 2).v.reshape(2, -1)
    assert torch.allclose((plain * inside).sum(1).abs(), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_loco_refuses_bad_masks(tiny):
    sample = sample_at(tiny, seed=1, t=500, num_steps=10)
    with pytest.raises(ValueError, match="mask"):
        loco_directions(tiny, sample, torch.zeros(1, 1, 8, 8, dtype=torch.float64), k=2)
    with pytest.raises(ValueError, match="mask"):
        loco_directions(tiny, sample, 2 * torch.ones(1, 1, 8, 8, dtype=torch.float64), k=2)
    with pytest.raises(ValueError, match="mask"):
        loco_directions(tiny, sample, torch.ones(1, 1, 4, 4, dtype=torch.float64), k=2)
    with pytest.raises(ValueError, match="k"):
        loco_directions(tiny, sample, torch.ones(1, 1, 8, 8, dtype=torch.float64), k=0)


def test_oracle_needs_a_model_of_the_world(tiny):
    with pytest.raises(ValueError, match="shapes"):
        oracle_directions(tiny, sample_at(tiny, seed=0, t=500, num_steps=10))


def test_oracle_directions_move_their_own_factor_most():
    # d_j = M⁺ e_j changes factor j and, to first order, no other: at a small budget the read-out
    # sees mostly factor j move (a hue, the scale and the rotation here; at this sample the read
    # position sits on its range's end, where the clamped reading cannot move)
    model = load_model("shapes")
    sample = sample_at(model, seed=3, t=timestep_at(model, 0.4, 20), num_steps=20)
    directions = oracle_directions(model, sample)
    assert directions.shape == (7, 3, 32, 32)
    assert torch.allclose(directions.flatten(1).norm(dim=1), torch.ones(7), atol=1e-5)
    instrument = world_instrument()
    factors = [list(instrument.names).index(n) for n in ("wall_hue", "scale", "rotation")]
    scores = score_edits(instrument, match_budget(model, sample, directions[factors], [0.02], "naive"))
    assert torch.isfinite(scores.response).all()  # every direction has a matched edit
    assert scores.response.argmax(1).tolist() == factors, scores.response
    share = scores.response.amax(1) / scores.response.sum(1)
    assert (share > 0.6).all(), share
