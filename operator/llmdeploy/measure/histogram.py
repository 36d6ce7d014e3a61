"""Percentiles and shares of a Prometheus classic histogram (pure).

Linear interpolation within a bucket, as Prometheus's histogram_quantile does; unlike it, a
percentile that falls in the +Inf bucket is None (it is only known to exceed the last bound),
never that bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative observations by upper bound, ascending; the last bound is +Inf."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1]


def histogram_from_buckets(pairs: Iterable[tuple[float, float]]) -> Histogram | None:
    """From (upper bound, cumulative count) in any order; None without a +Inf bucket or with a
    count that is not a finite number >= 0. `increase` extrapolates each bucket on its own, so
    a bucket may come out a little below the one before it: it is raised to that one."""
    ordered = sorted(pairs)
    if not ordered or ordered[-1][0] != math.inf:
        return None
    buckets: list[tuple[float, float]] = []
    highest = 0.0
    for bound, count in ordered:
        if not math.isfinite(count) or count < 0 or math.isnan(bound):
            return None
        if buckets and buckets[-1][0] == bound:
            return None  # one bound twice: two histograms summed under one name
        highest = max(highest, count)
        buckets.append((bound, highest))
    return Histogram(tuple(buckets))


def quantile(histogram: Histogram, q: float) -> float | None:
    """The q-quantile (0 < q < 1); None when there are no observations or it lies beyond the
    last finite bound."""
    total = histogram.count
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0.0, 0.0
    for bound, cumulative in histogram.buckets:
        if cumulative >= rank:
            if bound == math.inf:
                return None
            if bound <= 0:
                return bound
            inside = cumulative - below
            return lower + (bound - lower) * (rank - below) / inside
        below, lower = cumulative, bound
    return None


def share_within(histogram: Histogram, limit: float) -> float | None:
    """The share of observations at or below `limit`; None without observations, or when some
    lie beyond the last finite bound and `limit` is above it (which side they are on is not
    known)."""
    total = histogram.count
    if total <= 0:
        return None
    below, lower = 0.0, 0.0
    for bound, cumulative in histogram.buckets:
        if limit <= bound:
            if bound == math.inf:
                return None if cumulative > below else below / total
            inside = cumulative - below
            span = bound - lower
            part = inside if span <= 0 else inside * (limit - lower) / span
            return (below + max(0.0, part)) / total
        below, lower = cumulative, bound
    return None
