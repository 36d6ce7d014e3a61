"""PromQL for the engines' metrics, scoped to one LLMDeployment's pods (pure).

Metric names by engine, with their sources in docs/autoscaling.md ("Metrics"):
- vLLM (docs/engine-flags.md, section 1.6): gauges vllm:num_requests_waiting / _running,
  vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before v0.10), histograms
  vllm:time_to_first_token_seconds and vllm:inter_token_latency_seconds
  (vllm:time_per_output_token_seconds before v0.11).
- TensorRT-LLM (tensorrt_llm/metrics/collector.py, served on /prometheus/metrics): gauges
  trtllm_num_requests_waiting / _running, trtllm_kv_cache_utilization (used / max blocks, 0-1),
  histograms trtllm_time_to_first_token_seconds and trtllm_time_per_output_token_seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmdeploy.api.types import ActivationMetric, EngineName

WINDOW = "2m"
DEPLOYMENT_LABEL = "llmdeploy_io_deployment"  # the pod label llmdeploy.io/deployment, scraped


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


SOURCES: dict[EngineName, dict[str, MetricSource]] = {
    EngineName.VLLM: {
        "queueDepth": MetricSource(
            "sum(vllm:num_requests_waiting{{{s}}})", "vllm_num_requests_waiting"
        ),
        "runningRequests": MetricSource(
            "sum(vllm:num_requests_running{{{s}}})", "vllm_num_requests_running"
        ),
        "kvCacheUsage": MetricSource(
            "avg(vllm:kv_cache_usage_perc{{{s}}} or vllm:gpu_cache_usage_perc{{{s}}})",
            "vllm_kv_cache_usage_perc",
        ),
        "ttftP95": MetricSource(
            _p95("vllm:time_to_first_token_seconds"), "llmdeploy_ttft_p95_seconds"
        ),
        "tpotP95": MetricSource(
            _p95("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
            "llmdeploy_tpot_p95_seconds",
        ),
    },
    EngineName.TENSORRT_LLM: {
        "queueDepth": MetricSource(
            "sum(trtllm_num_requests_waiting{{{s}}})", "trtllm_num_requests_waiting"
        ),
        "runningRequests": MetricSource(
            "sum(trtllm_num_requests_running{{{s}}})", "trtllm_num_requests_running"
        ),
        "kvCacheUsage": MetricSource(
            "avg(trtllm_kv_cache_utilization{{{s}}})", "trtllm_kv_cache_utilization"
        ),
        "ttftP95": MetricSource(
            _p95("trtllm_time_to_first_token_seconds"),
            "llmdeploy_trtllm_ttft_p95_seconds",
        ),
        "tpotP95": MetricSource(
            _p95("trtllm_time_per_output_token_seconds"),
            "llmdeploy_trtllm_tpot_p95_seconds",
        ),
    },
}


def selector(namespace: str, name: str) -> str:
    """Series of one LLMDeployment's engines. The rendered PodMonitor copies the pod label
    llmdeploy.io/deployment onto every series; namespace and name are DNS labels, validated at
    admission, so they cannot break out of the quotes."""
    return f'namespace="{namespace}",{DEPLOYMENT_LABEL}="{name}"'


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
