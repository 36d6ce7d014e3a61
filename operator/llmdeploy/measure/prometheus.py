"""The Prometheus edge of measuring: run a deployment's queries, keep the answers as they came.

The client, its deadline and its error wording are the autoscaler's (autoscale/prometheus.py).
Nothing here interprets an answer: that is results.py, the same for a live and a saved run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

from llmdeploy.autoscale.prometheus import (
    QUERY_ERRORS,
    UNREACHABLE,
    PrometheusConfig,
    client_for,
    describe_error,
)
from llmdeploy.measure.queries import MeasurementQueries
from llmdeploy.measure.results import QueryResult


def collect(
    config: PrometheusConfig, queries: MeasurementQueries, end: float
) -> tuple[dict[str, QueryResult], dict[str, QueryResult]]:
    """(instant results at `end`, range results over the window up to `end`). A query that
    fails carries the reason in `error`; an unreachable Prometheus fails them all, and once
    one query found it so the rest are not asked: a Prometheus that times out would otherwise
    hold a reconcile for a deadline per query."""
    instant: dict[str, QueryResult] = {}
    series: dict[str, QueryResult] = {}
    try:
        client = client_for(config)
    except (OSError, ValueError) as exc:
        why = describe_error(exc)
        for target, asked in ((instant, queries.instant), (series, queries.series)):
            target.update({k: QueryResult(promql=q, error=why) for k, q in asked.items()})
        return instant, series
    start = datetime.fromtimestamp(end - queries.window_s, UTC)
    stop = datetime.fromtimestamp(end, UTC)
    at = {"time": f"{end:.3f}"}
    unreachable: list[str] = []  # why Prometheus did not answer, once a query found it so

    def answer(promql: str, ask: Callable[[], object]) -> QueryResult:
        if unreachable:
            return QueryResult(promql=promql, error=unreachable[0])
        try:
            result = ask()
        except QUERY_ERRORS as exc:
            why = describe_error(exc)
            if isinstance(exc, UNREACHABLE):
                unreachable.append(why)
            return QueryResult(promql=promql, error=why)
        if not isinstance(result, list):
            return QueryResult(promql=promql, error="a malformed answer")
        return QueryResult(promql=promql, result=result)

    for key, promql in queries.instant.items():
        instant[key] = answer(promql, partial(client.custom_query, promql, params=at))
    step = f"{queries.step_s}s"
    for key, promql in queries.series.items():
        series[key] = answer(promql, partial(client.custom_query_range, promql, start, stop, step))
    return instant, series
