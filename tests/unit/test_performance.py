"""The latency model at low and high load, and under the load's shapes."""

from __future__ import annotations

from typing import Any

import pytest

from llmdeploy.catalog import Catalog
from llmdeploy.sizing import performance, resolve_model
from llmdeploy.sizing.performance import Performance, estimate_performance

from .conftest import make_spec


def estimate(catalog: Catalog, name: str, concurrency: int = 1, **kwargs: Any) -> Performance:
    """`name` in bf16 on H100s, TP 1 and 1024 tokens in, 128 out unless `kwargs` say."""
    layout: dict[str, Any] = {
        "tensor": 1,
        "pipeline": 1,
        "kv_dtype_bytes": 2,
        "input_tokens": 1024,
        "output_tokens": 128,
    }
    return estimate_performance(
        resolve_model(make_spec(name).model, catalog),
        catalog.gpus["nvidia-h100-80gb"],
        catalog.quantizations["bf16"],
        concurrency=concurrency,
        **{**layout, **kwargs},
    )


def qwen3_32b(catalog: Catalog, concurrency: int, **kwargs: Any) -> Performance:
    """Qwen3-32B at TP 2, 1024 tokens in and 128 out (AIConfigurator's runs)."""
    return estimate(catalog, "Qwen/Qwen3-32B", concurrency, **{"tensor": 2, **kwargs})


def test_a_lone_request_pays_no_queue_no_step_wait_and_no_other_streams(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    lone = qwen3_32b(catalog, 1).ttft_s
    host = performance.TTFT_OVERHEAD_S
    # Neither the other streams' tokens nor their prefills apply.
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_PER_STREAMED_TOKEN_S", 1.0)
    assert qwen3_32b(catalog, 1).ttft_s == pytest.approx(lone)
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    prefill = qwen3_32b(catalog, 1).ttft_s
    assert prefill == pytest.approx(lone - host)
    # What is left is the prefill: compute-bound at 1024 tokens, so it scales with 1 / the
    # compute efficiency (all but the all-reduces and the per-layer step cost).
    efficiency = performance.COMPUTE_EFFICIENCY_BY_GPU["nvidia-h100-80gb"]
    monkeypatch.setitem(performance.COMPUTE_EFFICIENCY_BY_GPU, "nvidia-h100-80gb", efficiency / 2)
    assert 1.8 * prefill < qwen3_32b(catalog, 1).ttft_s < 2 * prefill


def test_ttft_grows_with_the_streams_a_request_shares_the_replica_with(catalog: Catalog) -> None:
    ttfts = [qwen3_32b(catalog, c).ttft_s for c in (1, 2, 8, 32)]
    assert ttfts == sorted(ttfts)
    # At load a new request first waits for the running step.
    two = qwen3_32b(catalog, 2)
    assert two.ttft_s - ttfts[0] > two.tpot_s / 2


def test_a_burst_queues_behind_half_the_bursts_prefills(catalog: Catalog) -> None:
    """All requests sent at once: the median request waits for the prompts sent before it; a
    burst of one is a lone request."""
    assert qwen3_32b(catalog, 1, burst=True) == qwen3_32b(catalog, 1)
    steady, burst = qwen3_32b(catalog, 33), qwen3_32b(catalog, 33, burst=True)
    lone_prefill = qwen3_32b(catalog, 1).ttft_s - performance.TTFT_OVERHEAD_S
    # 16 prompts ahead, each at least a lone prefill's compute (packed into shared steps).
    assert burst.ttft_s > 14 * lone_prefill > steady.ttft_s
    # Its decode runs through the prefills of the other half only.
    assert burst.tpot_s < steady.tpot_s


def test_a_long_prompt_is_prefilled_in_chunks_of_max_num_batched_tokens(
    catalog: Catalog,
) -> None:
    """Each chunk reads the weights again and pays the step's costs: chunks so short that a
    step is bound by its weight read make the prefill slower."""
    whole = qwen3_32b(catalog, 1, input_tokens=8192, max_num_batched_tokens=8192).ttft_s
    chunked = qwen3_32b(catalog, 1, input_tokens=8192, max_num_batched_tokens=64).ttft_s
    assert chunked > 2 * whole
    # A prompt within the budget is one step either way.
    assert qwen3_32b(catalog, 1, max_num_batched_tokens=2048) == qwen3_32b(catalog, 1)


def test_a_moe_prefill_reads_every_expert_a_decode_step_only_those_it_routes_to(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qwen3-30B-A3B (128 experts, 8 active): a lone decode token touches 8 experts, a
    1024-token prompt all of them, so the prefill's weight read is the whole model's."""
    monkeypatch.setattr(performance, "PER_LAYER_OVERHEAD_S", 0.0)
    monkeypatch.setattr(performance, "MOE_LAYER_OVERHEAD_S", 0.0)
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    # With compute free, both phases are their weight reads.
    monkeypatch.setitem(performance.COMPUTE_EFFICIENCY_BY_GPU, "nvidia-h100-80gb", 1e9)
    perf = estimate(catalog, "Qwen/Qwen3-30B-A3B")
    assert perf.ttft_s > 5 * perf.tpot_s


def test_moe_layers_pay_their_own_step_cost(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tpot(name: str) -> float:
        return estimate(catalog, name, input_tokens=128).tpot_s

    dense, moe = tpot("Qwen/Qwen3-8B"), tpot("Qwen/Qwen3-30B-A3B")
    extra = performance.MOE_LAYER_OVERHEAD_S + 1e-3
    monkeypatch.setattr(performance, "MOE_LAYER_OVERHEAD_S", extra)
    assert tpot("Qwen/Qwen3-8B") == dense
    assert tpot("Qwen/Qwen3-30B-A3B") == pytest.approx(moe + 48 * 1e-3)  # 48 MoE layers
