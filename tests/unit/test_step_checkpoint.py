"""What a step computes and reads of a pre-quantized checkpoint as the engine holds it: its
16-bit modules at the 16-bit rate, its block-scaled FP8 experts on the grouped kernels, and the
bytes the engine lays out for the kernels."""

from __future__ import annotations

import pytest

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog, QuantizedCheckpoint
from llmdeploy.sizing import moe_kernels, performance, plan_deployment, resolve_model
from llmdeploy.sizing.engine_memory import EngineMemory, tensorrt_llm_memory, vllm_memory
from llmdeploy.sizing.memory import (
    BYTES_16BIT,
    held_16_bit_active_parameters,
    held_16_bit_linear_parameters,
    layer_weight_bytes_per_rank,
    mla_kv_b_copy_parameters,
)
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.performance import StepModel

from .conftest import block_fp8_checkpoint_keeping, make_spec

LLAMA_405B = "meta-llama/Llama-3.1-405B-Instruct"
LLAMA_405B_FP8 = "meta-llama/Llama-3.1-405B-Instruct-FP8"


def facts(catalog: Catalog, name: str) -> ModelFacts:
    return resolve_model(make_spec(name).model, catalog)


def test_a_checkpoints_16_bit_modules_run_at_the_16_bit_rate_in_prefill(catalog: Catalog) -> None:
    """Meta's FP8 405B keeps two whole layers and every other layer's attention 16-bit: their
    GEMMs run at the BF16 rate, so its prefill takes longer than with every linear at FP8."""
    model = facts(catalog, LLAMA_405B)
    gpu, fp8 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["fp8"]
    checkpoint = model.quantized_checkpoint(LLAMA_405B_FP8, "fp8")
    assert checkpoint is not None
    held = held_16_bit_active_parameters(model, checkpoint)
    body = model.parameters - model.embedding_parameters
    attention = model.attention_parameters_per_layer
    assert held == pytest.approx(2 * body / model.layers + (model.layers - 2) * attention)
    assert 0.05 < held / body < 0.25
    tokens = 4096.0

    rates = performance._gemm_tflops(gpu, fp8)

    def flops_s(held_16_bit: float) -> float:
        return performance._flops_s(
            model, gpu, fp8, 8, tokens, 0, 1.0, 1, gemm_tflops=rates, held_16_bit=held_16_bit
        )

    bf16_rate, fp8_rate = rates
    assert fp8_rate > bf16_rate
    extra = 2 * held * tokens / 8 / 1e12 * (1 / bf16_rate - 1 / fp8_rate)
    assert flops_s(held) - flops_s(0.0) == pytest.approx(extra)
    known = StepModel(model, gpu, fp8, 8, 1, 2, 4096, 128, checkpoint=checkpoint)
    unknown = StepModel(model, gpu, fp8, 8, 1, 2, 4096, 128)
    assert known.held_16_bit == held and unknown.held_16_bit == 0
    ratio = known.prefill_s(tokens, 8192) / unknown.prefill_s(tokens, 8192)
    assert 1.03 < ratio < 1.15  # the review's estimate: ~7% of the prefill's GEMM time


def test_the_lm_head_runs_at_the_16_bit_rate_in_a_quantized_format(catalog: Catalog) -> None:
    """The lm_head is held 16-bit in every format, and computed so: with no token through the
    body, an FP8 model's logits take the BF16 time."""
    model = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    gpu = catalog.gpus["nvidia-h100-80gb"]
    rows = 64
    logits = 2 * model.vocab_size * model.hidden_size * rows
    for name in ("fp8", "int8", "bf16"):
        fmt = catalog.quantizations[name]
        rates = performance._gemm_tflops(gpu, fmt)
        seconds = performance._flops_s(model, gpu, fmt, 1, 0, 0, 1.0, rows, gemm_tflops=rates)
        assert seconds == pytest.approx(logits / (gpu.compute_tflops("bf16") * 1e12))


