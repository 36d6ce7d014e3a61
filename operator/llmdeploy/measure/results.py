"""Query results as Prometheus returned them, saved or live, and what they say (pure).

The saved form (`llmdeploy report --save-results`, read back by `--from-results`) is a JSON
object, documented in docs/measure.md:

    {"format": "llmdeploy.io/report-results/v1",
     "namespace": "prod", "name": "llama-8b", "engine": "vllm",
     "window": "24h", "end": 1767225600.0, "stepSeconds": 720,
     "instant": {KEY: {"promql": "...", "result": [...], "error": null}, ...},
     "series":  {KEY: {"promql": "...", "result": [...], "error": null}, ...}}

`result` is the `data.result` list of Prometheus's HTTP API (/api/v1/query for `instant`,
evaluated at `end`; /api/v1/query_range for `series`, from end - window to end); `error` says
why a query gave no result. Reading them is one path for the operator, a live report and a
saved one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmdeploy.api.types import DNS_LABEL_PATTERN, LaxEngineName, to_camel
from llmdeploy.measure.histogram import Histogram, histogram_from_buckets
from llmdeploy.measure.queries import HISTOGRAMS, WINDOW

RESULTS_FORMAT = "llmdeploy.io/report-results/v1"


class ResultsModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class QueryResult(ResultsModel):
    promql: str = Field(max_length=8192)
    result: list[Any] = Field(default_factory=list)
    error: str | None = Field(default=None, max_length=1024)


class SavedResults(ResultsModel):
    format: Literal["llmdeploy.io/report-results/v1"]
    namespace: str = Field(max_length=63, pattern=DNS_LABEL_PATTERN)
    name: str = Field(max_length=63, pattern=DNS_LABEL_PATTERN)
    engine: LaxEngineName
    window: str = Field(pattern=f"^{WINDOW.pattern}$")
    end: Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]
    step_seconds: Annotated[int, Field(ge=1, le=86_400)]
    instant: dict[str, QueryResult]
    series: dict[str, QueryResult] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Readings:
    """What the instant queries say: a value or a histogram per key, or why not."""

    values: dict[str, float | None]
    histograms: dict[str, Histogram | None]
    why: dict[str, str] = field(default_factory=dict)  # keys without data, and the reason


@dataclass(frozen=True, slots=True)
class Series:
    """What the range queries say, by key: (time, value) and (time, histogram) points."""

    values: dict[str, list[tuple[float, float | None]]]
    histograms: dict[str, list[tuple[float, Histogram | None]]]


def _number(raw: object) -> float | None:
    """A sample's value (Prometheus sends a string); NaN and infinities are no data."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _sample(entry: object, key: str = "value") -> tuple[dict[str, Any], object] | None:
    if not isinstance(entry, dict):
        return None
    labels = entry.get("metric")
    sample = entry.get(key)
    if not isinstance(labels, dict):
        return None
    return labels, sample


def _scalar(result: list[Any]) -> tuple[float | None, str | None]:
    if not result:
        return None, "no series"
    if len(result) > 1:
        return None, f"{len(result)} series where one was expected"
    parsed = _sample(result[0])
    if parsed is None or not isinstance(parsed[1], list) or len(parsed[1]) != 2:
        return None, "a malformed sample"
    value = _number(parsed[1][1])
    return value, None if value is not None else "not a number (NaN)"


def _le(labels: dict[str, Any]) -> float | None:
    try:
        bound = float(labels["le"])
    except (KeyError, TypeError, ValueError):
        return None
    return None if math.isnan(bound) else bound


def _histogram(result: list[Any]) -> tuple[Histogram | None, str | None]:
    if not result:
        return None, "no series"
    pairs = []
    for entry in result:
        parsed = _sample(entry)
        if parsed is None or not isinstance(parsed[1], list) or len(parsed[1]) != 2:
            return None, "a malformed sample"
        bound, count = _le(parsed[0]), _number(parsed[1][1])
        if bound is None or count is None:
            return None, "a bucket without a bound or a count"
        pairs.append((bound, count))
    histogram = histogram_from_buckets(pairs)
    return histogram, None if histogram is not None else "buckets that are no histogram"


def readings(results: dict[str, QueryResult], missing: dict[str, str] | None = None) -> Readings:
    """Values and histograms of instant query results; `missing`: keys known in advance to
    have no query (the engine does not publish them), with the reason."""
    values: dict[str, float | None] = {}
    histograms: dict[str, Histogram | None] = {}
    why = dict(missing or {})
    for key, answer in results.items():
        if key in HISTOGRAMS:
            histograms[key], problem = (None, None) if answer.error else _histogram(answer.result)
        else:
            values[key], problem = (None, None) if answer.error else _scalar(answer.result)
        reason = answer.error or problem
        if reason is not None:
            why[key] = reason
    return Readings(values, histograms, why)


def series(results: dict[str, QueryResult]) -> Series:
    """Points of range query results: one series, or one per bucket for histograms. A point
    missing from a series (no sample at that step) is simply absent."""
    values: dict[str, list[tuple[float, float | None]]] = {}
    histograms: dict[str, list[tuple[float, Histogram | None]]] = {}
    for key, answer in results.items():
        if key in HISTOGRAMS:
            by_time: dict[float, list[tuple[float, float]]] = {}
            for entry in [] if answer.error else answer.result:
                parsed = _sample(entry, "values")
                bound = _le(parsed[0]) if parsed else None
                if parsed is None or bound is None or not isinstance(parsed[1], list):
                    continue
                for point in parsed[1]:
                    t, count = _point(point)
                    if t is not None and count is not None:
                        by_time.setdefault(t, []).append((bound, count))
            histograms[key] = [(t, histogram_from_buckets(p)) for t, p in sorted(by_time.items())]
        else:
            points: list[tuple[float, float | None]] = []
            if not answer.error and len(answer.result) == 1:
                parsed = _sample(answer.result[0], "values")
                if parsed is not None and isinstance(parsed[1], list):
                    for point in parsed[1]:
                        t, value = _point(point)
                        if t is not None:
                            points.append((t, value))
            values[key] = sorted(points, key=lambda p: p[0])
    return Series(values, histograms)


def _point(point: object) -> tuple[float | None, float | None]:
    if not isinstance(point, list) or len(point) != 2:
        return None, None
    return _number(point[0]), _number(point[1])
