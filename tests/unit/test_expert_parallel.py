"""Expert parallelism as a planned, rendered layout: spec.parallelism.expert, the planner's
choice between spreading the experts whole and splitting each over the TP ranks, and the
engines' flags."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llmdeploy.api.crd import build_crd
from llmdeploy.api.types import (
    EXPERT_DIVIDES_TENSOR,
    VLLM_EXPERT_IS_TENSOR,
    LLMDeployment,
    LLMDeploymentSpec,
)
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.cli import format_plan_table
from llmdeploy.controller import recommend
from llmdeploy.render import render_manifests
from llmdeploy.sizing import SpecError, feasible_alternatives, plan_deployment
from llmdeploy.sizing.engine_memory import engine_memory
from llmdeploy.sizing.memory import memory_breakdown
from llmdeploy.sizing.model_facts import ModelFacts, resolve_model
from llmdeploy.sizing.moe_kernels import moe_workspace, moe_workspace_kernel
from llmdeploy.sizing.performance import estimate_performance, grouped_fp8_shares
from llmdeploy.sizing.plan import Plan

from .conftest import make_spec

R1 = "deepseek-ai/DeepSeek-R1"
H200 = "nvidia-h200-141gb"
WORKLOAD = {"concurrency": 16, "inputTokens": 1024, "outputTokens": 1024, "maxContextLength": 8192}


def r1_spec(**spec: Any) -> LLMDeploymentSpec:
    """DeepSeek-R1 in its native block-scaled FP8 on one 8x H200 node."""
    return make_spec(R1, quantization="fp8", placement={"gpu": H200}, workload=WORKLOAD, **spec)


# --- spec ---------------------------------------------------------------------------------


def test_expert_defaults_to_auto() -> None:
    assert make_spec().parallelism.expert == "auto"


def test_expert_must_divide_a_pinned_tensor() -> None:
    with pytest.raises(ValidationError) as caught:
        make_spec(engine={"name": "tensorrt-llm"}, parallelism={"tensor": 8, "expert": 3})
    assert EXPERT_DIVIDES_TENSOR in str(caught.value)
    spec = make_spec(engine={"name": "tensorrt-llm"}, parallelism={"tensor": 8, "expert": 4})
    assert spec.parallelism.expert == 4


def test_vllm_takes_expert_one_or_the_tensor_only() -> None:
    with pytest.raises(ValidationError) as caught:
        make_spec(parallelism={"tensor": 8, "expert": 4})
    assert VLLM_EXPERT_IS_TENSOR in str(caught.value)
    assert make_spec(parallelism={"tensor": 8, "expert": 8}).parallelism.expert == 8
    assert make_spec(parallelism={"tensor": 8, "expert": 1}).parallelism.expert == 1


def test_the_crd_carries_both_rules_with_field_paths() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    parallelism = spec["properties"]["parallelism"]
    assert parallelism["properties"]["expert"]["x-kubernetes-int-or-string"] is True
    divides = parallelism["x-kubernetes-validations"]
    assert divides[0]["message"] == EXPERT_DIVIDES_TENSOR
    assert divides[0]["fieldPath"] == ".expert"
    assert "self.tensor % self.expert == 0" in divides[0]["rule"]
    vllm = [r for r in spec["x-kubernetes-validations"] if r["message"] == VLLM_EXPERT_IS_TENSOR]
    assert len(vllm) == 1 and vllm[0]["fieldPath"] == ".parallelism.expert"
    assert "self.engine.name != 'vllm'" in vllm[0]["rule"]


def test_a_dense_model_with_expert_parallelism_is_refused_with_the_field_path(
    catalog: Catalog,
) -> None:
    spec = make_spec("meta-llama/Llama-3.1-8B-Instruct", parallelism={"tensor": 2, "expert": 2})
    with pytest.raises(SpecError) as caught:
        plan_deployment(spec, catalog)
    assert caught.value.field == "spec.parallelism.expert"
    assert "dense" in str(caught.value)


def test_experts_that_do_not_spread_evenly_are_refused(catalog: Catalog) -> None:
    # Mixtral's 8 experts over 16 ranks (TensorRT-LLM across two nodes).
    spec = make_spec(
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        engine={"name": "tensorrt-llm"},
        parallelism={"tensor": 16, "expert": 16},
    )
    with pytest.raises(SpecError) as caught:
        plan_deployment(spec, catalog)
    assert caught.value.field == "spec.parallelism.expert"
    assert "8 routed experts" in str(caught.value)


# --- planner ------------------------------------------------------------------------------


def test_the_planner_spreads_block_fp8_experts_on_hopper(catalog: Catalog) -> None:
    """The grouped FP8 kernel runs each expert split 8 ways far below its whole-expert rates
    (performance.GROUPED_FP8_*): the planner must find EP 8, and say what EP 1 would give."""
    plan = plan_deployment(r1_spec(), catalog)
    assert plan.feasible
    assert (plan.tensor_parallel, plan.expert_parallel) == (8, 8)
    experts = [r for r in plan.reasons if r.startswith("experts: ")]
    assert len(experts) == 1 and "EP8 (32 experts per GPU, whole)" in experts[0]
    assert "EP1 (every expert split 8 ways) est. TTFT" in experts[0]
    lost = [a for a in plan.alternatives if a.expert_parallel == 1 and a.feasible]
    assert lost and all(a.reason for a in lost)
    assert any(a.reason.startswith("EP1 (every expert split 8 ways) instead of EP8") for a in lost)
    assert "TP8 EP8" in plan.reasons[0]
    assert "(TP 8, PP 1, EP 8)" in format_plan_table(plan)


def test_pinned_expert_one_is_kept_and_costs_more(catalog: Catalog) -> None:
    chosen = plan_deployment(r1_spec(), catalog)
    pinned = plan_deployment(r1_spec(parallelism={"expert": 1}), catalog)
    assert pinned.feasible and pinned.expert_parallel == 1
    assert pinned.tensor_parallel == 8
    assert chosen.cost_per_million_tokens is not None
    assert pinned.cost_per_million_tokens is not None
    assert pinned.cost_per_million_tokens > chosen.cost_per_million_tokens
    assert any(r.endswith("(spec.parallelism.expert)") for r in pinned.reasons)


def test_vllm_tries_expert_one_and_the_tensor_tensorrt_llm_also_half(catalog: Catalog) -> None:
    def degrees(spec: LLMDeploymentSpec) -> set[tuple[int, int | None]]:
        alternatives = feasible_alternatives(spec, catalog)
        return {(a.tensor_parallel, a.expert_parallel) for a in alternatives}

    vllm = degrees(r1_spec(parallelism={"tensor": 8}))
    assert vllm == {(8, 1), (8, 8)}
    trt = degrees(r1_spec(engine={"name": "tensorrt-llm"}, parallelism={"tensor": 8}))
    assert trt == {(8, 1), (8, 4), (8, 8)}


def test_a_dense_model_plans_no_expert_parallelism(catalog: Catalog) -> None:
    plan = plan_deployment(make_spec(placement={"gpu": "nvidia-h100-80gb"}), catalog)
    assert plan.feasible and plan.expert_parallel is None
    assert all(a.expert_parallel is None for a in plan.alternatives)
    assert not any(r.startswith("experts: ") for r in plan.reasons)
    assert "EP" not in format_plan_table(plan).splitlines()[0]


def test_a_pinned_expert_not_dividing_the_tried_tensor_says_so(catalog: Catalog) -> None:
    spec = r1_spec(engine={"name": "tensorrt-llm"}, parallelism={"expert": 8})
    plan = plan_deployment(spec, catalog)
    assert plan.feasible and plan.expert_parallel == 8 and plan.tensor_parallel == 8
    spec = make_spec(
        R1,
        quantization="fp8",
        placement={"gpu": H200, "maxGpusPerReplica": 4},
        workload=WORKLOAD,
        parallelism={"expert": 8},
    )
    plan = plan_deployment(spec, catalog)
    assert not plan.feasible
    assert "spec.parallelism.expert 8 does not divide tensor parallel 4" in plan.reasons
    assert {a.expert_parallel for a in plan.alternatives if a.gpu == H200} == {8}


# --- render -------------------------------------------------------------------------------


def _args(spec: LLMDeploymentSpec, catalog: Catalog) -> tuple[list[str], Plan]:
    body = {
        "apiVersion": "llmdeploy.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "r1"},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    resource = LLMDeployment.model_validate(body)
    lock = load_image_lock()
    plan = plan_deployment(resource.spec, catalog, lock)
    assert plan.feasible, plan.reasons
    objects = render_manifests(resource, plan, catalog, lock)
    for obj in objects:
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            engine = next(c for c in pod["containers"] if c["name"] == "engine")
            return list(engine["args"]), plan
    raise AssertionError(yaml.safe_dump(objects))


def test_vllm_renders_the_switch_only_with_expert_parallelism(catalog: Catalog) -> None:
    args, plan = _args(r1_spec(), catalog)
    assert plan.expert_parallel == 8 and "--enable-expert-parallel" in args
    args, plan = _args(r1_spec(parallelism={"expert": 1}), catalog)
    assert plan.expert_parallel == 1 and "--enable-expert-parallel" not in args
    args, plan = _args(make_spec(placement={"gpu": "nvidia-h100-80gb"}), catalog)
    assert plan.expert_parallel is None and "--enable-expert-parallel" not in args


def test_tensorrt_llm_renders_ep_size_where_experts_are_spread(catalog: Catalog) -> None:
    args, plan = _args(r1_spec(engine={"name": "tensorrt-llm"}, parallelism={"expert": 4}), catalog)
    assert plan.expert_parallel == 4
    assert args[args.index("--ep_size") + 1] == "4"
    args, plan = _args(r1_spec(engine={"name": "tensorrt-llm"}, parallelism={"expert": 1}), catalog)
    assert plan.expert_parallel == 1 and "--ep_size" not in args  # unset is EP 1
    dense = make_spec(engine={"name": "tensorrt-llm"}, placement={"gpu": "nvidia-h100-80gb"})
    args, plan = _args(dense, catalog)
    assert "--ep_size" not in args


def test_extra_args_may_not_set_what_the_plan_sets(catalog: Catalog) -> None:
    spec = r1_spec(engine={"name": "tensorrt-llm", "extraArgs": ["--moe_expert_parallel_size=2"]})
    with pytest.raises(SpecError) as caught:
        _args(spec, catalog)
    assert caught.value.field == "spec.engine.extraArgs"


@pytest.mark.parametrize(
    ("name", "gpu", "quantization", "alike"),
    [
        ("Qwen/Qwen3-235B-A22B", "nvidia-h100-80gb", "bf16", True),
        ("Qwen/Qwen3-235B-A22B", "nvidia-h100-80gb", "fp8", True),  # per-tensor, made at load
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "amd-mi300x-192gb", "bf16", True),
        (R1, "nvidia-b200-180gb", "fp8", True),  # the grouped kernels measured on Hopper only
        (R1, H200, "fp8", False),
        ("openai/gpt-oss-120b", H200, "mxfp4", False),  # the padding follows the split
    ],
)
def test_what_is_priced_as_tensor_split_is_exactly_that(
    catalog: Catalog, name: str, gpu: str, quantization: str, alike: bool
) -> None:
    """Where the grouped FP8 rates are EP 1's (MXFP4 aside), spreading the experts whole
    changes one figure: the MoE workspace of vLLM's profiling step (`moe_workspace_growth`,
    which the planner computes and passes). Given the same growth, a fresh memory breakdown
    and estimate must be EP 1's, so a term that comes to depend on the split without the
    planner knowing fails here; the growth shows in the activation and the KV cache alone."""
    model = resolve_model(make_spec(name).model, catalog)
    sku, fmt = catalog.gpus[gpu], catalog.quantizations[quantization]
    shares = [grouped_fp8_shares(model, sku, fmt, "vllm", "0.11.0", 8, ep) for ep in (1, 8)]
    assert (shares[0] == shares[1] and quantization != "mxfp4") is alike
    if not alike:
        return
    rules = engine_memory("vllm", "0.11.0", sku, model.model_type)
    memory = dict(kv_dtype_bytes=2, gpu_memory_utilization=0.9, max_num_batched_tokens=8192)
    memory.update(max_num_seqs=16, max_context_length=8192, block_size=16)
    load = dict(kv_dtype_bytes=2, concurrency=16, input_tokens=1024, output_tokens=256)
    split = memory_breakdown(model, sku, fmt, tensor=8, pipeline=1, rules=rules, **memory)
    for expert in (2, 4, 8):
        assert (
            memory_breakdown(
                model, sku, fmt, tensor=8, pipeline=1, rules=rules, expert_parallel=expert, **memory
            )
            == split
        )
        grown = memory_breakdown(
            model, sku, fmt, tensor=8, pipeline=1, rules=rules, expert_parallel=expert,
            moe_workspace_growth=2**29, **memory,
        )  # fmt: skip
        assert grown.activation_gib - split.activation_gib == pytest.approx(0.5)
        assert split.kv_cache_gib - grown.kv_cache_gib == pytest.approx(0.5)
        assert grown.weights_gib == split.weights_gib
        assert estimate_performance(
            model, sku, fmt, tensor=8, pipeline=1, engine_version="0.11.0",
            expert_parallel=expert, **load,
        ) == estimate_performance(
            model, sku, fmt, tensor=8, pipeline=1, engine_version="0.11.0", **load
        )  # fmt: skip


def _moe_elements(
    model: ModelFacts, split: int, kernel: str, experts: float, tokens: int = 8192
) -> float:
    """The MoE workspace's 16-bit elements as the source sizes it (see
    memory.moe_workspace_bytes), written out again for the test."""
    n, k, top_k = 2 * model.moe_intermediate_size / split, model.hidden_size, model.active_experts
    if kernel == "fused_experts":  # cache13 and cache2
        return tokens * top_k * (max(n, k) + n / 2)
    if kernel == "triton_experts":  # TritonExperts.workspace_shapes, 0.14.0
        return tokens * top_k * (max(n / 2, k) + max(n, k))
    m_sum = math.ceil((tokens * top_k + experts * 127) / 128) * 128  # compute_aligned_M
    return m_sum * (max(n, k) + max(n / 2, k))


def test_vllm_s_moe_workspace_grows_with_each_rank_s_whole_experts(catalog: Catalog) -> None:
    """Under vLLM's EP each rank runs whole experts, so the MoE kernel's workspace, sized from
    the rank's expert width, grows: for Qwen3-235B in BF16 at TP 8 by cache2 alone in 0.11.0
    (2 x 1536 stays under the 4096 hidden size), by nothing in 0.14.0's TritonExperts; for
    DeepSeek-R1's block FP8 on an H200, 0.11.0 runs Triton at TP 8 (a 256-wide share is too
    narrow for DeepGEMM) and DeepGEMM with the experts whole; 0.11.1 runs DeepGEMM at both,
    counted from Triton's split workspace, the fitted one. MXFP4 and AMD GPUs are not counted
    (their kernels' workspaces were not read)."""
    qwen = resolve_model(make_spec("Qwen/Qwen3-235B-A22B").model, catalog)
    h100, bf16 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["bf16"]

    def growth(model: ModelFacts, gpu: str, fmt: str, version: str) -> float:
        sku, quantization = catalog.gpus[gpu], catalog.quantizations[fmt]
        return moe_workspace(model, sku, quantization, 8192, version, 8, 8)[0]

    spread = _moe_elements(qwen, 1, "fused_experts", 16)
    expected = (spread - _moe_elements(qwen, 8, "fused_experts", 128)) * 2
    assert growth(qwen, "nvidia-h100-80gb", "bf16", "0.11.0") == pytest.approx(expected)
    assert 0.15 < expected / 2**30 < 0.2  # the review's 0.17 GiB
    assert growth(qwen, "nvidia-h100-80gb", "bf16", "0.14.0") == 0
    assert moe_workspace_kernel(qwen, h100, bf16, "0.14.0", 8, 8) == "triton_experts"
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]
    assert moe_workspace_kernel(r1, h200, fp8, "0.11.0", 8, 1) == "fused_experts"
    assert moe_workspace_kernel(r1, h200, fp8, "0.11.0", 8, 8) == "deepgemm"
    triton = _moe_elements(r1, 8, "fused_experts", 256) * 2 + 8192 * 8 * 256  # FP8 cache2 copy
    expected = _moe_elements(r1, 1, "deepgemm", 32) * 2 - triton
    assert growth(r1, H200, "fp8", "0.11.0") == pytest.approx(expected)
    assert 0.9 < expected / 2**30 < 1.0
    # From 0.11.1 DeepGEMM's E8M0 scales take the 256-wide share too (vLLM PR #26197), so
    # both layouts run DeepGEMM; the growth is still counted from Triton's split workspace,
    # the one the fitted copies stand for. 0.11.1 and 0.12.0 size DeepGEMM's first workspace
    # M_sum x N (N = 2 x 2048 whole), not M_sum x max(N, K); it still holds the output.
    # From 0.11.1 Triton's split call takes its own output (8192 x K), and so does the
    # modular kernel DeepGEMM runs behind: the two outputs cancel in the growth.
    assert moe_workspace_kernel(r1, h200, fp8, "0.11.1", 8, 1) == "deepgemm"
    m_sum = math.ceil((8192 * 8 + 32 * 127) / 128) * 128
    narrow = m_sum * (2 * 2048 + 7168) * 2 - triton
    assert growth(r1, H200, "fp8", "0.11.1") == pytest.approx(narrow)
    assert growth(r1, H200, "fp8", "0.12.0") == pytest.approx(narrow)
    assert growth(r1, H200, "fp8", "0.13.0") == pytest.approx(expected)
    # 0.14.0 runs the split R1 through TritonExperts (its FP8 Triton backend behind the
    # modular kernel), EP 8 through DeepGEMM with the wide first workspace.
    assert moe_workspace_kernel(r1, h200, fp8, "0.14.0", 8, 1) == "triton_experts"
    triton_experts = _moe_elements(r1, 8, "triton_experts", 256) * 2
    wide = _moe_elements(r1, 1, "deepgemm", 32) * 2
    assert growth(r1, H200, "fp8", "0.14.0") == pytest.approx(wide - triton_experts)
    assert moe_workspace_kernel(r1, h200, fp8, "0.16.0", 8, 1) is None  # FlashInfer CUTLASS
    gpt_oss = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    assert growth(gpt_oss, H200, "mxfp4", "0.11.0") == 0
    mixtral = resolve_model(make_spec("mistralai/Mixtral-8x7B-Instruct-v0.1").model, catalog)
    assert growth(mixtral, "amd-mi300x-192gb", "bf16", "0.10.2") == 0
    assert growth(mixtral, "nvidia-h100-80gb", "bf16", "0.10.2") > 1.0 * 2**30


