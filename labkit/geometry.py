"""Geometry on toy maps: manifolds, Jacobians, pullback metrics, curves, geodesics, transport.

Everything here works through a *map* ``f`` from chart coordinates ``x`` (a tensor of any shape)
to an output space (any shape): a toy embedding such as ``sphere`` or ``torus``, a small random
MLP, or, in Part II, the U-Net from ``x_t`` to its bottleneck ``h``. The output space carries the
Euclidean inner product; ``f`` pulls it back to the input:

    ⟨v, w⟩_x = (J v) · (J w) = vᵀ G w,    J = ∂f/∂x,  G = Jᵀ J.

Lengths of curves, energies, geodesics and parallel transport are all measured with this metric.
The functions that build the full Jacobian (``jacobian``, ``pullback_metric``,
``parallel_transport``, ``geodesic_shooting``) are meant for small inputs (toy maps); for a U-Net
use ``labkit.local_basis``, which never materialises J.

Explained in: book/part1-geometry/04_pullback_metric.ipynb and 06_curves.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from labkit.checks import check_callable, check_float, check_int, check_tensor

Map = Callable[[Tensor], Tensor]

# Above this many input coordinates, an explicit n×n metric is the wrong tool.
MAX_EXPLICIT_DIM = 4096


# --------------------------------------------------------------------------------------------
# Input checks (called by the top-level functions, not inside the maps, so that the maps stay
# usable under torch.func.vmap / jacrev, where data-dependent Python branches are not allowed)
# --------------------------------------------------------------------------------------------

def _check_tensor(name: str, x: object) -> Tensor:
    return check_tensor(name, x)


def _check_last_dim(name: str, x: Tensor, d: int) -> None:
    check_tensor(name, x, shape=(..., d), finite=False, hint=f"the last dimension holds the {d} chart coordinates")


def _check_path(path: object) -> Tensor:
    path = check_tensor("path", path)
    if path.ndim < 1 or path.shape[0] < 2:
        raise ValueError(f"path must have shape (N+1, *x.shape) with at least 2 points, got {tuple(path.shape)}.")
    return path


def _check_map(f: object) -> None:
    check_callable("f", f, hint="a map from chart coordinates to points, e.g. labkit.geometry.sphere")


# --------------------------------------------------------------------------------------------
# Toy manifolds: chart coordinates -> points in R^2 or R^3
# --------------------------------------------------------------------------------------------

def circle(theta: Tensor, radius: float = 1.0) -> Tensor:
    """The circle of radius r: θ ↦ (r cos θ, r sin θ). Shape (..., 1) -> (..., 2).

    Pullback metric: G = r² (a 1×1 matrix), so an arc Δθ has length r·Δθ.
    """
    _check_last_dim("theta", theta, 1)
    check_float("radius", radius, 0.0, low_open=True)
    t = theta[..., 0]
    return radius * torch.stack([torch.cos(t), torch.sin(t)], dim=-1)


def sphere(uv: Tensor, radius: float = 1.0) -> Tensor:
    """The sphere of radius r in polar angle θ = uv[..., 0] and azimuth φ = uv[..., 1].

    (θ, φ) ↦ r (sin θ cos φ, sin θ sin φ, cos θ).  Shape (..., 2) -> (..., 3).
    Pullback metric: G = diag(r², r² sin² θ); the chart is singular at the poles θ = 0, π.
    """
    _check_last_dim("uv", uv, 2)
    check_float("radius", radius, 0.0, low_open=True)
    theta, phi = uv[..., 0], uv[..., 1]
    return radius * torch.stack(
        [torch.sin(theta) * torch.cos(phi), torch.sin(theta) * torch.sin(phi), torch.cos(theta)], dim=-1
    )


def torus(uv: Tensor, R: float = 2.0, r: float = 1.0) -> Tensor:
    """The torus with tube radius r around a circle of radius R.

    u = uv[..., 0] goes around the big circle, v = uv[..., 1] around the tube:
    (u, v) ↦ ((R + r cos v) cos u, (R + r cos v) sin u, r sin v).  Shape (..., 2) -> (..., 3).
    Pullback metric: G = diag((R + r cos v)², r²).
    """
    _check_last_dim("uv", uv, 2)
    check_float("R", R, 0.0, low_open=True), check_float("r", r, 0.0, low_open=True)
    u, v = uv[..., 0], uv[..., 1]
    ring = R + r * torch.cos(v)
    return torch.stack([ring * torch.cos(u), ring * torch.sin(u), r * torch.sin(v)], dim=-1)


def swiss_roll(uv: Tensor) -> Tensor:
    """The swiss roll: (u, v) ↦ (u cos u, v, u sin u). Shape (..., 2) -> (..., 3).

    A flat sheet rolled up (use u in about [1.5π, 4.5π]): G = diag(1 + u², 1), so distances
    along the roll grow with u while the surface has no intrinsic curvature in the v direction.
    """
    _check_last_dim("uv", uv, 2)
    u, v = uv[..., 0], uv[..., 1]
    return torch.stack([u * torch.cos(u), v, u * torch.sin(u)], dim=-1)


def random_mlp(in_dim: int, out_dim: int, hidden: int = 32, depth: int = 2, seed: int = 0) -> Map:
    """A smooth MLP with fixed random weights, returned as a plain function x -> y.

    ``depth`` tanh hidden layers of width ``hidden``, then a linear output layer; weights are
    N(0, 1/fan_in) drawn from a seeded generator in float64 and cast to the input's dtype at call
    time. Works on x of shape (..., in_dim) and returns (..., out_dim). A stand-in for a network
    whose Jacobian we want to study without training anything.
    """
    for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden)):
        check_int(name, value, 1, 100_000)
    check_int("depth", depth, 0, 100)
    check_int("seed", seed, 0, 2**63 - 1)
    gen = torch.Generator().manual_seed(seed)
    widths = [in_dim] + [hidden] * depth + [out_dim]
    layers = [
        (torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) / math.sqrt(n_in),
         0.1 * torch.randn(n_out, generator=gen, dtype=torch.float64))
        for n_in, n_out in zip(widths[:-1], widths[1:])
    ]

    def mlp(x: Tensor) -> Tensor:
        _check_last_dim("x", x, in_dim)
        for i, (W, b) in enumerate(layers):
            x = x @ W.to(x.dtype).T + b.to(x.dtype)
            if i < len(layers) - 1:
                x = torch.tanh(x)
        return x

    return mlp


# --------------------------------------------------------------------------------------------
# Jacobians and the pullback metric
# --------------------------------------------------------------------------------------------

def jacobian(f: Map, x: Tensor) -> Tensor:
    """The Jacobian J = ∂f/∂x at one point, flattened to a matrix of shape (m, n).

    m = f(x).numel(), n = x.numel(); J[i, j] = ∂ f(x).flatten()[i] / ∂ x.flatten()[j].
    Computed by reverse mode (torch.func.jacrev): one VJP per output coordinate.

    Explained in: book/part1-geometry/03_jacobians.ipynb
    """
    _check_map(f)
    x = _check_tensor("x", x)
    if x.numel() > MAX_EXPLICIT_DIM:
        raise ValueError(
            f"x has {x.numel()} entries: the Jacobian (and the metric JᵀJ, {x.numel()}×{x.numel()}) would be "
            f"built as explicit matrices, meant for at most {MAX_EXPLICIT_DIM}; for large inputs use "
            "labkit.local_basis(f, x, k), which needs only Jacobian-vector products."
        )
    return torch.func.jacrev(f)(x).reshape(-1, x.numel())


def pullback_metric(f: Map, x: Tensor) -> Tensor:
    """The metric G = Jᵀ J that f pulls back from its (Euclidean) output space to x.

    ⟨v, w⟩_G = (J v) · (J w): lengths in the input are measured by how far f moves its output.
    Returns G with shape (n, n), n = x.numel(). Builds the full Jacobian, so it is meant for
    small n (toy maps); for a U-Net use ``labkit.local_basis``, which never materialises J.

    Explained in: book/part1-geometry/04_pullback_metric.ipynb
    """
    J = jacobian(f, x)  # checks x, and refuses inputs too large for an explicit matrix
    return J.T @ J


def _pushforward(f: Map, x: Tensor, v: Tensor) -> Tensor:
    """J v by one forward-mode product (no full Jacobian), flattened."""
    if v.shape != x.shape:
        raise ValueError(f"tangent vector must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}.")
    _, Jv = torch.func.jvp(f, (x,), (v.to(x.dtype),))
    return Jv.reshape(-1)


def tangent_norm(f: Map, x: Tensor, v: Tensor) -> Tensor:
    """The length of tangent vector v at x measured through f: ‖v‖_G = √(vᵀ G v) = ‖J v‖.

    v has the shape of x. Uses one Jacobian-vector product, so it works for any input size.

    Explained in: book/part1-geometry/04_pullback_metric.ipynb
    """
    _check_map(f)
    x, v = _check_tensor("x", x), _check_tensor("v", v)
    return torch.linalg.vector_norm(_pushforward(f, x, v))


def tangent_angle(f: Map, x: Tensor, v: Tensor, w: Tensor) -> Tensor:
    """The angle (radians, in [0, π]) between tangent vectors v and w at x, measured through f.

    cos α = ⟨v, w⟩_G / (‖v‖_G ‖w‖_G) = (J v)·(J w) / (‖J v‖ ‖J w‖).

    Explained in: book/part1-geometry/04_pullback_metric.ipynb
    """
    _check_map(f)
    x, v, w = _check_tensor("x", x), _check_tensor("v", v), _check_tensor("w", w)
    Jv, Jw = _pushforward(f, x, v), _pushforward(f, x, w)
    norms = torch.linalg.vector_norm(Jv) * torch.linalg.vector_norm(Jw)
    if not bool(norms > 0):
        raise ValueError("tangent_angle: v or w has zero length through f (J v = 0 or J w = 0); "
                         "its angle is undefined.")
    # clamp: rounding can push the cosine a hair outside [-1, 1]
    return torch.arccos(torch.clamp(Jv @ Jw / norms, -1.0, 1.0))


# --------------------------------------------------------------------------------------------
# Curves: length, energy, discrete geodesics
# --------------------------------------------------------------------------------------------

def _image(path: Tensor, f: Map | None) -> Tensor:
    """The points f(x_0), …, f(x_N), flattened to shape (N+1, m)."""
    if f is not None:
        _check_map(f)
    points = path if f is None else torch.func.vmap(f)(path)
    return points.reshape(path.shape[0], -1)


def curve_length(path: Tensor, f: Map | None = None) -> Tensor:
    """The length of the polygon through f(x_0), …, f(x_N): L = Σ ‖f(x_{i+1}) − f(x_i)‖.

    path has shape (N+1, *x.shape). Without f, the length in the chart itself (Euclidean).
    As the path is refined, L converges to the arc length ∫ ‖J γ'(t)‖ dt.

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    steps = torch.diff(_image(_check_path(path), f), dim=0)
    return torch.linalg.vector_norm(steps, dim=1).sum()


