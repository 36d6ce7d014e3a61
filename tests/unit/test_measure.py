"""The measurement core: histogram arithmetic, query answers, Observed, SLOMet and PlanDrift,
with every expected value computed by hand in the comments."""

from __future__ import annotations

import math
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from llmdeploy.api.status import Observed
from llmdeploy.api.types import EngineName, SloSpec, WorkloadSpec
from llmdeploy.autoscale.prometheus import PrometheusConfig, read_queries
from llmdeploy.catalog import Catalog
from llmdeploy.measure.histogram import histogram_from_buckets, quantile, share_within
from llmdeploy.measure.observed import observe, plan_drift, rfc3339, slo_met
from llmdeploy.measure.prometheus import collect
from llmdeploy.measure.queries import (
    WindowError,
    measurement_queries,
    window_seconds,
)
from llmdeploy.measure.results import QueryResult, readings, series
from llmdeploy.measure.timeline import timeline
from llmdeploy.sizing import Plan

END = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600
INF = math.inf


def vector(value: float | str) -> list[dict[str, Any]]:
    """An instant query's `data.result` of one series, as Prometheus sends it."""
    return [{"metric": {}, "value": [END, str(value)]}]


def buckets(counts: dict[float, float]) -> list[dict[str, Any]]:
    return [
        {"metric": {"le": "+Inf" if le == INF else f"{le:g}"}, "value": [END, str(count)]}
        for le, count in counts.items()
    ]


def answer(result: list[dict[str, Any]]) -> QueryResult:
    return QueryResult(promql="(test)", result=result)


# One hour of a deployment of 1.5 replicas (on average) of 2 RTX 3090s at $0.30 per GPU-hour.
TTFT = {0.1: 720, 0.5: 4320, 1: 6480, 2.5: 7200, INF: 7200}
TPOT = {0.02: 100_000, 0.05: 900_000, 0.1: 1_000_000, INF: 1_000_000}
HEALTHY = {
    "requests": vector(7200),  # 2 requests/s
    "inputTokensTotal": vector(7_372_800),  # 1024 per request
    "outputTokensTotal": vector(1_843_200),  # 256 per request, 512 per second
    "kvCacheUsage": vector(0.4),
    "replicas": vector(1.5),
    "servedSeconds": vector(HOUR - 5),  # engines from the first step on: all window long
    "ttft": buckets(TTFT),
    "tpot": buckets(TPOT),
    "ttftSum": vector(3240),  # a mean TTFT of 0.45 s over 7200 requests
    "tpotSum": vector(40_000),  # a mean gap of 40 ms over 1,000,000 gaps
    "inputTokens": buckets({500: 0, 1000: 0, 2000: 7200, INF: 7200}),
    "outputTokens": buckets({100: 0, 200: 0, 500: 7200, INF: 7200}),
}
PLAN = Plan(
    feasible=True,
    model="meta-llama/Llama-3.1-8B-Instruct",
    engine="vllm",
    gpu="nvidia-rtx-3090",
    gpu_count=2,
    quantization="bf16",
    estimated_ttft_ms=400.0,
    estimated_tpot_ms=30.0,
    estimated_tokens_per_second=800.0,
    replicas=2,
    cost_per_hour=1.2,
    cost_per_million_tokens=0.208,
)


def measure(
    catalog: Catalog,
    results: dict[str, list[dict[str, Any]]],
    slo: SloSpec | None = None,
    served_since: float | None = None,
    **errors: str,
) -> Observed:
    answers = {key: answer(value) for key, value in results.items()}
    answers.update({key: QueryResult(promql="(test)", error=why) for key, why in errors.items()})
    return observe(
        readings(answers),
        plan=PLAN,
        catalog=catalog,
        slo=slo or SloSpec(ttft_ms=500, tpot_ms=60),
        window_s=HOUR,
        end=END,
        served_since=served_since,
    )


# --- histograms ---------------------------------------------------------------------------