def test_the_moe_workspace_is_sized_for_one_chunk_of_the_release(catalog: Catalog) -> None:
    """vLLM runs a step's tokens through its fused-MoE kernels in chunks of
    VLLM_FUSED_MOE_CHUNK_SIZE, whose default (envs.py's getenv) is 32768 up to 0.11.1 and
    16 x 1024 from 0.12.0 (still in 0.17.0); 0.18.0 no longer chunks. The workspace, and so
    its growth under EP, stops growing with the step's tokens at the chunk."""
    qwen = resolve_model(make_spec("Qwen/Qwen3-235B-A22B").model, catalog)
    mixtral = resolve_model(make_spec("mistralai/Mixtral-8x7B-Instruct-v0.1").model, catalog)
    h100, bf16 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["bf16"]

    def growth(model: ModelFacts, version: str, tokens: int) -> float:
        return moe_workspace(model, h100, bf16, tokens, version, 8, 8)[0]

    per_8k = growth(qwen, "0.11.0", 8192)
    assert per_8k > 0
    assert growth(qwen, "0.11.0", 65536) == growth(qwen, "0.11.0", 32768)
    assert growth(qwen, "0.11.0", 32768) == pytest.approx(4 * per_8k)
    assert growth(qwen, "0.11.1", 65536) == pytest.approx(4 * per_8k)
    assert growth(qwen, "0.12.0", 65536) == growth(qwen, "0.12.0", 16384)
    assert growth(qwen, "0.12.0", 16384) == pytest.approx(2 * per_8k)
    # 0.24.0 runs 16-bit experts through TritonExperts on Hopper, the whole step at once, and
    # so does 0.18.0; 0.17.0 still stops at 16 x 1024.
    for release in ("0.18.0", "0.24.0"):
        assert growth(mixtral, release, 65536) == pytest.approx(8 * growth(mixtral, release, 8192))
    assert growth(mixtral, "0.17.0", 65536) == growth(mixtral, "0.17.0", 16384)