def curve_energy(path: Tensor, f: Map | None = None) -> Tensor:
    """The discrete energy E = N Σ ‖f(x_{i+1}) − f(x_i)‖², i.e. ∫ ‖γ'(t)‖² dt with dt = 1/N.

    By Cauchy–Schwarz, E ≥ L² with equality iff all steps have the same length (constant
    speed), which is why minimising E gives constant-speed shortest paths.

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    steps = torch.diff(_image(_check_path(path), f), dim=0)
    return steps.shape[0] * (steps**2).sum()


def discrete_geodesic(
    f: Map,
    x0: Tensor,
    x1: Tensor,
    n_points: int = 16,
    steps: int = 300,
    tol: float = 1e-12,
    progress: bool = False,
    init: Tensor | None = None,
) -> Tensor:
    """A discrete geodesic from x0 to x1: the path of n_points that minimises the energy through f.

    Starts from ``init`` (shape (n_points, *x0.shape), e.g. a slerp path for Gaussian latents)
    or else from the straight line in the chart, keeps the endpoints fixed and minimises
    ``curve_energy(path, f)`` over the interior points with L-BFGS (at most ``steps`` iterations;
    stops early once the gradient or the energy change falls below ``tol``). Returns the path, shape
    (n_points, *x0.shape), with path[0] = x0 and path[-1] = x1. Finds a *local* minimum: on a
    sphere or torus there can be several geodesics between two points.

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    x0, x1 = _check_tensor("x0", x0), _check_tensor("x1", x1)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}.")
    _check_map(f)
    check_int("n_points", n_points, 2, 10_000, hint="the two endpoints at least")
    check_int("steps", steps, 0, 1_000_000)
    check_float("tol", tol, 0.0, 1.0, high_open=True)
    line = lerp(x0, x1, torch.linspace(0, 1, n_points, dtype=x0.dtype))
    if init is not None:
        check_tensor("init", init)
        if init.shape != line.shape:
            raise ValueError(f"init must have shape {tuple(line.shape)} (n_points, *x0.shape), "
                             f"got {tuple(init.shape)}.")
        line = torch.cat([x0[None], init[1:-1].to(line), x1[None]])
    if n_points == 2 or steps == 0:
        return line
    inner = line[1:-1].clone().requires_grad_(True)
    # One L-BFGS run: it keeps its curvature history across iterations, which matters here
    # (plain gradient descent crawls along the flat directions of the energy).
    max_eval = steps * 5 // 4 + 1
    optimizer = torch.optim.LBFGS(
        [inner], lr=1.0, max_iter=steps, max_eval=max_eval, tolerance_grad=tol, tolerance_change=tol,
        history_size=20, line_search_fn="strong_wolfe",
    )
    with tqdm(total=max_eval, desc="geodesic (energy evaluations)", disable=not progress) as bar:

        def closure() -> Tensor:
            optimizer.zero_grad()
            energy = curve_energy(torch.cat([x0[None], inner, x1[None]]), f)
            energy.backward()
            bar.update(1)
            return energy

        optimizer.step(closure)
    return torch.cat([x0[None], inner.detach(), x1[None]])


