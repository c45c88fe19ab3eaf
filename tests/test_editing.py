"""labkit.editing: edits, transport between samples, global directions, interpolation, caches."""

import pytest
import torch

from labkit import spectral
from labkit.diffusion import Sample, h_space, invert_image, sample_at, sample_noise, timestep_at
from labkit.editing import (
    edit,
    global_directions,
    interpolate,
    load_basis,
    naive_edit,
    sample_basis,
    save_basis,
    transport_direction,
    x_space_guidance,
)
from labkit.models import load_model


@pytest.fixture(scope="module")
def sample(tiny64):
    return sample_at(tiny64, seed=1, t=timestep_at(tiny64, 0.6, num_steps=10), num_steps=10)


@pytest.fixture(scope="module")
def basis(tiny64, sample):
    return sample_basis(tiny64, sample, k=3, method="exact")


def test_timestep_at_picks_the_nearest_ddim_step(tiny64):
    assert timestep_at(tiny64, 0.6, num_steps=10) == 600
    assert timestep_at(tiny64, 1.0, num_steps=10) == 900
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        timestep_at(tiny64, 1.5)


@pytest.mark.parametrize("method", ["guidance", "naive"])
def test_zero_strength_reproduces_the_unedited_sample(tiny64, sample, basis, method):
    images = edit(tiny64, sample, basis.v[0], [0.0, 1.0], method=method)
    plain = edit(tiny64, sample, basis.v[0], 0.0, method=method)
    torch.testing.assert_close(images[0], plain[0])
    assert not torch.allclose(images[1], images[0])


def test_zero_iterations_is_no_edit(tiny64, sample, basis):
    x = x_space_guidance(tiny64, sample.x_t, sample.t, basis.v[0], 5.0, n_iter=0)
    torch.testing.assert_close(x, sample.x_t)


def test_guidance_step_is_delta_times_the_jacobian_of_eps_for_small_delta(tiny64, sample, basis):
    """One iteration moves x by γ[ε(x+δv) − ε(x)] ≈ γ δ (∂ε/∂x) v."""
    v, gamma, delta = basis.v[0], 0.5, 1e-4
    moved = x_space_guidance(tiny64, sample.x_t, sample.t, v, gamma, delta=delta, n_iter=1) - sample.x_t
    _, jv = torch.func.jvp(lambda x: tiny64.eps(x, sample.t), (sample.x_t,), (v,))
    torch.testing.assert_close(moved, gamma * delta * jv, rtol=1e-3, atol=1e-8)


def test_naive_edit_is_a_straight_step(tiny64, sample, basis):
    out = naive_edit(tiny64, sample.x_t, sample.t, basis.v[1], torch.tensor([-2.0, 3.0]))
    torch.testing.assert_close(out[1] - sample.x_t[0], 3.0 * basis.v[1][0])
    torch.testing.assert_close(out[0] - sample.x_t[0], -2.0 * basis.v[1][0])


