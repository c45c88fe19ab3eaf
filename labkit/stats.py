"""Per-sample statistics for comparing methods: bootstrap intervals, paired tests, Holm's correction.

A benchmark scores every method on the same n samples, so each method gives a vector of n
per-sample values, and two methods are compared sample by sample (paired). Every function takes
such 1-D vectors (numpy, torch or a list), drops the samples that are NaN in any of them (an edit
that was left unmatched), and needs at least 2 left.

Intervals are scipy.stats.bootstrap's BCa intervals (bias-corrected and accelerated, Efron 1987):
they are second-order accurate, where the percentile interval is first-order, and they correct for
the skew of the ratio statistics (``ratio_ci``, ``floor_to_ceiling``) at the n ≈ 50 samples of a
benchmark; the price is a jackknife, n more evaluations of a mean. Paired statistics resample the
samples jointly (``paired=True``). When every resample gives the same value (a constant input),
the interval is that value.

Explained in: book/part2-diffusion/08_known_factors.ipynb
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
import torch
from torch import Tensor

from labkit.checks import check_float, check_int, check_tensor, show

Values = np.ndarray | Tensor | Sequence[float]
# At most 10⁶ resamples per interval (as the benchmarks' --resamples): scipy holds them all at once,
# 8 bytes × samples × resamples per array (400 MB for 50 samples); more would exhaust memory.
MAX_RESAMPLES = 10**6


def _values(name: str, values: Values) -> np.ndarray:
    """values as a 1-D float64 array: non-empty, no infinities (NaN allowed: it marks a missing sample)."""
    if not isinstance(values, Tensor):
        try:
            values = torch.from_numpy(np.asarray(values, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a 1-D array of numbers, got {type(values).__name__} {show(values)}; "
                            "give one value per sample") from None
    values = check_tensor(name, values, ndim=1, floating=False, finite=False, hint="give one value per sample")
    if len(values) == 0 or bool(values.isinf().any()):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite numbers or NaN, got {show(values)}; "
                         "mark a missing sample with NaN")
    return values.detach().cpu().to(torch.float64).numpy()


def _paired(arrays: dict[str, Values], least: int = 2) -> list[np.ndarray]:
    """The arrays checked to hold one value per sample of the same samples, with every sample that is NaN
    in any of them dropped; at least ``least`` samples must remain."""
    checked = {name: _values(name, values) for name, values in arrays.items()}
    lengths = {name: len(values) for name, values in checked.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{', '.join(lengths)} must hold one value per sample of the same samples, got lengths "
                         f"{lengths}; pass per-sample values in the same sample order")
    kept = ~np.any([np.isnan(values) for values in checked.values()], axis=0)
    if kept.sum() < least:
        raise ValueError(f"{', '.join(checked)}: {int(kept.sum())} sample(s) without NaN, need at least {least} for "
                         "an interval; score more samples")
    return [values[kept] for values in checked.values()]


def _interval(data: list[np.ndarray], statistic: Callable, level: float, n_resamples: int,
              seed: int) -> tuple[float, float, float]:
    """(statistic, low, high): scipy's BCa bootstrap interval, resampling the samples jointly."""
    check_float("level", level, 0, 1, low_open=True, high_open=True, hint="e.g. 0.95")
    check_int("n_resamples", n_resamples, 100, MAX_RESAMPLES,
              hint="use at least 100, 2000 or more for a 95% interval, at most 10^6 (scipy holds them all in memory)")
    check_int("seed", seed, 0)
    estimate = float(statistic(*data, axis=-1))
    # A degenerate bootstrap distribution (a constant input, or a ratio of proportional inputs) makes
    # BCa divide 0 by 0; scipy warns and returns NaN. Its interval is the estimate itself.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        result = scipy.stats.bootstrap(data, statistic, n_resamples=n_resamples, paired=True, vectorized=True,
                                       confidence_level=level, method="BCa", rng=np.random.default_rng(seed))
    scale = max(abs(estimate), *(np.abs(values).max() for values in data))
    if np.ptp(result.bootstrap_distribution) <= 1e-12 * scale:
        return estimate, estimate, estimate
    low, high = map(float, result.confidence_interval)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"the bootstrap interval of {estimate:g} is undefined (resamples give inf or NaN, e.g. a "
                         "mean of 0 in a denominator); the statistic is too unstable on these samples")
    return estimate, low, high


def bootstrap_ci(values: Values, level: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean over samples and its BCa bootstrap interval at ``level``; NaNs dropped.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    (values,) = _paired({"values": values})
    return _interval([values], np.mean, level, n_resamples, seed)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, name: str, level: float, n_resamples: int,
           seed: int) -> tuple[float, float, float]:
    if np.mean(denominator) == 0:
        raise ValueError(f"{name} has mean 0 over the samples, so the ratio is undefined; check what it measures")
    return _interval([numerator, denominator], lambda x, y, axis: np.mean(x, axis) / np.mean(y, axis), level,
                     n_resamples, seed)


