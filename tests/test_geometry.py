"""labkit.geometry against closed forms, finite differences and explicit computations (float64)."""

import math

import pytest
import torch

from labkit import geometry as g

DT = torch.float64


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=DT)


def latitude_circle(theta0: float, n: int) -> torch.Tensor:
    """Chart path (n+1, 2) once around the sphere's latitude θ = θ0, closed (last = first point)."""
    phi = torch.linspace(0, 2 * math.pi, n + 1, dtype=DT)
    return torch.stack([torch.full_like(phi, theta0), phi], dim=1)


def great_circle_distance(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(torch.arccos(torch.clamp(p @ q / (p.norm() * q.norm()), -1, 1)))


# ---- toy manifolds and their metrics ---------------------------------------------------------

def test_maps_work_on_points_and_batches():
    uv = torch.rand(5, 3, 2, dtype=DT)
    for f in (g.sphere, g.torus, g.swiss_roll):
        assert f(uv).shape == (5, 3, 3)
        assert torch.allclose(f(uv)[2, 1], f(uv[2, 1]))
    assert g.circle(torch.rand(4, 1, dtype=DT)).shape == (4, 2)
    mlp = g.random_mlp(3, 7, seed=1)
    x = torch.randn(4, 3, dtype=DT)
    assert mlp(x).shape == (4, 7) and mlp(x).dtype == DT
    assert torch.allclose(mlp(x)[1], mlp(x[1]))
    assert torch.equal(g.random_mlp(3, 7, seed=1)(x), mlp(x))  # fixed weights
    assert not torch.allclose(g.random_mlp(3, 7, seed=2)(x), mlp(x))


def test_sphere_is_on_the_sphere():
    uv = torch.rand(100, 2, dtype=DT) * t(math.pi, 2 * math.pi)
    assert torch.allclose(g.sphere(uv, radius=2.5).norm(dim=-1), torch.full((100,), 2.5, dtype=DT))


@pytest.mark.parametrize("radius", [1.0, 3.0])
def test_sphere_metric_closed_form(radius):
    theta, phi = 0.9, 2.1
    G = g.pullback_metric(lambda x: g.sphere(x, radius), t(theta, phi))
    expected = torch.diag(t(radius**2, radius**2 * math.sin(theta) ** 2))
    assert torch.allclose(G, expected, atol=1e-12)


def test_torus_metric_closed_form():
    R, r, u, v = 3.0, 0.7, 0.4, 2.2
    G = g.pullback_metric(lambda x: g.torus(x, R, r), t(u, v))
    assert torch.allclose(G, torch.diag(t((R + r * math.cos(v)) ** 2, r**2)), atol=1e-12)


def test_swiss_roll_metric_closed_form():
    u = 7.0
    assert torch.allclose(g.pullback_metric(g.swiss_roll, t(u, 1.0)), torch.diag(t(1 + u**2, 1.0)), atol=1e-12)


def test_jacobian_matches_finite_differences():
    f = g.random_mlp(4, 6, hidden=16, depth=2, seed=3)
    x = torch.randn(4, dtype=DT)
    J = g.jacobian(f, x)
    eps = 1e-6
    columns = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in torch.eye(4, dtype=DT)]
    J_fd = torch.stack(columns, dim=1)
    assert J.shape == (6, 4)
    assert torch.allclose(J, J_fd, atol=1e-8)


def test_jacobian_of_matrix_shaped_input_is_flattened():
    A = torch.randn(6, 6, dtype=DT)
    f = lambda x: (A @ x.reshape(-1)).reshape(2, 3)  # noqa: E731  x: (2, 3) -> (2, 3)
    assert torch.allclose(g.jacobian(f, torch.randn(2, 3, dtype=DT)), A)


def test_tangent_norm_and_angle_through_the_metric():
    f = g.random_mlp(3, 5, seed=4)
    x, v, w = torch.randn(3, 3, dtype=DT)
    G = g.pullback_metric(f, x)
    assert torch.allclose(g.tangent_norm(f, x, v), torch.sqrt(v @ G @ v))
    cos = (v @ G @ w) / torch.sqrt((v @ G @ v) * (w @ G @ w))
    assert torch.allclose(g.tangent_angle(f, x, v, w), torch.arccos(cos))
    # on the sphere, ∂θ and ∂φ are orthogonal and ∂φ has length sin θ
    x = t(0.5, 1.0)
    assert torch.allclose(g.tangent_angle(g.sphere, x, t(1, 0), t(0, 1)), torch.tensor(math.pi / 2, dtype=DT))
    assert torch.allclose(g.tangent_norm(g.sphere, x, t(0, 1)), torch.tensor(math.sin(0.5), dtype=DT))


# ---- curves ----------------------------------------------------------------------------------

