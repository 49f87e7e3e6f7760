"""The statistics behind `dnntrick compare`: mean ± std over seeds and the paired difference
against a baseline with a Student-t confidence interval. Pure Python (no scipy, no torch).

Paired design: run i of every variant uses seed i, so it sees the same data split and order;
the per-seed differences cancel that shared noise, and the t interval of their mean says whether
the gap is larger than what reseeding alone produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NAN = float("nan")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator); std is nan for n < 2."""
    n = len(values)
    if n == 0:
        return NAN, NAN
    mean = math.fsum(values) / n
    if n < 2:
        return mean, NAN
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return max(0.0, min(1.0, x))
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The t value with P(T <= t) = p (bisection on the CDF; p in (0.5, 1))."""
    low, high = 0.0, 1e4
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Difference:
    """Mean of the paired differences (variant - baseline) with its confidence interval."""

    mean: float
    low: float
    high: float
    n: int  # number of seeds both sides ran
    verdict: str  # better | worse | within noise | n/a


def verdict(low: float, high: float) -> str:
    """'better' when the whole interval is above 0, 'worse' when below, else 'within noise'."""
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "within noise"


def paired_difference(
    variant: dict[int, float], baseline: dict[int, float], confidence: float = 0.95
) -> Difference:
    """Differences variant[s] - baseline[s] over the seeds s both have; t interval of their mean.

    Needs at least two shared seeds for an interval (verdict 'n/a' otherwise).
    """
    seeds = sorted(set(variant) & set(baseline))
    diffs = [variant[s] - baseline[s] for s in seeds]
    mean, std = mean_std(diffs)
    if len(diffs) < 2:
        return Difference(mean, NAN, NAN, len(diffs), "n/a")
    half = t_quantile(0.5 + confidence / 2, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return Difference(mean, mean - half, mean + half, len(diffs), verdict(mean - half, mean + half))
