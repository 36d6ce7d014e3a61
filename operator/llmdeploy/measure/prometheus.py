"""The Prometheus edge of measuring: run a deployment's queries, keep the answers as they came.

The client, its deadline and its error wording are the autoscaler's (autoscale/prometheus.py).
Nothing here interprets an answer: that is results.py, the same for a live and a saved run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_api_client import PrometheusConnect

from llmdeploy.autoscale.prometheus import Backoff, PrometheusConfig, Reading
from llmdeploy.measure.queries import MeasurementQueries
from llmdeploy.measure.results import QueryResult


def collect(
    config: PrometheusConfig,
    queries: MeasurementQueries,
    end: float,
    *,
    until: float = math.inf,
    backoff: Backoff | None = None,
) -> tuple[dict[str, QueryResult], dict[str, QueryResult]]:
    """(instant results at `end`, range results over the window up to `end`). A query that
    fails carries the reason in `error`; an unreachable Prometheus fails them all, and once
    one query found it so the rest are not asked (autoscale/prometheus.py's Reading: `until`
    and `backoff` are its)."""
    reading = Reading(config, until, backoff)
    start = datetime.fromtimestamp(end - queries.window_s, UTC)
    stop = datetime.fromtimestamp(end, UTC)
    at = {"time": f"{end:.3f}"}

    def answer(promql: str, call: Callable[..., object], *args: object) -> QueryResult:
        result, why = reading.ask(call, promql, *args)
        if why is not None:
            return QueryResult(promql=promql, error=why)
        if not isinstance(result, list):
            return QueryResult(promql=promql, error="a malformed answer")
        return QueryResult(promql=promql, result=result)

    instant = {
        key: answer(promql, PrometheusConnect.custom_query, at)
        for key, promql in queries.instant.items()
    }
    step = f"{queries.step_s}s"
    series = {
        key: answer(promql, PrometheusConnect.custom_query_range, start, stop, step)
        for key, promql in queries.series.items()
    }
    return instant, series
