"""The memory model against hand-computed values and public vLLM measurements."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog, Gpu, QuantizedCheckpoint, load_catalog
from llmdeploy.sizing import memory, resolve_model
from llmdeploy.sizing.engine_memory import EngineMemory, tensorrt_llm_memory, vllm_memory
from llmdeploy.sizing.memory import (
    GIB,
    MemoryBreakdown,
    grouped_weight_bytes,
    kv_bytes_per_token_layer,
    kv_capacity,
    memory_breakdown,
    weight_bytes_per_rank,
)
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.plan import Plan

from .conftest import make_spec


def facts(catalog: Catalog, name: str):  # type: ignore[no-untyped-def]
    return resolve_model(make_spec(name).model, catalog)


def on_one_gpu(
    catalog: Catalog,
    gpu: Gpu,
    rules: EngineMemory,
    *,
    batched: int,
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
    quantization: str = "bf16",
    utilization: float = 0.9,
    seqs: int = 256,
    context: int | None = None,
) -> MemoryBreakdown:
    """One rank of `model` on one GPU, steps of `batched` tokens (and a context of as many
    unless given), 16-bit KV in blocks of 16."""
    return memory_breakdown(
        facts(catalog, model),
        gpu,
        catalog.quantizations[quantization],
        tensor=1,
        pipeline=1,
        kv_dtype_bytes=2,
        gpu_memory_utilization=utilization,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        max_context_length=context or batched,
        block_size=16,
        rules=rules,
    )


def kv_per_token(catalog: Catalog, name: str, tensor: int = 1, dtype_bytes: float = 2) -> float:
    model = facts(catalog, name)
    return model.layers * kv_bytes_per_token_layer(model, tensor, dtype_bytes)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # layers x kv_heads x head_dim x 2 (K and V) x 2 bytes, from the published configs
        ("meta-llama/Llama-3.1-8B-Instruct", 32 * 8 * 128 * 2 * 2),
        ("meta-llama/Llama-3.1-70B-Instruct", 80 * 8 * 128 * 2 * 2),
        ("meta-llama/Llama-3.1-405B-Instruct", 126 * 8 * 128 * 2 * 2),
        ("Qwen/Qwen2.5-7B-Instruct", 28 * 4 * 128 * 2 * 2),
        # head_dim from the config, not hidden/heads (5120/64 = 80, 2880/64 = 45, 4608/32 = 144)
        ("Qwen/Qwen3-32B", 64 * 8 * 128 * 2 * 2),
        ("openai/gpt-oss-120b", 36 * 8 * 64 * 2 * 2),
        ("google/gemma-2-27b-it", 46 * 16 * 128 * 2 * 2),
        # MLA: one 512 + 64 latent per token and layer, no factor 2
        ("deepseek-ai/DeepSeek-V3", 61 * 576 * 2),
    ],
)
def test_kv_bytes_per_token_follow_the_config(catalog: Catalog, name: str, expected: int) -> None:
    assert kv_per_token(catalog, name) == expected


def test_kv_splits_by_tp_until_heads_run_out_then_replicates(catalog: Catalog) -> None:
    llama = "meta-llama/Llama-3.1-70B-Instruct"
    assert kv_per_token(catalog, llama, tensor=8) == 80 * 1 * 128 * 2 * 2
    qwen = "Qwen/Qwen3-235B-A22B"  # 4 KV heads: TP 8 keeps one whole head per rank
    assert kv_per_token(catalog, qwen, tensor=4) == kv_per_token(catalog, qwen, tensor=8)
    assert kv_per_token(catalog, qwen, tensor=8) == 94 * 1 * 128 * 2 * 2


def test_mla_kv_does_not_shrink_with_tp(catalog: Catalog) -> None:
    name = "deepseek-ai/DeepSeek-V3"
    assert kv_per_token(catalog, name, tensor=8) == kv_per_token(catalog, name, tensor=1)


def test_mla_keeps_down_projections_and_router_gates_whole_on_every_rank(
    catalog: Catalog,
) -> None:
    # vLLM deepseek_v2.py (0.8.4 to 0.24.0): q_a_proj and kv_a_proj_with_mqa are replicated and
    # quantized like the checkpoint (FP8 here), each MoE layer's gate replicated and 16-bit.
    model = facts(catalog, "deepseek-ai/DeepSeek-V3")
    assert model.q_lora_rank == 1536
    fp8 = catalog.quantizations["fp8"]
    embeddings = 2 * 129280 * 7168
    even = ((model.parameters - embeddings) * 1 + embeddings * 2) / 8
    projections = 61 * 7168 * (1536 + 512 + 64)
    gates = 58 * 7168 * 256
    replicated = projections * (1 - 1 / 8) + gates * (2 - 1 / 8)
    tp8 = weight_bytes_per_rank(model, fp8, 8, 1)
    assert tp8 - even == pytest.approx(replicated)
    assert 0.9 < (tp8 - even) / GIB < 1.0
    # One GPU holds everything once: nothing to add but the gates' 16 bits.
    tp1 = weight_bytes_per_rank(model, fp8, 1, 1)
    assert tp1 - (even * 8) == pytest.approx(gates * (2 - 1))
    # Two stages: the rank of the larger one (31 layers, 31 of them MoE) holds its own.
    pp2 = weight_bytes_per_rank(model, fp8, 8, 2)
    stage = 31 * 7168 * (1536 + 512 + 64) * (1 - 1 / 8) + 31 * 7168 * 256 * (2 - 1 / 8)
    split = (model.parameters - embeddings) / 16 + 129280 * 7168 * 2 / 8
    assert pp2 - split == pytest.approx(stage)


def test_mla_without_a_query_rank_replicates_only_the_kv_projection(catalog: Catalog) -> None:
    # DeepSeek-V2-Lite: q_lora_rank null, so q_proj is column-parallel (deepseek_v2.py).
    model = facts(catalog, "deepseek-ai/DeepSeek-V2-Lite")
    assert model.q_lora_rank == 0
    bf16 = catalog.quantizations["bf16"]
    tp1 = weight_bytes_per_rank(model, bf16, 1, 1)
    assert tp1 == pytest.approx(model.parameters * 2)  # 16-bit: whole gates cost nothing more
    replicated = 27 * 2048 * (512 + 64) * 2 + 26 * 2048 * 64 * 2
    assert weight_bytes_per_rank(model, bf16, 2, 1) == pytest.approx(tp1 / 2 + replicated / 2)


def test_a_specs_query_rank_counts_as_replicated(catalog: Catalog) -> None:
    spec = LLMDeploymentSpec.model_validate(
        {"model": {"name": "deepseek-ai/DeepSeek-V2-Lite", "architecture": {"qLoraRank": 1536}}}
    )
    given = resolve_model(spec.model, catalog)
    assert given.q_lora_rank == 1536
    bf16 = catalog.quantizations["bf16"]
    lite = facts(catalog, "deepseek-ai/DeepSeek-V2-Lite")
    extra = weight_bytes_per_rank(given, bf16, 4, 1) - weight_bytes_per_rank(lite, bf16, 4, 1)
    assert extra == pytest.approx(27 * 2048 * 1536 * 2 * (1 - 1 / 4))


def test_mla_keeps_a_16_bit_copy_of_a_quantized_kv_b_proj_from_vllm_0_8_4(
    catalog: Catalog,
) -> None:
    # v1/attention/backends/mla/common.py process_weights_after_loading dequantizes kv_b_proj
    # into W_UK and W_UV in the model dtype, inside load_model: per layer kv_lora_rank x the
    # rank's heads x (qk_nope_head_dim + v_head_dim), 512 x 16 x (128 + 128) at TP 8.
    model = facts(catalog, "deepseek-ai/DeepSeek-V3")
    fp8, bf16 = catalog.quantizations["fp8"], catalog.quantizations["bf16"]
    h100 = catalog.gpus["nvidia-h100-80gb"]
    copy = 61 * 512 * 16 * 256 * 2
    read = weight_bytes_per_rank(model, fp8, 8, 1, vllm_memory("0.11.0", h100))
    assert read - weight_bytes_per_rank(model, fp8, 8, 1) == pytest.approx(copy)
    assert 0.23 < copy / GIB < 0.24
    # Two stages: the larger one's 31 layers.
    staged = weight_bytes_per_rank(model, fp8, 8, 2, vllm_memory("0.24.0", h100))
    stage_copy = 31 * 512 * 16 * 256 * 2
    assert staged - weight_bytes_per_rank(model, fp8, 8, 2) == pytest.approx(stage_copy)
    # The oldest release read (V0 too) keeps it as well.
    v0 = weight_bytes_per_rank(model, fp8, 8, 1, vllm_memory("0.8.4", h100, "v0"))
    assert v0 == pytest.approx(read)
    # A 16-bit kv_b_proj is only viewed; TensorRT-LLM (not read) counts none.
    for tensor in (1, 8):
        plain = weight_bytes_per_rank(model, bf16, tensor, 1)
        assert weight_bytes_per_rank(model, bf16, tensor, 1, vllm_memory("0.11.0", h100)) == plain
    trtllm = weight_bytes_per_rank(model, fp8, 8, 1, tensorrt_llm_memory(None, h100))
    assert trtllm == weight_bytes_per_rank(model, fp8, 8, 1)
    # A model without MLA has no such copy.
    llama = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    rules = vllm_memory("0.11.0", h100)
    assert weight_bytes_per_rank(llama, fp8, 2, 1, rules) == weight_bytes_per_rank(llama, fp8, 2, 1)


def test_a_corpus_run_with_mla_off_keeps_no_kv_b_proj_copy() -> None:
    # LMCache#503 ran DeepSeek-R1-AWQ with VLLM_MLA_DISABLE=1: DeepseekV2Attention, no W_UK/W_UV.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import corpus

    catalog = load_catalog()
    row = next(r for r in corpus.load_kv() if r.id == "lmc503-h20-deepseek-r1-awq-tp8")
    assert row.mla_off and not corpus.rules(row, catalog).mla_dequantized_kv_b_proj
    with_mla = dataclasses.replace(row, mla_off=False)
    assert corpus.rules(with_mla, catalog).mla_dequantized_kv_b_proj
    copy = 61 * 512 * 16 * 256 * 2 / GIB
    difference = corpus.predict_weights_gib(with_mla, catalog) - corpus.predict_weights_gib(
        row, catalog
    )
    assert difference == pytest.approx(copy)


@pytest.mark.parametrize(
    ("quantization", "group", "per_weight"),
    [
        ("int4-awq", 64, 0.5 + 2.5 / 64),
        ("int4-awq", 32, 0.5 + 2.5 / 32),
        ("int4-gptq", 64, 0.5 + 2 / 64),
    ],
)
def test_a_checkpoints_group_size_sets_its_bytes_per_weight(
    catalog: Catalog, quantization: str, group: int, per_weight: float
) -> None:
    # AWQ keeps a 16-bit scale and a 4-bit zero per group of inputs, symmetric GPTQ the scale
    # alone; the catalog's formats count a group of 128.
    model = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    fmt = catalog.quantizations[quantization]
    checkpoint = QuantizedCheckpoint(
        id="acme/x", quantization=quantization, group_size=group, source="test"
    )
    assert grouped_weight_bytes(fmt, group) == pytest.approx(per_weight)
    assert grouped_weight_bytes(fmt, 128) == fmt.weight_bytes
    linears = model.parameters - model.embedding_parameters
    grouped = weight_bytes_per_rank(model, fmt, 1, 1, checkpoint=checkpoint)
    assert grouped - weight_bytes_per_rank(model, fmt, 1, 1) == pytest.approx(
        linears * (per_weight - fmt.weight_bytes)
    )


def test_the_lmcache_503_run_loads_the_group_64_checkpoint() -> None:
    # Its log loads 74 safetensors shards: cognitivecomputations/DeepSeek-R1-AWQ's count, which
    # the catalog holds with group 64 (its source says why).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import corpus

    catalog = load_catalog()
    row = next(r for r in corpus.load_kv() if r.id == "lmc503-h20-deepseek-r1-awq-tp8")
    model = facts(catalog, row.plan_model)
    checkpoint = model.quantized_checkpoint(row.model, row.quantization)
    assert checkpoint is not None and checkpoint.group_size == 64
    assert model.quantized_checkpoint(row.model, "int4-gptq") is None


def _autoawq_shards(model: ModelFacts, group: int, attention_4_bit: bool) -> int:
    """Files AutoAWQ's save_quantized writes for a DeepSeek-V3-type model without its MTP layer:
    the state dict in module order (qweight, qzeros, scales per quantized linear), split as
    huggingface_hub's split_state_dict_into_shards_factory does at its 5 GB default."""
    hidden, rope = model.hidden_size, model.qk_rope_head_dim
    nope = model.head_dim - rope

    def linear(k: int, n: int, quantized: bool = True) -> list[int]:
        if not quantized:
            return [k * n * 2]
        groups = 1 if group == -1 else k // group  # -1: one scale per output channel
        return [k * n // 2, groups * n // 2, groups * n * 2]

    heads = model.attention_heads
    attention = [
        *linear(hidden, model.q_lora_rank, attention_4_bit),
        model.q_lora_rank * 2,
        *linear(model.q_lora_rank, heads * (nope + rope), attention_4_bit),
        *linear(hidden, model.kv_lora_rank + rope, attention_4_bit),
        model.kv_lora_rank * 2,
        *linear(model.kv_lora_rank, heads * 2 * nope, attention_4_bit),
        *linear(heads * nope, hidden, attention_4_bit),
    ]

    def mlp(width: int) -> list[int]:
        return [*linear(hidden, width), *linear(hidden, width), *linear(width, hidden)]

    sizes = [model.vocab_size * hidden * 2]
    for layer in range(model.layers):
        sizes += attention
        if layer < model.first_dense_layers:
            sizes += mlp(model.intermediate_size)
        else:
            sizes += mlp(model.moe_intermediate_size) * model.experts
            sizes += [model.experts * hidden * 2, model.experts * 2]  # router, score bias
            sizes += mlp(model.moe_intermediate_size)  # shared expert
        sizes += [hidden * 2, hidden * 2]
    sizes += [hidden * 2, model.vocab_size * hidden * 2]
    shards, current = 1, 0
    for size in sizes:
        if current + size > 5 * 10**9:
            shards, current = shards + 1, 0
        current += size
    return shards


def test_only_group_64_makes_the_74_shards_the_lmcache_503_run_loaded(catalog: Catalog) -> None:
    # LMCache#503's log loads 74 shards, cognitivecomputations/DeepSeek-R1-AWQ's count. Its
    # quantizers' AutoAWQ code quantizes attention and takes a group of at most 64 or none
    # (AutoAWQ#688); with attention 16-bit, group 128 would make 74 too (models.yaml source).
    model = facts(catalog, "deepseek-ai/DeepSeek-R1")
    counts = {group: _autoawq_shards(model, group, True) for group in (32, 64, 128, -1)}
    assert counts == {32: 79, 64: 74, 128: 71, -1: 68}
    assert _autoawq_shards(model, 128, False) == 74


def test_moe_routers_stay_whole_and_16_bit_on_every_rank(catalog: Catalog) -> None:
    # mixtral.py's gate and gpt_oss.py's router: one unsharded layer, built without the
    # checkpoint's quantization, hidden x experts per MoE layer.
    mixtral = facts(catalog, "mistralai/Mixtral-8x7B-Instruct-v0.1")
    fp8 = catalog.quantizations["fp8"]
    embeddings = mixtral.embedding_parameters * 2
    body = mixtral.parameters - mixtral.embedding_parameters
    gates = 32 * 4096 * 8
    tp2 = weight_bytes_per_rank(mixtral, fp8, 2, 1)
    assert tp2 - (body * 1 + embeddings) / 2 == pytest.approx(gates * (2 - 1 / 2))
    # MXFP4 quantizes only the experts: the router was 16-bit already, now whole.
    oss = facts(catalog, "openai/gpt-oss-120b")
    mxfp4 = catalog.quantizations["mxfp4"]
    router = 36 * 2880 * 128 * 2
    one = weight_bytes_per_rank(oss, mxfp4, 1, 1)
    assert weight_bytes_per_rank(oss, mxfp4, 4, 1) - (one - router) / 4 == pytest.approx(router)
    # A dense model has none.
    llama = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    assert memory.replicated_parameters(llama, 1) == (0.0, 0.0)


def test_fp8_kv_halves_the_cache(catalog: Catalog) -> None:
    name = "meta-llama/Llama-3.1-8B-Instruct"
    assert kv_per_token(catalog, name, dtype_bytes=1) * 2 == kv_per_token(catalog, name)


def test_weights_of_llama3_8b_at_tp2_match_vllm_profile(catalog: Catalog) -> None:
    # vllm-project/vllm PR #10511: 7.48 GiB of weights per GPU for Llama-3-8B at TP 2.
    model = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    weights = weight_bytes_per_rank(model, catalog.quantizations["bf16"], 2, 1) / GIB
    assert weights == pytest.approx(7.48, rel=0.01)


def test_fp8_keeps_embeddings_in_16_bit(catalog: Catalog) -> None:
    model = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    bf16 = weight_bytes_per_rank(model, catalog.quantizations["bf16"], 1, 1)
    fp8 = weight_bytes_per_rank(model, catalog.quantizations["fp8"], 1, 1)
    embeddings = 2 * 128256 * 4096 * 2
    assert fp8 == pytest.approx((bf16 - embeddings) / 2 + embeddings)


META_405B_FP8 = "meta-llama/Llama-3.1-405B-Instruct-FP8"


def test_metas_405b_fp8_checkpoint_keeps_its_16_bit_modules(catalog: Catalog) -> None:
    # vllm-project/vllm#6746: Meta's FP8 checkpoint of Llama-3.1-405B-Instruct at TP 8 on H100
    # loads 57.752 GiB per rank; it leaves layers 0 and 125 and every layer's attention in bf16.
    model = facts(catalog, "meta-llama/Llama-3.1-405B-Instruct")
    fp8 = catalog.quantizations["fp8"]
    checkpoint = model.quantized_checkpoint(META_405B_FP8, "fp8")
    assert checkpoint is not None and checkpoint.unquantized_layers == (0, 125)
    assert hash(model)  # the facts stay hashable with their checkpoints
    loaded = weight_bytes_per_rank(model, fp8, 8, 1, checkpoint=checkpoint) / GIB
    assert loaded == pytest.approx(57.752, rel=0.03)
    # Counted by hand: 124 attentions (Q, O: 16384^2; K, V: 16384 x 1024) and two whole layers
    # take one byte more per parameter than FP8, over 8 ranks.
    attention = 2 * 16384 * 16384 + 2 * 16384 * 1024
    layer = (model.parameters - 2 * 128256 * 16384) / 126
    online = weight_bytes_per_rank(model, fp8, 8, 1) / GIB
    assert loaded - online == pytest.approx((124 * attention + 2 * layer) / 8 / GIB)


def test_a_checkpoint_is_known_by_its_id_and_format(catalog: Catalog) -> None:
    model = facts(catalog, "meta-llama/Llama-3.1-405B-Instruct")
    assert model.quantized_checkpoint(META_405B_FP8.lower(), "fp8") is not None
    assert model.quantized_checkpoint("meta-llama/Meta-Llama-3.1-405B-Instruct-FP8", "fp8")
    assert model.quantized_checkpoint(META_405B_FP8, "int8") is None
    assert model.quantized_checkpoint("neuralmagic/Meta-Llama-3.1-405B-Instruct-FP8", "fp8") is None
    assert model.quantized_checkpoint(None, "fp8") is None


def test_16_bit_layers_weigh_on_the_pipeline_stage_that_holds_them(catalog: Catalog) -> None:
    model = facts(catalog, "meta-llama/Llama-3.1-405B-Instruct")
    fp8 = catalog.quantizations["fp8"]
    checkpoint = model.quantized_checkpoint(META_405B_FP8, "fp8")
    first_and_last = checkpoint.model_copy(update={"unquantized_attention": False})
    only_first = first_and_last.model_copy(update={"unquantized_layers": (0,)})
    layer = (model.parameters - 2 * 128256 * 16384) / 126
    online = weight_bytes_per_rank(model, fp8, 8, 2)
    # Layers 0 and 125 land on the two stages: the worst rank holds one of them.
    for kept in (first_and_last, only_first):
        extra = weight_bytes_per_rank(model, fp8, 8, 2, checkpoint=kept) - online
        assert extra == pytest.approx(layer / 8)
    both = weight_bytes_per_rank(model, fp8, 8, 1, checkpoint=first_and_last)
    assert both - weight_bytes_per_rank(model, fp8, 8, 1) == pytest.approx(2 * layer / 8)


def test_kv_tokens_on_rtx3090_within_5_percent_of_vllm_log(catalog: Catalog) -> None:
    # vllm-project/vllm issue #10517: Llama-3.1-8B bf16, 23.58 GiB GPU, util 0.90, V0 engine,
    # max_model_len 20000: KV 3.81 GiB -> 1,952 blocks (31,232 tokens). V0 without chunked
    # prefill profiles a step of max_model_len tokens and 256 sequences. (A fit-set row of
    # bench/data: in-sample.)
    gpu = catalog.gpus["nvidia-rtx-3090"]
    memory = on_one_gpu(catalog, gpu, vllm_memory(None, gpu, "v0"), batched=20_000)
    assert memory.kv_cache_tokens == pytest.approx(31_232, rel=0.05)
    assert memory.kv_cache_gib == pytest.approx(3.81, rel=0.05)


def test_qwen3_14b_tokens_and_concurrency_from_kv_memory() -> None:
    # LMCache/LMCache issue #1739: KV 6.51 GiB -> 42,656 tokens; 1.30x concurrency at 32,768.
    from llmdeploy.api.types import ModelArchitecture, ModelSpec
    from llmdeploy.catalog import load_catalog

    arch = ModelArchitecture(
        layers=40,
        hidden_size=5120,
        attention_heads=40,
        kv_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_context_length=40960,
        intermediate_size=17408,
    )
    model = resolve_model(ModelSpec(name="Qwen/Qwen3-14B", architecture=arch), load_catalog())
    tokens, concurrency = kv_capacity(model, 1, 1, 2, 6.51 * GIB, 32_768, 16)
    assert tokens == pytest.approx(42_656, rel=0.005)
    assert concurrency == pytest.approx(1.30, abs=0.01)


def test_sliding_window_layers_cap_their_cache(catalog: Catalog) -> None:
    from llmdeploy.sizing.memory import request_kv_bytes

    model = facts(catalog, "google/gemma-2-27b-it")
    short = request_kv_bytes(model, 1, 1, 2, 4096, 16)
    long = request_kv_bytes(model, 1, 1, 2, 8192, 16)
    per_layer_token = kv_bytes_per_token_layer(model, 1, 2)
    full_layers = model.layers - model.sliding_window_layers
    # Doubling the context only grows the full-attention layers' share.
    assert long - short == pytest.approx(full_layers * 4096 * per_layer_token, rel=0.01)


@pytest.mark.parametrize(
    ("gpu", "version", "tensor", "logged"),
    [
        # dennislee22/vLLM-benchmarking log/vllm-120B-4gpuA10080GB-0.8GRAM-diff-nodes.log:
        # "Model loading took 17.2217 GiB" per rank, Marlin MoE (SM 8.0).
        ("nvidia-a100-80gb", "0.10.1.1", 4, 17.2217),
        # vllm-project/vllm#23278: one H100, Marlin (triton_kernels not installed before 0.12).
        ("nvidia-h100-80gb", "0.10.1.1", 1, 65.9651),
        # vllm-project/vllm#33155: one H100, vLLM 0.14.1, "Using Triton backend": 64.38 GiB.
        ("nvidia-h100-80gb", "0.14.1", 1, 64.38),
    ],
)
def test_mxfp4_experts_as_vllm_lays_them_out(
    catalog: Catalog, gpu: str, version: str, tensor: int, logged: float
) -> None:
    model = facts(catalog, "openai/gpt-oss-120b")
    mxfp4 = catalog.quantizations["mxfp4"]
    rules = vllm_memory(version, catalog.gpus[gpu])
    laid_out = weight_bytes_per_rank(model, mxfp4, tensor, 1, rules) / GIB
    assert laid_out == pytest.approx(logged, rel=0.01)
    # The checkpoint's own size is 3-12% below: padding and kept scales are real memory.
    assert weight_bytes_per_rank(model, mxfp4, tensor, 1) / GIB < 0.97 * logged


def test_triton_mxfp4_experts_padded_for_hopper_in_0_17_to_0_20(catalog: Catalog) -> None:
    # llm-d-incubation/llm-d-planner accuracy/results/v0.19.0/logs (commit d3121e0), fit-set
    # row: gpt-oss-20b TP 2 on H100, "Using Triton backend", 7.01 GiB per rank.
    model = facts(catalog, "openai/gpt-oss-20b")
    mxfp4 = catalog.quantizations["mxfp4"]
    h100 = catalog.gpus["nvidia-h100-80gb"]

    def gib(version: str) -> float:
        return weight_bytes_per_rank(model, mxfp4, 2, 1, vllm_memory(version, h100)) / GIB

    assert gib("0.19.0") == pytest.approx(7.01, rel=0.015)
    # The vendored triton_kernels' Hopper swizzle pads each matrix to multiples of 64 bytes
    # from 0.17.0 to 0.20.0 only: 0.16.0 and 0.22.0 lay the experts out as 0.14.0 does.
    assert gib("0.16.0") == pytest.approx(gib("0.22.0"))
    assert gib("0.16.0") == pytest.approx(gib("0.14.0"))
    assert gib("0.20.0") == pytest.approx(gib("0.19.0"))
    assert gib("0.19.0") - gib("0.16.0") > 0.1
    # A log naming the Triton backend gets the release's layout.
    named = vllm_memory("0.19.0", h100, mxfp4_backend="triton")
    assert weight_bytes_per_rank(model, mxfp4, 2, 1, named) / GIB == pytest.approx(gib("0.19.0"))


def test_mxfp4_backend_follows_gpu_and_release(catalog: Catalog) -> None:
    def backend(gpu: str, version: str | None) -> str:
        return vllm_memory(version, catalog.gpus[gpu]).mxfp4.backend

    assert backend("nvidia-a100-80gb", "0.14.0") == "marlin"  # below SM 9.0
    assert backend("nvidia-l4", None) == "marlin"
    assert backend("nvidia-h100-80gb", "0.11.0") == "marlin"  # no vendored triton_kernels
    assert backend("nvidia-h100-80gb", "0.12.0") == "triton"
    assert backend("nvidia-b200-180gb", "0.11.0") == "flashinfer"
    assert backend("amd-mi300x-192gb", "0.11.2") == "triton"


def test_sampler_peak_follows_release_and_platform(catalog: Catalog) -> None:
    h100 = catalog.gpus["nvidia-h100-80gb"]
    # 14 bytes: FlashInfer (up to 0.11.0, again 0.24.0) or, from 0.17.0, Triton's in-place
    # top-k/top-p (vllm PR #33538); 38: PyTorch's sort (0.11.1 to 0.16.0).
    sorts = {"0.10.2": False, "0.11.0": False, "0.11.1": True, "0.14.0": True, "0.16.0": True}
    sorts |= {"0.17.0": False, "0.19.0": False, "0.24.0": False}
    for version, expected in sorts.items():
        assert vllm_memory(version, h100).sampler_bytes_per_logit == (38.0 if expected else 14.0)
    assert vllm_memory("0.11.0", catalog.gpus["amd-mi300x-192gb"]).sampler_bytes_per_logit == 38.0
    assert vllm_memory("0.19.0", catalog.gpus["amd-mi300x-192gb"]).sampler_bytes_per_logit == 14.0
    assert vllm_memory(None, h100, "v0").sampler_bytes_per_logit == 38.0  # V0: opt-in only
    assert vllm_memory("0.19.0", h100, flashinfer=False).sampler_bytes_per_logit == 14.0
    # The V2 model runner profiles its sampler without top-k/top-p: logits and an fp32 copy.
    assert vllm_memory("0.24.0", h100, model_type="llama").sampler_bytes_per_logit == 6.0
    assert vllm_memory("0.23.0", h100, model_type="llama").sampler_bytes_per_logit == 6.0
    assert vllm_memory("0.22.0", h100, model_type="llama").sampler_bytes_per_logit == 14.0
    assert vllm_memory("0.24.0", h100, model_type="gpt_oss").sampler_bytes_per_logit == 14.0


def test_triton_sampler_still_sorts_a_step_of_fewer_than_8_rows(catalog: Catalog) -> None:
    from llmdeploy.sizing.memory import activation_bytes

    model = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    rules = vllm_memory("0.19.0", catalog.gpus["nvidia-h100-80gb"])

    def sampler_bytes_per_logit(rows: int) -> float:
        # One token per row: the step's hidden states are all the rest of the sampler's peak.
        peak = activation_bytes(model, 1, rows, rows, rules)
        return (peak - rows * model.hidden_size * 2) / (rows * model.vocab_size)

    assert sampler_bytes_per_logit(7) == pytest.approx(38.0)
    assert sampler_bytes_per_logit(8) == pytest.approx(14.0)


def test_triton_sampler_matches_the_logged_0_19_peaks(catalog: Catalog) -> None:
    from llmdeploy.sizing.memory import activation_bytes

    # llm-d-incubation/llm-d-planner accuracy/results/v0.19.0/logs (commit d3121e0) of fit-set
    # rows, one H100, max_num_batched_tokens 8192, max_num_seqs 1024: "torch peak memory
    # increase" 2.21 GiB (Qwen2.5-7B, Qwen3-8B), 3.66 (Gemma-2-27B). The kernel's per-SM buffer
    # (132 fp32 vocabulary rows) and a little more are not modelled: within 8%, below.
    rules = vllm_memory("0.19.0", catalog.gpus["nvidia-h100-80gb"])
    logged = {
        "Qwen/Qwen2.5-7B-Instruct": 2.21,
        "Qwen/Qwen3-8B": 2.21,
        "google/gemma-2-27b-it": 3.66,
    }
    for name, peak in logged.items():
        modelled = activation_bytes(facts(catalog, name), 1, 8192, 1024, rules) / GIB
        assert 0.92 * peak < modelled < peak, name


def test_graph_estimate_in_the_profiling_from_0_18(catalog: Catalog) -> None:
    from llmdeploy.sizing.memory import non_torch_bytes

    h100, mi300x = catalog.gpus["nvidia-h100-80gb"], catalog.gpus["amd-mi300x-192gb"]
    # gpu_worker.py determine_available_memory: profile_cudagraph_memory inside
    # memory_profiling from 0.18.0, on CUDA; the V2 runner's estimate captures nothing.
    for version, inside in {
        "0.17.0": False,
        "0.18.0": True,
        "0.19.0": True,
        "0.24.0": True,
    }.items():
        assert vllm_memory(version, h100, model_type="qwen2").graph_profiling == inside
    assert not vllm_memory("0.19.0", mi300x).graph_profiling
    assert not vllm_memory("0.24.0", h100, model_type="llama").graph_profiling
    assert vllm_memory("0.22.0", h100, model_type="llama").graph_profiling
    grown = non_torch_bytes(1, 1, vllm_memory("0.19.0", h100)) - non_torch_bytes(
        1, 1, vllm_memory("0.17.0", h100)
    )
    assert grown / GIB == pytest.approx(memory.NON_TORCH_GRAPH_PROFILING_GIB)


def test_allreduce_fusion_workspace_follows_release_gpu_and_layout(catalog: Catalog) -> None:
    from llmdeploy.sizing.memory import allreduce_fusion, non_torch_bytes

    h100, h200, b200 = (
        catalog.gpus[g] for g in ("nvidia-h100-80gb", "nvidia-h200-141gb", "nvidia-b200-180gb")
    )
    a100, mi300x = catalog.gpus["nvidia-a100-80gb"], catalog.gpus["amd-mi300x-192gb"]
    # config/vllm.py enable_allreduce_rms_fusion: from 0.17.0, TP > 1, SM 9.0 / 10.x, CUDA.
    assert not allreduce_fusion(2, 1, vllm_memory("0.16.0", h100))
    for gpu in (h100, h200, b200):
        assert allreduce_fusion(2, 1, vllm_memory("0.17.0", gpu))
        assert allreduce_fusion(8, 1, vllm_memory(None, gpu))  # unknown: the newest read
    for gpu in (a100, mi300x):
        assert not allreduce_fusion(2, 1, vllm_memory("0.24.0", gpu))
    assert not allreduce_fusion(1, 1, vllm_memory("0.19.0", h100))
    assert not allreduce_fusion(2, 1, vllm_memory("0.19.0", h100, "v0"))
    # PP > 1 turns it off in 0.17.0 to 0.20.0 and 0.23.0, not in 0.22.0 nor 0.24.0.
    with_pipeline = {"0.19.0": False, "0.20.0": False, "0.22.0": True, "0.22.1": True}
    with_pipeline |= {"0.23.0": False, "0.24.0": True, "0.27.1": True}
    for version, expected in with_pipeline.items():
        assert allreduce_fusion(2, 2, vllm_memory(version, h100)) == expected, version
        assert allreduce_fusion(2, 1, vllm_memory(version, h100)), version
    # Booked as non-torch memory on top of the snapshot era's line (0.17.0: no graph estimate
    # in the profiling yet).
    with_fusion = non_torch_bytes(2, 1, vllm_memory("0.17.0", h100))
    without = non_torch_bytes(2, 1, vllm_memory("0.16.0", h100))
    assert (with_fusion - without) / GIB == pytest.approx(memory.NON_TORCH_ALLREDUCE_FUSION_GIB)
    assert memory.NON_TORCH_ALLREDUCE_FUSION_GIB > 1.0  # 0.19.0 logs: ~1.8 GiB above TP 1


def test_non_torch_memory_by_accounting_era(catalog: Catalog) -> None:
    from llmdeploy.sizing.memory import non_torch_bytes

    h100 = catalog.gpus["nvidia-h100-80gb"]
    since_start = non_torch_bytes(2, 1, vllm_memory("0.8.5", h100))
    snapshot = non_torch_bytes(2, 1, vllm_memory("0.11.0", h100))
    assert vllm_memory("0.8.5", h100).non_torch_since_start
    assert not vllm_memory("0.10.2", h100).non_torch_since_start
    # vllm#10511's 3.58 GiB at TP 2 against a few hundred MiB since the snapshot.
    assert since_start / GIB == pytest.approx(3.6, abs=0.05)
    assert snapshot / GIB < 0.5


def test_tensorrt_llm_keeps_the_mxfp4_checkpoints_layout(catalog: Catalog) -> None:
    from llmdeploy.sizing.engine_memory import engine_memory

    model = facts(catalog, "openai/gpt-oss-120b")
    mxfp4 = catalog.quantizations["mxfp4"]
    h100 = catalog.gpus["nvidia-h100-80gb"]
    rules = engine_memory("tensorrt-llm", "1.0.0", h100)
    assert weight_bytes_per_rank(model, mxfp4, 1, 1, rules) == pytest.approx(
        weight_bytes_per_rank(model, mxfp4, 1, 1)
    )


def test_cuda_graphs_inside_the_budget_from_0_20_on_cuda(catalog: Catalog) -> None:
    from llmdeploy.sizing.engine_memory import CUDA_GRAPH_GIB, CUDA_GRAPH_LOGGED_GIB, engine_memory

    h100, mi300x = catalog.gpus["nvidia-h100-80gb"], catalog.gpus["amd-mi300x-192gb"]
    # gpu_worker.py: subtracted while VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS is 1, the envs.py
    # default from the 0.20.0 wheel ("0" in 0.19.0); on CUDA.
    inside_from = {"0.14.0": False, "0.19.0": False, "0.20.0": True, "0.24.0": True}
    for version, inside in inside_from.items():
        assert vllm_memory(version, h100).cuda_graph_gib == (CUDA_GRAPH_GIB if inside else 0.0)
    assert vllm_memory(None, h100).cuda_graph_gib == CUDA_GRAPH_GIB  # unknown: the newest read
    assert vllm_memory(None, h100, "v0").cuda_graph_gib == 0.0
    assert vllm_memory("0.24.0", mi300x).cuda_graph_gib == 0.0  # ROCm skips the estimate
    assert engine_memory("tensorrt-llm", "1.3.0rc20", h100).cuda_graph_gib == 0.0
    # The deduction is the median of the cited logs, within their range.
    logged = CUDA_GRAPH_LOGGED_GIB.values()
    assert min(logged) < CUDA_GRAPH_GIB < max(logged)
    # 0.24.0 serves Llama, Mistral, Qwen3 (...) with the V2 model runner, which estimates none.
    for model_type, inside in {
        "llama": False,
        "qwen3": False,
        "qwen2": True,
        "gpt_oss": True,
    }.items():
        rules = vllm_memory("0.24.0", h100, model_type=model_type)
        assert rules.cuda_graph_gib == (CUDA_GRAPH_GIB if inside else 0.0)
    # The V2 runner's architectures by release (config/vllm.py DEFAULT_V2_MODEL_RUNNER_...).
    v2_from = {("qwen3", "0.22.0"), ("llama", "0.23.0"), ("deepseek_v2", "0.24.0")}
    for model_type, release in v2_from:
        assert vllm_memory(release, h100, model_type=model_type).cuda_graph_gib == 0.0
    for model_type, release in {("qwen3", "0.20.0"), ("llama", "0.22.0"), ("qwen2_moe", "0.23.0")}:
        assert vllm_memory(release, h100, model_type=model_type).cuda_graph_gib == CUDA_GRAPH_GIB

    def kv_gib(version: str) -> float:
        rules = vllm_memory(version, h100, flashinfer=True, model_type="qwen2")
        memory = on_one_gpu(catalog, h100, rules, batched=8192, model="Qwen/Qwen2.5-7B-Instruct")
        return memory.kv_cache_gib

    # Same sampler and non-torch era: the KV budget differs by the graphs and what their
    # estimate leaves outside torch (inside the profiling from 0.18.0).
    from llmdeploy.sizing.memory import NON_TORCH_GRAPH_PROFILING_GIB

    assert kv_gib("0.11.0") - kv_gib("0.24.0") == pytest.approx(
        CUDA_GRAPH_GIB + NON_TORCH_GRAPH_PROFILING_GIB
    )


def test_budget_starts_from_the_cited_cuda_visible_total(catalog: Catalog) -> None:
    l4, a10g = catalog.gpus["nvidia-l4"], catalog.gpus["nvidia-a10g"]
    # pytorch/pytorch#175666: vLLM on an L4 sees 22.05 GiB; GFD / nvidia-smi say 22.49.
    assert l4.cuda_visible_memory_gib == 22.05 and l4.memory_gib == 22.49
    budget = on_one_gpu(catalog, l4, vllm_memory("0.11.0", l4), batched=2048).budget_gib
    assert budget == pytest.approx(22.05 * 0.9)
    # Without a cited figure the catalog's memoryGiB stands.
    assert a10g.cuda_visible_memory_gib is None
    rules = vllm_memory("0.11.0", a10g)
    assert on_one_gpu(catalog, a10g, rules, batched=2048).budget_gib == pytest.approx(
        a10g.memory_gib * 0.9
    )
    # Every cited figure is at most the catalog's total (CUDA never shows more than the card).
    for gpu in catalog.gpus.values():
        assert gpu.visible_memory_gib <= gpu.memory_gib


def test_gpt_oss_120b_on_one_h100_is_refused_as_vllm_27508_logged(catalog: Catalog) -> None:
    # vllm-project/vllm issue #27508 (comment of 2025-10-31): gpt-oss-120b on one H100,
    # --gpu-memory-utilization 0.95 --max-num-batched-tokens 1024, model default context
    # 131072: "Available KV cache memory: 1.71 GiB", then refused. Its log lines
    # (gpu_worker.py:298, core.py:708, 699, 498) are the 0.11.0 wheel's. The stored thread
    # names neither sampler nor MoE kernel: a pip install (site-packages of a conda env) may
    # or may not have FlashInfer, an optional extra of the wheel (dennislee22's 0.10.1.1 runs,
    # from a user's site-packages, log "Using FlashInfer"), so the corpus row keeps the release
    # default and stays a missed refusal. PyTorch's sampler reproduces the log; FlashInfer's
    # would fit.
    h100 = catalog.gpus["nvidia-h100-80gb"]

    def memory(flashinfer: bool) -> MemoryBreakdown:
        return on_one_gpu(
            catalog,
            h100,
            vllm_memory("0.11.0", h100, flashinfer=flashinfer),
            model="openai/gpt-oss-120b",
            quantization="mxfp4",
            utilization=0.95,
            batched=1024,
            seqs=1024,  # the 0.11.0 default on a GPU of >= 70 GiB
            context=131_072,
        )

    sorting = memory(flashinfer=False)
    assert sorting.kv_cache_gib == pytest.approx(1.71, rel=0.25)
    assert sorting.max_concurrency < 1  # refused, as logged
    # The sampler is the difference: 1024 rows of 201,088 logits at 38 against 14 bytes.
    assert memory(flashinfer=True).kv_cache_gib - sorting.kv_cache_gib > 4
    assert memory(flashinfer=True).max_concurrency >= 1


def test_a_plan_names_the_cuda_graphs_its_release_books(catalog: Catalog) -> None:
    from llmdeploy.catalog import load_image_lock
    from llmdeploy.sizing import plan_deployment

    def plan(version: str, model: str = "Qwen/Qwen2.5-7B-Instruct") -> Plan:
        spec = make_spec(
            model,
            engine={"version": version},
            placement={"gpu": "nvidia-l4"},
            workload={"maxContextLength": 8192, "concurrency": 8},
        )
        return plan_deployment(spec, catalog, load_image_lock())

    old, new = plan("0.11.0"), plan("0.24.0")
    assert old.cuda_graph_gib_per_gpu is None
    assert new.cuda_graph_gib_per_gpu == pytest.approx(0.58)
    # Llama runs 0.24.0's V2 model runner: no graphs in the budget.
    assert plan("0.24.0", "meta-llama/Llama-3.1-8B-Instruct").cuda_graph_gib_per_gpu is None
    # The parts add up to the budget: L4's 22.05 GiB to CUDA x 0.9.
    parts = [
        new.weights_gib_per_gpu,
        new.activation_gib_per_gpu,
        new.non_torch_gib_per_gpu,
        new.cuda_graph_gib_per_gpu,
        new.kv_cache_gib_per_gpu,
    ]
    assert sum(p or 0.0 for p in parts) == pytest.approx(22.05 * 0.9, abs=0.03)
    assert old.kv_cache_gib_per_gpu and new.kv_cache_gib_per_gpu
    # The graphs, and what their estimate leaves outside torch (non-torch memory, from 0.18.0).
    graph_profiling = (new.non_torch_gib_per_gpu or 0) - (old.non_torch_gib_per_gpu or 0)
    assert graph_profiling == pytest.approx(memory.NON_TORCH_GRAPH_PROFILING_GIB, abs=0.01)
    assert old.kv_cache_gib_per_gpu - new.kv_cache_gib_per_gpu == pytest.approx(
        0.58 + graph_profiling, abs=0.01
    )


def test_tensorrt_llm_profiles_one_sampled_row_per_dummy_context_request(
    catalog: Catalog,
) -> None:
    """TensorRT-LLM's profiling serves prompts of min(max_num_tokens, max_seq_len - 1) tokens,
    one output token each (_util.py _create_dummy_context_requests): its peak does not grow
    with max_batch_size, which vLLM's sampler step does."""
    from llmdeploy.sizing.engine_memory import engine_memory

    assert memory.tensorrt_llm_profiling_requests(8192, 131072) == 1
    assert memory.tensorrt_llm_profiling_requests(23552, 157) == 151  # 23552 / 156, rounded up
    model = facts(catalog, "meta-llama/Llama-3.1-8B-Instruct")
    h100 = catalog.gpus["nvidia-h100-80gb"]
    rules = engine_memory("tensorrt-llm", "1.0.0", h100)

    def kv(seqs: int) -> float:
        return memory_breakdown(
            model,
            h100,
            catalog.quantizations["bf16"],
            tensor=1,
            pipeline=1,
            kv_dtype_bytes=2,
            gpu_memory_utilization=0.9,
            max_num_batched_tokens=2048,
            max_num_seqs=seqs,
            max_context_length=131072,
            block_size=32,
            rules=rules,
            budget_of_free_memory=True,
        ).kv_cache_gib

    assert kv(2048) == kv(1)
    vllm = vllm_memory("0.11.0", h100)
    peak = memory.activation_bytes(model, 1, 2048, 2048, vllm)
    assert peak > memory.activation_bytes(model, 1, 2048, 1, vllm)