# --------------------------------------------------------------------------------------------
# Parallel transport and geodesic shooting
# --------------------------------------------------------------------------------------------

def _transport_step(J_from: Tensor, J_to: Tensor, v: Tensor, target_norm: Tensor) -> Tensor:
    """Push v forward with J_from, project onto range(J_to), pull back, restore the length.

    pinv(J_to) u is the least-squares solution of J_to w ≈ u, and J_to pinv(J_to) is the
    orthogonal projection onto range(J_to), so this is exactly "project, then pull back".
    """
    u = J_from @ v
    w = torch.linalg.pinv(J_to) @ u
    length = torch.linalg.vector_norm(J_to @ w)
    # relative to |u|: a projection at rounding level is noise, which rescaling would blow up
    if not bool(length > torch.finfo(u.dtype).eps ** 0.5 * torch.linalg.vector_norm(u)):
        raise ValueError(
            "parallel_transport: the vector became orthogonal to the next tangent space "
            "(its projection is zero); use a finer path."
        )
    return w * (target_norm / length)


def parallel_transport(f: Map, path: Tensor, v: Tensor) -> Tensor:
    """Transport tangent vector v from path[0] along the path, by projection.

    At each step the vector is pushed forward to the output space (u = J_i v_i), projected
    orthogonally onto the tangent space at the next point (the range of J_{i+1}), pulled back to
    chart coordinates with the pseudo-inverse of J_{i+1}, and rescaled so that its pullback
    norm ‖J v‖ stays that of v at path[0]. As the path is refined this converges to the
    Levi-Civita transport of the submanifold embedded by f; it is the rule the paper uses to
    carry directions between samples.

    path: (N+1, *x.shape); v: x.shape (chart coordinates at path[0]). Returns (N+1, *x.shape).

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    _check_map(f)
    path = _check_path(path)
    v = _check_tensor("v", v)
    if v.shape != path.shape[1:]:
        raise ValueError(f"v must have the shape of one path point {tuple(path.shape[1:])}, got {tuple(v.shape)}.")
    jacobians = [jacobian(f, x) for x in path]
    v_flat = v.reshape(-1).to(path.dtype)
    target_norm = torch.linalg.vector_norm(jacobians[0] @ v_flat)
    if not bool(target_norm > 0):
        raise ValueError("parallel_transport: v has zero length through f (J v = 0); nothing to transport.")
    vectors = [v_flat]
    for J_from, J_to in zip(jacobians[:-1], jacobians[1:]):
        vectors.append(_transport_step(J_from, J_to, vectors[-1], target_norm))
    return torch.stack(vectors).reshape(path.shape)


def geodesic_shooting(f: Map, x0: Tensor, v0: Tensor, n_steps: int, step_size: float) -> Tensor:
    """The exponential map by small steps: start at x0 with velocity v0 and keep going "straight".

    Repeats x_{k+1} = x_k + h v_k, then parallel-transports v_k to x_{k+1} (project, pull back,
    keep the pullback norm). To first order this is Euler's method for the geodesic equation
    x'' = −Γ(x', x'): the projection removes exactly the part of the velocity's change that the
    curvature of the chart causes. The curve has speed ‖v0‖_G, so after n steps it has travelled
    about n·h·‖v0‖_G. Returns (n_steps+1, *x0.shape).

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    x0, v0 = _check_tensor("x0", x0), _check_tensor("v0", v0)
    if v0.shape != x0.shape:
        raise ValueError(f"v0 must have the shape of x0 {tuple(x0.shape)}, got {tuple(v0.shape)}.")
    _check_map(f)
    check_int("n_steps", n_steps, 1, 100_000)
    check_float("step_size", step_size, 0.0, low_open=True)
    x, v = x0, v0.to(x0.dtype)
    J = jacobian(f, x)
    speed = torch.linalg.vector_norm(J @ v.reshape(-1))
    if not bool(speed > 0):
        raise ValueError("geodesic_shooting: v0 has zero length through f (J v0 = 0).")
    points = [x]
    for _ in range(n_steps):
        x_next = x + step_size * v
        J_next = jacobian(f, x_next)
        v = _transport_step(J, J_next, v.reshape(-1), speed).reshape(x.shape)
        x, J = x_next, J_next
        points.append(x)
    return torch.stack(points)


