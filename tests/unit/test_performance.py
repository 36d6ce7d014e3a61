"""The latency model at low and high load, and under the load's shapes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from llmdeploy.catalog import Catalog, Gpu, QuantFormat
from llmdeploy.sizing import moe_kernels, performance, resolve_model
from llmdeploy.sizing.engine_memory import vllm_memory
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.performance import Performance, estimate_performance

from .conftest import make_spec, qwen3_32b_steps


def estimate(
    catalog: Catalog,
    name: str,
    concurrency: int = 1,
    quantization: str = "bf16",
    gpu: str = "nvidia-h100-80gb",
    **kwargs: Any,
) -> Performance:
    """`name` in bf16 on H100s, TP 1 and 1024 tokens in, 128 out unless `kwargs` say."""
    layout: dict[str, Any] = {
        "tensor": 1,
        "pipeline": 1,
        "kv_dtype_bytes": 2,
        "input_tokens": 1024,
        "output_tokens": 128,
    }
    return estimate_performance(
        resolve_model(make_spec(name).model, catalog),
        catalog.gpus[gpu],
        catalog.quantizations[quantization],
        concurrency=concurrency,
        **{**layout, **kwargs},
    )


def qwen3_32b(catalog: Catalog, concurrency: int, **kwargs: Any) -> Performance:
    """Qwen3-32B at TP 2, 1024 tokens in and 128 out (AIConfigurator's runs)."""
    return estimate(catalog, "Qwen/Qwen3-32B", concurrency, **{"tensor": 2, **kwargs})


def test_a_lone_request_pays_no_queue_no_step_wait_and_no_other_streams(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    lone = qwen3_32b(catalog, 1).ttft_s
    host = performance.TTFT_OVERHEAD_S
    # Neither the other streams' tokens nor their prefills apply.
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_PER_STREAMED_TOKEN_S", 1.0)
    assert qwen3_32b(catalog, 1).ttft_s == pytest.approx(lone)
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    prefill = qwen3_32b(catalog, 1).ttft_s
    assert prefill == pytest.approx(lone - host)
    # What is left is the prefill: compute-bound at 1024 tokens, so it scales with 1 / the
    # compute efficiency (all but the all-reduces and the per-layer step cost).
    efficiency = performance.COMPUTE_EFFICIENCY_BY_CHIP["GH100"]
    monkeypatch.setitem(performance.COMPUTE_EFFICIENCY_BY_CHIP, "GH100", efficiency / 2)
    assert 1.8 * prefill < qwen3_32b(catalog, 1).ttft_s < 2 * prefill


def test_ttft_grows_with_the_streams_a_request_shares_the_replica_with(catalog: Catalog) -> None:
    ttfts = [qwen3_32b(catalog, c).ttft_s for c in (1, 2, 8, 32)]
    assert ttfts == sorted(ttfts)
    # At load a new request first waits for the running step.
    two = qwen3_32b(catalog, 2)
    assert two.ttft_s - ttfts[0] > two.tpot_s / 2


def test_a_burst_queues_behind_half_the_bursts_prefills(catalog: Catalog) -> None:
    """All requests sent at once: the median request waits for the prompts sent before it; a
    burst of one is a lone request."""
    assert qwen3_32b(catalog, 1, burst=True) == qwen3_32b(catalog, 1)
    steady, burst = qwen3_32b(catalog, 33), qwen3_32b(catalog, 33, burst=True)
    lone_prefill = qwen3_32b(catalog, 1).ttft_s - performance.TTFT_OVERHEAD_S
    # 16 prompts ahead, each at least a lone prefill's compute (packed into shared steps).
    assert burst.ttft_s > 14 * lone_prefill > steady.ttft_s
    # Its decode runs through the prefills of the other half only.
    assert burst.tpot_s < steady.tpot_s


def test_a_bursts_median_request_waits_for_the_whole_step_that_completes_its_prompt(
    catalog: Catalog,
) -> None:
    """The scheduler fills a step with every queued prompt up to the token budget and samples
    the first tokens at its end: the median request of a burst whose prompts all fit in one
    step gets its token with the last one, and one whose prompt ends in a later step with the
    prompts the scheduler packs into that step. No request of the burst decodes in its first
    step, so that step's budget is whole."""

    def ttft(concurrency: int) -> float:
        return qwen3_32b(catalog, concurrency, burst=True, max_num_batched_tokens=8192).ttft_s

    steps = qwen3_32b_steps(catalog)

    def host(concurrency: int) -> float:
        decode_s = steps.decode(concurrency).step_s
        return performance.request_host_s(concurrency - 1, 0.0, decode_s)

    # 1024-token prompts, 8192-token steps: seven, and eight, prefill in one step, every
    # request's token at its end.
    assert ttft(7) == pytest.approx(host(7) + steps.prefill_s(7 * 1024, 8192))
    assert ttft(8) == pytest.approx(host(8) + steps.prefill_s(8 * 1024, 8192))
    # Fifteen: the median (8th) prompt ends with the first step.
    assert ttft(15) == pytest.approx(host(15) + steps.prefill_s(8192, 8192))
    # Thirty-one: the median (16th) ends in the third step. The eight prompts done in the first
    # decode in the second (8184 prompt tokens), fifteen in the third (8177): 24553 tokens.
    tokens = 8192 + 8184 + 8177
    assert ttft(31) == pytest.approx(host(31) + steps.prefill_s(tokens, 8192, steps=3))
    assert ttft(7) < ttft(15) < ttft(31) < host(31) + steps.prefill_s(31 * 1024, 8192)


def test_a_bursts_median_request_waits_for_whole_steps_whatever_the_prompt_length(
    catalog: Catalog,
) -> None:
    """2042-token prompts, ten streams, 8192-token steps: the median (5.5 prompts, 11,231
    tokens) ends in the second step, so it waits for exactly two steps' tokens (a count of
    prompts times their length must not round up into a third step): the first step's 8192
    and the second's 8188 (the four prompts done in the first decode)."""
    steps = dataclasses.replace(qwen3_32b_steps(catalog), input_tokens=2042)
    burst = qwen3_32b(catalog, 10, burst=True, input_tokens=2042, max_num_batched_tokens=8192)
    host = performance.request_host_s(9, 0.0, steps.decode(10).step_s)
    assert burst.ttft_s == pytest.approx(host + steps.prefill_s(8192 + 8188, 8192, steps=2))


def test_a_bursts_steps_take_the_budget_the_decodes_leave() -> None:
    """vLLM V1's scheduler gives the running requests their tokens first (one to each that
    decodes), then the waiting prompts the rest: a burst's first step has the whole budget,
    and each later one the budget less one token per prompt completed before it; under
    pipeline parallelism a prompt completed decodes only once its batch has come back,
    `pipeline` steps later."""
    prefill = performance.burst_prefill
    # 31 prompts of 1024 tokens, 8192-token steps: 8192, then 8184 (8 done), 8177 (15), and
    # the last 7191 tokens within 8169 (23 done).
    assert prefill(31, 1024, 8192) == (4, 31 * 1024)
    assert prefill(31, 1024, 8192, prompts=23) == (3, 8192 + 8184 + 8177)
    assert prefill(31, 1024, 8192, prompts=16) == (3, 24553)
    assert prefill(31, 1024, 8192, prompts=15.99) == (2, 16376)
    # On two stages the eight prompts of the first step decode from the third: the second
    # step's budget is whole.
    assert prefill(31, 1024, 8192, pipeline=2, prompts=16) == (2, 16384)
    assert prefill(31, 1024, 8192, pipeline=2, prompts=23) == (3, 16384 + 8184)
    # And then once every two steps: in the fifth step the eight of the first step and the
    # seven completed in the third decode (15 tokens), not the 23 completed by the third.
    assert prefill(40, 1024, 8192, pipeline=2, prompts=39) == (5, 16384 + 2 * 8184 + 8177)
    # Prompts longer than a step: 2048-token steps until the first prompt is done in the fifth,
    # then one token less from the sixth.
    assert prefill(5, 10000, 2048, prompts=1) == (5, 10240)
    assert prefill(5, 10000, 2048, prompts=1.2) == (6, 10240 + 2047)


def test_a_burst_counts_only_the_prompt_tokens_prefilled_after_its_median_first_token() -> None:
    """The step that completes the median request's prompt takes the prompts behind it up to
    the budget, and gives their first tokens with it: only the tokens left beyond that step
    are prefilled while the median request decodes. Never more than half of the others."""
    after = performance.burst_prefills_after_first_token
    assert after(7, 1024, 8192) == 0.0
    assert after(8, 1024, 8192) == 0.0
    # 15 prompts of 1024 tokens: the median's step (the first) holds eight; seven come after.
    assert after(15, 1024, 8192) == 7.0
    # 31: the median (16th) ends in the third step; 31 x 1024 - 24553 tokens come after.
    assert after(31, 1024, 8192) == pytest.approx((31 * 1024 - 24553) / 1024)
    # 10 prompts of 2042 tokens: two steps to the median, 20420 - 16380 tokens left.
    assert after(10, 2042, 8192) == pytest.approx((20420 - 16380) / 2042)
    # Prompts longer than a step: at most half of the others, as before any packing. Four
    # steps of 2048 and 10240 by the fifth; 2047 a step from the sixth, 2046 from the
    # eleventh (two prompts done): the third prompt ends in the fifteenth, at 30705.
    assert after(5, 10000, 2048) == pytest.approx((50000 - 30705) / 10000)
    for batch, tokens, budget in ((5, 10000, 2048), (33, 1024, 8192), (50, 1024, 2048)):
        for pipeline in (1, 2, 4):
            assert 0.0 <= after(batch, tokens, budget, pipeline) <= (batch - 1) / 2
    # The TTFT and the TPOT read one rule.
    steps, done = performance.burst_to_median(31, 1024, 8192)
    assert steps == 3
    assert after(31, 1024, 8192) == (31 * 1024 - done) / 1024


def test_a_burst_that_fits_one_step_decodes_without_the_others_prefills(
    catalog: Catalog,
) -> None:
    """Eight 1024-token prompts fit one 8192-token step: every request gets its first token
    at the end of that step and then decodes with no prefill in its steps, so its TPOT is the
    decode step's. Thirty-one: the median decodes through the 7.02 prompts' tokens left after
    its step, where a closed loop's stream sees every other stream's prefill (30)."""
    steps = qwen3_32b_steps(catalog)
    burst = qwen3_32b(catalog, 8, burst=True, max_num_batched_tokens=8192)
    assert burst.tpot_s == pytest.approx(steps.decode(8).step_s)
    decode_s = steps.decode(31).step_s
    burst = qwen3_32b(catalog, 31, burst=True, max_num_batched_tokens=8192)
    steady = qwen3_32b(catalog, 31, max_num_batched_tokens=8192)
    after = performance.burst_prefills_after_first_token(31, 1024, 8192)
    assert (burst.tpot_s - decode_s) == pytest.approx((steady.tpot_s - decode_s) * after / 30)


def test_a_long_prompt_is_prefilled_in_chunks_of_max_num_batched_tokens(
    catalog: Catalog,
) -> None:
    """Each chunk reads the weights again and pays the step's costs: chunks so short that a
    step is bound by its weight read make the prefill slower."""
    whole = qwen3_32b(catalog, 1, input_tokens=8192, max_num_batched_tokens=8192).ttft_s
    chunked = qwen3_32b(catalog, 1, input_tokens=8192, max_num_batched_tokens=64).ttft_s
    assert chunked > 2 * whole
    # A prompt within the budget is one step either way.
    assert qwen3_32b(catalog, 1, max_num_batched_tokens=2048) == qwen3_32b(catalog, 1)


def test_a_moe_prefill_reads_every_expert_a_decode_step_only_those_it_routes_to(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Qwen3-30B-A3B (128 experts, 8 active): a lone decode token touches 8 experts, a
    1024-token prompt all of them, so the prefill's weight read is the whole model's."""
    monkeypatch.setattr(performance, "PER_LAYER_OVERHEAD_S", 0.0)
    monkeypatch.setattr(performance, "MOE_LAYER_OVERHEAD_S", 0.0)
    monkeypatch.setattr(performance, "TRITON_MOE_LAYER_OVERHEAD_S", 0.0)
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    # With compute free, both phases are their weight reads.
    monkeypatch.setitem(performance.COMPUTE_EFFICIENCY_BY_CHIP, "GH100", 1e9)
    perf = estimate(catalog, "Qwen/Qwen3-30B-A3B")
    assert perf.ttft_s > 5 * perf.tpot_s


def test_moe_layers_pay_their_own_step_cost(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tpot(name: str) -> float:
        return estimate(catalog, name, input_tokens=128).tpot_s

    dense, moe = tpot("Qwen/Qwen3-8B"), tpot("Qwen/Qwen3-30B-A3B")
    extra = performance.MOE_LAYER_OVERHEAD_S + 1e-3
    monkeypatch.setattr(performance, "MOE_LAYER_OVERHEAD_S", extra)
    assert tpot("Qwen/Qwen3-8B") == dense
    assert tpot("Qwen/Qwen3-30B-A3B") == pytest.approx(moe + 48 * 1e-3)  # 48 MoE layers


def test_16_bit_experts_pay_the_triton_fused_moe_call_quantized_ones_do_not(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM runs unquantized experts through its Triton fused_moe kernel, whose call costs a
    fixed time per MoE layer; FP8 and MXFP4 experts run other kernels, dense layers none, and
    TensorRT-LLM its own MoE kernels."""

    def tpot(name: str, quantization: str = "bf16", engine: str = "vllm") -> float:
        return estimate(
            catalog, name, quantization=quantization, input_tokens=128, engine=engine
        ).tpot_s

    cases = [
        ("Qwen/Qwen3-30B-A3B", "bf16"),
        ("Qwen/Qwen3-30B-A3B", "fp8"),
        ("openai/gpt-oss-120b", "mxfp4"),
        ("Qwen/Qwen3-8B", "bf16"),
        ("Qwen/Qwen3-30B-A3B", "bf16", "tensorrt-llm"),
    ]
    before = [tpot(*case) for case in cases]
    monkeypatch.setattr(
        performance, "TRITON_MOE_LAYER_OVERHEAD_S", performance.TRITON_MOE_LAYER_OVERHEAD_S + 1e-3
    )
    after = [tpot(*case) for case in cases]
    assert after[0] == pytest.approx(before[0] + 48 * 1e-3)  # 48 MoE layers
    assert after[1:] == before[1:]


def test_a_lone_request_pays_no_load_host_time(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host time a request pays under load beyond a lone request's applies from the first
    other stream on, in a closed loop and in a burst, and never to a lone request."""
    lone, two = qwen3_32b(catalog, 1), qwen3_32b(catalog, 2)
    burst = qwen3_32b(catalog, 8, burst=True)
    monkeypatch.setattr(performance, "TTFT_LOAD_OVERHEAD_S", performance.TTFT_LOAD_OVERHEAD_S + 1)
    assert qwen3_32b(catalog, 1) == lone
    # At least the added second: more where tokens streamed meanwhile cost host time too.
    assert qwen3_32b(catalog, 2).ttft_s >= two.ttft_s + 1 - 1e-9
    assert qwen3_32b(catalog, 8, burst=True).ttft_s >= burst.ttft_s + 1 - 1e-9


@pytest.mark.parametrize(
    ("version", "chat", "completions"),
    [
        ("0.8.2", performance.CHAT_TEMPLATE_PARSE_S, 0.0),  # the template walked per request
        ("0.9.2", 0.0, 0.0),  # its walk cached (vllm PR #20065), no microbatching yet
        ("0.10.0", performance.TOKENIZER_BATCH_WAIT_S, performance.TOKENIZER_BATCH_WAIT_S),
        (
            "0.11.0",
            performance.TOKENIZER_BATCH_WAIT_S + performance.CHAT_TEMPLATE_PARSE_S,
            performance.TOKENIZER_BATCH_WAIT_S,
        ),
        ("0.11.1", performance.TOKENIZER_BATCH_WAIT_S, performance.TOKENIZER_BATCH_WAIT_S),
        ("0.23.0", performance.TOKENIZER_BATCH_WAIT_S, performance.TOKENIZER_BATCH_WAIT_S),
        ("0.24.0", 0.0, 0.0),
    ],
)
def test_the_front_end_work_follows_the_release_and_the_endpoint(
    version: str, chat: float, completions: float
) -> None:
    assert performance.frontend_s("vllm", version, "chat") == pytest.approx(chat)
    assert performance.frontend_s("vllm", version, "completions") == pytest.approx(completions)
    assert performance.frontend_s("vllm", version) == pytest.approx(chat)  # chat when unknown


def test_the_front_end_work_is_vllm_s_and_adds_to_a_lone_request_s_ttft(
    catalog: Catalog,
) -> None:
    assert performance.frontend_s("tensorrt-llm", "1.2.0rc1") == 0.0
    assert performance.frontend_s("vllm", None) == 0.0
    lone = qwen3_32b(catalog, 1)
    slower = qwen3_32b(catalog, 1, request_frontend_s=0.009)
    assert slower.ttft_s == pytest.approx(lone.ttft_s + 0.009)
    assert slower.tpot_s == lone.tpot_s


def test_a_prefill_runs_the_lm_head_once_per_prompt_a_decode_step_once_per_token(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Doubling the vocabulary (and the parameters with it) leaves a compute-bound prefill all
    but unchanged, the embedding being a lookup and the logits computed for the last position
    only; a compute-bound decode batch pays the lm_head for every sequence."""
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    gpu, fmt = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["bf16"]
    model = resolve_model(make_spec("Qwen/Qwen2.5-0.5B-Instruct").model, catalog)
    lm_head = model.vocab_size * model.hidden_size
    wide = dataclasses.replace(
        model,
        vocab_size=2 * model.vocab_size,
        active_parameters=model.active_parameters + lm_head,  # tied: one copy more
    )

    def prefill_s(m: Any) -> float:
        layout = {"tensor": 1, "pipeline": 1, "kv_dtype_bytes": 2, "concurrency": 1}
        return estimate_performance(
            m, gpu, fmt, **layout, input_tokens=8192, output_tokens=128
        ).ttft_s

    assert prefill_s(wide) < 1.01 * prefill_s(model)
    # A decode step of 512 sequences (no attention: empty context) pays the lm_head 512 times.
    body = model.active_parameters - model.embedding_parameters
    rates = performance._gemm_tflops(gpu, fmt)
    narrow_s = performance._flops_s(model, gpu, fmt, 1, 512, 0, 1.0, 512, gemm_tflops=rates)
    wide_s = performance._flops_s(wide, gpu, fmt, 1, 512, 0, 1.0, 512, gemm_tflops=rates)
    assert wide_s / narrow_s == pytest.approx((body + 2 * lm_head) / (body + lm_head))


def test_an_fp8_prefill_is_at_most_1_4x_a_bf16_one(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's FP8 GEMMs run about 1.4x its BF16 ones, not the datasheet's 2x, and attention
    stays BF16: a long, compute-bound prompt gains less than 1.4x."""
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    bf16 = estimate(catalog, "meta-llama/Llama-3.1-8B-Instruct", input_tokens=8192).ttft_s
    fp8 = estimate(
        catalog, "meta-llama/Llama-3.1-8B-Instruct", quantization="fp8", input_tokens=8192
    ).ttft_s
    assert 1.2 < bf16 / fp8 < performance.FP8_GEMM_SPEEDUP


def gpt_oss(catalog: Catalog, gpu: str, **kwargs: Any) -> Performance:
    """gpt-oss-120b's MXFP4 experts at TP 2, 4 streams, 1024 tokens in and 1024 out."""
    layout: dict[str, Any] = {"tensor": 2, "output_tokens": 1024}
    return estimate(catalog, "openai/gpt-oss-120b", 4, "mxfp4", gpu, **{**layout, **kwargs})


def test_w4a16_decode_is_bound_by_dequantization_where_it_exceeds_the_reads(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Hopper, MXFP4 experts go through a W4A16 GEMM: when its conversion binds, H100 and
    H200 (same SMs, different HBM) differ only by the 16-bit reads; Blackwell's FP4 tensor
    cores take the weights as they are, so the conversion costs it nothing."""
    b200 = gpt_oss(catalog, "nvidia-b200-180gb").tpot_s
    monkeypatch.setattr(performance, "WEIGHT_ONLY_DEQUANT_FLOP", 0.0)
    h100, h200 = (gpt_oss(catalog, g).tpot_s for g in ("nvidia-h100-80gb", "nvidia-h200-141gb"))
    monkeypatch.setattr(performance, "WEIGHT_ONLY_DEQUANT_FLOP", 5000.0)
    slow100, slow200 = (
        gpt_oss(catalog, g).tpot_s for g in ("nvidia-h100-80gb", "nvidia-h200-141gb")
    )
    assert slow100 > 2 * h100 and slow200 > 2 * h200
    assert slow100 - slow200 < h100 - h200
    assert gpt_oss(catalog, "nvidia-b200-180gb").tpot_s == pytest.approx(b200)


def test_w4a16_dequantization_is_counted_once_across_pipeline_stages(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stage converts its own layers' weights: a decode step of four, through every
    stage, converts the model's whatever the pipeline depth."""
    model = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    gpu, fmt = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["mxfp4"]

    def step_s(pipeline: int) -> float:
        return performance.StepModel(model, gpu, fmt, 2, pipeline, 2, 1024, 1024).decode(4).step_s

    monkeypatch.setattr(performance, "WEIGHT_ONLY_DEQUANT_FLOP", 0.0)
    base = {p: step_s(p) for p in (1, 2)}
    monkeypatch.setattr(performance, "WEIGHT_ONLY_DEQUANT_FLOP", 5000.0)
    extra = {p: step_s(p) - base[p] for p in (1, 2)}
    assert extra[1] > base[1]
    assert extra[2] == pytest.approx(extra[1], rel=0.02)


def test_an_mla_layer_pays_the_mla_decode_cost_a_gqa_layer_does_not(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tpot(name: str) -> float:
        return estimate(catalog, name, 4, tensor=8, input_tokens=1024).tpot_s

    deepseek, qwen = tpot("deepseek-ai/DeepSeek-R1"), tpot("Qwen/Qwen3-32B")
    layers = resolve_model(make_spec("deepseek-ai/DeepSeek-R1").model, catalog).layers
    monkeypatch.setattr(
        performance, "MLA_LAYER_OVERHEAD_S", performance.MLA_LAYER_OVERHEAD_S + 1e-3
    )
    assert tpot("deepseek-ai/DeepSeek-R1") == pytest.approx(deepseek + layers * 1e-3, rel=0.01)
    assert tpot("Qwen/Qwen3-32B") == pytest.approx(qwen)


def test_int4_decode_is_bound_by_its_reads_on_the_gpus_marlin_was_written_for(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marlin reads 4-bit weights at close to the ideal rate on Ampere and Ada: the
    dequantization cost moves an AWQ model's decode on an H100, not on an A100."""

    def tpot(gpu: str) -> float:
        return estimate(catalog, "meta-llama/Llama-3.1-8B-Instruct", 4, "int4-awq", gpu).tpot_s

    a100, h100 = tpot("nvidia-a100-80gb"), tpot("nvidia-h100-80gb")
    monkeypatch.setattr(performance, "WEIGHT_ONLY_DEQUANT_FLOP", 5000.0)
    assert tpot("nvidia-a100-80gb") == pytest.approx(a100)
    assert tpot("nvidia-h100-80gb") > 2 * h100


def marlin_prefill_s(
    catalog: Catalog,
    gpu: str,
    tokens: float,
    name: str = "openai/gpt-oss-120b",
    quantization: str = "mxfp4",
) -> float:
    """What Marlin's conversion adds to one prefill step of `tokens` tokens at TP 2."""
    model = resolve_model(make_spec(name).model, catalog)
    fmt = catalog.quantizations[quantization]
    return performance._marlin_prefill_s(model, catalog.gpus[gpu], fmt, 2, tokens)


def test_a_marlin_moe_prefill_converts_each_expert_once_per_64_tokens_routed_to_it(
    catalog: Catalog,
) -> None:
    """gpt-oss-120b routes each token to 4 of 128 experts: up to 2048 tokens per step (64 per
    expert) the step converts every expert once, what a decode step touching them all pays;
    beyond, once more per further 64 tokens routed to each, so 8192 tokens convert 4 times."""
    model = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    gpu = catalog.gpus["nvidia-h100-80gb"]
    once = (
        model.routed_expert_parameters
        / 2
        * performance.WEIGHT_ONLY_DEQUANT_FLOP
        / (gpu.compute_tflops("bf16") * 1e12)
    )
    assert marlin_prefill_s(catalog, gpu.id, 2048) == pytest.approx(once, rel=0.01)
    assert marlin_prefill_s(catalog, gpu.id, 1024) == pytest.approx(once, rel=0.01)
    assert marlin_prefill_s(catalog, gpu.id, 8192) == pytest.approx(4 * once, rel=0.01)
    # A few tokens touch few experts, and convert only those.
    assert marlin_prefill_s(catalog, gpu.id, 4) < 0.2 * once
    # And the conversion is in the prefill of a long prompt on Hopper.
    ttft = [gpt_oss(catalog, gpu.id, input_tokens=8192).ttft_s]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(performance, "MARLIN_BLOCK_TOKENS", 32)
        ttft.append(gpt_oss(catalog, gpu.id, input_tokens=8192).ttft_s)
    assert ttft[1] > ttft[0] + marlin_prefill_s(catalog, gpu.id, 8192)


def test_the_marlin_prefill_cost_is_hopper_s_and_marlin_s_formats_only(catalog: Catalog) -> None:
    """Blackwell's FP4 tensor cores take MXFP4 as it is and Marlin runs at close to its reads
    on Ampere: neither pays it. On Hopper, AWQ's dense linears run Marlin and pay it once per
    64 tokens; symmetric GPTQ's run Machete first and pay nothing."""
    assert marlin_prefill_s(catalog, "nvidia-h200-141gb", 8192) > 0
    assert marlin_prefill_s(catalog, "nvidia-b200-180gb", 8192) == 0
    assert marlin_prefill_s(catalog, "nvidia-a100-80gb", 8192) == 0
    llama = "meta-llama/Llama-3.1-8B-Instruct"

    def dense(gpu: str, tokens: float, quantization: str = "int4-awq") -> float:
        return marlin_prefill_s(catalog, gpu, tokens, llama, quantization)

    assert dense("nvidia-h100-80gb", 8192) == pytest.approx(128 * dense("nvidia-h100-80gb", 64))
    assert dense("nvidia-h100-80gb", 16) == pytest.approx(dense("nvidia-h100-80gb", 64))
    assert dense("nvidia-a100-80gb", 8192) == 0
    assert dense("nvidia-h100-80gb", 8192, "int4-gptq") == 0


def test_gpus_of_one_chip_share_the_compute_efficiency(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The A100s are GA100, the A10G GA102 (both Ampere): changing GA100's compute efficiency
    moves both A100s' prefill and not the A10G's; changing one SKU's bandwidth efficiency
    moves its decode only."""
    model = resolve_model(make_spec("Qwen/Qwen3-32B").model, catalog)

    def steps(gpu: str) -> performance.StepModel:
        return performance.StepModel(
            model, catalog.gpus[gpu], catalog.quantizations["bf16"], 1, 1, 2, 8192, 128
        )

    gpus = ("nvidia-a100-80gb", "nvidia-a100-40gb", "nvidia-a10g")
    assert {catalog.gpus[g].architecture for g in gpus} == {"ampere"}
    prefill = [steps(g).prefill_s(8192, 8192) for g in gpus]
    decode = [steps(g).decode(8).step_s for g in gpus]
    monkeypatch.setitem(performance.COMPUTE_EFFICIENCY_BY_CHIP, "GA100", 0.1)
    monkeypatch.setitem(performance.BANDWIDTH_EFFICIENCY_BY_GPU, "nvidia-a100-80gb", 0.3)
    after = [steps(g).prefill_s(8192, 8192) for g in gpus]
    assert after[0] > 2 * prefill[0] and after[1] > 2 * prefill[1] and after[2] == prefill[2]
    assert steps(gpus[0]).decode(8).step_s > decode[0]
    assert [steps(g).decode(8).step_s for g in gpus[1:]] == decode[1:]


def test_a_prefill_step_reads_the_routed_experts_its_tokens_route_to(catalog: Catalog) -> None:
    """One rank's read of the touched experts: all of them at prefill sizes, 1 - (1 - 8/128)^4
    of them for four tokens; tensor parallelism splits it, pipeline stages run one after
    another (so it does not shrink with them); none for a dense model, and none for MXFP4 on
    Hopper, whose Marlin conversion is charged instead; 4-bit experts off Hopper read theirs."""
    qwen = resolve_model(make_spec("Qwen/Qwen3-30B-A3B").model, catalog)  # 128 experts, top 8
    h100, b200, a100 = (
        catalog.gpus[g] for g in ("nvidia-h100-80gb", "nvidia-b200-180gb", "nvidia-a100-80gb")
    )
    bf16, mxfp4, awq = (catalog.quantizations[q] for q in ("bf16", "mxfp4", "int4-awq"))

    def read(model: ModelFacts, gpu: Gpu, fmt: QuantFormat, tensor: int, tokens: float) -> float:
        return performance._expert_read_s(model, gpu, fmt, tensor, tokens, 2e12)

    whole = qwen.routed_expert_parameters * 2 / 2e12
    assert read(qwen, h100, bf16, 1, 8192) == pytest.approx(whole)
    assert read(qwen, h100, bf16, 1, 4) == pytest.approx(whole * (1 - (1 - 8 / 128) ** 4))
    assert read(qwen, h100, bf16, 2, 8192) == pytest.approx(whole / 2)
    dense = resolve_model(make_spec("Qwen/Qwen3-8B").model, catalog)
    assert read(dense, h100, bf16, 1, 8192) == 0.0
    gpt_oss = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    assert read(gpt_oss, h100, mxfp4, 1, 8192) == 0.0
    assert read(gpt_oss, b200, mxfp4, 1, 8192) > 0.0
    assert read(qwen, a100, awq, 1, 8192) == pytest.approx(
        qwen.routed_expert_parameters * awq.weight_bytes / 2e12
    )


def test_a_moe_prefill_step_adds_its_expert_reads_to_its_math(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compute-bound 8000-token prefill of Qwen3-30B-A3B in one step takes its FLOPs' time
    plus one read of every routed expert (the grouped GEMM does not hide it), at TP 1 and
    with two pipeline stages alike."""
    monkeypatch.setattr(performance, "TTFT_OVERHEAD_S", 0.0)
    qwen = resolve_model(make_spec("Qwen/Qwen3-30B-A3B").model, catalog)
    gpu = catalog.gpus["nvidia-h100-80gb"]
    bandwidth = gpu.bandwidth_gbps * 1e9 * performance.BANDWIDTH_EFFICIENCY_BY_GPU[gpu.id]
    expert_read_s = qwen.routed_expert_parameters * 2 / bandwidth
    read = performance._expert_read_s
    for pipeline in (1, 2):
        steps = performance.StepModel(
            qwen, gpu, catalog.quantizations["bf16"], 1, pipeline, 2, 8000, 128
        )
        grouped = steps.prefill_s(8000, 8192)
        monkeypatch.setattr(performance, "_expert_read_s", lambda *args: 0.0)
        assert grouped - steps.prefill_s(8000, 8192) == pytest.approx(expert_read_s, rel=1e-6)
        monkeypatch.setattr(performance, "_expert_read_s", read)


# vLLM PR #13932's DeepGemm columns (benchmark_moe.py, DeepSeek-V3's experts on one H100, us):
# -tp splits each of the 256 experts' N=4096 that many ways.
PR_13932_DEEPGEMM_US = {
    1: {128: 6355.22, 256: 6599.51, 512: 7017.80, 1024: 7850.04, 1536: 8691.74, 2048: 9545.87},
    2: {128: 3745.24, 256: 3917.15, 512: 4270.21, 1024: 4874.43, 1536: 5559.64, 2048: 6217.40},
    4: {128: 2529.50, 256: 2669.84, 512: 3000.99, 1024: 3575.18, 1536: 4111.26, 2048: 4699.03},
    8: {128: 1936.17, 256: 2051.67, 512: 2331.06, 1024: 2886.08, 1536: 3423.49, 2048: 3974.65},
}


@pytest.mark.parametrize("split", sorted(PR_13932_DEEPGEMM_US))
def test_the_grouped_fp8_shares_are_the_line_through_the_cited_kernel_table(split: int) -> None:
    """GROUPED_FP8_READ_SHARE and GROUPED_FP8_MATH_SHARE for each expert split come from vLLM
    PR #13932's DeepGemm column of that -tp: a line through its 128- and 2048-token times,
    which its other times sit on too; the slope is the math of a token's 8 expert slices, the
    intercept one read of the rank's 1/split of the FP8 experts."""
    table_us = PR_13932_DEEPGEMM_US[split]
    per_token_us = (table_us[2048] - table_us[128]) / (2048 - 128)
    fixed_us = table_us[128] - 128 * per_token_us
    for tokens, measured in table_us.items():
        assert fixed_us + tokens * per_token_us == pytest.approx(measured, rel=0.013)
    if split == 1:  # the 3072-token time of the whole experts' column too
        assert fixed_us + 3072 * per_token_us == pytest.approx(11252.75, rel=0.004)
    expert = 3 * 7168 * 2048  # gate, up and down projections of one expert
    flop_per_token = 2 * 8 * expert / split
    read_bytes = 256 * expert / split  # FP8: one byte a weight
    h100_fp8_flops, h100_bandwidth = 1979e12, 3350e9
    math_share = flop_per_token / (per_token_us * 1e-6) / h100_fp8_flops
    read_share = read_bytes / (fixed_us * 1e-6) / h100_bandwidth
    assert pytest.approx(math_share, rel=0.025) == performance.GROUPED_FP8_MATH_SHARE[split]
    assert pytest.approx(read_share, rel=0.025) == performance.GROUPED_FP8_READ_SHARE[split]


# The same PR's Triton columns (vLLM's fused_moe, w8a8 with 128x128 block scales), us.
PR_13932_TRITON_US = {
    1: {
        128: 12480.49,
        256: 12782.98,
        512: 13017.54,
        1024: 13322.31,
        1536: 13777.98,
        2048: 19839.38,
    },
    2: {128: 6025.39, 256: 6164.44, 512: 6631.64, 1024: 6800.41, 1536: 7037.34, 2048: 10111.40},
    4: {128: 3121.16, 256: 3236.88, 512: 3433.29, 1024: 3546.83, 1536: 3677.90, 2048: 5230.76},
    8: {128: 1732.33, 256: 1728.73, 512: 1810.36, 1024: 1892.75, 1536: 1988.70, 2048: 2818.65},
}


@pytest.mark.parametrize("split", sorted(PR_13932_TRITON_US))
def test_the_triton_fp8_shares_are_the_line_through_the_pr_s_triton_columns(split: int) -> None:
    """TRITON_FP8_READ_SHARE and TRITON_FP8_MATH_SHARE come from PR #13932's Triton column of
    each -tp as the DeepGemm ones do: the line through its 128- and 2048-token times. The
    column is not a line (flat to 1536 tokens, a step at 2048): the line lies above every time
    between, by at most 30%, and under the 3072-token time of split 1 (by 13%). At split 8
    Triton is faster than DeepGEMM at every size measured, at splits 1 and 2 slower."""
    table_us = PR_13932_TRITON_US[split]
    per_token_us = (table_us[2048] - table_us[128]) / (2048 - 128)
    fixed_us = table_us[128] - 128 * per_token_us
    for tokens, measured in table_us.items():
        line_us = fixed_us + tokens * per_token_us
        assert measured <= line_us * (1 + 1e-9) and line_us < 1.3 * measured
    if split == 1:
        assert (fixed_us + 3072 * per_token_us) / 27189.87 == pytest.approx(0.874, abs=0.002)
    expert = 3 * 7168 * 2048
    math_share = 2 * 8 * expert / split / (per_token_us * 1e-6) / 1979e12
    read_share = 256 * expert / split / (fixed_us * 1e-6) / 3350e9
    assert pytest.approx(math_share, rel=0.01) == performance.TRITON_FP8_MATH_SHARE[split]
    assert pytest.approx(read_share, rel=0.02) == performance.TRITON_FP8_READ_SHARE[split]
    faster = [table_us[t] < PR_13932_DEEPGEMM_US[split][t] for t in table_us]
    if split == 8:
        assert all(faster)
    if split <= 2:
        assert not any(faster)


# The kernel each pinned vLLM release runs for DeepSeek-R1's block-scaled FP8 experts (2048
# wide, hidden 7168) on Hopper, by TP and EP (moe_kernels.py's notes on
# VLLM_DEEP_GEMM_MOE_SINCE and `deep_gemm_moe_width_taken` cite the sources).
R1_WIDTHS = (2048, 7168)
VLLM_GROUPED_FP8_KERNELS = {
    ("0.8.5", 8, 1): "triton",
    ("0.10.2", 8, 1): "triton",
    ("0.10.2", 8, 8): "triton",
    ("0.11.0", 2, 1): "deepgemm",
    ("0.11.0", 4, 1): "triton",  # a 512-wide share: not above 512
    ("0.11.0", 8, 1): "triton",  # 256
    ("0.11.0", 8, 4): "deepgemm",  # 1024
    ("0.11.0", 8, 8): "deepgemm",  # whole experts under EP
    ("0.11.1", 8, 1): "deepgemm",  # E8M0 on Hopper: every width
    ("0.11.1", 4, 1): "deepgemm",
    ("0.12.0", 4, 1): "deepgemm",
    ("0.12.0", 8, 1): "triton",
    ("0.12.0", 16, 1): "triton",
    ("0.12.0", 8, 8): "deepgemm",
    ("0.14.0", 4, 1): "deepgemm",
    ("0.14.0", 8, 1): "triton",
    ("0.14.0", 16, 16): "deepgemm",
    ("0.16.0", 8, 1): None,  # FlashInfer's CUTLASS MoE first by priority
    ("0.16.0", 4, 1): None,
    ("0.16.0", 8, 8): None,
    ("0.17.0", 4, 1): "triton",  # Hopper's block FP8: Triton first without EP
    ("0.17.0", 8, 8): None,  # FlashInfer's CUTLASS MoE first with it
    ("0.18.0", 8, 1): "triton",
    ("0.18.0", 8, 8): None,
    ("0.19.0", 2, 1): "triton",
    ("0.24.0", 2, 1): "triton",
    ("0.24.0", 8, 1): "triton",
    ("0.24.0", 8, 8): None,
}


@pytest.mark.parametrize(("release", "tensor", "expert_parallel"), VLLM_GROUPED_FP8_KERNELS)
def test_the_grouped_fp8_kernel_is_the_one_vllm_s_release_selects_for_the_split(
    release: str, tensor: int, expert_parallel: int
) -> None:
    """vLLM: Triton before 0.11.0 (DeepGEMM off by default); from 0.11.0 DeepGEMM, but in
    0.11.0 only for a rank's share of each expert above 512 (`_valid_deep_gemm`, E8M0 off on
    Hopper), at every share from 0.11.1 (E8M0 on: vLLM PR #26197); Triton where each expert is
    split 8 ways or more from 0.12.0 (PR #29346; with EP the MoE's split is 1); in 0.16.x
    FlashInfer's CUTLASS MoE, first by the oracle's priority at every split (no measured
    rates: None), and from 0.17.0 Triton without EP, FlashInfer's CUTLASS MoE with it.
    TensorRT-LLM, another engine or an unknown release: DeepGEMM."""
    kernel = VLLM_GROUPED_FP8_KERNELS[(release, tensor, expert_parallel)]
    assert (
        moe_kernels.grouped_fp8_kernel("vllm", release, tensor, expert_parallel, *R1_WIDTHS)
        == kernel
    )
    for engine, version in (("tensorrt-llm", "1.0.0"), ("vllm", None), ("sglang", release)):
        assert moe_kernels.grouped_fp8_kernel(
            engine, version, tensor, expert_parallel, *R1_WIDTHS
        ) == ("deepgemm")


def test_vllm_0_11_0_runs_deepgemm_only_for_a_share_its_grouped_gemm_takes() -> None:
    """`_valid_deep_gemm` (vLLM 0.11.0 deep_gemm_moe.py) reads N, each rank's share of the
    intermediate width, and K, the hidden size, off w2: both multiples of 128 and N above 512,
    else Triton's fused_moe. Under EP the share is the whole width. From 0.11.1 the E8M0
    scales skip the check on Hopper, so every share runs DeepGEMM."""

    def kernel(version: str, tensor: int, ep: int, intermediate: int, hidden: int) -> str | None:
        return moe_kernels.grouped_fp8_kernel("vllm", version, tensor, ep, intermediate, hidden)

    # Qwen3-235B-A22B-FP8: 1536 wide, hidden 4096.
    assert [kernel("0.11.0", tp, 1, 1536, 4096) for tp in (1, 2, 4)] == [
        "deepgemm",
        "deepgemm",
        "triton",
    ]
    assert kernel("0.11.0", 4, 4, 1536, 4096) == "deepgemm"
    assert kernel("0.11.0", 1, 1, 640, 4096) == "deepgemm"
    assert kernel("0.11.0", 1, 1, 576, 4096) == "triton"  # not a multiple of 128
    assert kernel("0.11.0", 1, 1, 1536, 4160) == "triton"  # nor is the hidden size
    assert kernel("0.11.1", 1, 1, 576, 4160) == "deepgemm"
    assert kernel("0.12.0", 4, 1, 1536, 4096) == "deepgemm"


def test_the_vllm_release_sets_the_deepseek_prefill_on_hopper(catalog: Catalog) -> None:
    """DeepSeek-R1 FP8 on 8 H200 with vLLM, one 4096-token prompt: at TP 8 0.11.0 runs Triton
    (a 256-wide share is too narrow for DeepGEMM), 0.11.1 DeepGEMM (E8M0 takes every width)
    and 0.12.0 Triton again (PR #29346), faster than DeepGEMM there (PR #13932's split-8
    columns); at TP 8 with EP 8 all three run DeepGEMM on whole experts; 0.24.0 with EP 8 runs
    FlashInfer's CUTLASS MoE, counted with the roofline. The decode does not move."""

    def lone(version: str, expert_parallel: int = 1) -> Performance:
        return estimate(
            catalog,
            "deepseek-ai/DeepSeek-R1",
            1,
            "fp8",
            "nvidia-h200-141gb",
            tensor=8,
            input_tokens=4096,
            engine="vllm",
            engine_version=version,
            expert_parallel=expert_parallel,
        )

    assert lone("0.12.0").ttft_s == lone("0.11.0").ttft_s < lone("0.11.1").ttft_s
    assert lone("0.12.0").tpot_s == lone("0.11.0").tpot_s == lone("0.11.1").tpot_s
    assert lone("0.12.0", 8).ttft_s == lone("0.11.0", 8).ttft_s == lone("0.11.1", 8).ttft_s
    assert lone("0.24.0").ttft_s == lone("0.12.0").ttft_s
    deepseek = resolve_model(make_spec("deepseek-ai/DeepSeek-R1").model, catalog)
    h200, fp8 = catalog.gpus["nvidia-h200-141gb"], catalog.quantizations["fp8"]
    assert performance.grouped_fp8_shares(deepseek, h200, fp8, "vllm", "0.24.0", 8, 8) is None
    assert performance.grouped_fp8_shares(deepseek, h200, fp8, "vllm", "0.12.0", 8, 1) == (
        performance.TRITON_FP8_READ_SHARE[8],
        performance.TRITON_FP8_MATH_SHARE[8],
    )


def test_the_more_ways_an_expert_is_split_the_slower_its_grouped_gemm(catalog: Catalog) -> None:
    """Every rate falls with the split (the PR's columns), and the split is TP / EP: TP 8
    alone splits each expert 8 ways, EP 4 two ways, EP 8 not at all; EP must divide TP. A
    split beyond the measured ones takes the most split measured."""
    splits = sorted(performance.GROUPED_FP8_READ_SHARE)
    for shares in (performance.GROUPED_FP8_READ_SHARE, performance.GROUPED_FP8_MATH_SHARE):
        rates = [shares[s] for s in splits]
        assert rates == sorted(rates, reverse=True) and len(set(rates)) == len(rates)
    assert [moe_kernels.expert_split(8, ep) for ep in (1, 2, 4, 8)] == [8, 4, 2, 1]
    deepseek = resolve_model(make_spec("deepseek-ai/DeepSeek-R1").model, catalog)
    h200, fp8 = catalog.gpus["nvidia-h200-141gb"], catalog.quantizations["fp8"]

    def shares(tensor: int) -> performance.GroupedShares | None:
        return performance.grouped_fp8_shares(deepseek, h200, fp8, "tensorrt-llm", None, tensor, 1)

    assert shares(16) == shares(8) == (0.23, 0.042)
    with pytest.raises(ValueError, match="expert parallel 3 does not divide TP 8"):
        moe_kernels.expert_split(8, 3)


def test_expert_parallelism_speeds_a_block_scaled_fp8_prefill_on_hopper_only(
    catalog: Catalog,
) -> None:
    """DeepSeek-R1 FP8 at TP 8 on H200s (NVIDIA/TensorRT-LLM#5929's layouts): a lone prefill is
    fastest with EP 8, then EP 4, then TP alone, as measured; the decode (the same reads per
    rank, the same all-reduce) does not move, nor anything on a B200 (the roofline's
    rates) or for a dense model. EP must divide TP."""

    def lone(gpu: str, name: str = "deepseek-ai/DeepSeek-R1", **kwargs: Any) -> Performance:
        return estimate(
            catalog,
            name,
            1,
            "fp8",
            gpu,
            tensor=8,
            input_tokens=8192,
            output_tokens=600,
            engine="tensorrt-llm",
            **kwargs,
        )

    h200 = {ep: lone("nvidia-h200-141gb", expert_parallel=ep) for ep in (1, 4, 8)}
    assert h200[8].ttft_s < h200[4].ttft_s < h200[1].ttft_s
    assert h200[8].tpot_s == h200[4].tpot_s == h200[1].tpot_s
    assert lone("nvidia-b200-180gb", expert_parallel=8) == lone("nvidia-b200-180gb")
    dense = "meta-llama/Llama-3.1-70B-Instruct"
    assert lone("nvidia-h200-141gb", dense, expert_parallel=8) == lone("nvidia-h200-141gb", dense)
    with pytest.raises(ValueError, match="does not divide TP 8"):
        lone("nvidia-h200-141gb", expert_parallel=3)


@pytest.mark.parametrize("expert_parallel", [1, 4, 8])
def test_block_scaled_fp8_experts_prefill_at_the_grouped_kernel_s_rates_on_hopper(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, expert_parallel: int
) -> None:
    """DeepSeek-R1's native FP8 experts on 8 H200: a one-step prefill's experts are read at
    GROUPED_FP8_READ_SHARE of the datasheet bandwidth and their math runs at
    GROUPED_FP8_MATH_SHARE of the FP8 peak, both of the layout's expert split (8 / EP), in
    place of the roofline's terms; a rank holds 1/8 of the experts' bytes and math whatever
    the split. A decode step, a B200 (not measured) and 16-bit experts keep the roofline."""
    deepseek = resolve_model(make_spec("deepseek-ai/DeepSeek-R1").model, catalog)
    fp8, bf16 = catalog.quantizations["fp8"], catalog.quantizations["bf16"]
    h200, b200 = catalog.gpus["nvidia-h200-141gb"], catalog.gpus["nvidia-b200-180gb"]

    def steps(gpu: Gpu, fmt: QuantFormat) -> performance.StepModel:
        return performance.StepModel(
            deepseek, gpu, fmt, 8, 1, 1, 4096, 128, "tensorrt-llm", expert_parallel
        )

    def prefill_s(gpu: Gpu, fmt: QuantFormat) -> float:
        return steps(gpu, fmt).prefill_s(4096, 8192)

    cases = [(g, f) for g in (h200, b200) for f in (fp8, bf16)]
    grouped = {(g.id, f.id): prefill_s(g, f) for g, f in cases}
    decode = steps(h200, fp8).decode(8).step_s
    monkeypatch.setattr(moe_kernels, "GROUPED_FP8_ARCHITECTURES", frozenset())
    roofline = {(g.id, f.id): prefill_s(g, f) for g, f in cases}
    model = steps(h200, fp8)
    active = deepseek.routed_expert_parameters * deepseek.active_experts / deepseek.experts
    _, fp8_rate = performance._gemm_tflops(h200, fp8)
    math_roofline = 2 * active * 4096 / 8 / (fp8_rate * 1e12 * model.compute_efficiency)
    split = 8 // expert_parallel
    math_share = performance.GROUPED_FP8_MATH_SHARE[split]
    math_grouped = 2 * active * 4096 / 8 / (1979e12 * math_share)
    experts_bytes = deepseek.routed_expert_parameters / 8
    read_roofline = experts_bytes / model.bandwidth
    read_grouped = experts_bytes / (4800e9 * performance.GROUPED_FP8_READ_SHARE[split])
    expected = (math_grouped - math_roofline) + (read_grouped - read_roofline)
    assert expected > 0.01  # 10 ms and more: the grouped kernel is well below the roofline
    h200_fp8 = (h200.id, fp8.id)
    assert grouped[h200_fp8] - roofline[h200_fp8] == pytest.approx(expected, rel=1e-3)
    assert steps(h200, fp8).decode(8).step_s == decode
    for case in [(b200.id, fp8.id), (h200.id, bf16.id), (b200.id, bf16.id)]:
        assert grouped[case] == roofline[case]


@pytest.mark.parametrize(
    ("engine", "version"), [("tensorrt-llm", "1.2.0rc1"), ("vllm", "0.14.0"), ("vllm", "0.23.0")]
)
def test_under_load_an_overlap_scheduler_makes_a_request_wait_one_step_more(
    catalog: Catalog, engine: str, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step wait alone: the host work it hides is the next tests'.
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 0.0)
    # Loaded: the request is fetched after the step behind the running one is launched.
    planned = qwen3_32b(catalog, 8, engine="vllm", engine_version="0.13.0")
    overlapped = qwen3_32b(catalog, 8, engine=engine, engine_version=version)
    decode_step_s = qwen3_32b_steps(catalog).decode(8).step_s
    assert overlapped.ttft_s - planned.ttft_s == pytest.approx(decode_step_s, rel=1e-6)
    assert overlapped.tpot_s == planned.tpot_s
    # The serving command's setting wins over the release's default.
    assert qwen3_32b(catalog, 8, engine_version="0.13.0", async_scheduling=True) == overlapped
    assert qwen3_32b(catalog, 8, engine_version="0.14.0", async_scheduling=False) == planned
    # A lone request finds the loop idle; a burst arrives at an idle engine.
    lone = qwen3_32b(catalog, 1, engine_version="0.13.0")
    assert qwen3_32b(catalog, 1, engine=engine, engine_version=version) == lone
    burst = qwen3_32b(catalog, 8, burst=True, engine_version="0.13.0")
    assert qwen3_32b(catalog, 8, burst=True, engine=engine, engine_version=version) == burst


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_a_vllm_decode_step_waits_for_host_work_per_running_sequence(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Without async scheduling vLLM's GPU waits for the host's work on each running
    sequence: a decode step, and a mixed one, grow by it with the batch."""
    steps = qwen3_32b_steps(catalog)
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 0.0)
    without = qwen3_32b_steps(catalog).decode(batch)
    assert without.host_s == 0.0
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 1e-4)
    steps = qwen3_32b_steps(catalog)
    decode = steps.decode(batch)
    assert decode.host_s == pytest.approx(batch * 1e-4)
    assert decode.step_s - without.step_s == pytest.approx(batch * 1e-4)
    mixed = steps.mixed_step_s(512, batch)
    bare = steps.prefill_s(512, 512) + decode.compute_s + decode.communication_s
    assert mixed - bare == pytest.approx(batch * 1e-4)


def test_the_host_work_per_sequence_is_hidden_where_the_gpu_need_not_wait_for_it(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overlap scheduler plans the next step while this one runs; on several pipeline
    stages vLLM's batch queue updates one batch while the others run; TensorRT-LLM's loop
    is not vLLM's Python one."""
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 1e-4)
    steps = qwen3_32b_steps(catalog)
    for hidden in (
        dataclasses.replace(steps, overlapped=True),
        dataclasses.replace(steps, pipeline=2),
        dataclasses.replace(steps, engine="tensorrt-llm"),
    ):
        assert hidden.decode(32).host_s == 0.0
    assert steps.decode(32).host_s == pytest.approx(32e-4)


def test_a_release_without_async_scheduling_pays_the_host_work_in_every_token(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM 0.13.0 and 0.14.0 (async scheduling on by default) differ in TPOT by the host
    work on the 32 streams of each step: a prompt's step shares it with the decodes, so the
    prefills the streams wait behind add none."""
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 1e-4)
    waited = qwen3_32b(catalog, 32, engine_version="0.13.0").tpot_s
    hidden = qwen3_32b(catalog, 32, engine_version="0.14.0").tpot_s
    assert waited - hidden == pytest.approx(32e-4, rel=1e-6)
    assert qwen3_32b(catalog, 32, engine_version="0.13.0", async_scheduling=True).tpot_s == hidden


@pytest.mark.parametrize(
    ("engine", "version", "pipeline", "multi_node", "overlapped"),
    [
        ("vllm", "0.13.0", 1, False, False),  # async scheduling off by default
        ("vllm", "0.14.0rc1", 1, False, False),  # a release candidate sorts below 0.14.0
        ("vllm", "0.14.0", 1, False, True),
        ("vllm", "0.14.1", 2, False, False),  # off with pipeline_parallel_size > 1
        ("vllm", "0.15.0", 2, False, True),  # PR #32359
        ("vllm", "0.23.0", 1, True, False),  # the Ray executor llmdeploy spans nodes with
        ("vllm", None, 1, False, False),  # an unknown release: off, as before 0.14.0
        ("tensorrt-llm", "0.19.0", 1, False, False),  # enable_overlap_scheduler, off
        ("tensorrt-llm", "0.20.0", 1, False, True),  # PR #4174
        ("tensorrt-llm", "1.2.0rc1", 1, True, True),
        ("tensorrt-llm", "1.2.0rc1", 2, False, False),  # _executor_loop_pp
        ("tensorrt-llm", None, 1, False, True),
        ("nim", "1.8.0", 1, False, False),
    ],
)
def test_which_releases_schedule_a_step_ahead(
    catalog: Catalog,
    engine: str,
    version: str | None,
    pipeline: int,
    multi_node: bool,
    overlapped: bool,
) -> None:
    gpu = catalog.gpus["nvidia-h100-80gb"]  # 8 per node: TP 16 spans two
    tensor = 2 * gpu.gpus_per_node if multi_node else 1
    assert performance.overlap_scheduler(engine, version, gpu, tensor, pipeline) is overlapped


@pytest.mark.parametrize(
    ("name", "quantization"),
    [
        ("Qwen/Qwen3-32B", "bf16"),  # dense: compute-bound at 4096 tokens
        ("meta-llama/Llama-3.1-8B-Instruct", "int4-awq"),  # Marlin's conversion on Hopper
        ("Qwen/Qwen3-30B-A3B", "bf16"),  # the routed experts' read
    ],
)
def test_a_lone_prefill_on_two_stages_costs_what_it_costs_on_one(
    catalog: Catalog, name: str, quantization: str
) -> None:
    """A one-chunk prompt passes the pipeline stages one after another, each stage's layers
    on the same TP GPUs: two stages take about what one does (a hop more, the weights read
    by each stage once), not half."""

    def ttft(pipeline: int) -> float:
        return estimate(
            catalog, name, 1, quantization, tensor=2, pipeline=pipeline, input_tokens=4096
        ).ttft_s

    assert ttft(2) == pytest.approx(ttft(1), rel=0.05)


def pipeline_replay(batches: list[tuple[int, float]], stages: int) -> list[float]:
    """When each batch leaves the last stage: batches in the order scheduled, as (decoding
    group, time on each stage), pass the stages one after another, each stage taking them in
    that order; a group's next batch enters the first stage once its last one has left the
    last stage (vLLM reschedules a request once its batch is back)."""
    free = [0.0] * stages
    back: dict[int, float] = {}
    ends = []
    for group, stage_s in batches:
        t = back.get(group, 0.0)
        for stage in range(stages):
            t = free[stage] = max(t, free[stage]) + stage_s
        back[group] = t
        ends.append(t)
    return ends


def test_a_long_prompt_s_chunks_follow_each_other_through_the_stages(catalog: Catalog) -> None:
    """Eight chunks on two or four stages: the first passes every stage, each further one
    enters the first stage as the one before leaves it, so the prompt's first token comes
    when a replay of its chunks through the stages ends, and the next prompt enters the first
    stage when the last chunk leaves it; one stage takes eight full steps."""
    qwen = resolve_model(make_spec("Qwen/Qwen3-32B").model, catalog)
    gpu, bf16 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["bf16"]
    steps = {p: performance.StepModel(qwen, gpu, bf16, 2, p, 2, 16384, 128) for p in (1, 2, 4)}
    for pipeline in (2, 4):
        prefill = steps[pipeline].prefill(16384, 2048)
        assert prefill.steps == 8
        # Each chunk its own batch; one more batch, the next prompt's first chunk, behind.
        chunks = [(i, prefill.step_s / pipeline) for i in range(prefill.steps + 1)]
        ends = pipeline_replay(chunks, pipeline)
        assert prefill.latency_s == pytest.approx(ends[-2])
        assert prefill.occupancy_s == pytest.approx(ends[-1] - prefill.step_s)
        # Through every stage, a step costs about what it costs on one stage.
        assert prefill.step_s == pytest.approx(steps[1].prefill(16384, 2048).step_s, rel=0.05)
    one_stage = steps[1].prefill(16384, 2048)
    assert one_stage.latency_s == pytest.approx(8 * one_stage.step_s)
    assert one_stage.occupancy_s == pytest.approx(one_stage.latency_s)


def test_streams_on_two_stages_decode_in_two_groups(catalog: Catalog) -> None:
    """vLLM keeps a batch per stage in flight and reschedules a request once its batch is
    back, so two streams on two stages decode one each, in turn: each step reads one
    request's KV cache, and two streams decode as fast as one. On one stage both share each
    step and its reads (long contexts make the KV read weigh)."""

    def tpot(concurrency: int, pipeline: int) -> float:
        return estimate(
            catalog,
            "meta-llama/Llama-3.1-8B-Instruct",
            concurrency,
            pipeline=pipeline,
            input_tokens=32768,
            output_tokens=32768,
        ).tpot_s

    assert tpot(2, 1) > 1.2 * tpot(1, 1)
    assert tpot(2, 2) == pytest.approx(tpot(1, 2), rel=0.01)
    # Four streams on two stages: two groups of two, each step reading two requests' KV.
    assert tpot(4, 2) == pytest.approx(tpot(2, 1), rel=0.05)


def test_a_burst_that_fits_one_batch_decodes_as_one_group(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts that fit one step's budget are scheduled in one batch and keep decoding
    together; prompts filling two batches decode in two groups on two stages."""
    # The groups alone: one stage waits for the host's work, several hide it (tested apart).
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 0.0)

    def tpot(input_tokens: int, pipeline: int) -> float:
        return estimate(
            catalog,
            "meta-llama/Llama-3.1-8B-Instruct",
            8,
            pipeline=pipeline,
            input_tokens=input_tokens,
            output_tokens=8192,
            burst=True,
        ).tpot_s

    # 8 x 512 tokens fill one batch; 8 x 2048 two (one chunk each, as on one stage).
    assert tpot(512, 2) == pytest.approx(tpot(512, 1), rel=0.05)
    assert tpot(2048, 2) < 0.97 * tpot(2048, 1)


def test_a_loaded_stream_waits_for_another_prompt_s_chunks_through_the_stages(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-chunk prompt holds up the decoding groups for its step through every stage, on
    two stages as on one; a two-chunk prompt's second chunk follows the first a stage
    behind, so on two stages it holds them up for three half-steps, not two steps."""
    # The groups alone: one stage waits for the host's work, several hide it (tested apart).
    monkeypatch.setattr(performance, "DECODE_HOST_PER_SEQUENCE_S", 0.0)

    def tpot(input_tokens: int, pipeline: int) -> float:
        return estimate(
            catalog,
            "Qwen/Qwen3-32B",
            16,
            tensor=2,
            pipeline=pipeline,
            input_tokens=input_tokens,
            output_tokens=256,
        ).tpot_s

    assert tpot(4096, 2) == pytest.approx(tpot(4096, 1), rel=0.05)
    assert tpot(16000, 2) < 0.9 * tpot(16000, 1)


@pytest.mark.parametrize("pipeline", [2, 4])
def test_a_multi_chunk_prompt_holds_the_decoding_groups_up_as_a_pipeline_replay_does(
    catalog: Catalog, pipeline: int
) -> None:
    """16 streams decode in one group per stage, every stage busy; another stream's
    three-chunk prompt joins three consecutive batches, each lengthened by its chunk (less the
    decode step it shares). Replayed through the stages, every group comes back later by what
    the closed form charges a stream per prefill seen."""
    concurrency, input_tokens, output_tokens, budget = 16, 24000, 256, 8192
    steps = performance.StepModel(
        resolve_model(make_spec("Qwen/Qwen3-32B").model, catalog),
        catalog.gpus["nvidia-h100-80gb"],
        catalog.quantizations["bf16"],
        2,
        pipeline,
        2,
        input_tokens,
        output_tokens,
    )
    decode = steps.decode(concurrency // pipeline)
    prefill = steps.prefill(input_tokens, budget - (concurrency - 1))
    assert prefill.steps == 3
    mixed_s = prefill.step_s + decode.compute_s + decode.communication_s + decode.host_s
    plain = [(i % pipeline, decode.step_s / pipeline) for i in range(8 * pipeline)]
    joined = [
        (group, mixed_s / pipeline if pipeline <= i < pipeline + prefill.steps else stage_s)
        for i, (group, stage_s) in enumerate(plain)
    ]
    delay = pipeline_replay(joined, pipeline)[-1] - pipeline_replay(plain, pipeline)[-1]
    tpot = qwen3_32b(
        catalog,
        concurrency,
        pipeline=pipeline,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        max_num_batched_tokens=budget,
    ).tpot_s
    per_prefill = (tpot - decode.step_s) * output_tokens / (concurrency - 1)
    assert per_prefill == pytest.approx(delay, rel=1e-6)


def test_a_prompt_as_long_as_the_step_budget_runs_in_one_step(catalog: Catalog) -> None:
    """The budget is shared by the prompt's chunk and the other streams' decodes, not the
    prefilling request's own (a prompt being prefilled does not decode): a lone 8192-token
    prompt with a budget of 8192 runs in one step, alone or beside 7 decoding streams with 8199
    (vLLM's scheduler and TensorRT-LLM's take the whole prompt then). A token more takes a
    second step, which reads the weights again and pays a step's fixed cost."""

    def ttft(input_tokens: int, concurrency: int, budget: int) -> float:
        return qwen3_32b(
            catalog,
            concurrency,
            input_tokens=input_tokens,
            max_num_batched_tokens=budget,
        ).ttft_s

    for concurrency, budget in ((1, 8192), (8, 8199)):
        one_token_less = ttft(8192, concurrency, budget) - ttft(8191, concurrency, budget)
        one_token_more = ttft(8193, concurrency, budget) - ttft(8192, concurrency, budget)
        assert one_token_more > 10 * one_token_less


def test_on_two_stages_a_loaded_request_queues_behind_half_a_prefill_pass(
    catalog: Catalog,
) -> None:
    """On two stages a prompt holds each stage for half its pass, the stages taking other
    batches meanwhile, so the prompts of the other streams keep each stage about half as busy
    as one stage would be, for half as long each: what a loaded request waits beyond a lone
    one is well under half what it waits on one stage."""

    def loaded_wait(pipeline: int) -> float:
        def ttft(concurrency: int) -> float:
            return qwen3_32b(
                catalog, concurrency, pipeline=pipeline, input_tokens=8000, output_tokens=128
            ).ttft_s

        return ttft(16) - ttft(1)

    assert loaded_wait(2) < 0.5 * loaded_wait(1)


def test_a_prefill_attends_within_the_window_in_sliding_window_layers(catalog: Catalog) -> None:
    """gpt-oss-120b: 18 of its 36 layers attend within 128 tokens. A prompt's token attends to
    half the prompt on average in a full layer and to at most the window in a sliding one
    (128 - 128^2 / 16384 = 127 keys on average over an 8192-token prompt), so at 8192 tokens
    the prefill is cheaper than the same model's without a window by the sliding layers'
    attention beyond those 127 keys, and not at all within the window."""
    model = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    full = dataclasses.replace(model, sliding_window=0, sliding_window_layers=0)
    # A decode at 4096 keys and on: the window in a sliding layer.
    assert performance.windowed_context(model, 4096, 4096) == pytest.approx((4096 + 128) / 2)
    assert performance.windowed_context(model, 4000, 4192) == pytest.approx((4096 + 128) / 2)
    assert performance.windowed_context(model, 0, 100) == 50
    assert performance.windowed_context(full, 0, 8192) == 4096

    def prefill_s(facts: ModelFacts, tokens: int) -> float:
        steps = performance.StepModel(
            facts,
            catalog.gpus["nvidia-b200-180gb"],
            catalog.quantizations["mxfp4"],
            tensor=8,
            pipeline=1,
            kv_dtype_bytes=2,
            input_tokens=tokens,
            output_tokens=1,
        )
        return steps.prefill_s(tokens, 8192)

    attention = performance._attention_flops(model, 8192, 4096 - 127) / 2  # the window layers'
    tflops = catalog.gpus["nvidia-b200-180gb"].compute_tflops("bf16") * 1e12
    efficiency = performance.COMPUTE_EFFICIENCY_BY_CHIP["GB100"]
    saved = attention / 8 / (tflops * efficiency)
    assert prefill_s(full, 8192) - prefill_s(model, 8192) == pytest.approx(saved, rel=1e-6)
    assert prefill_s(full, 128) == pytest.approx(prefill_s(model, 128))


def test_a_prefill_s_sliding_layers_average_the_window_bound_over_the_prompt(
    catalog: Catalog,
) -> None:
    """The token at position x of a prompt attends to min(x, window) keys in a sliding-window
    layer, so over a prompt of two windows a token attends to 3/4 of the window on average,
    not to the whole window (the bound of the mean, half the prompt). Gemma 2 9B: 21 of 42
    layers with a 4096-token window: at 8192 tokens 3072 keys in those, 4096 in the others;
    at 4096 tokens and below, half the prompt in every layer."""
    model = resolve_model(make_spec("google/gemma-2-9b-it").model, catalog)
    assert (model.sliding_window, model.sliding_window_layers, model.layers) == (4096, 21, 42)
    assert performance.windowed_context(model, 0, 8192) == pytest.approx((4096 + 3072) / 2)
    assert performance.windowed_context(model, 0, 4096) == pytest.approx(2048)
    assert performance.windowed_context(model, 0, 1000) == pytest.approx(500)
    # gpt-oss's 128-token window at a 256-token prompt: 96 keys, not 128.
    gpt_oss = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    assert performance.windowed_context(gpt_oss, 0, 256) == pytest.approx((128 + 96) / 2)


def test_a_decode_s_sliding_layers_average_the_window_bound_over_the_output(
    catalog: Catalog,
) -> None:
    """A decode from a short prompt past the window: the token at position x reads min(x,
    window) keys of a sliding-window layer, so over a 1024-token prompt and 7168 output tokens
    (positions 1024 to 8192) Gemma 2's sliding layers read 3437 keys on average, not the
    window (the mean position, 4608, is beyond it); the full layers read 4608. The decode
    step's KV read follows."""
    model = resolve_model(make_spec("google/gemma-2-9b-it").model, catalog)
    sliding = ((4096**2 - 1024**2) / 2 + 4096 * (8192 - 4096)) / (8192 - 1024)
    assert sliding == pytest.approx(3437.7, abs=0.1)
    assert performance.windowed_context(model, 1024, 8192) == pytest.approx((4608 + sliding) / 2)

    def kv_read_s(output_tokens: int) -> float:  # bf16 on an H100, 1024 tokens in
        steps = dataclasses.replace(
            qwen3_32b_steps(catalog), model=model, tensor=1, output_tokens=output_tokens
        )
        return steps.decode(64).memory_s

    # 64 streams: the sliding layers' KV read is 64 x (3437.7 - 4096) keys short of the
    # window's, the full layers' 64 x 4608 keys, against a 1-token output's 64 x 1024 each.
    per_key = (
        2
        * model.kv_heads
        * model.head_dim
        * 2
        * 21
        / (
            catalog.gpus["nvidia-h100-80gb"].bandwidth_gbps
            * 1e9
            * performance.BANDWIDTH_EFFICIENCY_BY_GPU.get("nvidia-h100-80gb", 0.8)
        )
    )
    grown = 64 * ((4608 - 1024) + (sliding - 1024)) * per_key
    assert kv_read_s(7168) - kv_read_s(0) == pytest.approx(grown, rel=1e-6)


def test_the_experts_math_runs_over_the_padded_layout(catalog: Catalog) -> None:
    """vLLM's FlashInfer MXFP4 kernel on a B200 gets each rank's experts padded (intermediate
    slice and hidden size to 256): gpt-oss-120b at TP 8 multiplies 512 x 3072 where the
    checkpoint holds 360 x 2880 a matrix, so the routed experts' math is 1.52 times theirs;
    nothing else in the step grows, and a grouped kernel's experts (charged apart) do not."""
    model = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    gpu = catalog.gpus["nvidia-b200-180gb"]
    fmt = catalog.quantizations["mxfp4"]
    rules = vllm_memory("0.13.0", gpu, mxfp4_backend="flashinfer")
    layout = moe_kernels.expert_layout(model, fmt, 8, 1, rules)
    assert layout == pytest.approx(512 * 3072 / (360 * 2880), rel=1e-3)
    rates = performance._gemm_tflops(gpu, fmt, moe_kernels.expert_kernel(fmt, rules))

    def flops_s(padding: float, grouped: bool = False) -> float:
        experts = model.active_routed_expert_parameters if grouped else 0.0
        return performance._flops_s(
            model,
            gpu,
            fmt,
            8,
            4096,
            2048,
            1.0,
            1,
            gemm_tflops=rates,
            layout=padding,
            grouped_experts=experts,
        )

    rate = rates[1] * 1e12
    extra = 2 * model.active_routed_expert_parameters * (layout - 1) * 4096 / 8 / rate
    assert flops_s(layout) - flops_s(1.0) == pytest.approx(extra)
    assert flops_s(layout, grouped=True) == pytest.approx(flops_s(1.0, grouped=True))
