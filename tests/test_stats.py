"""labkit.stats: known answers, coverage in a seeded simulation, and refused input."""

import math
import warnings

import numpy as np
import pytest
import torch

from labkit.stats import bootstrap_ci, compare_all, floor_to_ceiling, holm, paired_difference, ratio_ci


def coverage_rate(draw, interval, truth: float, repetitions: int = 200) -> float:
    """The fraction of `repetitions` seeded data sets whose interval contains the true value."""
    rng = np.random.default_rng(0)
    hits = 0
    for seed in range(repetitions):
        _, low, high = interval(*draw(rng), n_resamples=200, seed=seed)
        hits += low <= truth <= high
    return hits / repetitions


# 200 repetitions: a 95% interval's coverage lands within 0.95 ± 0.031 (2 binomial s.d.) by chance
@pytest.mark.parametrize("name, draw, interval, truth", [
    ("mean", lambda rng: (rng.normal(1.0, 2.0, 30),), bootstrap_ci, 1.0),
    ("ratio", lambda rng: ((d := rng.uniform(1, 2, 30)) * 2 + rng.normal(0, 0.5, 30), d), ratio_ci, 2.0),
    ("floor to ceiling", lambda rng: ((f := rng.normal(0, 1, 30)) + 0.3 * ((c := f + rng.uniform(1, 3, 30)) - f)
                                      + rng.normal(0, 0.3, 30), f, c), floor_to_ceiling, 0.3),
    ("difference", lambda rng: (rng.normal(0.5, 1, 30), rng.normal(0, 1, 30)),
     lambda a, b, **kw: tuple(paired_difference(a, b, **kw)[k] for k in ("mean_difference", "low", "high")), 0.5),
])
def test_intervals_cover_the_truth_at_about_the_nominal_rate(name, draw, interval, truth):
    assert 0.89 <= coverage_rate(draw, interval, truth) <= 0.99


def test_bootstrap_ci_is_the_mean_with_an_interval_around_it_and_drops_nan():
    values = np.random.default_rng(1).normal(3.0, 1.0, 40)
    mean, low, high = bootstrap_ci(values)
    assert mean == pytest.approx(values.mean()) and low < mean < high
    assert bootstrap_ci(np.append(values, math.nan)) == (mean, low, high)
    assert bootstrap_ci(torch.tensor(values)) == (mean, low, high)
    assert bootstrap_ci(values, seed=0) == (mean, low, high) != bootstrap_ci(values, seed=1)
    narrow, wide = bootstrap_ci(values, level=0.5), bootstrap_ci(values, level=0.99)
    assert wide[1] < low < narrow[1] and narrow[2] < high < wide[2]


def test_constant_values_give_the_constant_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_ci([2.5, 2.5, math.nan, 2.5]) == (2.5, 2.5, 2.5)
        assert ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0, 2.0))
        assert paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == {
            "n": 3, "mean_difference": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}


def test_ratio_and_floor_to_ceiling_are_ratios_of_means_on_the_pairs_left():
    rng = np.random.default_rng(2)
    num, den = rng.uniform(1, 3, 25), rng.uniform(1, 2, 25)
    num[3], den[7] = math.nan, math.nan
    kept = ~(np.isnan(num) | np.isnan(den))
    r, low, high = ratio_ci(num, den)
    assert r == pytest.approx(num[kept].mean() / den[kept].mean()) and low < r < high
    floor, ceiling = rng.normal(0, 1, 25), rng.normal(2, 1, 25)
    method = floor + 0.5 * (ceiling - floor) + rng.normal(0, 0.2, 25)
    f, low, high = floor_to_ceiling(method, floor, ceiling)
    assert f == pytest.approx((method.mean() - floor.mean()) / (ceiling.mean() - floor.mean())) and low < f < high
    assert floor_to_ceiling(floor, floor, ceiling)[0] == pytest.approx(0.0, abs=1e-12)
    assert floor_to_ceiling(ceiling, floor, ceiling)[0] == pytest.approx(1.0)


