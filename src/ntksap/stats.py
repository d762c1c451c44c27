"""Small-sample statistics of the results: the 95 % Student-t interval of a mean, and the rule
that an ordering is claimed only where two such intervals do not overlap."""

from __future__ import annotations

import math
import statistics

# Student t quantiles t_{0.975, df}, df = 1 .. 30 (standard tables; tested against a numerical
# integration of the t density in tests/test_results_scripts.py)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: float) -> float:
    """t_{0.975} for ``df`` degrees of freedom (rounded down: conservative); 1.96 past 30."""
    if df < 1:
        raise ValueError("an interval needs at least 1 degree of freedom")
    return T975[int(df) - 1] if df < len(T975) + 1 else 1.96


def interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of its 95 % t-interval); half-width None for one value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def separated(a: list[float], b: list[float]) -> bool:
    """The 95 % intervals of ``a`` and ``b`` do not overlap (a claim needs n >= 2 each)."""
    (ma, ha), (mb, hb) = interval(a), interval(b)
    if ha is None or hb is None:
        return False
    return ma - ha > mb + hb or mb - hb > ma + ha