def test_quantile_interpolates_within_the_bucket_as_prometheus_does() -> None:
    h = histogram_from_buckets([(0.1, 10), (0.5, 60), (1.0, 90), (INF, 100)])
    assert h is not None
    # rank 50 falls in (0.1, 0.5], which holds 50 of which 40 are needed: 0.1 + 0.4 * 40/50
    assert quantile(h, 0.5) == pytest.approx(0.42)
    # rank 5 in the first bucket, interpolated from 0: 0.1 * 5/10
    assert quantile(h, 0.05) == pytest.approx(0.05)
    # rank 90 is exactly the top of (0.5, 1]
    assert quantile(h, 0.9) == pytest.approx(1.0)
    # rank 95 lies among the 10 observations above 1: only "more than 1" is known
    assert quantile(h, 0.95) is None


def test_share_within_a_limit() -> None:
    h = histogram_from_buckets([(0.1, 10), (0.5, 60), (1.0, 90), (INF, 100)])
    assert h is not None
    # 10 below 0.1, and half of the 50 in (0.1, 0.5] below 0.3: 35 of 100
    assert share_within(h, 0.3) == pytest.approx(0.35)
    assert share_within(h, 1.0) == pytest.approx(0.9)
    # 10 observations lie above 1 and it is not known which side of 2 they are on
    assert share_within(h, 2.0) is None
    full = histogram_from_buckets([(1.0, 4), (INF, 4)])
    assert full is not None and share_within(full, 5.0) == 1.0


def test_histogram_buckets_are_checked_and_made_monotonic() -> None:
    assert histogram_from_buckets([(0.1, 1), (0.5, 2)]) is None  # no +Inf bucket
    assert histogram_from_buckets([]) is None
    assert histogram_from_buckets([(0.1, -1), (INF, 2)]) is None
    # increase() extrapolates buckets one by one: 9.9 after 10 is raised to 10
    h = histogram_from_buckets([(INF, 20), (0.5, 9.9), (0.1, 10)])
    assert h is not None and h.buckets == ((0.1, 10), (0.5, 10), (INF, 20))
    empty = histogram_from_buckets([(0.1, 0), (INF, 0)])
    assert empty is not None and quantile(empty, 0.5) is None and share_within(empty, 1) is None


# --- query answers ------------------------------------------------------------------------


def test_readings_of_prometheus_answers() -> None:
    got = readings(
        {
            "requests": answer(vector(12)),
            "kvCacheUsage": answer(vector("NaN")),
            "replicas": answer([]),
            "outputTokensTotal": answer(vector(1) + vector(2)),
            "ttft": answer(buckets({0.5: 3, INF: 4})),
            "tpot": QueryResult(promql="x", error="timed out"),
        },
        {"inputTokens": "no such histogram"},
    )
    assert got.values["requests"] == 12
    assert got.values["kvCacheUsage"] is None and got.why["kvCacheUsage"] == "not a number (NaN)"
    assert got.values["replicas"] is None and got.why["replicas"] == "no series"
    assert got.why["outputTokensTotal"] == "2 series where one was expected"
    ttft = got.histograms["ttft"]
    assert ttft is not None and ttft.count == 4
    assert got.histograms["tpot"] is None and got.why["tpot"] == "timed out"
    assert got.why["inputTokens"] == "no such histogram"


# --- Observed -----------------------------------------------------------------------------