# --------------------------------------------------------------------------------------------
# Interpolation between latents
# --------------------------------------------------------------------------------------------

def _interpolation_times(a: Tensor, b: Tensor, t: float | Tensor) -> tuple[Tensor, bool]:
    """Check a, b and t; return t shaped to broadcast against a (and whether it was a scalar)."""
    a, b = _check_tensor("a", a), _check_tensor("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)  # times given on the CPU work for a GPU latent
    if t.ndim > 1:
        raise ValueError(f"t must be a number or a 1-d tensor of times, got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or inf.")
    scalar = t.ndim == 0
    return (t if scalar else t.reshape(-1, *([1] * a.ndim))), scalar


def lerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """Linear interpolation (1 − t) a + t b.

    t a number -> shape a.shape; t of shape (T,) -> shape (T, *a.shape).
    For independent Gaussian latents the midpoint has norm ≈ ‖a‖/√2: an atypical latent.

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    t, _ = _interpolation_times(a, b, t)
    return (1 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, t: float | Tensor) -> Tensor:
    """Spherical linear interpolation (Shoemake 1985).

    With Ω the angle between a and b (as flat vectors):
        slerp(a, b, t) = sin((1 − t) Ω)/sin Ω · a + sin(t Ω)/sin Ω · b.
    For ‖a‖ = ‖b‖ every interpolant has that same norm (it moves along a great circle), so
    interpolants between typical Gaussian latents stay typical. Falls back to lerp when a and b
    point the same way (sin Ω ≈ 0), and raises when they point in opposite directions (no unique
    great circle). Shapes as in ``lerp``.

    Explained in: book/part1-geometry/06_curves.ipynb
    """
    t, _ = _interpolation_times(a, b, t)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if not bool(na > 0 and nb > 0):
        raise ValueError("a and b must both be non-zero for slerp: the angle to a zero vector is undefined.")
    cos_omega = torch.clamp((a * b).sum() / (na * nb), -1.0, 1.0)
    omega = torch.arccos(cos_omega)
    eps = 1e-6 if a.dtype == torch.float64 else 1e-4
    if bool(omega < eps):
        return (1 - t) * a + t * b
    if bool(omega > math.pi - eps):
        raise ValueError("slerp: a and b point in opposite directions, so no unique great circle joins them.")
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
