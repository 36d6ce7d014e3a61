"""The Prometheus edge: read the engines' metrics for one LLMDeployment.

Anything missing, stale, non-finite or unreachable becomes None, which the decision core
treats as "hold": a dead Prometheus must never scale a fleet down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests import RequestException

from llmdeploy.api.types import EngineName
from llmdeploy.autoscale.decision import MetricsReading
from llmdeploy.autoscale.promql import query

# A sample older than this is not a current reading.
MAX_SAMPLE_AGE_S = 120.0


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    url: str
    timeout_s: float = 5.0
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False


def _client(config: PrometheusConfig) -> PrometheusConnect:
    headers = {}
    if config.bearer_token_file is not None:
        token = config.bearer_token_file.read_text(encoding="utf-8").strip()
        headers["Authorization"] = f"Bearer {token}"
    session = requests.Session()
    session.verify = not config.insecure_skip_verify
    if session.verify and config.ca_file is not None:
        session.verify = str(config.ca_file)
    return PrometheusConnect(
        url=config.url,
        headers=headers or None,
        session=session,
        timeout=math.ceil(config.timeout_s),
    )


# Everything a query can raise short of a bug: transport and TLS errors, non-200 answers,
# malformed bodies, an unreadable token or CA file.
QUERY_ERRORS = (RequestException, PrometheusApiClientException, ValueError, KeyError, OSError)


def read_metrics(
    config: PrometheusConfig,
    metric_types: Sequence[str],
    namespace: str,
    name: str,
    engine: EngineName,
    now: float | None = None,
) -> MetricsReading:
    """{metric type: value or None}; errors are folded into None per metric."""
    queries = {t: query(t, namespace, name, engine) for t in metric_types}
    return read_queries(config, queries, now)


def read_queries(
    config: PrometheusConfig, queries: dict[str, str], now: float | None = None
) -> MetricsReading:
    """{key: value of its PromQL, or None}; a query must give one series. The first error
    is kept as the problem, so a status can say why there is no data."""
    now = time.time() if now is None else now
    try:
        client = _client(config)
    except OSError as exc:
        return MetricsReading(dict.fromkeys(queries), _describe(exc))
    values: dict[str, float | None] = {}
    problem = None
    for key, promql in queries.items():
        try:
            result = client.custom_query(promql)
        except QUERY_ERRORS as exc:
            values[key] = None
            problem = problem or _describe(exc)
            continue
        values[key] = _single_value(result, now)
    return MetricsReading(values, problem)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:400]


def _single_value(result: object, now: float) -> float | None:
    if not isinstance(result, list) or len(result) != 1:
        return None  # no series: the engines are not scraped (or not there)
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    if not isinstance(sample, list) or len(sample) != 2:
        return None
    timestamp, raw = sample
    try:
        value = float(raw)
        age = now - float(timestamp)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or age > MAX_SAMPLE_AGE_S:
        return None
    return value
