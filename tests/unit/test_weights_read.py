"""The weight bytes a step reads: the lm_head whole, the input embedding's looked-up rows only,
and a pre-quantized checkpoint's weights as memory counts them."""

from __future__ import annotations

import dataclasses

import pytest

from llmdeploy.catalog import Catalog, QuantizedCheckpoint
from llmdeploy.sizing import moe_kernels, performance, resolve_model
from llmdeploy.sizing.memory import (
    BYTES_16BIT,
    GIB,
    grouped_weight_bytes,
    layer_weight_bytes_per_rank,
    routed_expert_bytes_per_rank,
    weight_bytes_per_rank,
)
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.performance import StepModel, estimate_performance

from .conftest import block_fp8_checkpoint_keeping, make_spec, plan_405b_fp8

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def facts(catalog: Catalog, name: str) -> ModelFacts:
    return resolve_model(make_spec(name).model, catalog)


def tied(model: ModelFacts) -> ModelFacts:
    """The model with one table for its input embedding and lm_head: one table fewer."""
    table = model.vocab_size * model.hidden_size
    return dataclasses.replace(
        model,
        tie_word_embeddings=True,
        parameters=model.parameters - table,
        active_parameters=model.active_parameters - table,
    )


def test_an_untied_models_step_reads_the_lm_head_and_its_tokens_rows_not_two_tables(
    catalog: Catalog,
) -> None:
    model = facts(catalog, LLAMA_8B)
    assert not model.tie_word_embeddings
    bf16 = catalog.quantizations["bf16"]
    table = model.vocab_size * model.hidden_size * BYTES_16BIT
    row = model.hidden_size * BYTES_16BIT
    held = weight_bytes_per_rank(model, bf16, 1, 1)
    for tokens in (1, 64):
        read = performance._weights_read(model, bf16, 1, 1, tokens)
        assert read == pytest.approx(held - table + tokens * row)
    # Llama-3.1-8B's input embedding is 6.5% of its bytes.
    assert table / held == pytest.approx(0.065, abs=0.001)


def test_a_tied_table_is_held_once_and_read_once(catalog: Catalog) -> None:
    """Tying the tables saves a table of memory, not of a step's read: an untied model's step
    reads the lm_head and skips the input embedding, a tied one reads its one table."""
    untied = facts(catalog, LLAMA_8B)
    one = tied(untied)
    bf16 = catalog.quantizations["bf16"]
    table = untied.vocab_size * untied.hidden_size * BYTES_16BIT
    for tensor in (1, 2, 8):
        held = weight_bytes_per_rank(untied, bf16, tensor, 1)
        assert held - weight_bytes_per_rank(one, bf16, tensor, 1) == pytest.approx(table / tensor)
        read = performance._weights_read(untied, bf16, tensor, 1, 4)
        assert performance._weights_read(one, bf16, tensor, 1, 4) == pytest.approx(read)
    # A tied model of the catalog (Qwen2.5-0.5B-Instruct, config tie_word_embeddings true).
    qwen = facts(catalog, "Qwen/Qwen2.5-0.5B-Instruct")
    assert qwen.tie_word_embeddings
    held = weight_bytes_per_rank(qwen, bf16, 1, 1)
    row = qwen.hidden_size * BYTES_16BIT
    assert performance._weights_read(qwen, bf16, 1, 1, 3) == pytest.approx(held + 3 * row)


def test_the_embedding_read_is_split_over_the_vocabulary_and_read_on_one_stage(
    catalog: Catalog,
) -> None:
    """VocabParallelEmbedding and ParallelLMHead split the vocabulary over the TP ranks; under
    PP only the last stage reads the lm_head, so a step through every stage reads it once."""
    model = facts(catalog, LLAMA_8B)
    bf16 = catalog.quantizations["bf16"]
    tokens = 16
    table_and_rows = (model.vocab_size + tokens) * model.hidden_size * BYTES_16BIT
    for tensor, pipeline in ((1, 1), (4, 1), (1, 2), (2, 4)):
        layers = layer_weight_bytes_per_rank(model, bf16, tensor, pipeline)
        read = performance._weights_read(model, bf16, tensor, pipeline, tokens)
        # What the step reads over its stages (the decode step's memory time multiplies by
        # the stages): every stage's layers and one lm_head, shared by the TP ranks.
        assert pipeline * (read - layers) == pytest.approx(table_and_rows / tensor)


def test_a_decode_step_of_a_tied_model_takes_as_long_as_the_untied_one(
    catalog: Catalog,
) -> None:
    untied = facts(catalog, LLAMA_8B)
    gpu, bf16 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["bf16"]

    def step(model: ModelFacts) -> float:
        return StepModel(model, gpu, bf16, 1, 1, 2, 1024, 128).decode(1).memory_s

    assert step(tied(untied)) == pytest.approx(step(untied))


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
        embeddings = (model.vocab_size + 1) * model.hidden_size * BYTES_16BIT
        assert one_token == pytest.approx(layers + (embeddings - untouched * grouped) / 2)


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