def test_a_block_scaled_fp8_checkpoint_of_any_moe_model_takes_the_grouped_rates(
    catalog: Catalog,
) -> None:
    """The grouped FP8 kernels follow the checkpoint's format: Qwen3-235B-A22B-FP8 (128x128
    blocks) takes them on Hopper like DeepSeek-R1's own FP8; the same model quantized to FP8 at
    load (per-tensor) or a per-tensor FP8 checkpoint does not, nor does a dense model."""
    qwen = facts(catalog, "Qwen/Qwen3-235B-A22B")
    h100, fp8 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["fp8"]
    blocks = qwen.quantized_checkpoint("Qwen/Qwen3-235B-A22B-FP8", "fp8")
    assert blocks is not None and blocks.weight_block_size == (128, 128)
    per_tensor = blocks.model_copy(update={"weight_block_size": None})

    def shares(
        checkpoint: QuantizedCheckpoint | None, gpu: str = "nvidia-h100-80gb"
    ) -> performance.GroupedShares | None:
        return performance.grouped_fp8_shares(
            qwen,
            catalog.gpus[gpu],
            fp8,
            "vllm",
            "0.11.1",
            4,
            1,
            checkpoint,
        )

    deepseek = facts(catalog, "deepseek-ai/DeepSeek-R1")
    native = performance.grouped_fp8_shares(deepseek, h100, fp8, "vllm", "0.11.1", 4, 1)
    assert native == (performance.GROUPED_FP8_READ_SHARE[4], performance.GROUPED_FP8_MATH_SHARE[4])
    assert shares(blocks) == native
    assert shares(None) is None and shares(per_tensor) is None
    assert shares(blocks, "nvidia-b200-180gb") is None  # measured on Hopper only
    llama = facts(catalog, "meta-llama/Llama-3.1-70B-Instruct")
    assert not moe_kernels.grouped_block_fp8(llama, h100, fp8, blocks)

    def prefill_s(checkpoint: QuantizedCheckpoint | None) -> float:
        steps = StepModel(
            qwen,
            h100,
            fp8,
            4,
            1,
            2,
            4096,
            128,
            checkpoint=checkpoint,
        )
        return steps.prefill_s(4096, 8192)

    assert prefill_s(blocks) != prefill_s(None)
    assert StepModel(qwen, h100, fp8, 4, 1, 2, 4096, 128, checkpoint=blocks).grouped == native


def test_only_an_fp8_checkpoint_has_a_weight_block_size() -> None:
    with pytest.raises(ValueError, match="only fp8 checkpoints have one"):
        QuantizedCheckpoint(
            id="acme/x-AWQ", quantization="int4-awq", weight_block_size=(128, 128), source="t"
        )
    fp8 = QuantizedCheckpoint.model_validate(
        {"id": "acme/x-FP8", "quantization": "fp8", "weightBlockSize": [128, 128], "source": "t"}
    )
    assert fp8.weight_block_size == (128, 128)


def test_a_step_reads_mxfp4_experts_as_the_engine_pads_them_with_their_scales_once(
    catalog: Catalog,
) -> None:
    """vLLM pads each rank's MXFP4 experts for its kernel and the kernel runs over the padded
    tensors: gpt-oss-120b's intermediate 2880 split 4 ways (720) is 768 under Triton (64) and
    Marlin (128), whose hidden size 2880 is also 3072 (256); at TP 1 Triton pads nothing. The
    scales are read once, though Triton keeps the checkpoint's next to the swizzled ones."""
    model = facts(catalog, "openai/gpt-oss-120b")
    h100, mxfp4 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["mxfp4"]
    triton = vllm_memory("0.13.0", h100)
    marlin = vllm_memory("0.11.0", h100)
    assert triton.mxfp4.backend == "triton" and marlin.mxfp4.backend == "marlin"
    assert moe_kernels.expert_layout(model, mxfp4, 1, 1, triton) == pytest.approx(1.0)
    assert moe_kernels.expert_layout(model, mxfp4, 4, 1, triton) == pytest.approx(768 / 720)
    marlin_pad = 768 * 3072 / (720 * 2880)
    assert moe_kernels.expert_layout(model, mxfp4, 4, 1, marlin) == pytest.approx(marlin_pad)
    assert moe_kernels.expert_layout(model, mxfp4, 4, 1, None) == 1.0
    # Memory holds Triton's scales twice; a step reads them once.
    held = layer_weight_bytes_per_rank(model, mxfp4, 4, 1, triton)
    read = performance._weights_read(model, mxfp4, 4, 1, 1e6, None, 768 / 720)
    embeddings = model.vocab_size * model.hidden_size * BYTES_16BIT * 2 / 4
    assert read < held + embeddings
    held_experts = model.routed_expert_parameters * mxfp4.weight_bytes / 4
    plain = performance._weights_read(model, mxfp4, 4, 1, 1e6)
    assert read - plain == pytest.approx(held_experts * (768 / 720 - 1), rel=1e-6)

    def decode_s(rules: EngineMemory | None) -> float:
        steps = StepModel(model, h100, mxfp4, 4, 1, 2, 1024, 1024, memory_rules=rules)
        return steps.decode(4).step_s

    assert decode_s(triton) > decode_s(None)