def test_observed_from_an_hour_of_a_healthy_deployment(catalog: Catalog) -> None:
    seen = measure(catalog, HEALTHY)
    assert seen.unknown == {}
    assert seen.end == "2026-01-01T00:00:00Z"
    assert seen.requests_per_second == 2.0  # 7200 / 3600
    assert seen.input_tokens_mean == 1024.0  # 7,372,800 / 7200
    assert seen.output_tokens_mean == 256.0
    assert seen.input_tokens_p50 == 1500.0  # 1000 + 1000 * 3600/7200
    assert seen.output_tokens_p50 == 350.0  # 200 + 300 * 3600/7200
    # TTFT p50: rank 3600 in (0.1, 0.5] holding 3600: 0.1 + 0.4 * 2880/3600
    assert seen.ttft_p50_seconds == pytest.approx(0.42)
    # TTFT p95: rank 6840 in (1, 2.5] holding 720: 1 + 1.5 * 360/720
    assert seen.ttft_p95_seconds == pytest.approx(1.75)
    # TPOT p50: rank 500,000 in (0.02, 0.05] holding 800,000: 0.02 + 0.03 * 400,000/800,000
    assert seen.tpot_p50_seconds == pytest.approx(0.035)
    # TPOT p95: rank 950,000 in (0.05, 0.1] holding 100,000: 0.05 + 0.05 * 50,000/100,000
    assert seen.tpot_p95_seconds == pytest.approx(0.075)
    assert seen.ttft_mean_seconds == pytest.approx(0.45)  # 3240 / 7200
    assert seen.tpot_mean_seconds == pytest.approx(0.04)  # 40,000 / 1,000,000
    assert seen.ttft_within_slo == pytest.approx(0.6)  # 4320 of 7200 within 0.5 s
    # 900,000 + 100,000 * (0.06 - 0.05) / 0.05 = 920,000 of 1,000,000 within 60 ms
    assert seen.tpot_within_slo == pytest.approx(0.92)
    assert seen.output_tokens_per_second == 512.0
    assert seen.kv_cache_usage == 0.4
    assert seen.replicas == 1.5
    assert seen.cost_per_hour == pytest.approx(0.9)  # $0.30 x 2 GPUs x 1.5 replicas
    # $0.90 / (512 tokens/s x 3600 s) x 1e6
    assert seen.cost_per_million_output_tokens == pytest.approx(0.48828125)
    assert seen.price is not None
    assert (seen.price.gpu, seen.price.usd_per_gpu_hour, seen.price.date) == (
        "nvidia-rtx-3090",
        0.3,
        "2026-11",
    )


def test_too_few_requests_leave_the_percentiles_and_means_unknown(catalog: Catalog) -> None:
    seen = measure(catalog, {**HEALTHY, "requests": vector(5)})
    assert seen.requests_per_second == pytest.approx(5 / 3600)
    few = "5 requests finished in the window, fewer than 20"
    for field in (
        "ttftP50Seconds",
        "ttftP95Seconds",
        "tpotP95Seconds",
        "inputTokensMean",
        "outputTokensP50",
        "ttftWithinSlo",
    ):
        assert seen.unknown[field] == few
    assert seen.ttft_p95_seconds is None and seen.input_tokens_mean is None
    # Throughput and cost need no sample of requests.
    assert seen.cost_per_million_output_tokens == pytest.approx(0.48828125)


def test_an_unreachable_prometheus_makes_everything_unknown(catalog: Catalog) -> None:
    seen = measure(catalog, {}, **dict.fromkeys(HEALTHY, "connection failed"))
    figures = seen.model_dump(exclude={"window_seconds", "end", "price", "unknown"})
    assert set(figures.values()) == {None}
    assert all("connection failed" in why for why in seen.unknown.values())
    assert "costPerMillionOutputTokens" in seen.unknown
    assert slo_met(seen, SloSpec(ttft_ms=500)).status == "Unknown"
    verdict = plan_drift(seen, WorkloadSpec(requests_per_second=2))
    assert verdict.status == "Unknown"
    assert "requests/s unknown (no request counter (connection failed))" in verdict.message


def test_no_output_tokens_means_no_cost_per_token(catalog: Catalog) -> None:
    seen = measure(catalog, {**HEALTHY, "outputTokensTotal": vector(0)})
    assert seen.cost_per_hour == pytest.approx(0.9)  # the replicas still cost
    assert seen.cost_per_million_output_tokens is None
    assert seen.unknown["costPerMillionOutputTokens"] == "no output tokens in the window"


