"""The MXFP4 experts' kernel: one decision for the memory and the performance side."""

from __future__ import annotations

import pytest

from llmdeploy.catalog import Catalog
from llmdeploy.sizing import moe_kernels, performance, resolve_model
from llmdeploy.sizing.engine_memory import EngineMemory, tensorrt_llm_memory, vllm_memory
from llmdeploy.sizing.model_facts import ModelFacts

from .conftest import make_spec


def gpt_oss(catalog: Catalog) -> ModelFacts:
    return resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)


def steps(catalog: Catalog, gpu: str, rules: EngineMemory | None) -> performance.StepModel:
    """gpt-oss-120b's MXFP4 experts at TP 2, 8192 tokens in, under the engine's `rules`."""
    fmt = catalog.quantizations["mxfp4"]
    return performance.StepModel(
        gpt_oss(catalog), catalog.gpus[gpu], fmt, 2, 1, 2, 8192, 1024, memory_rules=rules
    )


def test_the_experts_kernel_is_the_backend_the_memory_rules_lay_out_for(
    catalog: Catalog,
) -> None:
    """vLLM 0.13.0's default on Hopper is Triton, Marlin where the server asks for it
    (VLLM_MXFP4_USE_MARLIN: a log's backend); FlashInfer's MXFP4 x BF16 on Blackwell.
    TensorRT-LLM's layout
    was not read (the checkpoint's), nor is any other format's kernel: the architecture
    decides there."""
    h100, b200 = catalog.gpus["nvidia-h100-80gb"], catalog.gpus["nvidia-b200-180gb"]
    default = vllm_memory("0.13.0", h100)
    marlin = vllm_memory("0.13.0", h100, mxfp4_backend="marlin")
    assert default.mxfp4.backend == "triton"
    assert steps(catalog, h100.id, default).kernel == "triton"
    assert steps(catalog, h100.id, marlin).kernel == "marlin"
    assert steps(catalog, h100.id, vllm_memory("0.11.0", h100)).kernel == "marlin"
    assert steps(catalog, b200.id, vllm_memory("0.13.0", b200)).kernel == "flashinfer_bf16"
    assert steps(catalog, b200.id, tensorrt_llm_memory("1.2.0rc2", b200)).kernel is None
    assert steps(catalog, h100.id, None).kernel is None
    awq = catalog.quantizations["int4-awq"]
    assert moe_kernels.expert_kernel(awq, default) is None


def test_triton_on_hopper_converts_each_expert_once_per_128_rows_marlin_per_64(
    catalog: Catalog,
) -> None:
    """Both upcast the weights in registers per tile of rows; matmul_ogs's tiles hold up to 128
    rows on Hopper, Marlin's blocks 64. gpt-oss-120b routes 4 of 128 experts a token: 8192
    tokens are 256 rows per expert, 2 conversions under Triton, 4 under Marlin; up to 2048
    tokens (64 rows) both convert each expert once."""
    model, fmt = gpt_oss(catalog), catalog.quantizations["mxfp4"]
    gpu = catalog.gpus["nvidia-h100-80gb"]

    def converted(kernel: str | None, tokens: float) -> float:
        return performance._marlin_prefill_s(model, gpu, fmt, 2, tokens, kernel=kernel)

    once = converted("marlin", 2048)
    assert converted("triton", 2048) == pytest.approx(once)
    assert converted("marlin", 8192) == pytest.approx(4 * once, rel=0.01)
    assert converted("triton", 8192) == pytest.approx(2 * once, rel=0.01)
    assert converted(None, 8192) == pytest.approx(converted("marlin", 8192))


def test_a_step_model_charges_the_kernel_its_rules_name(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefill of a StepModel whose rules say Triton moves with Triton's tile, not with
    Marlin's block, and the other way round."""
    h100 = catalog.gpus["nvidia-h100-80gb"]
    triton = vllm_memory("0.13.0", h100)
    marlin = vllm_memory("0.13.0", h100, mxfp4_backend="marlin")

    def prefill(rules: EngineMemory) -> float:
        return steps(catalog, h100.id, rules).prefill_s(8192, 8192)

    before = prefill(triton), prefill(marlin)
    monkeypatch.setattr(performance, "MARLIN_BLOCK_TOKENS", 32)
    assert prefill(triton) == pytest.approx(before[0])
    assert prefill(marlin) > before[1]
    monkeypatch.setattr(performance, "TRITON_MXFP4_BLOCK_TOKENS", 32)
    assert prefill(triton) > before[0]


def test_marlin_named_on_blackwell_is_weight_only_not_the_fp4_rate(catalog: Catalog) -> None:
    """Marlin runs MXFP4 as W4A16 on any GPU: where the rules name it, the experts' GEMMs are
    not charged at the FP4 tensor cores' rate, which FlashInfer's MXFP4 x MXFP8 kernel is."""
    b200, fmt = catalog.gpus["nvidia-b200-180gb"], catalog.quantizations["mxfp4"]
    bf16 = b200.compute_tflops("bf16")
    assert performance._gemm_tflops(b200, fmt, "marlin")[1] == pytest.approx(bf16)
    assert performance._gemm_tflops(b200, fmt, "flashinfer_mxfp8")[1] > bf16
    assert performance._gemm_tflops(b200, fmt)[1] > bf16