def test_mla_decode_reads_the_16_bit_copy_of_kv_b_proj_instead_of_it_and_prefill_does_not(
    catalog: Catalog,
) -> None:
    """vLLM's MLA keeps a 16-bit W_UK/W_UV copy of an FP8 kv_b_proj: its absorbed decode
    multiplies by the copy, not the projection (the copy's 2 bytes in place of 1); prefill runs
    kv_b_proj. A 16-bit kv_b_proj is only viewed, and TensorRT-LLM's rules keep no copy."""
    model = facts(catalog, "deepseek-ai/DeepSeek-R1")
    h200, fp8 = catalog.gpus["nvidia-h200-141gb"], catalog.quantizations["fp8"]
    rules = vllm_memory("0.11.0", h200)
    assert rules.mla_dequantized_kv_b_proj
    copy = mla_kv_b_copy_parameters(model, 8, 1)
    assert performance.mla_decode_copy_bytes(model, fp8, 8, 1, None, rules) == copy
    bf16 = catalog.quantizations["bf16"]
    assert performance.mla_decode_copy_bytes(model, bf16, 8, 1, None, rules) == 0
    trtllm = tensorrt_llm_memory("1.0.0", h200)
    assert performance.mla_decode_copy_bytes(model, fp8, 8, 1, None, trtllm) == 0
    known = StepModel(model, h200, fp8, 8, 1, 1, 4096, 128, memory_rules=rules)
    plain = StepModel(model, h200, fp8, 8, 1, 1, 4096, 128)
    extra_s = known.decode(8).memory_s - plain.decode(8).memory_s
    assert extra_s == pytest.approx(copy * (BYTES_16BIT - 1) / known.bandwidth)
    assert known.prefill_s(4096, 8192) == plain.prefill_s(4096, 8192)


def test_vllm_cannot_split_block_fp8_experts_off_the_blocks(catalog: Catalog) -> None:
    """Qwen3-235B's 1536-wide experts split 8 ways are 192 wide, not a multiple of the
    checkpoint's 128-wide blocks: vLLM's Fp8MoEMethod refuses to load them, so TP 8 without
    expert parallelism is infeasible with that reason; TP 4 (384) loads, and so does TP 8 with
    the experts whole on 8 ranks (EP 8). Loaded online (per-tensor FP8) TP 8 is not refused."""

    def by_expert(variants: dict[str, str], tensor: int) -> dict[int, str | None]:
        """Each expert degree's reason at this TP (None for the plan's own layout)."""
        spec = LLMDeploymentSpec.model_validate(
            {
                "model": {"name": "Qwen/Qwen3-235B-A22B", "quantizedVariants": variants},
                "quantization": "fp8",
                "placement": {"gpu": "nvidia-h100-80gb"},
                "parallelism": {"tensor": tensor, "pipeline": 1},
                "workload": {"maxContextLength": 16384, "concurrency": 16},
            }
        )
        plan = plan_deployment(spec, catalog)
        assert plan.feasible
        reasons: dict[int, str | None] = {int(plan.expert_parallel or 1): None}
        for a in plan.alternatives:
            if a.kv_cache_dtype == "auto":
                reasons.setdefault(int(a.expert_parallel or 1), a.reason)
        return reasons

    blocks = by_expert({"fp8": "Qwen/Qwen3-235B-A22B-FP8"}, 8)
    assert "not a multiple of its 128x128 FP8 weight blocks" in str(blocks[1])
    assert 8 in blocks and "not a multiple" not in str(blocks[8])
    split_4 = by_expert({"fp8": "Qwen/Qwen3-235B-A22B-FP8"}, 4)
    assert 1 in split_4 and "not a multiple" not in str(split_4[1])
    online = by_expert({}, 8)
    assert 1 in online and "not a multiple" not in str(online[1])


