"""labkit.linearity against closed forms: r(ε) of quadratic and exponential maps, ε* solving a known equation."""

import math

import pytest
import torch
from scipy.optimize import brentq

from labkit.linearity import breaking_step, default_steps, linearisation_error

FINE = torch.logspace(-3, 1.5, 4000, dtype=torch.float64)  # a grid on which log–log interpolation is exact to ~1e-6


def unit(n: int, i: int = 0) -> torch.Tensor:
    v = torch.zeros(1, n, dtype=torch.float64)
    v[0, i] = 1.0
    return v


def test_r_of_an_elementwise_quadratic_is_its_closed_form():
    # f(x) = x + c x²: f(x + εv) − f(x) = ε a + c ε² w with a = v(1 + 2cx) = Jv and w = v², so
    # r(ε) = |c| ε² ‖w‖ / ‖ε a + c ε² w‖.
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 6, generator=g, dtype=torch.float64), torch.randn(1, 6, generator=g, dtype=torch.float64)
    c = -0.7
    steps = default_steps()
    a, w = v * (1 + 2 * c * x), v * v
    expected = abs(c) * steps**2 * w.norm() / (steps[:, None] * a + c * steps[:, None] ** 2 * w).norm(dim=1)
    r = linearisation_error(lambda y: y + c * y * y, x, v, steps)
    assert r.dtype == torch.float64 and r.shape == steps.shape
    torch.testing.assert_close(r, expected, rtol=1e-9, atol=0)


def test_r_of_exp_is_its_closed_form():
    # f = exp: f(x + εv) − f(x) = eˣ(e^{εv} − 1), Jv = eˣ v
    g = torch.Generator().manual_seed(1)
    x, v = (torch.randn(1, 2, 3, generator=g, dtype=torch.float64) for _ in range(2))
    steps = torch.logspace(-2, 0.5, 9, dtype=torch.float64)
    e = torch.exp(steps.view(-1, 1, 1, 1) * v)
    expected = ((x.exp() * (e - 1 - steps.view(-1, 1, 1, 1) * v)).flatten(1).norm(dim=1)
                / (x.exp() * (e - 1)).flatten(1).norm(dim=1))
    torch.testing.assert_close(linearisation_error(torch.exp, x, v, steps), expected, rtol=1e-9, atol=0)


def test_breaking_step_of_the_chapters_exercise_is_two_ninths():
    # book/part2-diffusion/04_h_space.ipynb, exercise "The ratio r(ε) of a quadratic map":
    # f(x) = x ⊙ x at x = 1, v = e_1 gives r(ε) = ε / (2 + ε), so r = 0.1 at ε* = 0.2 / 0.9.
    f, x, v = (lambda y: y * y), torch.ones(1, 4, dtype=torch.float64), unit(4)
    r = linearisation_error(f, x, v, default_steps())
    torch.testing.assert_close(r, default_steps() / (2 + default_steps()), rtol=1e-9, atol=0)
    assert breaking_step(f, x, v, steps=FINE) == pytest.approx(2 / 9, rel=1e-5)
    assert breaking_step(f, x, v) == pytest.approx(2 / 9, rel=1e-2)  # the chapter's coarse grid
    # another level: ε / (2 + ε) = 0.3 at ε = 0.6 / 0.7
    assert breaking_step(f, x, v, level=0.3, steps=FINE) == pytest.approx(0.6 / 0.7, rel=1e-5)


def test_breaking_step_of_exp_solves_its_equation():
    # scalar exp along v = 1: r(ε) = (e^ε − 1 − ε) / (e^ε − 1); ε* is its root at 0.1
    exact = brentq(lambda e: (math.expm1(e) - e) / math.expm1(e) - 0.1, 1e-3, 10)
    x = torch.full((1, 1), 0.3, dtype=torch.float64)
    assert breaking_step(torch.exp, x, torch.ones_like(x), steps=FINE) == pytest.approx(exact, rel=1e-5)
    assert breaking_step(torch.exp, x, torch.ones_like(x)) == pytest.approx(exact, rel=1e-2)


def test_a_linear_map_never_breaks():
    A = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x, v = torch.ones(1, 3, dtype=torch.float64), torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    assert linearisation_error(lambda y: y @ A.T, x, v, default_steps()).max() < 1e-12
    assert math.isnan(breaking_step(lambda y: y @ A.T, x, v))


def test_a_map_broken_below_the_grid_is_refused():
    x = torch.zeros(1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="below the grid"):
        breaking_step(lambda y: torch.exp(1000 * y), x, torch.ones_like(x))  # r(1e-3) = (e − 2)/(e − 1)


@pytest.mark.parametrize("call, error, words", [
    (lambda f, x, v: linearisation_error("f", x, v, default_steps()), TypeError, "f must be a function"),
    (lambda f, x, v: linearisation_error(f, x, v[:, :2], default_steps()), ValueError, "v must have x's shape"),
    (lambda f, x, v: linearisation_error(f, x, v.float(), default_steps()), TypeError, "v must be torch.float64"),
    (lambda f, x, v: linearisation_error(f, x, 0 * v, default_steps()), ValueError, "v is zero"),
    (lambda f, x, v: linearisation_error(f, x, v, -default_steps()), ValueError, "positive step"),
    (lambda f, x, v: linearisation_error(f, x, v, default_steps()[None]), ValueError, "steps must have 1 dim"),
    (lambda f, x, v: breaking_step(f, x, v, steps=default_steps().flip(0)), ValueError, "increase strictly"),
    (lambda f, x, v: breaking_step(f, x, v, level=0.0), ValueError, "level must be in"),
    (lambda f, x, v: breaking_step(f, x, v, level=float("nan")), ValueError, "level must be a finite"),
])
def test_bad_input_is_refused_naming_the_parameter(call, error, words):
    x = torch.ones(1, 3, dtype=torch.float64)
    with pytest.raises(error, match=words):
        call(lambda y: y * y, x, unit(3))


def test_breaking_step_along_v1_of_the_local_basis_on_the_embedded_model():
    """The chapter's call, breaking_step(h_space(model, t), sample.x_t, basis.v[0]), on the MNIST model in float32."""
    from labkit.diffusion import h_space, sample_at
    from labkit.models import load_model
    from labkit.spectral import local_basis

    model = load_model()
    sample = sample_at(model, seed=0, t=980)  # the first DDIM step: no sampling needed
    f = h_space(model, sample.t)
    basis = local_basis(f, sample.x_t, k=1)
    eps_star = breaking_step(f, sample.x_t, basis.v[0])
    grid = default_steps()
    assert grid[0] < eps_star < grid[-1]
    # r at ε* itself is 10%, up to the log–log interpolation between grid points (a few percent here)
    r = linearisation_error(f, sample.x_t, basis.v[0], torch.tensor([eps_star], dtype=torch.float64))
    assert r.item() == pytest.approx(0.1, rel=0.05)