def test_vllm_0_24_s_16_bit_experts_run_triton_where_flashinfer_s_moe_cannot(
    catalog: Catalog,
) -> None:
    """From 0.24.0 16-bit experts take the first backend by priority that supports the GPU:
    FlashInfer's MoE comes first but supports only Hopper (moved behind Triton there) and
    Blackwell, so Ampere and Ada run Triton's TritonExperts, whose workspace grows under EP as
    on Hopper; Blackwell's FlashInfer workspace is not counted."""
    mixtral = resolve_model(make_spec("mistralai/Mixtral-8x7B-Instruct-v0.1").model, catalog)
    bf16 = catalog.quantizations["bf16"]
    for gpu in ("nvidia-a100-80gb", "nvidia-l40s", "nvidia-h100-80gb"):
        sku = catalog.gpus[gpu]
        assert moe_workspace_kernel(mixtral, sku, bf16, "0.24.0", 8, 8) == "triton_experts"
        assert moe_workspace(mixtral, sku, bf16, 8192, "0.24.0", 8, 8)[0] > 2**30
    b200 = catalog.gpus["nvidia-b200-180gb"]
    assert moe_workspace_kernel(mixtral, b200, bf16, "0.24.0", 8, 8) is None
    assert moe_workspace_kernel(mixtral, b200, bf16, "0.14.0", 8, 8) == "triton_experts"


