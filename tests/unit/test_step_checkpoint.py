"""What a step computes and reads of a pre-quantized checkpoint as the engine holds it: its
16-bit modules at the 16-bit rate, its block-scaled FP8 experts on the grouped kernels, and the
bytes the engine lays out for the kernels."""

from __future__ import annotations

import pytest

from llmdeploy.catalog import Catalog
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
