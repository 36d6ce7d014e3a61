"""The weight bytes a step reads: a pre-quantized checkpoint's weights as memory counts them."""

from __future__ import annotations

import pytest

from llmdeploy.catalog import Catalog, QuantizedCheckpoint
from llmdeploy.sizing import performance, resolve_model
from llmdeploy.sizing.memory import (
    GIB,
    embedding_bytes_per_rank,
    grouped_weight_bytes,
    layer_weight_bytes_per_rank,
    weight_bytes_per_rank,
)
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.performance import StepModel, estimate_performance

from .conftest import make_spec, plan_405b_fp8

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def facts(catalog: Catalog, name: str) -> ModelFacts:
    return resolve_model(make_spec(name).model, catalog)


GROUP_64 = QuantizedCheckpoint(id="acme/x-AWQ", quantization="int4-awq", group_size=64, source="t")


@pytest.mark.parametrize("name", [LLAMA_8B, "Qwen/Qwen3-30B-A3B"])
def test_a_step_reads_a_checkpoints_weights_at_its_group_size_as_memory_counts_them(
    catalog: Catalog, name: str
) -> None:
    """Group 64 holds twice the scales and zeros of the catalog's group 128; a step reads what
    memory holds (for MoE, the experts the step's tokens route to)."""
    model = facts(catalog, name)
    awq = catalog.quantizations["int4-awq"]
    more = weight_bytes_per_rank(model, awq, 2, 1, checkpoint=GROUP_64) - weight_bytes_per_rank(
        model, awq, 2, 1
    )
    assert more > 0
    read_more = performance._weights_read(
        model, awq, 2, 1, 4096, GROUP_64
    ) - performance._weights_read(model, awq, 2, 1, 4096)
    assert read_more == pytest.approx(more)  # a prefill chunk routes to every expert
    if model.is_moe:
        untouched = performance._untouched_experts(model, 1)
        assert untouched > 0
        grouped = grouped_weight_bytes(awq, 64)
        one_token = performance._weights_read(model, awq, 2, 1, 1, GROUP_64)
        layers = layer_weight_bytes_per_rank(model, awq, 2, 1, checkpoint=GROUP_64)
        embeddings = embedding_bytes_per_rank(model, 2, 1)
        assert one_token == pytest.approx(layers + embeddings - untouched * grouped / 2)


def test_the_latency_estimate_reads_the_loaded_checkpoints_bytes(catalog: Catalog) -> None:
    """The estimate the planner and the corpus replay make, with the checkpoint, reads group
    64's extra bytes: on an A100, where int4 decode is bound by its reads, each decode step
    takes their read time more (at concurrency 1 TPOT is one decode step)."""
    model = facts(catalog, LLAMA_8B)
    gpu, awq = catalog.gpus["nvidia-a100-80gb"], catalog.quantizations["int4-awq"]
    assert not performance._dequant_bound(gpu, awq)

    def tpot(checkpoint: QuantizedCheckpoint | None) -> float:
        return estimate_performance(
            model,
            gpu,
            awq,
            tensor=1,
            pipeline=1,
            kv_dtype_bytes=2,
            concurrency=1,
            input_tokens=1024,
            output_tokens=128,
            checkpoint=checkpoint,
        ).tpot_s

    more = weight_bytes_per_rank(model, awq, 1, 1, checkpoint=GROUP_64) - weight_bytes_per_rank(
        model, awq, 1, 1
    )
    bandwidth = StepModel(model, gpu, awq, 1, 1, 2, 1024, 128).bandwidth
    assert tpot(GROUP_64) - tpot(None) == pytest.approx(more / bandwidth)


def test_a_plan_loading_a_known_checkpoint_reads_its_16_bit_modules(catalog: Catalog) -> None:
    """Meta's Llama-3.1-405B FP8 checkpoint keeps attention and two layers 16-bit (the catalog
    says so; memory counts them): its plan's decode reads them too, where a checkpoint the
    catalog does not know is read as FP8 throughout."""
    known = plan_405b_fp8(catalog, "meta-llama/Llama-3.1-405B-Instruct-FP8", concurrency=1)
    unknown = plan_405b_fp8(catalog, "acme/Llama-3.1-405B-Instruct-FP8", concurrency=1)
    assert known.weights_gib_per_gpu and unknown.weights_gib_per_gpu
    assert known.estimated_tpot_ms and unknown.estimated_tpot_ms
    more_gib = known.weights_gib_per_gpu - unknown.weights_gib_per_gpu
    assert more_gib > 8
    # A lone stream's TPOT is one decode step: the extra bytes at the H100's decode bandwidth.
    bandwidth = StepModel(
        facts(catalog, "meta-llama/Llama-3.1-405B-Instruct"),
        catalog.gpus["nvidia-h100-80gb"],
        catalog.quantizations["fp8"],
        8,
        1,
        2,
        1024,
        128,
    ).bandwidth
    expected_ms = more_gib * GIB / bandwidth * 1000
    assert known.estimated_tpot_ms - unknown.estimated_tpot_ms == pytest.approx(
        expected_ms, abs=0.05
    )
