"""What a step computes and reads of a pre-quantized checkpoint as the engine holds it: its
16-bit modules at the 16-bit rate, its block-scaled FP8 experts on the grouped kernels, and the
bytes the engine lays out for the kernels."""

from __future__ import annotations

import pytest

from llmdeploy.catalog import Catalog, QuantizedCheckpoint
from llmdeploy.sizing import performance, resolve_model
from llmdeploy.sizing.memory import held_16_bit_active_parameters
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.performance import StepModel

from .conftest import make_spec

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

    def flops_s(held_16_bit: float) -> float:
        return performance._flops_s(model, gpu, fp8, 8, tokens, 0, 1.0, 1, held_16_bit=held_16_bit)

    bf16_rate, fp8_rate = performance._gemm_tflops(gpu, fp8)
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
        seconds = performance._flops_s(model, gpu, fmt, 1, 0, 0, 1.0, rows)
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
            "0.11.0",
            4,
            1,
            checkpoint,
        )

    deepseek = facts(catalog, "deepseek-ai/DeepSeek-R1")
    native = performance.grouped_fp8_shares(deepseek, h100, fp8, "vllm", "0.11.0", 4, 1)
    assert native == (performance.GROUPED_FP8_READ_SHARE[4], performance.GROUPED_FP8_MATH_SHARE[4])
    assert shares(blocks) == native
    assert shares(None) is None and shares(per_tensor) is None
    assert shares(blocks, "nvidia-b200-180gb") is None  # measured on Hopper only
    llama = facts(catalog, "meta-llama/Llama-3.1-70B-Instruct")
    assert not performance._grouped_block_fp8(llama, h100, fp8, blocks)

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