def test_a_missing_gauge_is_unknown_with_the_reason(catalog: Catalog) -> None:
    seen = measure(catalog, {**HEALTHY, "kvCacheUsage": vector("NaN"), "replicas": []})
    assert seen.unknown["kvCacheUsage"] == "no gauge (not a number (NaN))"
    assert seen.unknown["replicas"] == "no serving engine (no series)"
    assert seen.cost_per_hour is None and seen.cost_per_million_output_tokens is None
    assert seen.unknown["costPerMillionOutputTokens"] == "no serving engine (no series)"


def test_no_engine_all_window_long_claims_no_cost(catalog: Catalog) -> None:
    seen = measure(catalog, {**HEALTHY, "replicas": vector(0)})
    assert seen.replicas == 0
    unseen = "no engine served in the window (scaled to zero, or not scraped)"
    assert seen.unknown["costPerHour"] == unseen
    assert seen.unknown["costPerMillionOutputTokens"] == unseen


def test_a_new_deployment_s_first_window_counts_from_when_its_engines_began(
    catalog: Catalog,
) -> None:
    """Its engines' series began half-way through the hour (the first 7 s step that saw them
    is 1796.5 s before the end; they began within that step: 1800 s): its 3600 requests and
    1.5 replicas are over those 1800 s, not over an hour in which no engine could count."""
    half = {
        **HEALTHY,
        "requests": vector(3600),
        "inputTokensTotal": vector(3_686_400),
        "outputTokensTotal": vector(921_600),
        # The hour's average over its 7 s steps: 1.5 at each step since the first that saw
        # them (1796.5 / 7 + 1 steps), none before.
        "replicas": vector(1.5 * (1796.5 + 7) / HOUR),
        "servedSeconds": vector(1796.5),
    }
    seen = measure(catalog, half, served_since=END)  # no measurement saw them serve before
    assert seen.window_seconds == 1800
    assert seen.requests_per_second == 2.0  # 3600 / 1800, not 1.0
    assert seen.output_tokens_per_second == 512.0
    assert seen.replicas == 1.5  # over the steps since they began, not over the hour
    assert seen.cost_per_hour == pytest.approx(0.9)
    assert seen.input_tokens_mean == 1024.0  # a ratio of two totals: the same either way
    assert seen.served_since == rfc3339(END - 1800)  # recorded for the next measurements
    later = measure(catalog, half, served_since=END - 1800)  # as the next one reads it
    assert (later.window_seconds, later.served_since) == (1800, rfc3339(END - 1800))
    # Engines that served before the window, back half-way through (woken from zero, an
    # outage): the hour's requests and replicas over the hour, what it was asked for.
    older = measure(catalog, half, served_since=END - 2 * HOUR)
    assert older.window_seconds == HOUR
    assert older.requests_per_second == 1.0
    assert older.replicas == pytest.approx(1.5 * (1796.5 + 7) / HOUR)
    assert older.served_since == rfc3339(END - 2 * HOUR)  # kept
    untracked = measure(catalog, half)  # a report: no record kept, the whole window
    assert (untracked.window_seconds, untracked.served_since) == (HOUR, None)
    # Engines all hour long, none recorded (an operator upgraded to one that records it): the
    # first step that saw them lies within one step of the start; they served since at most.
    whole = measure(catalog, HEALTHY, served_since=END)
    assert (whole.window_seconds, whole.requests_per_second, whole.replicas) == (HOUR, 2.0, 1.5)
    assert whole.served_since == rfc3339(END - HOUR)
    queries = measurement_queries("prod", "llm", EngineName.VLLM, HOUR)
    assert queries.instant["servedSeconds"].startswith("time() - min_over_time(timestamp(count(")
    assert queries.instant["servedSeconds"].endswith("[3600s:7s])")


