"""PromQL that measures one LLMDeployment over a window (pure).

Each query sums over the deployment's engines, selected like the autoscaler's
(`autoscale.promql.selector`: namespace and the scraped pod label llmdeploy.io/deployment).
Counters and histograms are read as `increase` over the whole window, so every average below
is a ratio of two totals of the same window; histograms come back by bucket (`le`) and their
percentiles are computed here (measure/histogram.py), not with histogram_quantile, so that too
few samples or a percentile beyond the last bucket can be told apart from a value.

Metric names: `autoscale.promql.ENGINE_METRICS`, the one table of them. TensorRT-LLM publishes
no per-request token histogram, so its token p50s stay Unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmdeploy.api.types import EngineName
from llmdeploy.autoscale.promql import ENGINE_METRICS, EngineMetrics, selector

# `--since` and the operator's window: a whole number of s, m, h or d.
WINDOW = re.compile(r"[1-9][0-9]{0,5}[smhd]")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_WINDOW_S = 90 * 86_400
# A rate over less than four scrapes (15 s in the rendered PodMonitor) is mostly empty.
MIN_RATE_RANGE_S = 60
POINTS_PER_SERIES = 120

# Keys of the instant queries: totals over the window...
REQUESTS = "requests"
INPUT_TOKENS_TOTAL = "inputTokensTotal"
OUTPUT_TOKENS_TOTAL = "outputTokensTotal"
# ...time averages over it...
KV_CACHE_USAGE = "kvCacheUsage"
REPLICAS = "replicas"
# ...the seconds since the window's first step with an engine (the whole window, unless the
# engines began inside it: a new deployment's first windows)...
SERVED_SECONDS = "servedSeconds"
# ...the latency histograms' sums over it (a mean is a sum over the histogram's count)...
TTFT_SUM = "ttftSum"
TPOT_SUM = "tpotSum"
# ...and histograms: observations per bucket over it.
TTFT = "ttft"
TPOT = "tpot"
INPUT_TOKENS = "inputTokens"
OUTPUT_TOKENS = "outputTokens"
HISTOGRAMS = (TTFT, TPOT, INPUT_TOKENS, OUTPUT_TOKENS)
# Keys of the range queries (one value or histogram per step).
OUTPUT_TOKENS_RATE = "outputTokensRate"


class WindowError(ValueError):
    pass


def window_seconds(text: str) -> int:
    """`30m`, `24h`, `7d` -> seconds, at most 90 days."""
    if not WINDOW.fullmatch(text):
        raise WindowError(f"{text!r} is not a duration like 30m, 24h or 7d")
    seconds = int(text[:-1]) * UNIT_SECONDS[text[-1]]
    if seconds > MAX_WINDOW_S:
        raise WindowError(f"{text!r} is longer than 90 days")
    return seconds


@dataclass(frozen=True, slots=True)
class MeasurementQueries:
    """What to ask Prometheus for one deployment: `instant` at the window's end, `series` over
    it in steps of `step_s` (the report's pictures; empty for the operator)."""

    engine: EngineName
    window_s: int
    instant: dict[str, str]
    series: dict[str, str]
    step_s: int
    missing: dict[str, str]  # keys this engine cannot answer, and why


def _range(seconds: int) -> str:
    return f"{seconds}s"


def _increase_by_le(histograms: tuple[str, ...], sel: str, seconds: int) -> str:
    """Observations per bucket over `seconds`; with several names, whichever the engine
    version has (identical label sets, so `or` keeps the first name's where both exist)."""
    inner = " or ".join(f"increase({h}_bucket{{{sel}}}[{_range(seconds)}])" for h in histograms)
    return f"sum by (le) ({inner})"


def _increase_of_sum(histograms: tuple[str, ...], sel: str, seconds: int) -> str:
    """The histogram's sum of observations over `seconds`, whichever name the version has."""
    inner = " or ".join(f"increase({h}_sum{{{sel}}}[{_range(seconds)}])" for h in histograms)
    return f"sum({inner})"


def resolution_seconds(window_s: int) -> int:
    """The step of the window's subqueries: about 500 points over it."""
    return max(1, window_s // 500)


def _replicas_now(metrics: EngineMetrics, sel: str) -> str:
    # One series per engine process; `instance` (pod address) counts each pod once.
    return f"count(count by (instance) ({metrics.running}{{{sel}}})) or vector(0)"


def measurement_queries(
    namespace: str,
    name: str,
    engine: EngineName,
    window_s: int,
    *,
    with_series: bool = False,
    generation: str | None = None,
) -> MeasurementQueries:
    metrics = ENGINE_METRICS[engine]
    sel = selector(namespace, name, generation)
    span = _range(window_s)
    # Averages of gauges sample every `resolution`: about 500 points over the window.
    resolution = _range(resolution_seconds(window_s))
    # A series is seen from its first scrape on, so the first step with an engine is when the
    # engines began, if that was inside the window.
    first = f"min_over_time(timestamp(count({metrics.running}{{{sel}}}))[{span}:{resolution}])"
    kv = " or ".join(f"avg(avg_over_time({g}{{{sel}}}[{span}]))" for g in metrics.kv_cache_usage)
    instant = {
        REQUESTS: f"sum(increase({metrics.requests}{{{sel}}}[{span}]))",
        INPUT_TOKENS_TOTAL: f"sum(increase({metrics.input_tokens_total}{{{sel}}}[{span}]))",
        OUTPUT_TOKENS_TOTAL: f"sum(increase({metrics.output_tokens_total}{{{sel}}}[{span}]))",
        KV_CACHE_USAGE: kv,
        REPLICAS: f"avg_over_time(({_replicas_now(metrics, sel)})[{span}:{resolution}])",
        SERVED_SECONDS: f"time() - {first}",
        TTFT: _increase_by_le(metrics.ttft, sel, window_s),
        TPOT: _increase_by_le(metrics.tpot, sel, window_s),
        TTFT_SUM: _increase_of_sum(metrics.ttft, sel, window_s),
        TPOT_SUM: _increase_of_sum(metrics.tpot, sel, window_s),
    }
    missing = {}
    for key, histogram in (
        (INPUT_TOKENS, metrics.input_tokens),
        (OUTPUT_TOKENS, metrics.output_tokens),
    ):
        if histogram is None:
            missing[key] = f"{engine.value} publishes no per-request token histogram"
        else:
            instant[key] = _increase_by_le((histogram,), sel, window_s)
    step = max(1, window_s // POINTS_PER_SERIES)
    rate_range = max(step, MIN_RATE_RANGE_S)
    series = (
        {
            TTFT: _increase_by_le(metrics.ttft, sel, rate_range),
            TPOT: _increase_by_le(metrics.tpot, sel, rate_range),
            OUTPUT_TOKENS_RATE: (
                f"sum(rate({metrics.output_tokens_total}{{{sel}}}[{_range(rate_range)}]))"
            ),
            REPLICAS: _replicas_now(metrics, sel),
        }
        if with_series
        else {}
    )
    return MeasurementQueries(engine, window_s, instant, series, step, missing)