def test_a_pinned_expert_degree_vllm_cannot_load_points_at_the_one_that_loads(
    catalog: Catalog,
) -> None:
    """Pinned to TP 8 EP 1, Qwen3-235B-A22B-FP8 does not load in vLLM; the plan names the
    one-field way out, spec.parallelism.expert auto, which spreads the experts over the same 8
    GPUs."""
    spec = LLMDeploymentSpec.model_validate(
        {
            "model": {
                "name": "Qwen/Qwen3-235B-A22B",
                "quantizedVariants": {"fp8": "Qwen/Qwen3-235B-A22B-FP8"},
            },
            "quantization": "fp8",
            "placement": {"gpu": "nvidia-h100-80gb"},
            "parallelism": {"tensor": 8, "pipeline": 1, "expert": 1},
            "workload": {"maxContextLength": 16384, "concurrency": 16},
        }
    )
    plan = plan_deployment(spec, catalog)
    assert not plan.feasible
    # The reason names the fields to change (CONVENTIONS: a field path and a reason).
    fields = "spec.parallelism.tensor 8 with spec.parallelism.expert 1"
    assert any(fields in r for r in plan.reasons)
    way_out = [r for r in plan.reasons if r.startswith("would fit with expert parallelism auto")]
    assert len(way_out) == 1 and way_out[0].endswith("fp8 TP8 EP8, fp8 KV")


def test_vllm_checks_block_k_at_any_tp_above_one_with_the_experts_whole(catalog: Catalog) -> None:
    """Fp8MoEMethod.create_weights checks the rank's intermediate size against block_k wherever
    get_tensor_model_parallel_world_size() is above 1, under EP too, where the expert is whole:
    1536-wide experts with [128, 1024] blocks load neither TP-split 8 ways (192) nor whole on 8
    ranks (1536 is no multiple of 1024). The blocks are made up; the catalog's are square."""
    entry = catalog.find_model("Qwen/Qwen3-235B-A22B")
    assert entry is not None
    blocks = entry.quantized_checkpoints[0].model_copy(update={"weight_block_size": (128, 1024)})
    entry = entry.model_copy(update={"quantized_checkpoints": [blocks]})
    changed = catalog.model_copy(update={"models": {**catalog.models, entry.id: entry}})
    spec = LLMDeploymentSpec.model_validate(
        {
            "model": {"name": entry.id, "quantizedVariants": {"fp8": blocks.id}},
            "quantization": "fp8",
            "placement": {"gpu": "nvidia-h100-80gb"},
            "parallelism": {"tensor": 8, "pipeline": 1},
            "workload": {"maxContextLength": 16384, "concurrency": 16},
        }
    )
    plan = plan_deployment(spec, changed)
    assert not plan.feasible
    refused = {int(a.expert_parallel or 1): a.reason for a in plan.alternatives if a.gpu}
    assert "128x1024 FP8 weight blocks" in refused[8]
    assert "spec.parallelism.tensor 8 with spec.parallelism.expert 8" in refused[8]


def _r1_checkpoint(*layers: int) -> QuantizedCheckpoint:
    """A made-up block-scaled FP8 checkpoint of DeepSeek-R1 that keeps `layers` whole in 16-bit
    (no catalog checkpoint of an MLA or grouped-kernel model has such layers)."""
    return block_fp8_checkpoint_keeping("deepseek-ai/DeepSeek-R1", *layers)


