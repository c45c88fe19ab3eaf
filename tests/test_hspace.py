"""Edits in H (labkit.hspace): the offset lands exactly on the mid-block output, and nowhere else."""

import pytest
import torch

from labkit.diffusion import ddim_sample, h_space, sample_at
from labkit.editing import edit
from labkit.hspace import h_offset, h_principal_components, h_shape, h_space_edit


def test_h_shape_is_the_mid_block_output_shape(tiny):
    x = torch.zeros(1, *tiny.sample_shape)
    assert h_shape(tiny) == tuple(h_space(tiny, 500)(x).shape[1:])


def test_h_offset_adds_exactly_the_offset_to_h_and_is_removed_after(tiny64):
    f = h_space(tiny64, 400)
    x = torch.randn(2, *tiny64.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = f(x)
    offset = torch.randn(2, *h.shape[1:], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = tiny64.eps(x, 400)
    with h_offset(tiny64, offset):
        assert torch.allclose(f(x), h + offset, atol=1e-12)
        assert not torch.allclose(tiny64.eps(x, 400), eps)  # the decoder sees the moved h
    assert torch.equal(f(x), h) and torch.equal(tiny64.eps(x, 400), eps)
    with pytest.raises(RuntimeError, match="inside"), h_offset(tiny64, offset):
        raise RuntimeError("inside")
    assert torch.equal(tiny64.eps(x, 400), eps)  # removed on an exception too


def test_h_space_edit_at_zero_is_the_unedited_sample_and_grows_with_strength(tiny):
    sample = sample_at(tiny, seed=3, t=tiny.timesteps(10)[2], num_steps=10)
    d = torch.randn(h_shape(tiny), generator=torch.Generator().manual_seed(2))
    d = d / d.norm()
    images = h_space_edit(tiny, sample, d, [0.0, 1.0, 4.0])
    unedited = edit(tiny, sample, torch.ones(tiny.sample_shape), [0.0], method="naive")
    assert torch.allclose(images[0], unedited[0], atol=1e-6)
    change = (images[1:] - images[:1]).flatten(1).norm(dim=1)
    assert 0 < change[0] < change[1]


def test_h_space_edit_edits_only_the_steps_above_the_boost_boundary(tiny64):
    """With boost_below, the edit equals: DDIM with the offset down to the boundary, then plain DDIM with η = 1."""
    steps = tiny64.timesteps(10)  # 900, 800, ..., 0
    sample = sample_at(tiny64, seed=1, t=steps[3], num_steps=10)
    d = torch.randn(h_shape(tiny64), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = h_space_edit(tiny64, sample, d, [2.0], boost_below=0.35)
    with h_offset(tiny64, 2.0 * d[None]):
        x = ddim_sample(tiny64, sample.x_t, 10, t_from=steps[3], t_to=350, seed=1)
    expected = ddim_sample(tiny64, x, 10, t_from=300, eta_below=350, seed=1)
    assert torch.allclose(got, expected, atol=1e-12)
    everywhere = h_space_edit(tiny64, sample, d, [2.0], boost_below=None)
    with h_offset(tiny64, 2.0 * d[None]):
        assert torch.allclose(everywhere, ddim_sample(tiny64, sample.x_t, 10, t_from=steps[3]), atol=1e-12)


def test_h_space_edit_refuses_bad_input(tiny):
    sample = sample_at(tiny, seed=0, t=tiny.timesteps(10)[2], num_steps=10)
    d = torch.ones(h_shape(tiny))
    with pytest.raises(ValueError, match=r"direction must be a direction in H of shape"):
        h_space_edit(tiny, sample, torch.ones(tiny.sample_shape), [1.0])
    with pytest.raises(ValueError, match="direction is zero"):
        h_space_edit(tiny, sample, torch.zeros(h_shape(tiny)), [1.0])
    with pytest.raises(ValueError, match="no step is left to edit h in"):
        h_space_edit(tiny, sample_at(tiny, seed=0, t=100, num_steps=10), d, [1.0], boost_below=0.2)
    with pytest.raises(TypeError, match="strengths must be a number"):
        h_space_edit(tiny, sample, d, "big")
    with pytest.raises(ValueError, match="boost_below"):
        h_space_edit(tiny, sample, d, [1.0], boost_below=1.5)
    with pytest.raises(TypeError, match="sample must be"):
        h_space_edit(tiny, sample.x_t, d, [1.0])


def test_h_principal_components_match_an_explicit_pca(tiny64):
    t = tiny64.timesteps(10)[4]
    components, explained = h_principal_components(tiny64, t, k=3, n=12, seed=7, num_steps=10, batch_size=5)
    from labkit.diffusion import sample_noise

    x = ddim_sample(tiny64, sample_noise(tiny64, 12, 7), 10, t_to=t)
    h = h_space(tiny64, t)(x).flatten(1)
    centred = h - h.mean(0)
    eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred)  # ascending
    top = eigvecs[:, -3:].flip(1).T
    assert torch.allclose((components.flatten(1) * top).sum(1).abs(), torch.ones(3, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(explained, eigvals.flip(0)[:3] / eigvals.sum(), atol=1e-10)
    assert components.shape == (3, *h_shape(tiny64))
    with pytest.raises(ValueError, match="k must be"):
        h_principal_components(tiny64, t, k=12, n=12, num_steps=10)


def test_h_offset_and_image_change_refuse_bad_shapes(tiny):
    from labkit.budget import image_change

    unbatched = torch.ones(16, 2, 2)
    with pytest.raises(ValueError, match=r"offset must have shape \(B, 16, 2, 2\)"), h_offset(tiny, unbatched):
        pass
    with pytest.raises(ValueError, match="image_change needs"):
        image_change(torch.zeros(3, 1, 8, 8), torch.zeros(1, 1, 4, 4))