def test_a_new_deployment_without_when_its_engines_began_claims_no_rate(
    catalog: Catalog,
) -> None:
    """A new deployment's engines were seen but the servedSeconds query failed: its rates over
    the whole window could read a fraction of its traffic, so they are unknown, with why, and
    no start is recorded (the next measurement finds it); the figures that are not rates
    stand. A deployment that served before the window needs no date, one whose start inside
    the window is recorded has it, and one that no engine served has none to record."""
    seen = measure(catalog, HEALTHY, served_since=END, servedSeconds="timeout")
    # Not "first served inside the window": with no record, they may have served long before.
    why = (
        "no measurement has recorded when the deployment's engines first served, and this "
        "window's reading of it failed (timeout)"
    )
    for field in ("requestsPerSecond", "outputTokensPerSecond", "replicas", "costPerHour"):
        assert seen.unknown[field] == why
    assert seen.requests_per_second is None and seen.replicas is None
    assert seen.unknown["costPerMillionOutputTokens"] == why
    assert seen.requests == 7200 and seen.input_tokens_mean == 1024.0
    assert (seen.window_seconds, seen.served_since) == (HOUR, None)
    older = measure(catalog, HEALTHY, served_since=END - 2 * HOUR, servedSeconds="timeout")
    assert (older.requests_per_second, older.replicas) == (2.0, 1.5)
    # Their start inside the window, recorded by an earlier measurement: the failed reading
    # leaves it known, and the rates are over the time since, as that measurement found it.
    half = {
        **HEALTHY,
        "requests": vector(3600),
        "outputTokensTotal": vector(921_600),
        "replicas": vector(1.5 * (1796.5 + 7) / HOUR),
    }
    dated = measure(catalog, half, served_since=END - 1800, servedSeconds="timeout")
    assert (dated.window_seconds, dated.requests_per_second, dated.replicas) == (1800, 2.0, 1.5)
    assert "requestsPerSecond" not in dated.unknown
    assert dated.served_since == rfc3339(END - 1800)
    idle = measure(catalog, {**HEALTHY, "replicas": vector(0)}, served_since=END)
    assert idle.replicas == 0 and idle.requests_per_second == 2.0
    assert idle.served_since is None


def test_a_steady_replica_since_its_engine_began_reads_as_one_replica(catalog: Catalog) -> None:
    """A new deployment's one replica from 30 s before the end of an hour, its 7 s subquery
    steps on the grid: the first step that saw it is 28 s before the end, so the hour's
    average holds 5 points of 1 (28 / 7 + 1) over 3600 / 7 steps. Those 5 points cover 35 s
    of steps, not the 32 s measured (28 s and half a step): over the seconds measured it read
    1.09 replicas, and its cost per hour 9% above the replica's price."""
    woken = {
        **HEALTHY,
        "replicas": vector(5 / (HOUR / 7)),
        "servedSeconds": vector(28),
    }
    seen = measure(catalog, woken, served_since=END)  # a new deployment
    assert seen.window_seconds == 32  # 28 s and half a step
    assert seen.replicas == pytest.approx(1.0)
    assert seen.cost_per_hour == pytest.approx(0.6)  # $0.30 x 2 GPUs x 1 replica


def test_a_plan_without_a_priced_gpu_has_no_cost(catalog: Catalog) -> None:
    answers = {key: answer(value) for key, value in HEALTHY.items()}
    seen = observe(
        readings(answers),
        plan=Plan(feasible=False, model="m", engine="vllm"),
        catalog=catalog,
        slo=SloSpec(),
        window_s=HOUR,
        end=END,
    )
    assert seen.price is None and seen.cost_per_hour is None
    assert seen.unknown["costPerHour"] == "the plan names no GPU with a catalog price"
    assert "ttftWithinSlo" not in seen.unknown  # no target, nothing to be unknown about


def test_tensorrt_llm_publishes_no_token_histograms() -> None:
    queries = measurement_queries("prod", "llm", EngineName.TENSORRT_LLM, HOUR)
    assert set(queries.missing) == {"inputTokens", "outputTokens"}
    assert "inputTokens" not in queries.instant
    got = readings({}, queries.missing)
    assert got.why["inputTokens"] == "tensorrt-llm publishes no per-request token histogram"