def test_wilcoxon_on_a_hand_example():
    # five positive differences of distinct sizes: exact two-sided p = 2 / 2⁵
    result = paired_difference([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["n"] == 5 and result["mean_difference"] == 3.0 and result["p"] == pytest.approx(2 / 32)


def test_holm_on_hand_examples():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2 × 0.5 = 1, capped; then the running maximum
    assert holm([0.02]) == [0.02]
    p = np.random.default_rng(3).uniform(0, 0.2, 12)
    adjusted = np.array(holm(p))
    assert np.all(adjusted >= p) and np.all(np.diff(adjusted[np.argsort(p)]) >= 0)


def test_compare_all_detects_a_big_shift_and_not_identical_methods():
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, 48)
    per_sample = {"random": base, "same": base.copy(), "better": base + 1.0 + rng.normal(0, 0.3, 48)}
    rows = compare_all(per_sample, n_resamples=1000)
    assert [(r["a"], r["b"]) for r in rows] == [("random", "same"), ("random", "better"), ("same", "better")]
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(
        ["a", "b", "n", "mean_difference", "low", "high", "level", "p", "p_holm", "detected"]))}
    assert all(r["level"] == pytest.approx(1 - 0.05 / 3) and r["n"] == 48 for r in rows)
    assert [r["detected"] for r in rows] == [False, True, True]
    assert rows[0]["p"] == 1.0 and rows[1]["mean_difference"] < -0.8 and rows[1]["high"] < 0
    assert rows[1]["p_holm"] == pytest.approx(min(1.0, 3 * min(r["p"] for r in rows)))


def test_compare_all_uses_the_bonferroni_level_and_drops_nan_per_pair():
    rng = np.random.default_rng(5)
    a, b, c = rng.normal(0, 1, (3, 20))
    c[:4] = math.nan
    rows = compare_all({"a": a, "b": b, "c": c}, alpha=0.1, n_resamples=500)
    assert [r["n"] for r in rows] == [20, 16, 16]
    alone = paired_difference(a, b, level=1 - 0.1 / 3, n_resamples=500)
    assert {k: rows[0][k] for k in alone} == alone
    for r in rows:
        assert r["detected"] == ((r["low"] > 0 or r["high"] < 0) and r["p_holm"] < 0.1)


@pytest.mark.parametrize("call, error, needle", [
    (lambda: bootstrap_ci([]), ValueError, "values must be a non-empty"),
    (lambda: bootstrap_ci(np.ones((3, 2))), ValueError, "values must have 1 dimensions"),
    (lambda: bootstrap_ci([1.0, math.nan, math.nan]), ValueError, "need at least 2"),
    (lambda: bootstrap_ci([1.0, math.inf, 2.0]), ValueError, "values must be a non-empty 1-D array of finite"),
    (lambda: bootstrap_ci(["a", "b"]), TypeError, "values must be a 1-D array of numbers"),
    (lambda: bootstrap_ci([1.0, 2.0], level=1.0), ValueError, "level must be in"),
    (lambda: bootstrap_ci([1.0, 2.0], level=0), ValueError, "level must be in"),
    (lambda: bootstrap_ci([1.0, 2.0], n_resamples=99), ValueError, "n_resamples must be in 100"),
    (lambda: ratio_ci([1.0, 2.0], [1.0, 2.0, 3.0]), ValueError, "numerator, denominator must hold"),
    (lambda: ratio_ci([1.0, 2.0], [1.0, -1.0]), ValueError, "denominator has mean 0"),
    (lambda: floor_to_ceiling([1.0, 2.0], [0.0, 1.0], [0.0, 1.0]), ValueError, "ceiling − floor has mean 0"),
    (lambda: paired_difference([1.0, 2.0], [[1.0, 2.0]]), ValueError, "b must have 1 dimensions"),
    (lambda: holm([0.2, 1.5]), ValueError, "pvalues must lie in"),
    (lambda: compare_all({"a": [1.0, 2.0]}), ValueError, "at least 2 methods"),
    (lambda: compare_all([[1.0, 2.0], [3.0, 4.0]]), TypeError, "per_sample must be a dict"),
    (lambda: compare_all({"a": [1.0, 2.0], "b": [1.0]}), ValueError, "a, b must hold one value per sample"),
    (lambda: compare_all({"a": [1.0, 2.0], "b": [1.0, 3.0]}, alpha=1.5), ValueError, "alpha must be in"),
    (lambda: compare_all({"a": [1.0, 2.0], "b": [1.0, 3.0]}, n_resamples=10), ValueError, "n_resamples"),
])
def test_bad_input_is_refused_naming_the_parameter(call, error, needle):
    with pytest.raises(error, match=needle):
        call()