def test_circle_arc_length():
    r, a, b = 2.0, 0.3, 2.8
    path = torch.linspace(a, b, 2001, dtype=DT)[:, None]
    L = g.curve_length(path, lambda th: g.circle(th, r))
    assert abs(float(L) - r * (b - a)) < 1e-5


def test_straight_line_length_and_energy():
    a, b = t(1, 2, 3), t(4, 6, 3)  # distance 5
    path = g.lerp(a, b, torch.linspace(0, 1, 11, dtype=DT))
    assert torch.allclose(g.curve_length(path), torch.tensor(5.0, dtype=DT))
    # constant speed: E = L² exactly
    assert torch.allclose(g.curve_energy(path), torch.tensor(25.0, dtype=DT))


def test_energy_exceeds_squared_length_unless_constant_speed():
    s = torch.linspace(0, 1, 21, dtype=DT) ** 2  # same straight segment, accelerating
    path = t(0, 0) + s[:, None] * t(3, 4)
    L, E = g.curve_length(path), g.curve_energy(path)
    assert torch.allclose(L, torch.tensor(5.0, dtype=DT))
    assert E > 1.2 * L**2  # N Σ Δ² for Δ ∝ (2i+1) is 4/3·L² up to O(1/N²)
    assert torch.allclose(E, torch.tensor(25.0 * (4 / 3 - 1 / (3 * 400)), dtype=DT))


def test_discrete_geodesic_on_sphere_is_a_great_circle_arc():
    a, b = t(math.pi / 3, 0.0), t(math.pi / 3, math.pi / 2)
    d = great_circle_distance(g.sphere(a), g.sphere(b))
    path = g.discrete_geodesic(g.sphere, a, b, n_points=24, steps=200)
    assert path.shape == (24, 2)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    L = float(g.curve_length(path, g.sphere))
    assert abs(L - d) < 0.01 * d
    line = g.lerp(a, b, torch.linspace(0, 1, 24, dtype=DT))
    assert float(g.curve_length(line, g.sphere)) > 1.02 * d  # the chart's straight line is longer
    # the points lie in the plane of the great circle through the endpoints
    normal = torch.linalg.cross(g.sphere(a), g.sphere(b))
    assert float((g.sphere(path) @ normal).abs().max()) < 1e-3
    # and the optimum is (nearly) constant speed: E ≈ L²
    assert float(g.curve_energy(path, g.sphere)) < 1.001 * L**2


def test_discrete_geodesic_in_flat_map_stays_straight():
    A = torch.randn(3, 3, dtype=DT)
    f = lambda x: A @ x  # noqa: E731
    a, b = t(0, 0, 0), t(1, 2, 3)
    path = g.discrete_geodesic(f, a, b, n_points=8, steps=50)
    assert torch.allclose(path, g.lerp(a, b, torch.linspace(0, 1, 8, dtype=DT)), atol=1e-6)


# ---- parallel transport and geodesic shooting ------------------------------------------------

def test_transport_in_flat_map_is_identity():
    A = torch.randn(5, 3, dtype=DT)
    f = lambda x: A @ x  # noqa: E731
    path = torch.randn(10, 3, dtype=DT).cumsum(0)
    v = t(0.3, -1.0, 2.0)
    V = g.parallel_transport(f, path, v)
    assert V.shape == (10, 3)
    assert torch.allclose(V, v.expand(10, 3), atol=1e-10)


def test_transport_keeps_the_pullback_norm_on_sphere():
    path = g.lerp(t(0.4, 0.1), t(1.9, 2.5), torch.linspace(0, 1, 30, dtype=DT))
    v = t(0.7, 1.3)
    V = g.parallel_transport(g.sphere, path, v)
    norms = torch.stack([g.tangent_norm(g.sphere, x, w) for x, w in zip(path, V)])
    assert torch.allclose(norms, norms[0].expand(30), rtol=1e-10)


@pytest.mark.parametrize("theta0", [math.pi / 4, math.pi / 3])
def test_holonomy_around_a_latitude(theta0):
    path = latitude_circle(theta0, 400)
    V = g.parallel_transport(g.sphere, path, t(1.0, 0.0))  # start along ∂θ (pointing south)
    v = V[-1]
    # orthonormal frame e_θ = ∂θ, e_φ = ∂φ / sin θ0: signed rotation angle of the vector
    angle = math.atan2(float(v[1]) * math.sin(theta0), float(v[0])) % (2 * math.pi)
    expected = 2 * math.pi * (1 - math.cos(theta0))
    assert abs(angle - expected) < 0.03 * expected