def test_the_planner_books_the_spread_experts_workspace(catalog: Catalog) -> None:
    """Pinned to TP 8 EP 8, Qwen3-235B in BF16 under vLLM 0.11.0 keeps less KV cache than at
    EP 1 by the workspace's growth, and its activation shows it; under TensorRT-LLM (its MoE
    workspace not read) the activation is EP 1's."""

    def plan(expert: int, engine: str = "vllm") -> Plan:
        spec = make_spec(
            "Qwen/Qwen3-235B-A22B",
            quantization="bf16",
            engine={"name": engine},
            placement={"gpu": "nvidia-h100-80gb"},
            parallelism={"tensor": 8, "pipeline": 1, "expert": expert},
            workload=WORKLOAD,
        )
        return plan_deployment(spec, catalog, load_image_lock())  # the lock pins the release

    trt_split, trt_spread = plan(1, "tensorrt-llm"), plan(8, "tensorrt-llm")
    assert trt_split.feasible and trt_spread.feasible
    assert trt_spread.activation_gib_per_gpu == trt_split.activation_gib_per_gpu

    split, spread = plan(1), plan(8)
    assert split.feasible and spread.feasible and spread.expert_parallel == 8
    assert split.engine_version == spread.engine_version == "0.11.0"
    assert split.max_num_batched_tokens == spread.max_num_batched_tokens == 8192
    qwen = resolve_model(make_spec("Qwen/Qwen3-235B-A22B").model, catalog)
    spread_elements = _moe_elements(qwen, 1, "fused_experts", 16)
    grown = (spread_elements - _moe_elements(qwen, 8, "fused_experts", 128)) * 2
    assert split.activation_gib_per_gpu is not None and spread.activation_gib_per_gpu is not None
    assert spread.activation_gib_per_gpu - split.activation_gib_per_gpu == pytest.approx(
        grown / 2**30, abs=0.01
    )
    assert split.kv_cache_gib_per_gpu is not None and spread.kv_cache_gib_per_gpu is not None
    assert split.kv_cache_gib_per_gpu - spread.kv_cache_gib_per_gpu == pytest.approx(
        grown / 2**30, abs=0.01
    )


