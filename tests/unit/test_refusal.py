"""Configurations the engine would refuse at startup (or, TensorRT-LLM, start with a shorter
context), and plans near that limit."""

from __future__ import annotations

from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.sizing import memory, plan_deployment
from llmdeploy.sizing.model_facts import resolve_model
from llmdeploy.sizing.plan import Plan

from .conftest import make_spec


def on_one_gpu(
    catalog: Catalog, model: str, gpu: str, context: int, engine: dict[str, object]
) -> Plan:
    """One replica on one GPU, one request at a time, a 16-bit KV cache."""
    spec = make_spec(
        model,
        placement={"gpu": gpu},
        parallelism={"tensor": 1, "pipeline": 1},
        engine={"kvCacheDtype": "auto", **engine},
        workload={
            "maxContextLength": context,
            "inputTokens": 1000,
            "outputTokens": 200,
            "concurrency": 1,
        },
    )
    return plan_deployment(spec, catalog, load_image_lock())


def gpt_oss_on_one_h100(
    catalog: Catalog, utilization: float, context: int = 131072, version: str | None = None
) -> Plan:
    """vllm-project/vllm#23278 and #27508: gpt-oss-120b on one H100 at its full context."""
    engine: dict[str, object] = {"gpuMemoryUtilization": utilization}
    if version:
        engine["version"] = version
    return on_one_gpu(catalog, "openai/gpt-oss-120b", "nvidia-h100-80gb", context, engine)


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


def llama_8b_on_one_l4(catalog: Catalog, engine: str, context: int, utilization: float) -> Plan:
    """Llama-3.1-8B with a 16-bit KV cache on one L4: about 45k tokens of cache at 0.9."""
    settings: dict[str, object] = {"name": engine, "gpuMemoryUtilization": utilization}
    return on_one_gpu(catalog, "meta-llama/Llama-3.1-8B-Instruct", "nvidia-l4", context, settings)


def test_tensorrt_llm_short_of_one_request_starts_with_a_shorter_context(
    catalog: Catalog,
) -> None:
    """TensorRT-LLM lowers max_seq_len to what its cache holds ("Adjusted max_seq_len to N")
    instead of refusing: the plan stays infeasible (the spec asks for the longer context), and
    says what the engine would serve."""
    plan = llama_8b_on_one_l4(catalog, "tensorrt-llm", 131072, 0.9)
    assert not plan.feasible
    reason = next(r for r in plan.reasons if "max_seq_len" in r)
    assert not any("refuse" in r for r in plan.reasons)
    served = int(reason.split("max_seq_len ")[1].split(",")[0])
    cached = int(reason.split("cache holds ")[1].split(" tokens")[0])
    # A dense model's one request may take the whole cache, in whole 32-token blocks.
    assert served == cached and served % 32 == 0 and 0 < served < 131072
    assert reason.startswith(f"TensorRT-LLM would start with max_seq_len {served}, less than ")
    # The same layout under vLLM is a refusal.
    vllm = llama_8b_on_one_l4(catalog, "vllm", 131072, 0.9)
    assert not vllm.feasible
    assert any(r.startswith("vLLM would refuse to start: KV cache holds") for r in vllm.reasons)
    # At a context the cache holds, the plan is feasible and its cache holds what was served.
    fits = llama_8b_on_one_l4(catalog, "tensorrt-llm", served, 0.9)
    assert fits.feasible and fits.kv_cache_tokens == served


def test_tensorrt_llm_near_the_limit_may_lower_max_seq_len(catalog: Catalog) -> None:
    roomy = llama_8b_on_one_l4(catalog, "tensorrt-llm", 32768, 0.9)
    assert roomy.kv_cache_tokens is not None
    context = roomy.kv_cache_tokens * 100 // 105 // 32 * 32  # about 5% below the cache
    near = llama_8b_on_one_l4(catalog, "tensorrt-llm", context, 0.9)
    assert near.feasible
    warning = next(r for r in near.reasons if "within its error band" in r)
    assert "TensorRT-LLM may lower max_seq_len below it" in warning
    assert "refuse" not in warning


def test_tensorrt_llm_served_context_counts_sliding_window_layers(catalog: Catalog) -> None:
    """With sliding-window layers a request costs less than its tokens in every layer: the
    served context is the longest whole-block request the cache holds."""
    model = resolve_model(make_spec("openai/gpt-oss-20b").model, catalog)
    assert model.sliding_window
    per_token = memory.request_kv_bytes(model, 1, 1, 2.0, 32, 32) / 32
    kv = per_token * 20000  # the cost of 20000 tokens in every layer
    served = memory.tensorrt_llm_served_context(model, 1, 1, 2.0, kv, 131072, 32)
    assert served % 32 == 0 and served > 20000  # window layers hold only their window
    assert memory.request_kv_bytes(model, 1, 1, 2.0, served, 32) <= kv
    assert memory.request_kv_bytes(model, 1, 1, 2.0, served + 32, 32) > kv
    assert memory.tensorrt_llm_served_context(model, 1, 1, 2.0, per_token, 131072, 32) == 0