def test_bad_directions_and_methods(tiny64, sample, basis):
    with pytest.raises(ValueError, match=r"v must have shape \(1, 1, 8, 8\), got \(5,\)"):
        naive_edit(tiny64, sample.x_t, sample.t, torch.ones(5), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        edit(tiny64, sample, basis.v[0] * float("nan"), 1.0)
    with pytest.raises(ValueError, match="method must be one of 'guidance', 'naive', got 'magic'"):
        edit(tiny64, sample, basis.v[0], 1.0, method="magic")
    with pytest.raises(ValueError, match="not on the 10-step DDIM schedule"):
        sample_at(tiny64, seed=0, t=555, num_steps=10)


# ----------------------------------------------------------------------------------- transport

def test_transport_to_the_same_sample_returns_the_direction(basis):
    for i in range(3):
        torch.testing.assert_close(transport_direction(basis, basis, basis.v[i]), basis.v[i])


def test_transport_matches_the_explicit_formula_and_lands_in_the_target_span(tiny64, sample):
    other = sample_at(tiny64, seed=2, t=sample.t, num_steps=10)
    a = sample_basis(tiny64, sample, k=3, method="exact")
    b = sample_basis(tiny64, other, k=3, method="exact")
    v = a.v[0] + 0.5 * a.v[2]
    moved = transport_direction(a, b, v)
    # Explicit: truncated Jacobians J_A = U_A Σ_A V_Aᵀ and the pseudo-inverse of J_B.
    flat = lambda t: t.reshape(t.shape[0], -1)  # noqa: E731
    J_a = flat(a.u).T @ torch.diag(a.sigma) @ flat(a.v)
    J_b_pinv = flat(b.v).T @ torch.diag(1 / b.sigma) @ flat(b.u)
    expected = J_b_pinv @ (J_a @ v.reshape(-1))
    torch.testing.assert_close(moved.reshape(-1), expected / expected.norm())
    in_span = flat(b.v).T @ (flat(b.v) @ moved.reshape(-1))
    torch.testing.assert_close(in_span, moved.reshape(-1))
    assert abs(moved.norm().item() - 1) < 1e-12


def test_global_directions_chordal_mean(basis):
    flipped = type(basis)(**{**basis.__dict__, "v": -basis.v})
    mean = global_directions([basis, flipped, basis])
    assert spectral.principal_angles(mean, basis.v).max() < 1e-6
    rotated = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    mixed = type(basis)(**{**basis.__dict__, "v": (rotated @ basis.v.reshape(3, -1)).reshape(basis.v.shape)})
    assert spectral.principal_angles(global_directions([mixed]), basis.v).max() < 1e-6
    with pytest.raises(TypeError, match="non-empty list of LocalBasis"):
        global_directions([])


def test_global_mean_beats_each_input_on_the_chordal_objective(tiny64):
    samples = [sample_at(tiny64, seed=s, t=600, num_steps=10) for s in range(4)]
    bases = [sample_basis(tiny64, sample, k=2, method="exact") for sample in samples]
    mean = global_directions(bases).reshape(2, -1)

    def cost(V):
        P = V.T @ V
        return sum(((P - b.v.reshape(2, -1).T @ b.v.reshape(2, -1)) ** 2).sum() for b in bases)

    assert all(cost(mean) <= cost(b.v.reshape(2, -1)) + 1e-12 for b in bases)


# --------------------------------------------------------------------------------------- caches

def test_basis_cache_round_trip_is_atomic(tiny64, sample, tmp_path):
    first = sample_basis(tiny64, sample, k=2, method="exact", cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    again = sample_basis(tiny64, sample, k=2, method="exact", cache_dir=tmp_path)
    assert torch.equal(first.v, again.v) and again.method == "exact"
    save_basis(first, tmp_path / "b.safetensors", {"note": "x"})
    assert not list(tmp_path.glob("*.tmp"))
    assert torch.equal(load_basis(tmp_path / "b.safetensors").u, first.u)


def test_cached_basis_is_on_the_latents_device(tiny64, sample, tmp_path):
    # a basis read back from the cache must sit where a fresh one does (x_t's device), or
    # mixing it with x_t fails on a GPU; on the CPU: same device, same values as the fresh one
    first = sample_basis(tiny64, sample, k=2, method="exact", cache_dir=tmp_path)
    again = sample_basis(tiny64, sample, k=2, method="exact", cache_dir=tmp_path)
    for name in ("v", "sigma", "u", "residual"):
        assert getattr(again, name).device == sample.x_t.device == getattr(first, name).device
    assert torch.equal(first.u, again.u)


# ---------------------------------------------------------------------------------- interpolation

def test_interpolation_endpoints_and_lengths(tiny64):
    a = sample_at(tiny64, seed=3, t=600, num_steps=10)
    b = sample_at(tiny64, seed=4, t=600, num_steps=10)
    runs = {m: interpolate(tiny64, a, b, n=5, method=m, geodesic_steps=20) for m in ("lerp", "slerp", "geodesic")}
    for run in runs.values():
        torch.testing.assert_close(run.path[0], a.x_t)
        torch.testing.assert_close(run.path[-1], b.x_t)
        assert run.images.shape == (5, 1, 8, 8)
    f = h_space(tiny64, 600)
    assert runs["geodesic"].h_length <= runs["lerp"].h_length + 1e-9
    assert runs["lerp"].x_length <= runs["slerp"].x_length + 1e-9  # the straight line is shortest in X
    with pytest.raises(ValueError, match="same timestep"):
        interpolate(tiny64, a, Sample(b.x_t, 500, 10, 4))
    assert f(a.x_t).shape[0] == 1


def test_a_real_digit_inverted_then_edited_on_the_embedded_model():
    """Invert a real MNIST digit to 0.6 T, then edit it: strength 0 gives the digit back within the
    inversion error (mean |Δ| ≤ 0.05 on [-1, 1]; measured 0.024–0.026), and strength 1 along v_1
    changes it far more than that (measured 0.17–0.35)."""
    from labkit.data import load_digits

    model = load_model()
    image = load_digits(limit=1)[0]
    sample = invert_image(model, image, timestep_at(model, 0.6))
    assert sample.seed is None and sample.t == timestep_at(model, 0.6)
    v1 = sample_basis(model, sample, k=2).v[0]
    back, edited = edit(model, sample, v1, [0.0, 1.0], boost_below=None)
    error = (back - image[0]).abs().mean()
    assert error < 0.05
    assert (edited - back).abs().mean() > 3 * error


def test_invert_image_rejects_a_timestep_off_the_schedule(tiny64):
    with pytest.raises(ValueError, match="not on the 10-step DDIM schedule"):
        invert_image(tiny64, sample_noise(tiny64, 1, seed=0), t=555, num_steps=10)