def test_queries_select_the_deployment_and_the_window() -> None:
    queries = measurement_queries("prod", "llm", EngineName.VLLM, 2 * HOUR, with_series=True)
    scope = 'namespace="prod",llmdeploy_io_deployment="llm"'
    for promql in [*queries.instant.values(), *queries.series.values()]:
        assert scope in promql
    assert "[7200s]" in queries.instant["requests"]
    # Both TPOT names: the current one first, the one vLLM used up to 0.11 second.
    tpot = queries.instant["tpot"]
    assert tpot.index("vllm:inter_token_latency_seconds_bucket") < tpot.index(
        "vllm:time_per_output_token_seconds_bucket"
    )
    assert queries.step_s == 60  # 7200 s in 120 steps
    assert measurement_queries("prod", "llm", EngineName.VLLM, HOUR).series == {}


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86_400)])
def test_window_seconds(text: str, seconds: int) -> None:
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0h", "1w", "24", "91d", "-1h", "1.5h", "24h\n"])
def test_window_seconds_refuses(text: str) -> None:
    with pytest.raises(WindowError):
        window_seconds(text)


# --- SLOMet and PlanDrift -----------------------------------------------------------------


def test_slo_met_holds_the_numbers(catalog: Catalog) -> None:
    seen = measure(catalog, HEALTHY, SloSpec(ttft_ms=500, tpot_ms=60))
    missed = slo_met(seen, SloSpec(ttft_ms=500, tpot_ms=60))
    assert (missed.status, missed.reason) == ("False", "TargetMissed")
    assert missed.message == (
        "TTFT 500 ms: met by 60.0%, under 95.0% (p95 1750 ms); "
        "TPOT 60 ms: met by 92.0%, under 95.0% (p95 75 ms)"
    )
    loose = SloSpec(ttft_ms=2500, tpot_ms=100)
    met = slo_met(measure(catalog, HEALTHY, loose), loose)
    assert (met.status, met.reason) == ("True", "TargetsMet")
    assert "TTFT 2500 ms: met by 100.0%" in met.message
    # A laxer share: 92% of gaps within 60 ms is enough for 90%.
    tpot_only = SloSpec(tpot_ms=60)
    assert slo_met(measure(catalog, HEALTHY, tpot_only), tpot_only, share=0.9).status == "True"


def test_slo_without_targets_is_met(catalog: Catalog) -> None:
    verdict = slo_met(measure(catalog, HEALTHY), SloSpec())
    assert (verdict.status, verdict.reason) == ("True", "NoTarget")


def test_one_missed_target_outweighs_an_unknown_one(catalog: Catalog) -> None:
    slo = SloSpec(ttft_ms=500, tpot_ms=60)
    seen = measure(catalog, {k: v for k, v in HEALTHY.items() if k != "tpot"}, slo)
    verdict = slo_met(seen, slo)
    assert verdict.status == "False"
    assert "TPOT 60 ms: unknown, no TPOT histogram (no data)" in verdict.message


def test_plan_drift(catalog: Catalog) -> None:
    seen = measure(catalog, HEALTHY)
    planned = WorkloadSpec(requests_per_second=2, input_tokens=1024, output_tokens=256)
    within = plan_drift(seen, planned)
    assert (within.status, within.reason) == ("False", "WithinPlan")
    # Twice the planned prompt length: +100%.
    doubled = plan_drift(seen, WorkloadSpec(input_tokens=512, output_tokens=256))
    assert (doubled.status, doubled.reason) == ("True", "WorkloadDrifted")
    assert doubled.message.startswith(
        "outside +-25%: input tokens/request 1024 vs 512 planned (+100%)"
    )
    # 2 requests/s where 2.5 were planned is -20%: within 25%, outside 10%.
    slower = WorkloadSpec(requests_per_second=2.5, input_tokens=1024, output_tokens=256)
    assert plan_drift(seen, slower).status == "False"
    assert plan_drift(seen, slower, tolerance=0.1).status == "True"