def test_a_degree_at_the_same_cost_is_shown_and_loses_the_tie(catalog: Catalog) -> None:
    """Qwen3-235B in BF16: EP 4 is priced apart (a wider MoE workspace, less KV cache) and,
    where the cache does not bind, costs what EP 1 does; the ranking keeps EP 1."""
    spec = make_spec("Qwen/Qwen3-235B-A22B", placement={"gpu": "nvidia-h100-80gb"})
    plan = plan_deployment(spec, catalog)
    assert plan.feasible and plan.expert_parallel == 1
    tie = [a for a in plan.alternatives if a.expert_parallel == plan.tensor_parallel]
    assert tie and tie[0].cost_per_million_tokens == plan.cost_per_million_tokens
    assert "expert parallelism" in tie[0].reason


def test_a_running_plan_made_before_the_field_is_the_same_layout_as_ep_one(
    catalog: Catalog,
) -> None:
    """status.plan written by an operator without expertParallel held its experts TP-split: a
    recommendation of the same layout at EP 1 is no change."""
    plan = plan_deployment(make_spec("Qwen/Qwen3-30B-A3B", parallelism={"tensor": 2}), catalog)
    assert (plan.tensor_parallel, plan.expert_parallel) == (2, 1)
    before = plan.model_copy(update={"expert_parallel": None})
    assert recommend._layout(before) == recommend._layout(plan)
    spread = plan.model_copy(update={"expert_parallel": 2})
    assert recommend._layout(spread) != recommend._layout(plan)


def test_auto_does_not_spread_experts_on_mxfp4_padding_alone(catalog: Catalog) -> None:
    """gpt-oss-120b's MXFP4 experts split 8 ways pad more than whole ones, so EP 8 reads fewer
    bytes; the busiest rank's wait, which counts against it, is not modelled, so `auto` keeps
    EP 1 and does not offer EP 8; pinned, EP 8 is priced and planned as asked."""

    def spec(expert: int | str) -> LLMDeploymentSpec:
        return make_spec(
            "openai/gpt-oss-120b",
            quantization="mxfp4",
            placement={"gpu": "nvidia-b200-180gb"},
            parallelism={"tensor": 8, "pipeline": 1, "expert": expert},
        )

    plan = plan_deployment(spec("auto"), catalog)
    assert plan.feasible and plan.expert_parallel == 1
    assert all(a.expert_parallel in (None, 1) for a in plan.alternatives)
    spread = plan_deployment(spec(8), catalog)
    assert spread.feasible and spread.expert_parallel == 8
    assert spread.estimated_tpot_ms != plan.estimated_tpot_ms  # priced apart, not copied
