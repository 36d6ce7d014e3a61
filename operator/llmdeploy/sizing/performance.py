"""Latency and throughput of one replica: a roofline with measured efficiencies.

Decode is memory-bound: each step reads the rank's weights (for MoE, the experts the batch
touches) and the batch's KV cache. Continuous batching mixes the prefill of arriving requests
into decode steps, which is why TPOT grows with concurrency beyond what decode alone explains.
Prefill is compute-bound. Tensor parallelism adds two all-reduces per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmdeploy.catalog import Gpu, QuantFormat
from llmdeploy.sizing.memory import kv_bytes_per_token_layer, stage_layers, weight_bytes_per_rank
from llmdeploy.sizing.model_facts import ModelFacts

# Fraction of datasheet bandwidth / dense FLOPS that serving kernels reach. Every constant
# below is bench/fit_constants.py's output on the fit set of bench/data (a unit test checks).
BANDWIDTH_EFFICIENCY = 0.75
PREFILL_COMPUTE_EFFICIENCY = 0.4
DECODE_COMPUTE_EFFICIENCY = 0.2
# The same three per SKU where the corpus's fit set measures that GPU: how close decode's
# weight reads get to datasheet bandwidth, and prefill's GEMMs to datasheet FLOPS, depends on
# the memory generation and the kernels the engine has for the architecture. Other SKUs take
# the values above.
BANDWIDTH_EFFICIENCY_BY_GPU: dict[str, float] = {"nvidia-a100-80gb": 0.7, "nvidia-h100-80gb": 0.8}
PREFILL_COMPUTE_EFFICIENCY_BY_GPU: dict[str, float] = {
    "nvidia-a100-80gb": 0.6,
    "nvidia-h100-80gb": 0.4,
}
DECODE_COMPUTE_EFFICIENCY_BY_GPU: dict[str, float] = {
    "nvidia-a100-80gb": 0.25,
    "nvidia-h100-80gb": 0.2,
}
# Per-step cost not in the roofline: scheduling, sampling, launch gaps between small kernels.
STEP_OVERHEAD_S = 0.0
PER_LAYER_OVERHEAD_S = 3e-05
# Request overhead before the first token: HTTP, tokenization, scheduling, detokenization; the
# API server also serves every other running stream each step, so a new request waits longer
# the more streams are open (host-side work, invisible to a GPU roofline).
TTFT_OVERHEAD_S = 0.04
TTFT_OVERHEAD_PER_STREAM_S = 0.0012
ALL_REDUCE_LATENCY_S = {"nvlink": 10e-6, "infinity-fabric": 15e-6, "pcie": 30e-6}
# Pipeline stages on different nodes exchange activations over the cluster network.
INTER_NODE_LATENCY_S = 50e-6
INTER_NODE_BANDWIDTH_BPS = 25e9


@dataclass(frozen=True, slots=True)
class Performance:
    ttft_s: float
    tpot_s: float
    output_tokens_per_s: float  # per replica at the workload's concurrency
    requests_per_s: float  # per replica


@dataclass(frozen=True, slots=True)
class LatencyCalibration:
    """Measured over predicted latency of a running plan (status.calibration)."""

    ttft: float = 1.0
    tpot: float = 1.0

    def apply(self, perf: Performance) -> Performance:
        # Decode time dominates a replica's throughput: it scales with 1 / TPOT.
        return Performance(
            ttft_s=perf.ttft_s * self.ttft,
            tpot_s=perf.tpot_s * self.tpot,
            output_tokens_per_s=perf.output_tokens_per_s / self.tpot,
            requests_per_s=perf.requests_per_s / self.tpot,
        )


def _all_reduce_s(gpu: Gpu, tensor: int, message_bytes: float) -> float:
    if tensor == 1:
        return 0.0
    ring = 2 * (tensor - 1) / tensor * message_bytes / (gpu.interconnect.bandwidth_gbps * 1e9)
    return ALL_REDUCE_LATENCY_S[gpu.interconnect.kind] + ring


def _communication_s(
    model: ModelFacts, gpu: Gpu, tensor: int, pipeline: int, tokens: float
) -> float:
    """All-reduces of every layer plus pipeline hand-offs, for one step of `tokens`."""
    message = tokens * model.hidden_size * 2
    per_layer = 2 * _all_reduce_s(gpu, tensor, message)
    hops = (pipeline - 1) * (INTER_NODE_LATENCY_S + message / INTER_NODE_BANDWIDTH_BPS)
    return model.layers * per_layer + hops


def _flops_s(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    gpus: int,
    tokens: float,
    context: float,
    efficiency: float,
) -> float:
    """Compute time of `tokens` tokens attending to `context` tokens, spread over `gpus`."""
    linear = 2 * model.active_parameters * tokens
    attention = 4 * model.layers * model.attention_heads * model.head_dim * context * tokens
    return (linear + attention) / gpus / (gpu.compute_tflops(fmt.compute_dtype) * 1e12 * efficiency)


def estimate_performance(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    *,
    tensor: int,
    pipeline: int,
    kv_dtype_bytes: float,
    concurrency: int,
    input_tokens: int,
    output_tokens: int,
) -> Performance:
    gpus = tensor * pipeline
    bandwidth_efficiency = BANDWIDTH_EFFICIENCY_BY_GPU.get(gpu.id, BANDWIDTH_EFFICIENCY)
    prefill_efficiency = PREFILL_COMPUTE_EFFICIENCY_BY_GPU.get(gpu.id, PREFILL_COMPUTE_EFFICIENCY)
    decode_efficiency = DECODE_COMPUTE_EFFICIENCY_BY_GPU.get(gpu.id, DECODE_COMPUTE_EFFICIENCY)
    bandwidth = gpu.bandwidth_gbps * 1e9 * bandwidth_efficiency
    batch = concurrency

    weights = weight_bytes_per_rank(model, fmt, tensor, pipeline)
    if model.is_moe:
        # Expert weights are read only for experts some token of the batch routes to.
        expert_bytes = model.routed_expert_parameters * fmt.weight_bytes / gpus
        touched = 1 - (1 - model.active_experts / model.experts) ** batch
        weights -= expert_bytes * (1 - touched)
    context = input_tokens + output_tokens / 2
    if model.sliding_window:
        window_share = model.sliding_window_layers / model.layers
        context = context * (1 - window_share) + min(context, model.sliding_window) * window_share
    kv_read = (
        batch
        * context
        * stage_layers(model, pipeline)
        * kv_bytes_per_token_layer(model, tensor, kv_dtype_bytes)
    )
    # Stages run one after another for a token: the step time is the sum over stages.
    memory_s = pipeline * (weights + kv_read) / bandwidth
    decode_compute_s = _flops_s(model, gpu, fmt, gpus, batch, context, decode_efficiency)
    decode_s = max(memory_s, decode_compute_s)
    # Continuous batching runs an arriving request's prefill in one step with the running
    # decodes. That step reads the weights once for both, so the prefill adds only the compute
    # the step needs beyond the decode step's time; a stream brings one prefill per
    # output_tokens steps.
    prefill_compute_s = _flops_s(
        model, gpu, fmt, gpus, input_tokens, input_tokens / 2, prefill_efficiency
    )
    mixed_step_s = max(memory_s, prefill_compute_s + decode_compute_s)
    prefill_share_s = batch / output_tokens * (mixed_step_s - decode_s)
    prefill_tokens_per_step = batch * input_tokens / output_tokens
    overhead_s = STEP_OVERHEAD_S + model.layers * PER_LAYER_OVERHEAD_S
    tpot = (
        decode_s
        + prefill_share_s
        + _communication_s(model, gpu, tensor, pipeline, batch + prefill_tokens_per_step)
        + overhead_s
    )

    prefill_s = max(prefill_compute_s, pipeline * weights / bandwidth) + _communication_s(
        model, gpu, tensor, pipeline, input_tokens
    )
    # A new request competes only with the other streams: it waits for their prefills (M/D/1
    # queue on the prefill work they bring), the API server serves them each step, and its
    # prefill shares a step with their decodes. A lone request (concurrency 1) has none of that.
    others = batch - 1
    arrival_rate = others / (output_tokens * tpot)
    load = min(arrival_rate * prefill_s, 0.95)
    queueing_s = load * prefill_s / (2 * (1 - load))
    host_s = TTFT_OVERHEAD_S + TTFT_OVERHEAD_PER_STREAM_S * others
    ttft = host_s + prefill_s + queueing_s + min(others, 1) * tpot

    request_s = ttft + output_tokens * tpot
    return Performance(
        ttft_s=ttft,
        tpot_s=tpot,
        output_tokens_per_s=batch / tpot,
        requests_per_s=batch / request_s,
    )


def request_rate(
    output_tokens_per_s: float, ttft_s: float, tpot_s: float, output_tokens: int
) -> float:
    """Requests/s of one replica from a plan's rounded estimates: `estimate_performance`'s
    batch / (TTFT + output tokens x TPOT), its batch being tokens/s x TPOT."""
    return output_tokens_per_s * tpot_s / (ttft_s + output_tokens * tpot_s)


def replicas_for_rate(requests_per_s: float, per_replica: float) -> int:
    return max(1, math.ceil(requests_per_s / per_replica - 1e-9))