def test_a_16_bit_moe_layers_routed_experts_run_bf16_not_the_grouped_fp8_kernel(
    catalog: Catalog,
) -> None:
    """vLLM gives the experts of a MoE layer the checkpoint keeps whole in 16-bit
    UnquantizedFusedMoEMethod (fp8.py Fp8Config.get_quant_method): Triton's fused_moe in BF16.
    So that layer's routed experts leave the grouped FP8 kernel's math and read, and are
    charged as 16-bit: their math at the BF16 rate with the rest of the layer, their 16-bit
    bytes at the plain bandwidth, and Triton's per-layer cost; the other layers' experts stay
    on the grouped kernel."""
    model = facts(catalog, "deepseek-ai/DeepSeek-R1")
    h200, fp8 = catalog.gpus["nvidia-h200-141gb"], catalog.quantizations["fp8"]
    layer = model.first_dense_layers + 7  # a MoE layer
    moe_layers = model.layers - model.first_dense_layers

    def steps(checkpoint: QuantizedCheckpoint) -> StepModel:
        return StepModel(
            model, h200, fp8, 8, 1, 1, 65536, 1, checkpoint=checkpoint, engine_version="0.11.0"
        )

    whole, plain = steps(_r1_checkpoint(layer)), steps(_r1_checkpoint())
    assert whole.grouped is not None and whole.grouped == plain.grouped
    tokens = chunk = 65536
    active, share = model.active_routed_expert_parameters, 1 / moe_layers
    dense = model.attention_parameters_per_layer + 3 * model.hidden_size * model.intermediate_size
    beside_experts = (
        model.active_parameters - model.embedding_parameters - active - dense * 3
    ) / moe_layers
    assert model.first_dense_layers == 3
    bf16_rate, fp8_rate = performance._gemm_tflops(h200, fp8)
    per_tflop_s = 2 * tokens / 8 / (1e12 * whole.compute_efficiency)
    # The layer's other modules move from the FP8 rate to BF16, its experts from the grouped
    # kernel's math to BF16.
    gemms_s = per_tflop_s * (
        beside_experts * (1 / bf16_rate - 1 / fp8_rate) + active * share / bf16_rate
    )
    grouped_rate = h200.compute_tflops("fp8") * 1e12 * whole.grouped.math
    grouped_math_s = 2 * active * share * tokens / 8 / grouped_rate
    touched = model.routed_expert_parameters - performance._untouched_experts(model, tokens)
    layer_bytes = touched * share / 8
    grouped_bandwidth = h200.bandwidth_gbps * 1e9 * whole.grouped.read
    read_s = layer_bytes * (BYTES_16BIT / whole.bandwidth - fp8.weight_bytes / grouped_bandwidth)
    expected_s = gemms_s - grouped_math_s + read_s + performance.TRITON_MOE_LAYER_OVERHEAD_S
    assert whole.prefill(tokens, chunk).step_s - plain.prefill(tokens, chunk).step_s == (
        pytest.approx(expected_s, rel=1e-6)
    )
    # At these rates the grouped FP8 kernel is slower than a BF16 GEMM at the roofline.
    assert expected_s < 0
    # Decode: the kept layer's experts pay Triton's per-layer cost.
    assert whole.overhead_s - plain.overhead_s == pytest.approx(
        performance.TRITON_MOE_LAYER_OVERHEAD_S
    )
    assert whole.kept_experts == pytest.approx(1 / moe_layers) and plain.kept_experts == 0


