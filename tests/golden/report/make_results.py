"""Writes the saved query results the report golden tests read (results/*.json).

Not a test: run it by hand after changing a scenario, then regenerate the expected reports
(LLMDEPLOY_UPDATE_GOLDEN=1 pytest tests/golden) and read every diff.

Each scenario is a day (or an hour) of one deployment, described by smooth curves: a request
rate with a daily cycle, log-normal TTFT and TPOT whose median grows with load, and replicas
that follow the rate. Histograms are what Prometheus would return for `sum by (le)
(increase(...))`: the expected count below each of vLLM's bucket bounds (the bounds of
vllm/v1/metrics/loggers.py), and the instant answers are the sums of the steps, so the two
agree as they do in Prometheus when the steps tile the window.

    .venv/bin/python -m tests.golden.report.make_results
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmdeploy.api.types import EngineName
from llmdeploy.measure.queries import measurement_queries, window_seconds
from llmdeploy.measure.results import RESULTS_FORMAT

HERE = Path(__file__).parent / "results"
END = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TPOT_BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
TOKEN_BOUNDS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)  # max_model_len 8192


@dataclass(frozen=True)
class Scenario:
    name: str
    deployment: str
    engine: EngineName
    window: str
    rate: float  # requests/s on average; +-50% over the day
    input_tokens: float  # mean prompt length
    output_tokens: float
    ttft_median_s: float  # at average load; doubles at the peak
    tpot_median_s: float
    tpot_load: float  # how much of the TPOT median grows with load
    replicas_per_rps: float
    max_replicas: int
    kv_usage: float


SCENARIOS = (
    Scenario("healthy", "llama-8b", EngineName.VLLM, "24h", 1.8, 1010, 240, 0.28, 0.038, 0.15,
             1.8, 4, 0.35),
    Scenario("drifted", "llama-8b", EngineName.VLLM, "24h", 2.1, 2048, 250, 0.85, 0.055, 0.25,
             4.0, 4, 0.81),
    Scenario("few-requests", "llama-8b-trtllm", EngineName.TENSORRT_LLM, "1h", 12 / 3600, 900,
             200, 0.2, 0.03, 0.0, 1.0, 1, 0.02),
)  # fmt: skip


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def lognormal_counts(
    count: float, median: float, sigma: float, bounds: tuple[float, ...]
) -> dict[float, float]:
    cdf = {b: count * normal_cdf((math.log(b) - math.log(median)) / sigma) for b in bounds}
    return {**cdf, math.inf: count}


def spike_counts(count: float, mean: float, bounds: tuple[float, ...]) -> dict[float, float]:
    """Token lengths spread +-30% around the mean, uniformly."""
    low, high = 0.7 * mean, 1.3 * mean
    cdf = {b: count * min(1.0, max(0.0, (b - low) / (high - low))) for b in bounds}
    return {**cdf, math.inf: count}


def value(x: float) -> str:
    return f"{x:.6g}"


def vector(x: float) -> list[dict[str, Any]]:
    return [{"metric": {}, "value": [END, value(x)]}]


def buckets(counts: dict[float, float]) -> list[dict[str, Any]]:
    return [
        {"metric": {"le": "+Inf" if le == math.inf else f"{le:g}"}, "value": [END, value(c)]}
        for le, c in counts.items()
    ]


def matrix_buckets(steps: list[tuple[float, dict[float, float]]]) -> list[dict[str, Any]]:
    bounds = list(steps[0][1])
    return [
        {
            "metric": {"le": "+Inf" if le == math.inf else f"{le:g}"},
            "values": [[t, value(counts[le])] for t, counts in steps],
        }
        for le in bounds
    ]


def matrix(points: list[tuple[float, float]]) -> list[dict[str, Any]]:
    return [{"metric": {}, "values": [[t, value(x)] for t, x in points]}]


def add(total: dict[float, float], more: dict[float, float]) -> dict[float, float]:
    return {le: total.get(le, 0.0) + c for le, c in more.items()}


def results(s: Scenario) -> dict[str, Any]:
    window_s = window_seconds(s.window)
    queries = measurement_queries("default", s.deployment, s.engine, window_s, with_series=True)
    step = queries.step_s
    times = [END - window_s + step * (i + 1) for i in range(window_s // step)]
    ttft_steps, tpot_steps, tokens_rate, replicas = [], [], [], []
    ttft_total: dict[float, float] = {}
    tpot_total: dict[float, float] = {}
    requests = ttft_sum = tpot_sum = 0.0
    for t in times:
        phase = 2 * math.pi * (t - (END - window_s)) / 86_400
        load = 1 - 0.5 * math.cos(phase)  # 0.5 at the start, 1.5 at mid-window
        rate = s.rate * load
        n = rate * step
        requests += n
        ttft = lognormal_counts(n, s.ttft_median_s * load, 0.45, TTFT_BOUNDS)
        gaps = n * (s.output_tokens - 1)
        tpot_median = s.tpot_median_s * (1 + s.tpot_load * (load - 1))
        tpot = lognormal_counts(gaps, tpot_median, 0.12, TPOT_BOUNDS)
        ttft_steps.append((t, ttft))
        tpot_steps.append((t, tpot))
        ttft_total, tpot_total = add(ttft_total, ttft), add(tpot_total, tpot)
        # A log-normal's mean: its median x exp(sigma^2 / 2).
        ttft_sum += n * s.ttft_median_s * load * math.exp(0.45**2 / 2)
        tpot_sum += gaps * tpot_median * math.exp(0.12**2 / 2)
        tokens_rate.append((t, rate * s.output_tokens))
        serving = min(s.max_replicas, max(1, math.ceil(rate * s.replicas_per_rps)))
        replicas.append((t, float(serving)))
    instant: dict[str, list[dict[str, Any]]] = {
        "requests": vector(requests),
        "inputTokensTotal": vector(requests * s.input_tokens),
        "outputTokensTotal": vector(requests * s.output_tokens),
        "kvCacheUsage": vector(s.kv_usage),
        "replicas": vector(sum(r for _, r in replicas) / len(replicas)),
        "ttft": buckets(ttft_total),
        "tpot": buckets(tpot_total),
        "ttftSum": vector(ttft_sum),
        "tpotSum": vector(tpot_sum),
        "inputTokens": buckets(spike_counts(requests, s.input_tokens, TOKEN_BOUNDS)),
        "outputTokens": buckets(spike_counts(requests, s.output_tokens, TOKEN_BOUNDS)),
    }
    series = {
        "ttft": matrix_buckets(ttft_steps),
        "tpot": matrix_buckets(tpot_steps),
        "outputTokensRate": matrix(tokens_rate),
        "replicas": matrix(replicas),
    }
    return {
        "format": RESULTS_FORMAT,
        "namespace": "default",
        "name": s.deployment,
        "engine": s.engine.value,
        "window": s.window,
        "end": END,
        "stepSeconds": step,
        "instant": {
            k: {"promql": q, "result": instant[k], "error": None}
            for k, q in queries.instant.items()
        },
        "series": {
            k: {"promql": q, "result": series[k], "error": None} for k, q in queries.series.items()
        },
    }


def unreachable() -> dict[str, Any]:
    """Prometheus refused every connection: each query carries the reason."""
    queries = measurement_queries("default", "llama-8b", EngineName.VLLM, 3600, with_series=True)
    failed = {"result": [], "error": "connection failed"}
    return {
        "format": RESULTS_FORMAT,
        "namespace": "default",
        "name": "llama-8b",
        "engine": "vllm",
        "window": "1h",
        "end": END,
        "stepSeconds": queries.step_s,
        "instant": {k: {"promql": q, **failed} for k, q in queries.instant.items()},
        "series": {k: {"promql": q, **failed} for k, q in queries.series.items()},
    }


def main() -> None:
    HERE.mkdir(exist_ok=True)
    documents = {s.name: results(s) for s in SCENARIOS}
    documents["unreachable"] = unreachable()
    for name, document in documents.items():
        if name != "drifted":  # one scenario over time is enough for the pictures
            document["series"] = {}
            text = json.dumps(document, indent=1)
        else:  # thousands of points: compact
            text = json.dumps(document, separators=(",", ":"))
        (HERE / f"{name}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
