"""PromQL for the engines' metrics, scoped to one LLMDeployment's pods (pure).

Names and types are vLLM's (docs/engine-flags.md, section 1.6): gauges
vllm:num_requests_waiting / _running, vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before
v0.10), histograms vllm:time_to_first_token_seconds and vllm:inter_token_latency_seconds
(vllm:time_per_output_token_seconds before v0.11).
"""

from __future__ import annotations

WINDOW = "2m"


DEPLOYMENT_LABEL = "llmdeploy_io_deployment"  # the pod label llmdeploy.io/deployment, scraped


def selector(namespace: str, name: str) -> str:
    """Series of one LLMDeployment's engines. The rendered PodMonitor copies the pod label
    llmdeploy.io/deployment onto every series; namespace and name are DNS labels, validated at
    admission, so they cannot break out of the quotes."""
    return f'namespace="{namespace}",{DEPLOYMENT_LABEL}="{name}"'


def query(metric_type: str, namespace: str, name: str) -> str:
    s = selector(namespace, name)
    if metric_type == "queueDepth":
        return f"sum(vllm:num_requests_waiting{{{s}}})"
    if metric_type == "runningRequests":
        return f"sum(vllm:num_requests_running{{{s}}})"
    if metric_type == "kvCacheUsage":
        return f"avg(vllm:kv_cache_usage_perc{{{s}}} or vllm:gpu_cache_usage_perc{{{s}}})"
    if metric_type == "ttftP95":
        buckets = f"vllm:time_to_first_token_seconds_bucket{{{s}}}"
        return f"1000 * histogram_quantile(0.95, sum by (le) (rate({buckets}[{WINDOW}])))"
    if metric_type == "tpotP95":
        new = f"rate(vllm:inter_token_latency_seconds_bucket{{{s}}}[{WINDOW}])"
        old = f"rate(vllm:time_per_output_token_seconds_bucket{{{s}}}[{WINDOW}])"
        return f"1000 * histogram_quantile(0.95, sum by (le) ({new} or {old}))"
    raise ValueError(f"unknown metric type {metric_type!r}")
