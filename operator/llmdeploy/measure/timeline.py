"""The report's figures over time, from the range queries (pure): what `report --plot` draws."""

from __future__ import annotations

from dataclasses import dataclass

from llmdeploy.api.status import Price
from llmdeploy.measure.histogram import quantile
from llmdeploy.measure.queries import OUTPUT_TOKENS_RATE, REPLICAS, TPOT, TTFT
from llmdeploy.measure.results import Series

# A point's percentiles rest on at least this many observations in its step.
MIN_POINT_OBSERVATIONS = 5


@dataclass(frozen=True, slots=True)
class Point:
    """One step; None where that step has no (or too little) data."""

    t: float
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None
    tpot_p50_s: float | None = None
    tpot_p95_s: float | None = None
    cost_per_million_output_tokens: float | None = None


def timeline(points: Series, price: Price | None) -> list[Point]:
    fields: dict[float, dict[str, float | None]] = {}
    for name, key in (("ttft", TTFT), ("tpot", TPOT)):
        for t, histogram in points.histograms.get(key, []):
            if histogram is None or histogram.count < MIN_POINT_OBSERVATIONS:
                continue
            row = fields.setdefault(t, {})
            row[f"{name}_p50_s"] = quantile(histogram, 0.5)
            row[f"{name}_p95_s"] = quantile(histogram, 0.95)
    if price is not None:
        replicas = dict(points.values.get(REPLICAS, []))
        for t, rate in points.values.get(OUTPUT_TOKENS_RATE, []):
            serving = replicas.get(t)
            if rate is None or rate <= 0 or serving is None:
                continue
            per_hour = price.usd_per_gpu_hour * price.gpus_per_replica * serving
            fields.setdefault(t, {})["cost_per_million_output_tokens"] = (
                per_hour / (rate * 3600) * 1e6
            )
    return [Point(t, **row) for t, row in sorted(fields.items())]