def test_an_mxfp4_checkpoint_keeps_no_moe_layer_whole_under_vllm(catalog: Catalog) -> None:
    """vLLM's Mxfp4Config builds every FusedMoE with its MXFP4 MoE method, whatever
    `ignored_layers` lists (mxfp4.py get_quant_method, 0.10.2 to 0.24.0): a MoE layer an MXFP4
    checkpoint lists as 16-bit still holds, reads and computes its experts in MXFP4, as
    memory holds them; its other linears are 16-bit in MXFP4 anyway. So nothing of a step
    moves (review6 finding 9 had charged them at the 16-bit rate, unpadded, in compute only)."""
    model = facts(catalog, "openai/gpt-oss-120b")
    b200, mxfp4 = catalog.gpus["nvidia-b200-180gb"], catalog.quantizations["mxfp4"]
    # FlashInfer's MXFP4 x MXFP8 variant: the FP4 rate is above the BF16 one, so 16-bit
    # experts would move the compute.
    rules = vllm_memory("0.13.0", b200, mxfp4_activation="mxfp8")

    def steps(*layers: int) -> StepModel:
        checkpoint = QuantizedCheckpoint(
            id="example/gpt-oss-120b-some-layers-16-bit",
            quantization="mxfp4",
            unquantized_layers=layers,
            source="made up for the test",
        )
        return StepModel(
            model,
            b200,
            mxfp4,
            8,
            1,
            2,
            1024,
            128,
            checkpoint=checkpoint,
            engine_version="0.13.0",
            memory_rules=rules,
        )

    whole, plain = steps(model.first_dense_layers + 5), steps()
    assert whole.kept_experts == 0 and plain.kept_experts == 0
    assert whole.held_16_bit > plain.held_16_bit  # the catalog's count of the layer
    assert whole.layout == plain.layout > 1  # padded on FlashInfer's SM100 kernel at TP 8
    bf16_rate, fp4_rate = whole.gemm_tflops
    assert fp4_rate > bf16_rate
    assert whole.read_layers == pytest.approx(plain.read_layers)
    for batch in (1, 64):
        assert whole.decode(batch) == pytest.approx(plain.decode(batch))
    assert whole.prefill_s(4096, 8192) == pytest.approx(plain.prefill_s(4096, 8192))
    assert whole.overhead_s == plain.overhead_s  # no Triton BF16 MoE layer either


def test_mla_keeps_no_16_bit_copy_of_a_kv_b_proj_already_16_bit(catalog: Catalog) -> None:
    """vLLM's MLA copies a quantized kv_b_proj to 16-bit W_UK/W_UV, and only views a 16-bit
    one (get_and_maybe_dequant_weights returns its weight): the layers a checkpoint keeps
    whole in 16-bit neither hold nor read a copy, in memory or in decode."""
    model = facts(catalog, "deepseek-ai/DeepSeek-R1")
    h200, fp8 = catalog.gpus["nvidia-h200-141gb"], catalog.quantizations["fp8"]
    rules = vllm_memory("0.11.0", h200)
    per_layer = mla_kv_b_copy_parameters(model, 8, 1) / model.layers
    checkpoint = _r1_checkpoint(0, 3)
    copied = model.layers - 2
    decode = performance.mla_decode_copy_bytes(model, fp8, 8, 1, checkpoint, rules)
    assert decode == pytest.approx(per_layer * copied * (BYTES_16BIT - 1))
    assert mla_kv_b_copy_parameters(model, 8, 1, checkpoint) == pytest.approx(per_layer * copied)
    held = layer_weight_bytes_per_rank(model, fp8, 8, 1, rules, checkpoint)
    as_checkpoint = layer_weight_bytes_per_rank(model, fp8, 8, 1, None, checkpoint)
    assert held - as_checkpoint == pytest.approx(per_layer * copied * BYTES_16BIT)
    # Two stages of 31 and 30 layers: both 16-bit layers on the first, 30 copies on the second.
    per_stage = mla_kv_b_copy_parameters(model, 8, 2) / 31
    assert mla_kv_b_copy_parameters(model, 8, 2, checkpoint) == pytest.approx(per_stage * 30)


