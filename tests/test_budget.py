"""labkit.budget's strength search on responses with closed forms: power laws, lopsided signs, jumps."""

import math

import pytest

from labkit.budget import TOLERANCE, _next_strength


def tries_to_match(response, b: float, start: float = 1.0, limit: int = 20) -> int:
    """How many tries the search needs to bring response(|γ|) within ±10% of b, from one probe at start."""
    history = [(start, response(start))]
    for n in range(1, limit + 1):
        g = _next_strength(history, b)
        c = response(g)
        if abs(c / b - 1) <= TOLERANCE:
            return n
        history.append((g, c))
    return limit + 1


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("b", [0.01, 0.05, 0.2])
def test_a_power_law_is_matched_in_a_few_tries(beta, b):
    # c = a·γ^β: after the probe, the first guess assumes β = 1; then two points fix the law exactly
    tries = tries_to_match(lambda g: 0.03 * g ** beta, b)
    assert tries <= (1 if beta == 1.0 else 3), tries


def test_the_history_of_other_budgets_is_used():
    # tries made for one budget inform the next: with two points on a power law the guess is exact
    response = lambda g: 0.02 * g ** 1.7  # noqa: E731
    history = [(1.0, response(1.0)), (3.0, response(3.0))]
    g = _next_strength(history, 0.1)
    assert response(g) == pytest.approx(0.1, rel=1e-9)


def test_between_a_try_below_and_one_above_the_guess_stays_inside_the_bracket():
    history = [(1.0, 0.02), (4.0, 0.3), (0.5, 0.01)]  # 0.05 lies between the tries at 1 and 4
    g = _next_strength(history, 0.05)
    assert 1.0 < g < 4.0
    g = _next_strength([(1.0, 0.02), (4.0, 0.01), (8.0, 0.3)], 0.015)  # c falls from 1 to 4: no slope to trust
    assert g == pytest.approx(math.sqrt(4.0 * 1.0))  # bracket: strongest below 4, weakest above 1


def test_a_jump_is_never_matched_but_the_bracket_closes_around_it():
    # an image that flips at |γ| = 2 (a shape changes): no strength gives a change of 0.1
    response = lambda g: 0.01 * g if g < 2 else 0.5  # noqa: E731
    history = [(1.0, response(1.0))]
    for _ in range(12):
        g = _next_strength(history, 0.1)
        history.append((g, response(g)))
    below = max(g for g, c in history if c < 0.1)
    above = min(g for g, c in history if c >= 0.1)
    assert below < 2 <= above and above / below < 1.01


def test_nothing_moved_yet_tries_ten_times_stronger_and_steps_are_bounded():
    assert _next_strength([(0.5, 0.0)], 0.05) == pytest.approx(5.0)
    assert _next_strength([(1.0, 1e-6)], 0.1) == pytest.approx(10.0)    # at most ×10 per step
    assert _next_strength([(1.0, 5.0)], 0.1) == pytest.approx(0.1)      # and at most ÷10