def ratio_ci(numerator: Values, denominator: Values, level: float = 0.95, n_resamples: int = 2000,
             seed: int = 0) -> tuple[float, float, float]:
    """(r, low, high): the ratio of means r = mean(numerator) / mean(denominator) and its paired BCa interval.

    numerator and denominator are per-sample values on the same samples (n,); a pair with a NaN is dropped.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    numerator, denominator = _paired({"numerator": numerator, "denominator": denominator})
    return _ratio(numerator, denominator, "denominator", level, n_resamples, seed)


def floor_to_ceiling(method: Values, floor: Values, ceiling: Values, level: float = 0.95, n_resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """(f, low, high): how far a method gets from the random floor to the oracle ceiling, with its paired interval.

        f = (mean(method) − mean(floor)) / (mean(ceiling) − mean(floor))

    0: no better than random directions; 1: as good as the oracle. The three are per-sample values
    on the same samples (n,), resampled jointly; a sample with a NaN in any of them is dropped.
    f has a scale only where the ceiling is above the floor: where mean(ceiling) < mean(floor) every
    method's sign flips, and where the two are close f is the noise's. Test the ceiling against the
    floor first (``paired_difference`` or ``compare_all``), as benchmarks/known_factors.py does.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    method, floor, ceiling = _paired({"method": method, "floor": floor, "ceiling": ceiling})
    # mean(method) − mean(floor) = mean(method − floor) on every joint resample, so f is a ratio of means
    return _ratio(method - floor, ceiling - floor, "ceiling − floor", level, n_resamples, seed)


def paired_difference(a: Values, b: Values, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict:
    """a against b on the same samples: the mean of d = a − b, its paired BCa interval, and a Wilcoxon test.

    Returns {"n": samples used (pairs with a NaN dropped), "mean_difference": mean(d), "low", "high":
    the interval at ``level``, "p": the two-sided Wilcoxon signed-rank p-value of d (zero differences
    dropped, scipy's default; 1.0 when every difference is zero)}.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    a, b = _paired({"a": a, "b": b})
    d = a - b
    mean, low, high = _interval([d], np.mean, level, n_resamples, seed)
    p = 1.0 if not d.any() else float(scipy.stats.wilcoxon(d, zero_method="wilcox").pvalue)
    return {"n": len(d), "mean_difference": mean, "low": low, "high": high, "p": p}


def holm(pvalues: Values) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    With p_(1) ≤ … ≤ p_(m) sorted: p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)); rejecting where
    p̃ < α keeps the family-wise error rate at α. Hand-written (a sort and a running maximum):
    statsmodels' multipletests does this, but statsmodels is not a dependency.

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    p = _values("pvalues", pvalues)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"pvalues must lie in [0, 1], got {show(p.tolist())}; pass the tests' p-values")
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    return stepped[np.argsort(order)].tolist()  # back to the input order


def compare_all(per_sample: dict[str, Values], alpha: float = 0.05, n_resamples: int = 2000,
                seed: int = 0) -> list[dict]:
    """Every pair of methods compared on the same samples, with the family held at error rate alpha.

    For the m = N(N − 1)/2 unordered pairs (a, b) of the N names (in the dict's order), the
    ``paired_difference`` of a − b at the Bonferroni level 1 − alpha/m, and p_holm from ``holm`` over
    the m p-values. detected = the corrected interval excludes 0 and p_holm < alpha. Each dict: a, b,
    n, mean_difference, low, high, level, p, p_holm, detected. Each end of a corrected interval is the
    alpha/(2m) quantile of the resamples: for about 10 resamples beyond it, n_resamples ≥ 20 m / alpha
    (22,000 for the 55 pairs of 11 methods at alpha = 0.05).

    Explained in: book/part2-diffusion/08_known_factors.ipynb
    """
    if not isinstance(per_sample, dict) or len(per_sample) < 2:
        error = ValueError if isinstance(per_sample, dict) else TypeError
        raise error(f"per_sample must be a dict of at least 2 methods' per-sample values, got {show(per_sample)}; "
                    "e.g. {'park': [...], 'random': [...]}")
    alpha = check_float("alpha", alpha, 0, 1, low_open=True, high_open=True, hint="e.g. 0.05")
    _paired(per_sample, least=0)  # every method on the same samples, checked before any work
    pairs = list(itertools.combinations(per_sample, 2))
    level = 1 - alpha / len(pairs)
    rows = [{"a": a, "b": b, **paired_difference(per_sample[a], per_sample[b], level, n_resamples, seed),
             "level": level} for a, b in pairs]
    for row, p_holm in zip(rows, holm([row["p"] for row in rows])):
        excludes_zero = row["low"] > 0 or row["high"] < 0
        row.update(p_holm=p_holm, detected=bool(excludes_zero and p_holm < alpha))
    return rows