def test_geodesic_shooting_on_sphere_follows_a_great_circle():
    x0, v0 = t(1.0, 0.0), t(0.3, 1.0)
    n, h = 150, 0.01
    path = g.geodesic_shooting(g.sphere, x0, v0, n_steps=n, step_size=h)
    assert path.shape == (n + 1, 2)
    X = g.sphere(path)
    normal = torch.linalg.cross(X[0], g.jacobian(g.sphere, x0) @ v0)
    normal = normal / normal.norm()
    assert float((X @ normal).abs().max()) < 5e-3  # stays in the plane of one great circle
    speed = float(g.tangent_norm(g.sphere, x0, v0))
    assert abs(float(g.curve_length(path, g.sphere)) - n * h * speed) < 0.01 * n * h * speed
    # a chart-straight line with the same start is not a great circle
    line = x0 + torch.arange(n + 1, dtype=DT)[:, None] * h * v0
    assert float((g.sphere(line) @ normal).abs().max()) > 10 * float((X @ normal).abs().max())


# ---- lerp and slerp --------------------------------------------------------------------------

def test_lerp_shapes_and_values():
    a, b = torch.zeros(2, 3, dtype=DT), torch.ones(2, 3, dtype=DT)
    assert torch.allclose(g.lerp(a, b, 0.25), torch.full((2, 3), 0.25, dtype=DT))
    out = g.lerp(a, b, torch.linspace(0, 1, 5, dtype=DT))
    assert out.shape == (5, 2, 3)
    assert torch.equal(out[0], a) and torch.equal(out[-1], b)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_interpolation_times_follow_the_latents_device_and_dtype(device):
    # interpolate() and discrete_geodesic() pass float CPU times (torch.linspace) for latents that
    # may live on a GPU: the result must be on the latents' device, in their dtype, with the same values.
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 4, generator=gen)
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    for interpolate in (g.lerp, g.slerp):
        out = interpolate(a.to(device), b.to(device), times)
        assert out.device.type == device and out.dtype == torch.float32 and out.shape == (5, 3, 4)
        assert torch.allclose(out[2].cpu(), interpolate(a, b, 0.5), atol=1e-6)


def test_slerp_keeps_the_norm_and_the_endpoints():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 784, generator=gen, dtype=DT)
    b = b * a.norm() / b.norm()
    out = g.slerp(a, b, torch.linspace(0, 1, 9, dtype=DT))
    assert torch.allclose(out.norm(dim=1), a.norm().expand(9))
    assert torch.allclose(out[0], a) and torch.allclose(out[-1], b)
    # the angle grows linearly in t
    angles = torch.arccos(out @ a / (out.norm(dim=1) * a.norm()))
    assert torch.allclose(angles, torch.linspace(0, 1, 9, dtype=DT) * angles[-1], atol=1e-10)
    assert torch.allclose(g.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: falls back to lerp


def test_lerp_midpoint_norm_concentrates():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 200, 784, generator=gen, dtype=DT)
    mid = torch.stack([g.lerp(x, y, 0.5) for x, y in zip(a, b)]).norm(dim=1)
    typical = a.norm(dim=1)
    assert abs(float(mid.mean()) - math.sqrt(392)) < 0.5
    assert abs(float(typical.mean()) - math.sqrt(784)) < 0.5
    assert float(mid.max()) < float(typical.min())  # no lerp midpoint looks like a sample


# ---- bad input -------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        g.sphere(torch.zeros(3, dtype=DT))
    with pytest.raises(ValueError, match="NaN"):
        g.pullback_metric(g.sphere, t(float("nan"), 0.0))
    with pytest.raises(TypeError, match="floating"):
        g.jacobian(g.sphere, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="local_basis"):
        g.pullback_metric(lambda x: x, torch.zeros(5000, dtype=DT))
    with pytest.raises(ValueError, match="n_points"):
        g.discrete_geodesic(g.sphere, t(1, 0), t(1, 1), n_points=1)
    with pytest.raises(ValueError, match="same shape"):
        g.discrete_geodesic(g.sphere, t(1, 0), t(1, 1, 0))
    with pytest.raises(ValueError, match="at least 2 points"):
        g.curve_length(torch.zeros(1, 2, dtype=DT))
    with pytest.raises(ValueError, match="shape of one path point"):
        g.parallel_transport(g.sphere, torch.rand(5, 2, dtype=DT), t(1, 0, 0))
    with pytest.raises(ValueError, match="same shape"):
        g.lerp(torch.zeros(3), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="opposite"):
        g.slerp(t(1, 0), t(-1, 0), 0.5)
    with pytest.raises(ValueError, match="zero length"):
        g.tangent_angle(g.sphere, t(1, 0), t(0, 0), t(1, 0))
    with pytest.raises(ValueError, match="step_size"):
        g.geodesic_shooting(g.sphere, t(1, 0), t(0, 1), n_steps=3, step_size=-0.1)
    with pytest.raises(ValueError, match="hidden"):
        g.random_mlp(2, 3, hidden=0)
