"""The latency model at low and high load."""

from __future__ import annotations

import pytest

from llmdeploy.catalog import Catalog
from llmdeploy.sizing import performance, resolve_model
from llmdeploy.sizing.performance import estimate_performance

from .conftest import make_spec


def ttft_and_tpot(catalog: Catalog, concurrency: int) -> tuple[float, float]:
    model = resolve_model(make_spec("Qwen/Qwen3-32B").model, catalog)
    perf = estimate_performance(
        model,
        catalog.gpus["nvidia-h100-80gb"],
        catalog.quantizations["bf16"],
        tensor=2,
        pipeline=1,
        kv_dtype_bytes=2,
        concurrency=concurrency,
        input_tokens=1024,
        output_tokens=128,
    )
    return perf.ttft_s, perf.tpot_s


def test_a_lone_request_pays_no_queue_and_no_other_streams(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    lone, _ = ttft_and_tpot(catalog, 1)
    host = performance.TTFT_OVERHEAD_S
    # Neither the per-stream host term nor the queue on other streams' prefills applies.
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_PER_STREAM_S", 1.0)
    assert ttft_and_tpot(catalog, 1)[0] == pytest.approx(lone)
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    assert ttft_and_tpot(catalog, 1)[0] == pytest.approx(lone - host)


def test_ttft_grows_with_the_streams_a_request_shares_the_replica_with(catalog: Catalog) -> None:
    ttfts = [ttft_and_tpot(catalog, c)[0] for c in (1, 2, 8, 32)]
    assert ttfts == sorted(ttfts)
    # At load a new request's prefill shares a step with the others' decodes.
    ttft_8, tpot_8 = ttft_and_tpot(catalog, 8)
    assert ttft_8 - ttfts[0] > tpot_8