def test_a_kept_moe_layers_experts_skip_marlins_conversion_and_are_read_16_bit(
    catalog: Catalog,
) -> None:
    """On Hopper 4-bit experts pay Marlin's conversion in place of their read: the experts of
    a MoE layer the checkpoint keeps whole are not converted, and are read as 16-bit bytes,
    the one kept share `_flops_s` also takes (review6 finding 9). The share is given here:
    AWQ's kept MoE layers run the unquantized MoE, an MXFP4 checkpoint keeps none
    (`kept_expert_share`); MXFP4 keeps the other linears out of the sums."""
    model = facts(catalog, "openai/gpt-oss-120b")
    h100, mxfp4 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["mxfp4"]
    share, tokens, bandwidth = 1 / (model.layers - model.first_dense_layers), 4096.0, 1e13
    args = (model, h100, mxfp4, 2, tokens)

    def prefill_s(kept: float) -> float:
        return performance._marlin_prefill_s(*args, kernel="marlin", kept=kept)

    assert prefill_s(0.0) > 0
    assert prefill_s(share) == pytest.approx(prefill_s(0.0) * (1 - share))
    excess = performance._dequant_excess_s(model, h100, mxfp4, 2, 1, 64, bandwidth, 1.0, "marlin")
    kept_excess = performance._dequant_excess_s(
        model, h100, mxfp4, 2, 1, 64, bandwidth, 1.0, "marlin", share
    )
    assert excess > 0 and kept_excess == pytest.approx(excess * (1 - share))
    touched = model.routed_expert_parameters - performance._untouched_experts(model, tokens)
    read_s = performance._expert_read_s(*args, bandwidth, kept=share, kernel="marlin")
    assert read_s == pytest.approx(touched / 2 * share * BYTES_16BIT / bandwidth)
    assert performance._expert_read_s(*args, bandwidth, kernel="marlin") == 0.0


def test_an_awq_checkpoints_16_bit_linears_skip_marlins_conversion(catalog: Catalog) -> None:
    """AWQ's config gives a linear layer in `modules_to_not_convert` UnquantizedLinearMethod
    before it looks at Marlin (awq_marlin.py get_quant_method): the other linears of a layer
    the checkpoint keeps whole (and the attention where it keeps that 16-bit in every layer)
    run BF16 GEMMs and are not converted (keptmoe's note: they were counted as Marlin's)."""
    model = facts(catalog, "Qwen/Qwen3-30B-A3B")
    h100, awq = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["int4-awq"]
    checkpoint = QuantizedCheckpoint(
        id="example/Qwen3-30B-A3B-AWQ-some-modules-16-bit",
        quantization="int4-awq",
        unquantized_layers=(3, 7),
        source="made up for the test",
    )
    linears = held_16_bit_linear_parameters(model, checkpoint)
    others = model.parameters - model.embedding_parameters - model.routed_expert_parameters
    assert model.first_dense_layers == 0
    assert linears == pytest.approx(others * 2 / model.layers)
    tokens = 4096.0
    share = moe_kernels.kept_expert_share(model, checkpoint)
    assert share == pytest.approx(2 / model.layers)
    experts, dense = performance._marlin_parameters(model, awq, tokens, 1.0, share, linears)
    all_experts, all_dense = performance._marlin_parameters(model, awq, tokens)
    assert experts == pytest.approx(all_experts * (1 - share))
    assert dense == pytest.approx(all_dense - linears) and dense > 0
    # Prefill: each linear converted once per 64 tokens, at the conversion's rate.
    rate = h100.compute_tflops("bf16") * 1e12
    converted_s = linears / 2 * tokens / 64 * performance.WEIGHT_ONLY_DEQUANT_FLOP / rate

    def prefill_s(linears_16_bit: float) -> float:
        return performance._marlin_prefill_s(
            model, h100, awq, 2, tokens, kept=share, linears_16_bit=linears_16_bit
        )

    assert prefill_s(0.0) - prefill_s(linears) == pytest.approx(converted_s)
    # The step model passes them to prefill and to decode's conversion excess.
    steps = StepModel(model, h100, awq, 2, 1, 2, 4096, 128, checkpoint=checkpoint)
    assert steps.linears_16_bit == linears
    converted = StepModel(model, h100, awq, 2, 1, 2, 4096, 128, checkpoint=checkpoint)
    converted.linears_16_bit = 0.0
    assert converted.prefill_s(tokens, 8192) - steps.prefill_s(tokens, 8192) == pytest.approx(
        converted_s
    )
    batch = 64
    excess = performance._dequant_excess_s(
        model, h100, awq, 2, 1, batch, steps.bandwidth, 1.0, None, share
    )
    kept_excess = performance._dequant_excess_s(
        model, h100, awq, 2, 1, batch, steps.bandwidth, 1.0, None, share, linears
    )
    assert excess > kept_excess > 0
    decode_s = converted.decode(batch).memory_s - steps.decode(batch).memory_s
    assert decode_s == pytest.approx(excess - kept_excess)
