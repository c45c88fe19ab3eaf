"""How far the first-order prediction holds: the linearisation error of a map along a direction.

For a differentiable map f, a point x, a direction v and a step ε, Taylor's theorem says

    f(x + εv) = f(x) + ε J v + (ε²/2) D²f[v, v] + O(ε³),     J = ∂f/∂x at x,

so the relative error of the first-order prediction

    r(ε) = ‖f(x + εv) − f(x) − ε J v‖ / ‖f(x + εv) − f(x)‖

grows like ε for small ε, and the linearisation "breaks" when r reaches order one. The step at
which r first reaches a level (10% by default) is ε*: up to steps of about ε* (in units of ‖v‖),
one Jacobian at x describes what a finite step does. ``linearisation_error`` gives r on a grid of
steps; ``breaking_step`` gives ε*. Along the top direction of a local basis,

    breaking_step(h_space(model, t), sample.x_t, basis.v[0])

is the chapter's ε* for f_t : x_t ↦ h_t at that sample.

Explained in: book/part2-diffusion/04_h_space.ipynb (section "Is f_t locally linear? (Not the same as \"is H flat\")")
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from labkit.checks import check_callable, check_float, check_nonzero, check_tensor

Map = Callable[[Tensor], Tensor]

LEVEL = 0.1  # the chapter's "breaks": 10% relative error


def default_steps() -> Tensor:
    """The chapter's grid of steps: 28 values from 10⁻³ to 10^1.5, evenly spaced in log (float64)."""
    return torch.logspace(-3, 1.5, 28, dtype=torch.float64)


def _check_steps(steps: object, increasing: bool) -> Tensor:
    steps = check_tensor("steps", steps, ndim=1, hint="a 1-D tensor of step sizes ε, e.g. torch.logspace(-3, 1.5, 28)")
    if len(steps) == 0 or not bool((steps > 0).all()):
        raise ValueError(f"steps must be a non-empty 1-D tensor of positive step sizes, got {steps.tolist()[:8]}"
                         "; r(ε) is defined for ε > 0")
    if increasing and (len(steps) < 2 or not bool((steps[1:] > steps[:-1]).all())):
        raise ValueError("steps must increase strictly and hold at least two values, so that ε* can be "
                         f"interpolated between them; got {steps.tolist()[:8]}")
    return steps


def linearisation_error(f: Map, x: Tensor, v: Tensor, steps: Tensor) -> Tensor:
    """r(ε) = ‖f(x + εv) − f(x) − ε J v‖ / ‖f(x + εv) − f(x)‖ for each ε in ``steps``.

    f: a differentiable map of x alone (any output shape), e.g. ``h_space(model, t)``; x: the
    point (any shape, e.g. (1, C, H, W)); v: a direction of x's shape, used as given (a unit v
    makes ε the distance moved); steps: (S,) positive step sizes. J v comes from one forward-mode
    JVP (torch.func.jvp); f(x + εv) for all S steps from one call of f vectorised over the steps
    (torch.func.vmap), so f must be vmap-compatible (labkit's maps are). Computed in x's dtype:
    use float64 to see r at small ε, where float32 rounding of f(x + εv) − f(x) dominates.

    Returns r: (S,) float64 on the CPU. Where f does not move (f(x + εv) = f(x)), r is NaN if also
    J v = 0 (a constant f) and inf otherwise.

    Explained in: book/part2-diffusion/04_h_space.ipynb
    """
    check_callable("f", f, hint="a map of x alone, e.g. labkit.h_space(model, t)")
    x = check_tensor("x", x)
    v = check_tensor("v", v, like=x, hint="a direction shaped like x, e.g. basis.v[0]")
    if v.shape != x.shape:
        raise ValueError(f"v must have x's shape {tuple(x.shape)}, got {tuple(v.shape)}; "
                         "a local basis's i-th direction is basis.v[i]")
    check_nonzero("v", v, hint="give a non-zero direction")
    steps = _check_steps(steps, increasing=False)
    eps = steps.to(x.device, x.dtype)

    def checked(z: Tensor) -> Tensor:  # f's output checked at its first call, inside the JVP: no extra call of f
        y = f(z)
        if not isinstance(y, Tensor):
            raise TypeError(f"f(x) must return a torch.Tensor, got {type(y).__name__}; wrap f so that it returns "
                            "the one tensor to linearise (e.g. lambda x: model(x).sample)")
        return y

    with torch.no_grad():
        fx, Jv = torch.func.jvp(checked, (x,), (v,))
        moved = torch.func.vmap(f)(x + eps.view(-1, *([1] * x.ndim)) * v)  # (S, *f(x).shape)
        change = (moved - fx).flatten(1)
        error = (change - eps[:, None] * Jv.flatten()).norm(dim=1)
        return (error / change.norm(dim=1)).double().cpu()


def breaking_step(f: Map, x: Tensor, v: Tensor, level: float = LEVEL, steps: Tensor | None = None) -> float:
    """ε*: the first step on the grid where r(ε) reaches ``level``, interpolated in log–log.

    With i the first index where r(ε_i) ≥ level, ε* solves the straight line through
    (log ε_{i−1}, log r_{i−1}) and (log ε_i, log r_i) at log r = log level. For small ε,
    r ∝ ε, so the interpolation is nearly exact on a fine grid. f, x, v as in
    ``linearisation_error``; steps: strictly increasing positive steps (default: ``default_steps()``,
    10⁻³ … 31.6, as in the chapter). Returns NaN when r stays below ``level`` on the whole grid
    (a linear f never breaks). Raises ValueError when r is already at ``level`` at the smallest
    step: ε* is below the grid (pass smaller steps, or compute in float64 if rounding is the cause).

    Explained in: book/part2-diffusion/04_h_space.ipynb
    """
    check_float("level", level, 0.0, None, low_open=True, hint="the relative error that counts as broken, e.g. 0.1")
    steps = _check_steps(default_steps() if steps is None else steps, increasing=True)
    r = linearisation_error(f, x, v, steps)
    reached = torch.nonzero(r >= level).flatten()
    if len(reached) == 0:
        return math.nan
    i = int(reached[0])
    if i == 0:
        raise ValueError(f"r(ε) = {float(r[0]):.3g} already reaches level={level:g} at the smallest step "
                         f"ε = {float(steps[0]):.3g}: ε* is below the grid. Pass smaller steps, or compute in float64 "
                         "(x.double(), with a float64 model) if float32 rounding is the cause.")
    log_eps, log_r = steps.double().cpu().log(), r.log()
    s = (math.log(level) - log_r[i - 1]) / (log_r[i] - log_r[i - 1])
    return float((log_eps[i - 1] + s * (log_eps[i] - log_eps[i - 1])).exp())
