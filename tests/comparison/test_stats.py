"""Mean/std over seeds and the paired t interval, against hand computations."""

from __future__ import annotations

import math

import pytest

from dnntrick.comparison.stats import mean_std, paired_difference, t_cdf, t_quantile, verdict


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82)
    assert std == pytest.approx(0.02)  # sqrt((0.02² + 0 + 0.02²) / 2)
    assert mean_std([0.5])[0] == 0.5 and math.isnan(mean_std([0.5])[1])
    assert all(math.isnan(v) for v in mean_std([]))


@pytest.mark.parametrize(
    ("df", "t"),  # two-sided 95% critical values from any t table
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452), (100_000, 1.9600)],
)
def test_t_quantile_matches_the_table(df: int, t: float):
    assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-9)


def test_paired_difference_by_hand():
    # differences 0.01, 0.02, 0.03: mean 0.02, std 0.01, half width t(2) 4.3027 * 0.01 / sqrt 3
    variant = {42: 0.85, 43: 0.87, 44: 0.86}
    baseline = {42: 0.84, 43: 0.85, 44: 0.83}
    d = paired_difference(variant, baseline)
    half = 4.302652729749 * 0.01 / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(0.02)
    assert d.low == pytest.approx(0.02 - half) and d.high == pytest.approx(0.02 + half)
    assert d.low == pytest.approx(-0.004841, abs=1e-6)
    assert d.verdict == "within noise"  # 0 lies inside [-0.0048, 0.0448]


def test_pairing_removes_shared_noise():
    # the seeds move both variants together: unpaired the gap is noise, paired it is clear
    baseline = {1: 0.80, 2: 0.86, 3: 0.83, 4: 0.89}
    variant = {s: a + 0.01 + (0.001 if s % 2 else -0.001) for s, a in baseline.items()}
    d = paired_difference(variant, baseline)
    assert d.mean == pytest.approx(0.01) and d.verdict == "better"
    worse = paired_difference(baseline, variant)
    assert worse.mean == pytest.approx(-0.01) and worse.verdict == "worse"
    assert worse.high < 0


def test_only_shared_seeds_pair_and_one_pair_has_no_interval():
    d = paired_difference({1: 0.9, 2: 0.8, 7: 0.1}, {1: 0.85, 2: 0.75, 9: 0.99})
    assert d.n == 2 and d.mean == pytest.approx(0.05)
    one = paired_difference({1: 0.9}, {1: 0.8})
    assert one.n == 1 and one.verdict == "n/a" and math.isnan(one.low)
    assert verdict(0.001, 0.02) == "better" and verdict(-0.02, -0.001) == "worse"
    assert verdict(-0.01, 0.01) == "within noise"
