"""labkit.spectral against explicit computations: full Jacobians, numpy's SVD, closed forms."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit.spectral import (
    EXACT_MAX_ENTRIES,
    LocalBasis,
    jvps,
    local_basis,
    principal_angles,
    subspace_distance,
    vjps,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These matrices are tiny: extra threads only add overhead, and on a shared 2-core machine
    # they make every product 10-50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def explicit_jacobian(f, x):
    """(m, n) Jacobian by torch.autograd, independent of the code under test."""
    return torch.autograd.functional.jacobian(f, x).reshape(f(x).numel(), x.numel())


def random_orthogonal(n, generator):
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def linear_map(s, m, seed=0):
    """f(x) = A x with A = U diag(s) Vᵀ; returns f, U (m, m), V (n, n)."""
    g = torch.Generator().manual_seed(seed)
    n = len(s)
    U, V = random_orthogonal(m, g), random_orthogonal(n, g)
    A = U[:, :n] @ torch.diag(s) @ V.T
    return (lambda x: A.to(x.dtype) @ x), U, V


def mlp(n, m, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, m)).to(dtype)
    return net.requires_grad_(False)


def conv_net(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1)
    )
    return net.to(dtype).requires_grad_(False).eval()


def flat(t):
    return t.reshape(len(t), -1)


# ---------------------------------------------------------------------------------------------
# Closed forms and the exact method


def test_exact_recovers_closed_form_singular_vectors():
    s = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    f, U, V = linear_map(s, m=9)
    basis = local_basis(f, torch.zeros(6, dtype=torch.float64), k=4, method="exact")
    assert isinstance(basis, LocalBasis)
    torch.testing.assert_close(basis.sigma, s[:4])
    # Same vectors up to sign: |⟨v_i, V_i⟩| = 1.
    torch.testing.assert_close((basis.v * V.T[:4]).sum(1).abs(), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close((basis.u * U.T[:4]).sum(1).abs(), torch.ones(4, dtype=torch.float64))
    assert basis.residual.max() < 1e-12


def test_diagonal_nonlinear_map():
    # f(x)_i = a_i sin(x_i): J = diag(a_i cos x_i), so σ are the sorted |a_i cos x_i| and the
    # singular vectors are coordinate axes.
    a = torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0], dtype=torch.float64)
    x = torch.tensor([0.3, 0.1, 1.2, -0.4, 2.0], dtype=torch.float64)
    d = a * torch.cos(x)
    order = torch.argsort(d.abs(), descending=True)
    for method in ("exact", "krylov", "power"):
        basis = local_basis(lambda z: a * torch.sin(z), x, k=3, method=method, tol=1e-10)
        torch.testing.assert_close(basis.sigma, d.abs()[order[:3]], rtol=1e-8, atol=0)
        axes = torch.eye(5, dtype=torch.float64)[order[:3]]
        torch.testing.assert_close(basis.v, axes, atol=1e-6, rtol=0)  # sign-normalised: +e_i
        torch.testing.assert_close(basis.u, axes * torch.sign(d[order[:3]])[:, None], atol=1e-6, rtol=0)


def test_exact_matches_numpy_svd_of_explicit_jacobian():
    f = mlp(7, 11)
    x = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    J = explicit_jacobian(f, x).numpy()
    _, S, Vh = np.linalg.svd(J)
    basis = local_basis(f, x, k=5, method="exact")
    np.testing.assert_allclose(basis.sigma.numpy(), S[:5], rtol=1e-10)
    np.testing.assert_allclose(np.abs((basis.v.numpy() * Vh[:5]).sum(1)), 1.0, rtol=1e-8)
    # jacfwd (n ≤ m) counts n JVPs; a wide map takes jacrev and counts m VJPs.
    assert (basis.n_jvp, basis.n_vjp) == (7, 0)
    wide = local_basis(mlp(11, 7), torch.zeros(11, dtype=torch.float64), k=3, method="exact")
    assert (wide.n_jvp, wide.n_vjp) == (0, 7)


# ---------------------------------------------------------------------------------------------
# Iterative methods agree with exact


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["krylov", "power"])
def test_iterative_methods_agree_with_exact(method, dtype):
    f = mlp(20, 30, dtype=dtype)
    x = torch.randn(20, generator=torch.Generator().manual_seed(1)).to(dtype)
    tol = 1e-6 if dtype == torch.float64 else 1e-5
    basis = local_basis(f, x, k=4, method=method, tol=tol)
    exact = local_basis(f, x, k=4, method="exact")
    assert principal_angles(basis.v, exact.v).max() < 1e-3
    torch.testing.assert_close(basis.sigma, exact.sigma, rtol=1e-3, atol=0)
    assert basis.residual.max() <= tol
    # J v_i = σ_i u_i, checked with a Jacobian computed independently.
    J = explicit_jacobian(f, x)
    torch.testing.assert_close(flat(basis.v) @ J.T, basis.sigma[:, None] * flat(basis.u), rtol=0, atol=1e-4)
    # Orthonormal outputs.
    eye = torch.eye(4, dtype=dtype)
    torch.testing.assert_close(flat(basis.v) @ flat(basis.v).T, eye, rtol=0, atol=1e-5)
    torch.testing.assert_close(flat(basis.u) @ flat(basis.u).T, eye, rtol=0, atol=1e-5)
    assert basis.n_jvp == basis.n_vjp > 0


def test_conv_net_with_groupnorm():
    net = conv_net(torch.float64)
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    basis = local_basis(net, x, k=4, method="krylov", tol=1e-8)
    assert basis.v.shape == (4, 1, 1, 8, 8) and basis.u.shape == (4, 1, 4, 4, 4)
    exact = local_basis(net, x, k=4, method="exact")
    assert principal_angles(basis.v, exact.v).max() < 1e-6
    torch.testing.assert_close(basis.sigma, exact.sigma, rtol=1e-8, atol=0)
    J = explicit_jacobian(net, x)
    torch.testing.assert_close(flat(basis.v) @ J.T, basis.sigma[:, None] * flat(basis.u))


def test_krylov_needs_far_fewer_products_than_power_when_gaps_are_small():
    # σ_i = 0.95^i: every ratio σ_{k+1}/σ_k is 0.95, like the U-Net bottleneck's small gaps.
    s = 0.95 ** torch.arange(150, dtype=torch.float64)
    f, _, V = linear_map(s, m=170)
    x = torch.zeros(150, dtype=torch.float64)
    krylov = local_basis(f, x, k=5, method="krylov", tol=1e-6)
    power = local_basis(f, x, k=5, method="power", tol=1e-6, max_iter=2000)
    for basis in (krylov, power):
        assert principal_angles(basis.v, V.T[:5]).max() < 1e-3
    assert krylov.n_jvp + krylov.n_vjp < len(x) * 2  # converged before the basis filled X
    assert 3 * (krylov.n_jvp + krylov.n_vjp) <= power.n_jvp + power.n_vjp


@pytest.mark.parametrize("block", [1, 2])
def test_krylov_with_a_block_smaller_than_k_agrees_with_exact(block):
    # block = 1 is Golub–Kahan–Lanczos: one JVP and one VJP per iteration.
    f = mlp(20, 30)
    x = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    basis = local_basis(f, x, k=4, block=block, tol=1e-8)
    exact = local_basis(f, x, k=4, method="exact")
    assert principal_angles(basis.v, exact.v).max() < 1e-6
    torch.testing.assert_close(basis.sigma, exact.sigma, rtol=1e-8, atol=0)
    assert basis.n_jvp == block * basis.iterations and basis.iterations >= 4 // block
    # Too few iterations to converge still returns k vectors, with a warning.
    with pytest.warns(RuntimeWarning, match="raise max_iter"):
        short = local_basis(f, x, k=4, block=1, tol=1e-12, max_iter=1)
    assert short.v.shape == (4, 20) and short.iterations == 4


def test_power_warns_when_it_runs_out_of_iterations():
    s = 0.99 ** torch.arange(40, dtype=torch.float64)
    f, _, _ = linear_map(s, m=40)
    with pytest.warns(RuntimeWarning, match="raise max_iter"):
        basis = local_basis(f, torch.zeros(40, dtype=torch.float64), k=3, method="power", max_iter=5)
    assert basis.iterations == 5 and basis.n_jvp == 15


def test_rank_deficient_map_fills_the_basis_and_stays_exact():
    s = torch.tensor([4.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    f, _, V = linear_map(s, m=8)
    basis = local_basis(f, torch.zeros(8, dtype=torch.float64), k=3, oversample=2)
    torch.testing.assert_close(basis.sigma, s[:3])
    assert principal_angles(basis.v, V.T[:3]).max() < 1e-6


# ---------------------------------------------------------------------------------------------
# JVPs and VJPs


def test_adjoint_identity():
    f = mlp(6, 9)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, generator=g, dtype=torch.float64)
    V = torch.randn(4, 6, generator=g, dtype=torch.float64)
    U = torch.randn(4, 9, generator=g, dtype=torch.float64)
    JV, JtU = jvps(f, x, V), vjps(f, x, U)
    # ⟨J v_a, u_b⟩ = ⟨v_a, Jᵀ u_b⟩ for every pair.
    torch.testing.assert_close(JV @ U.T, V @ JtU.T, rtol=1e-12, atol=1e-12)


def test_jvps_match_finite_differences_and_vjps_match_explicit_jacobian():
    net = conv_net(torch.float64)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 1, 8, 8, generator=g, dtype=torch.float64)
    V = torch.randn(3, 1, 1, 8, 8, generator=g, dtype=torch.float64)
    h = 1e-5
    central = torch.stack([(net(x + h * v) - net(x - h * v)) / (2 * h) for v in V])
    JV = jvps(net, x, V)
    assert JV.shape == (3, 1, 4, 4, 4)
    torch.testing.assert_close(JV, central, rtol=1e-6, atol=1e-8)
    U = torch.randn(3, 1, 4, 4, 4, generator=g, dtype=torch.float64)
    J = explicit_jacobian(net, x)
    torch.testing.assert_close(flat(vjps(net, x, U)), flat(U) @ J)
    # Chunking bounds memory and changes nothing.
    torch.testing.assert_close(jvps(net, x, V, chunk_size=1), JV)


# ---------------------------------------------------------------------------------------------
# Determinism and signs


def test_same_seed_same_output_and_other_seeds_agree():
    f = mlp(12, 15)
    x = torch.randn(12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = local_basis(f, x, k=3, seed=7, tol=1e-8, oversample=2)
    b = local_basis(f, x, k=3, seed=7, tol=1e-8, oversample=2)
    c = local_basis(f, x, k=3, seed=8, tol=1e-8, oversample=2)
    for field in ("v", "sigma", "u", "residual"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert (a.n_jvp, a.iterations) == (b.n_jvp, b.iterations)
    # Another random start converges to the same (sign-normalised) vectors.
    torch.testing.assert_close(c.v, a.v, rtol=0, atol=1e-6)


def test_sign_normalisation():
    f = mlp(10, 10)
    x = torch.randn(10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    basis = local_basis(f, x, k=4, tol=1e-8)
    v = flat(basis.v)
    largest = v.gather(1, v.abs().argmax(1, keepdim=True))
    assert (largest > 0).all()
    # Flipping f flips u only: v keeps its sign convention and J v = σ u still holds.
    flipped = local_basis(lambda z: -f(z), x, k=4, tol=1e-8)
    torch.testing.assert_close(flipped.v, basis.v, rtol=0, atol=1e-6)
    torch.testing.assert_close(flipped.u, -basis.u, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Principal angles


def test_principal_angles_known_values_and_invariances():
    e = torch.eye(4, dtype=torch.float64)
    for theta in (1e-7, 0.3, math.pi / 2):
        B = torch.stack([math.cos(theta) * e[0] + math.sin(theta) * e[2], e[1]])
        angles = principal_angles(e[:2], B)
        torch.testing.assert_close(angles, torch.tensor([0.0, theta], dtype=torch.float64), rtol=1e-9, atol=1e-15)
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)  # rows of any shape
    B = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    R = random_orthogonal(3, g)  # rotation within the subspace
    reference = principal_angles(A, B)
    torch.testing.assert_close(principal_angles(-A, B), reference)
    torch.testing.assert_close(principal_angles(torch.einsum("ij,j...->i...", R, A), B.flip(0)), reference)
    torch.testing.assert_close(principal_angles(B, A), reference)
    assert torch.all(reference[1:] >= reference[:-1])
    assert subspace_distance(A, torch.einsum("ij,j...->i...", R, A)) < 1e-7
    torch.testing.assert_close(subspace_distance(A, B), torch.linalg.vector_norm(reference))


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_clear_errors():
    f = mlp(5, 7)
    x = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"k must be in 1..5 .*min\(n, m\)"):
        local_basis(f, x, k=6)
    with pytest.raises(ValueError, match=r"k must be in 1..5 .*got 0"):
        local_basis(f, x, k=0)
    with pytest.raises(ValueError, match="method must be one of 'exact', 'power', 'krylov'.*got 'svd'"):
        local_basis(f, x, k=2, method="svd")
    with pytest.raises(ValueError, match="x contains NaN"):
        local_basis(f, torch.full((5,), float("nan"), dtype=torch.float64), k=2)
    with pytest.raises(ValueError, match=r"f\(x\) contains NaN"):
        local_basis(lambda z: torch.log(z - 1.0), x, k=2)
    with pytest.raises(TypeError, match=r"f\(x\) must return a torch.Tensor, got tuple"):
        local_basis(lambda z: (z, z), x, k=2)
    with pytest.raises(TypeError, match="k must be an int"):
        local_basis(f, x, k=2.0)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int64"):
        local_basis(f, torch.zeros(5, dtype=torch.long), k=2)
    with pytest.raises(TypeError, match="float32 or float64"):
        local_basis(f, torch.zeros(5, dtype=torch.float16), k=2)
    with pytest.raises(TypeError, match="V must be torch.float64 on cpu like the point"):
        jvps(f, x, torch.zeros(2, 5, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"block must be in 1..5 .*got 0"):
        local_basis(f, x, k=3, block=0)
    with pytest.raises(ValueError, match=r"V must have shape \(any, 5\), got \(2, 6\).*\(b, \*x.shape\)"):
        jvps(f, x, torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        principal_angles(torch.zeros(2, 5), torch.zeros(2, 6))
    side = math.isqrt(EXACT_MAX_ENTRIES) + 1
    with pytest.raises(ValueError, match="use method='krylov'"):
        local_basis(lambda z: 2.0 * z, torch.zeros(side), k=1, method="exact")


@pytest.mark.parametrize(("method", "option"), [("exact", dict(jvp_mode="forward")), ("exact", dict(max_dim=40)),
                                                ("reference", dict(jvp_mode="double-vjp")), ("power", dict(block=2)),
                                                ("reference", dict(chunk_size=4))])
def test_an_option_the_method_does_not_use_is_refused_not_ignored(method, option):
    (name, value), = option.items()
    with pytest.raises(ValueError, match=rf"method='{method}' does not use {name}={value!r}; leave it out"):
        local_basis(mlp(5, 7), torch.zeros(5, dtype=torch.float64), k=2, method=method, **option)


def test_every_method_accepts_its_defaults_and_a_progress_bar():
    f, x = mlp(5, 7), torch.zeros(5, dtype=torch.float64)
    bases = [local_basis(f, x, k=2, method=m, jvp_mode="auto", tol=1e-4, progress=False) for m in ("power", "krylov")]
    bases += [local_basis(f, x, k=2, method=m, progress=True) for m in ("exact", "reference")]
    assert all(principal_angles(b.v, bases[2].v).max() < 1e-2 for b in bases)


def test_reference_port_agrees_with_power_and_exact():
    """The port of the reference power method reaches the same basis, with k JVPs + k VJPs per sweep."""
    torch.manual_seed(3)
    A = torch.randn(12, 9, dtype=torch.float64)
    f = lambda x: torch.tanh(A @ x) * 2.0  # noqa: E731
    x = torch.randn(9, dtype=torch.float64)
    exact = local_basis(f, x, 3, method="exact")
    ref = local_basis(f, x, 3, method="reference", tol=1e-10, max_iter=2000)
    power = local_basis(f, x, 3, method="power", tol=1e-10, max_iter=2000)
    assert principal_angles(ref.v, exact.v).max() < 1e-6
    torch.testing.assert_close(ref.sigma, exact.sigma, rtol=1e-8, atol=0)
    assert ref.n_jvp == ref.n_vjp == 3 * ref.iterations
    assert ref.iterations == power.iterations  # same iteration, same start block


# ---------------------------------------------------------------------------------------------
# Block Lanczos at tight tolerance, thick restarts, deflation, the float32 floor


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.float64, 1e-7), (torch.float64, 1e-11)])
def test_krylov_at_tight_tolerance_against_the_exact_svd(dtype, tol):
    # Float64 linear algebra around the map's own products: a float32 map gets down to its
    # rounding floor (a few 1e-7 here), a float64 one far below 1e-7.
    f = mlp(60, 80, seed=3, dtype=dtype)
    x = torch.randn(60, generator=torch.Generator().manual_seed(2)).to(dtype)
    basis = local_basis(f, x, k=5, tol=tol)
    exact = local_basis(f.double(), x.double(), k=5, method="exact")
    assert basis.residual.max() <= tol and basis.v.dtype == dtype
    assert basis.n_jvp < 60  # converged before the basis filled X
    # The certificate is honest: JᵀJ v − σ² v recomputed in float64 from the explicit Jacobian.
    J = explicit_jacobian(f.double(), x.double())
    V = flat(basis.v).double()
    recomputed = ((V @ J.T @ J - exact.sigma[:, None] ** 2 * V).norm(dim=1) / exact.sigma**2).max()
    assert recomputed < (1e-5 if dtype == torch.float32 else 10 * tol)
    # σ error ≈ residual² (Rayleigh quotient); angle ≈ residual / relative gap.
    torch.testing.assert_close(basis.sigma.double(), exact.sigma, rtol=1e-6 if dtype == torch.float32 else 1e-13,
                               atol=0)
    assert principal_angles(basis.v.double(), exact.v).max() < (1e-4 if dtype == torch.float32 else 100 * tol)


def test_thick_restart_and_deflation_keep_the_answer():
    s = 0.97 ** torch.arange(120, dtype=torch.float64)
    f, _, V = linear_map(s, m=130)
    x = torch.zeros(120, dtype=torch.float64)
    free = local_basis(f, x, k=6, tol=1e-9, max_dim=120)
    restarted = local_basis(f, x, k=6, tol=1e-9, block=4, max_dim=20, max_iter=400)
    for basis in (free, restarted):
        assert basis.residual.max() <= 1e-9
        assert principal_angles(basis.v, V.T[:6]).max() < 1e-6
        torch.testing.assert_close(basis.sigma, s[:6], rtol=1e-10, atol=0)
    # Deflation: once top vectors converge, blocks shrink below the largest block of 4.
    assert restarted.n_jvp < 4 * restarted.iterations
    with pytest.raises(ValueError, match="max_dim must be at least"):
        local_basis(f, x, k=6, block=4, max_dim=10)


def test_float32_stops_at_its_rounding_floor_with_a_clear_warning():
    f = mlp(150, 160, seed=1, dtype=torch.float32)
    x = torch.randn(150, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="rounding level"):
        basis = local_basis(f, x, k=4, tol=1e-13, max_iter=200)
    # Stopped early (not at max_iter, not by filling X), near the float32 floor.
    assert basis.iterations < 60 and basis.n_jvp < 150 and basis.residual.max() < 1e-5


def test_a_tolerance_below_the_float32_floor_still_reaches_the_floor_on_the_embedded_model():
    # Regression: on the embedded U-Net (t = 0.2 T, k = 8), tol = 1e-7 is below what float32
    # products allow. Blocks spent on Ritz vectors already at the floor (their residual is noise)
    # once stalled the rest at 2e-5 after 150 products, worse than tol = 1e-6 gave in 51.
    from labkit.diffusion import h_space, sample_at, timestep_at
    from labkit.models import load_model

    model = load_model()
    t = timestep_at(model, 0.2)
    f, x = h_space(model, t), sample_at(model, seed=0, t=t).x_t
    loose = local_basis(f, x, 8, tol=1e-6)
    with pytest.warns(RuntimeWarning, match="rounding level"):
        tight = local_basis(f, x, 8, tol=1e-7)
    recheck = jvps(f, x, tight.v)
    W = vjps(f, x, recheck).reshape(8, -1).double()
    s2 = tight.sigma.double() ** 2
    residual = ((W - s2[:, None] * tight.v.reshape(8, -1).double()).norm(dim=1) / s2).max()
    assert residual < 1e-6 and tight.residual.max() < 1e-6
    assert tight.n_jvp < 2 * loose.n_jvp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_double_vjp_matches_forward_mode_and_finite_differences(dtype):
    net = conv_net(dtype)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 1, 8, 8, generator=g).to(dtype)
    V = torch.randn(3, 1, 1, 8, 8, generator=g).to(dtype)
    forward, transposed = jvps(net, x, V), jvps(net, x, V, mode="double-vjp")
    torch.testing.assert_close(transposed, forward)
    if dtype == torch.float64:
        h = 1e-5
        central = torch.stack([(net(x + h * v) - net(x - h * v)) / (2 * h) for v in V])
        torch.testing.assert_close(transposed, central, rtol=1e-6, atol=1e-8)
    # local_basis gives the same basis either way, with the same products.
    a = local_basis(net, x, k=3, tol=1e-6, jvp_mode="forward")
    b = local_basis(net, x, k=3, tol=1e-6, jvp_mode="double-vjp")
    torch.testing.assert_close(b.sigma, a.sigma, rtol=1e-5, atol=0)
    assert principal_angles(a.v, b.v).max() < 1e-3
    with pytest.raises(ValueError, match="jvp_mode must be one of"):
        local_basis(net, x, k=3, jvp_mode="reverse")
    with pytest.raises(ValueError, match="mode must be 'forward' or 'double-vjp'"):
        jvps(net, x, V, mode="transpose")
