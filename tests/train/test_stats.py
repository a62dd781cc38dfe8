"""Student-t confidence intervals for means over a few seeds and over many tasks."""

from __future__ import annotations

import math

import pytest

from cmlgraph.train.stats import mean_ci95, t_quantile


def test_t_quantiles_match_tables() -> None:
    # two-sided 95 % quantiles of Student's t (standard tables): df 2, 4, 499
    assert t_quantile(3) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(5) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(500) == pytest.approx(1.9647, abs=1e-4)


def test_mean_ci95_over_five_seeds_is_wider_than_normal() -> None:
    values = [0.80, 0.85, 0.82, 0.90, 0.78]
    mean, ci = mean_ci95(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    assert mean == pytest.approx(0.83) and ci == pytest.approx(2.7764 * sd / math.sqrt(5), rel=1e-4)
    assert ci > 1.4 * 1.96 * sd / math.sqrt(5)  # the normal 1.96 would be ~30 % too narrow here
    assert mean_ci95([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_t_quantile_equals_scipy_stats_to_the_last_bit() -> None:
    # stdtrit (scipy.special, cheap to import) is what scipy.stats.t.ppf computes: results and summaries unchanged
    from scipy.stats import t

    for n in (2, 3, 5, 30, 100, 500, 10_000):
        assert t_quantile(n) == float(t.ppf(0.975, n - 1))
