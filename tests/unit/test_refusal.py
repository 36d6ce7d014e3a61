"""Configurations the engine would refuse at startup, and plans near that limit."""

from __future__ import annotations

from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.sizing import plan_deployment
from llmdeploy.sizing.plan import Plan

from .conftest import make_spec


def gpt_oss_on_one_h100(
    catalog: Catalog, utilization: float, context: int = 131072, version: str | None = None
) -> Plan:
    """vllm-project/vllm#23278 and #27508: gpt-oss-120b on one H100 at its full context."""
    engine: dict[str, object] = {"kvCacheDtype": "auto", "gpuMemoryUtilization": utilization}
    if version:
        engine["version"] = version
    spec = make_spec(
        "openai/gpt-oss-120b",
        placement={"gpu": "nvidia-h100-80gb"},
        parallelism={"tensor": 1, "pipeline": 1},
        engine=engine,
        workload={
            "maxContextLength": context,
            "inputTokens": 1000,
            "outputTokens": 200,
            "concurrency": 1,
        },
    )
    return plan_deployment(spec, catalog, load_image_lock())


def test_no_room_for_one_request_is_infeasible_with_the_engines_reason(catalog: Catalog) -> None:
    plan = gpt_oss_on_one_h100(catalog, 0.85)
    assert not plan.feasible
    assert plan.reasons[1].startswith("vLLM would refuse to start: KV cache holds")
    assert "less than one request of maxContextLength 131072" in plan.reasons[1]


def test_a_plan_within_the_error_band_of_the_limit_says_so(catalog: Catalog) -> None:
    near = gpt_oss_on_one_h100(catalog, 0.905)  # just over one request of 131072 tokens
    assert near.feasible
    assert near.max_concurrency is not None and 1 <= near.max_concurrency <= 1.1
    assert any("within its error band" in r and "may refuse" in r for r in near.reasons)
    # With room for several requests the warning is gone.
    roomy = gpt_oss_on_one_h100(catalog, 0.9, context=32768)
    assert roomy.feasible
    assert not any("error band" in r for r in roomy.reasons)


def test_a_refusal_within_the_error_band_says_it_may_start(catalog: Catalog) -> None:
    plan = gpt_oss_on_one_h100(catalog, 0.898)
    assert not plan.feasible
    refusal = next(r for r in plan.reasons if "would refuse" in r)
    assert refusal.endswith("but within the estimate's error band: it may start")


def test_no_room_at_all_names_the_cuda_graphs_of_releases_that_book_them(catalog: Catalog) -> None:
    # Same weights (Triton MXFP4 from 0.12.0) and, at concurrency 1, a negligible sampler peak:
    # 0.24.0's 0.58 GiB of graphs leave no room where 0.14.0 keeps a little.
    newer = gpt_oss_on_one_h100(catalog, 0.825, version="0.24.0")
    older = gpt_oss_on_one_h100(catalog, 0.825, version="0.14.0")
    assert not newer.feasible and not older.feasible
    refusal = next(r for r in newer.reasons if "would refuse to start" in r)
    assert "no room for KV cache" in refusal and "+ CUDA graphs 0.6 GiB exceed" in refusal
    assert not any("CUDA graphs" in r for r in older.reasons)
    assert any("KV cache holds" in r for r in older.reasons)