def test_plan_drift_without_traffic(catalog: Catalog) -> None:
    """No requests at all: the rate is known (0) and far from plan; the lengths are not."""
    idle = {**HEALTHY, "requests": vector(0), "inputTokensTotal": vector(0)}
    verdict = plan_drift(measure(catalog, idle), WorkloadSpec(requests_per_second=2))
    assert verdict.status == "True"
    assert "requests/s 0 vs 2 planned (-100%)" in verdict.message


# --- over time ----------------------------------------------------------------------------


def test_timeline_points(catalog: Catalog) -> None:
    def matrix(counts: dict[float, list[float]]) -> list[dict[str, Any]]:
        return [
            {
                "metric": {"le": "+Inf" if le == INF else f"{le:g}"},
                "values": [[END - 60 * (len(v) - i), str(c)] for i, c in enumerate(v)],
            }
            for le, v in counts.items()
        ]

    points = series(
        {
            # Two steps: 10 requests (p95 in (0.5, 1]), then 2 (too few for a point).
            "ttft": answer(matrix({0.5: [5, 1], 1: [10, 2], INF: [10, 2]})),
            "outputTokensRate": answer(
                [{"metric": {}, "values": [[END - 120, "100"], [END - 60, "0"]]}]
            ),
            "replicas": answer([{"metric": {}, "values": [[END - 120, "2"], [END - 60, "2"]]}]),
        }
    )
    seen = measure(catalog, HEALTHY)
    steps = timeline(points, seen.price)
    assert [p.t for p in steps] == [END - 120]
    (first,) = steps
    # rank 9.5 in (0.5, 1] holding 5: 0.5 + 0.5 * 4.5/5
    assert first.ttft_p95_s == pytest.approx(0.95)
    # $0.30 x 2 GPUs x 2 replicas / (100 tokens/s x 3600) x 1e6
    assert first.cost_per_million_output_tokens == pytest.approx(1.2 / 360_000 * 1e6)
    assert first.tpot_p95_s is None


def test_a_prometheus_that_does_not_answer_is_asked_once_not_once_per_query() -> None:
    """A listener that accepts and never answers: the first query times out, the others say
    the same without asking (else a reconcile waits a deadline per query)."""
    accepted: list[socket.socket] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        server.settimeout(0.1)
        done = threading.Event()

        def accept() -> None:
            while not done.is_set():
                try:
                    accepted.append(server.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        port = server.getsockname()[1]
        queries = measurement_queries("ns", "m", EngineName.VLLM, HOUR)
        try:
            instant, _ = collect(PrometheusConfig(f"http://127.0.0.1:{port}", 0.3), queries, END)
        finally:
            done.set()
            thread.join(timeout=5)
            for connection in accepted:
                connection.close()
    assert set(instant) == set(queries.instant)
    assert {answer.error for answer in instant.values()} == {"timed out"}
    assert len(accepted) == 1


def test_a_token_file_with_two_words_says_so_and_quotes_neither(tmp_path: Path) -> None:
    """A token file whose token has a newline in it: nothing is asked, and the reason names
    the file's problem without the secret (it once reached status)."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\nhalf-two\n")
    config = PrometheusConfig("http://127.0.0.1:9", 0.3, bearer_token_file=token_file)
    queries = measurement_queries("ns", "m", EngineName.VLLM, HOUR)
    instant, series = collect(config, queries, END)
    reasons = {answer.error for answer in [*instant.values(), *series.values()]}
    assert reasons == {"the bearer token file holds no single token"}
    reading = read_queries(config, {"runningRequests": "up"})
    assert reading.problem == "the bearer token file holds no single token"
    assert reading.values == {"runningRequests": None}
