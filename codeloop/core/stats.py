"""Order statistics of measured figures (percentiles), shared by the wire timing, the latency
panel and replay's comparisons. Pure."""

from __future__ import annotations


def percentile(values: list[float], share: float) -> float:
    """The value at `share` (0..1) of the sorted values, nearest rank; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
