"""PromQL for the engines' metrics, scoped to one LLMDeployment's pods (pure).

`ENGINE_METRICS` is the one table of the engines' metric names, read by the autoscaler's
queries here and by the measurements (measure/queries.py). Where and from which release each
engine serves them is in the catalog (engines.yaml, `metrics`). Sources:
- vLLM, `vllm/v1/metrics/loggers.py` (docs/engine-flags.md, section 1.6).
- TensorRT-LLM, `tensorrt_llm/metrics/collector.py` (docs/engine-flags.md, sections 2.2-2.3):
  every series carries the labels model_name and engine_type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmdeploy.api.types import ActivationMetric, EngineName

WINDOW = "2m"
DEPLOYMENT_LABEL = "llmdeploy_io_deployment"  # the pod label llmdeploy.io/deployment, scraped
GENERATION_LABEL = "llmdeploy_io_generation"  # the pod label llmdeploy.io/generation, scraped


@dataclass(frozen=True, slots=True)
class MetricSource:
    promql: str  # "{s}" stands for the series selector
    external_name: str  # what prometheus-adapter serves it as, for mode hpa


def _p95(*histograms: str) -> str:
    """p95 in seconds over WINDOW; several names: whichever the engine version has."""
    rates = " or ".join(f"rate({h}_bucket{{{{{{s}}}}}}[{WINDOW}])" for h in histograms)
    return f"histogram_quantile(0.95, sum by (le) ({rates}))"


# Queries answer in base units (seconds), as Prometheus and the engines do; spec targets for
# latency are milliseconds, like spec.slo.
SPEC_UNITS_PER_QUERY_UNIT = {"ttftP95": 1000.0, "tpotP95": 1000.0}


def query_target(metric_type: str, target: float) -> float:
    """A spec target in the units its query answers in."""
    return target / SPEC_UNITS_PER_QUERY_UNIT.get(metric_type, 1.0)


def in_spec_units(metric_type: str, value: float) -> float:
    """A query's answer in the units the spec's target is written in."""
    return value * SPEC_UNITS_PER_QUERY_UNIT.get(metric_type, 1.0)


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One engine's metric names as scraped (counters with their `_total`); where a name
    changed between releases, the current one first and `or` picks whichever exists."""

    waiting: str  # gauge: requests queued
    running: str  # gauge: requests in the running batch; every serving process publishes it
    kv_cache_usage: tuple[str, ...]  # gauges 0-1
    ttft: tuple[str, ...]  # histograms in seconds
    tpot: tuple[str, ...]
    requests: str  # counter of finished requests
    input_tokens_total: str  # counters of prompt and generated tokens
    output_tokens_total: str
    input_tokens: str | None  # per-request token histograms, where the engine has them
    output_tokens: str | None
    latency_external_prefix: str  # prometheus-adapter's names of the latency p95s (mode hpa)


ENGINE_METRICS: dict[EngineName, EngineMetrics] = {
    EngineName.VLLM: EngineMetrics(
        waiting="vllm:num_requests_waiting",
        running="vllm:num_requests_running",
        # vllm:gpu_cache_usage_perc before v0.10
        kv_cache_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        ttft=("vllm:time_to_first_token_seconds",),
        # vllm:time_per_output_token_seconds up to v0.11
        tpot=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        requests="vllm:request_success_total",
        input_tokens_total="vllm:prompt_tokens_total",
        output_tokens_total="vllm:generation_tokens_total",
        input_tokens="vllm:request_prompt_tokens",
        output_tokens="vllm:request_generation_tokens",
        latency_external_prefix="llmdeploy",
    ),
    # Gauges set from iteration stats (enable_iter_perf_stats): trtllm_kv_cache_utilization is
    # usedNumBlocks / maxNumBlocks, 0-1. No per-request token histograms.
    EngineName.TENSORRT_LLM: EngineMetrics(
        waiting="trtllm_num_requests_waiting",
        running="trtllm_num_requests_running",
        kv_cache_usage=("trtllm_kv_cache_utilization",),
        ttft=("trtllm_time_to_first_token_seconds",),
        tpot=("trtllm_time_per_output_token_seconds",),
        requests="trtllm_request_success_total",
        input_tokens_total="trtllm_prompt_tokens_total",
        output_tokens_total="trtllm_generation_tokens_total",
        input_tokens=None,
        output_tokens=None,
        latency_external_prefix="llmdeploy_trtllm",
    ),
}


def _external(name: str) -> str:
    """A scraped name as prometheus-adapter serves it (no colons in external metric names)."""
    return name.replace(":", "_")


def _sources(m: EngineMetrics) -> dict[str, MetricSource]:
    kv = " or ".join(f"{g}{{{{{{s}}}}}}" for g in m.kv_cache_usage)
    return {
        "queueDepth": MetricSource(f"sum({m.waiting}{{{{{{s}}}}}})", _external(m.waiting)),
        "runningRequests": MetricSource(f"sum({m.running}{{{{{{s}}}}}})", _external(m.running)),
        "kvCacheUsage": MetricSource(f"avg({kv})", _external(m.kv_cache_usage[0])),
        "ttftP95": MetricSource(_p95(*m.ttft), f"{m.latency_external_prefix}_ttft_p95_seconds"),
        "tpotP95": MetricSource(_p95(*m.tpot), f"{m.latency_external_prefix}_tpot_p95_seconds"),
    }


SOURCES: dict[EngineName, dict[str, MetricSource]] = {
    engine: _sources(metrics) for engine, metrics in ENGINE_METRICS.items()
}


def selector(namespace: str, name: str, generation: str | None = None) -> str:
    """Series of one LLMDeployment's engines, or of one generation of them (the first has no
    generation label: "" matches series without it). The rendered PodMonitor copies the pod
    labels onto every series; namespace, name and generation are DNS labels or hex, validated
    before, so they cannot break out of the quotes."""
    scope = f'namespace="{namespace}",{DEPLOYMENT_LABEL}="{name}"'
    return scope if generation is None else f'{scope},{GENERATION_LABEL}="{generation}"'


def query(metric_type: str, namespace: str, name: str, engine: EngineName = EngineName.VLLM) -> str:
    source = SOURCES[engine].get(metric_type)
    if source is None:
        raise ValueError(f"{engine.value} has no metric for {metric_type!r}")
    return source.promql.format(s=selector(namespace, name))


def activation_query(metric: ActivationMetric, namespace: str) -> str:
    """The activation metric's sum within `namespace`: the namespace matcher is always this
    object's (a user label named namespace cannot widen it), and values are quoted as PromQL
    strings (Go syntax, which JSON's escapes are a subset of)."""
    labels = {**metric.labels, "namespace": namespace}
    matchers = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"sum({metric.name}{{{matchers}}})"