def test_a_prefill_reads_the_experts_as_the_checkpoint_holds_them(catalog: Catalog) -> None:
    """Off Hopper a 4-bit MoE prefill streams its routed experts (no Marlin bound): at the
    checkpoint's group of 64 they are more bytes than at the format's 128, and the prefill
    takes that much longer to read them."""
    model = facts(catalog, "Qwen/Qwen3-30B-A3B")
    gpu, awq = catalog.gpus["nvidia-a100-80gb"], catalog.quantizations["int4-awq"]

    def expert_read_s(checkpoint: QuantizedCheckpoint | None) -> float:
        steps = StepModel(model, gpu, awq, 1, 1, 2, 4096, 128, checkpoint=checkpoint)
        held = performance.checkpoint_format(awq, checkpoint)
        return performance._expert_read_s(model, gpu, held, 1, 4096, steps.bandwidth)

    ratio = grouped_weight_bytes(awq, 64) / awq.weight_bytes
    assert ratio > 1
    assert expert_read_s(GROUP_64) == pytest.approx(expert_read_s(None) * ratio)
    plain = StepModel(model, gpu, awq, 1, 1, 2, 4096, 128).prefill(4096, 8192).step_s
    grouped = StepModel(model, gpu, awq, 1, 1, 2, 4096, 128, checkpoint=GROUP_64)
    assert grouped.prefill(4096, 8192).step_s > plain


@pytest.mark.parametrize("tensor, pipeline", [(4, 1), (4, 2)])
def test_a_decode_reads_a_kept_moe_layers_touched_experts_once_at_16_bit(
    catalog: Catalog, tensor: int, pipeline: int
) -> None:
    """A MoE layer an FP8 checkpoint keeps whole holds its experts 16-bit (memory, as vLLM's
    UnquantizedFusedMoEMethod builds them); a decode step reads only those a token routes to,
    so the experts no token routes to leave the read at the 16-bit bytes they are held in,
    not at FP8's (review5: they were subtracted at FP8's, a read of more than memory holds)."""
    model = facts(catalog, "Qwen/Qwen3-235B-A22B")
    fp8 = catalog.quantizations["fp8"]
    assert model.first_dense_layers == 0
    moe_layers = model.layers

    qwen = "Qwen/Qwen3-235B-A22B"
    whole, plain = block_fp8_checkpoint_keeping(qwen, 5), block_fp8_checkpoint_keeping(qwen)
    assert moe_kernels.kept_expert_share(model, whole) == pytest.approx(1 / moe_layers)
    layer = (model.parameters - model.embedding_parameters) / moe_layers
    per_byte = (BYTES_16BIT - fp8.weight_bytes) / tensor
    # Memory holds the layer 16-bit on the stage holding it, its experts among it.
    held = layer_weight_bytes_per_rank(model, fp8, tensor, pipeline, checkpoint=whole)
    plain_held = layer_weight_bytes_per_rank(model, fp8, tensor, pipeline, checkpoint=plain)
    assert held - plain_held == pytest.approx(layer * per_byte)
    experts = routed_expert_bytes_per_rank(model, fp8, tensor, pipeline, whole)
    plain_experts = routed_expert_bytes_per_rank(model, fp8, tensor, pipeline, plain)
    assert plain_experts == pytest.approx(
        model.routed_expert_parameters * fp8.weight_bytes / (tensor * pipeline)
    )
    assert experts - plain_experts == pytest.approx(
        model.routed_expert_parameters / moe_layers * per_byte
    )
    for batch in (1, 8, 64, 4096):
        untouched = performance._untouched_experts(model, batch) / moe_layers
        read = performance._weights_read(model, fp8, tensor, pipeline, batch, whole)
        plain_read = performance._weights_read(model, fp8, tensor, pipeline, batch, plain)
        assert read - plain_read == pytest.approx((layer - untouched) * per_byte)

    def decode(checkpoint: QuantizedCheckpoint) -> StepModel:
        gpu = catalog.gpus["nvidia-h100-80gb"]
        return StepModel(model, gpu, fp8, tensor, pipeline, 1, 1024, 128, checkpoint=checkpoint)

    untouched = performance._untouched_experts(model, 1) / moe_layers
    steps = decode(whole)
    memory_s = steps.decode(1).memory_s - decode(plain).decode(1).memory_s
    expected_s = pipeline * (layer - untouched) * per_byte / steps.bandwidth
    assert memory_s == pytest.approx(expected_s, rel=1e-6)
