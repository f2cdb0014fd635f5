"""Medians, percentiles and ratios for the benchmark report (pure functions, unit tested)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's default)."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(data[low])
    return data[low] + (data[high] - data[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max (and count) of latencies given in seconds, reported in milliseconds."""
    if not seconds:
        raise ValueError("no latencies")
    return {
        "count": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p95_ms": percentile(seconds, 95) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    if not values:
        raise ValueError("no values")
    return {"median": median(values), "min": float(min(values)), "max": float(max(values)), "n": len(values)}


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator is zero (nothing to compare with)."""
    if denominator == 0:
        return None
    return numerator / denominator


def rate(count: int, seconds: float) -> float:
    """Items per second; raises on a non-positive duration instead of dividing by it."""
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    return count / seconds
