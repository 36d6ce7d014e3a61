"""Latency and throughput of one replica: a roofline with measured efficiencies.

Decode is memory-bound: each step reads the rank's weights (for MoE, the experts the batch
touches) and the batch's KV cache. Prefill is compute-bound (FLOPs / (peak x efficiency)),
in chunks of at most max_num_batched_tokens, each chunk's step reading the weights once.
Continuous batching runs prefills in steps with the running decodes, which is why TPOT grows
with concurrency beyond what decode alone explains. Tensor parallelism adds two all-reduces
per layer over the SKU's interconnect. Pipeline parallelism runs a step through its stages
one after another, each stage's layers on its TP GPUs; the stages overlap only different
batches: the next chunk of a long prompt, or another group of decoding streams.

TTFT depends on the load's shape. At steady load (a closed loop: a new request as one
finishes) a request arrives while a step runs, then prefills in a step shared with the other
streams' decodes, queueing sometimes behind another stream's prefill, and pays more host time
than a lone request, which has none of that. In a burst (every request sent at once) the
median request queues behind the prefills of half the burst, and its first token comes with
the end of the step that completes its prompt, filled with the prompts behind it; only the
prompts left beyond that step are prefilled while it decodes.

Which kernel vLLM runs a MoE model's experts through, by release, and the padding and
workspace it takes are moe_kernels.py's; this module times the kernel chosen there.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from llmdeploy.api.types import Quantization
from llmdeploy.catalog import Gpu, QuantFormat, QuantizedCheckpoint, version_within
from llmdeploy.sizing.engine_memory import EngineMemory
from llmdeploy.sizing.memory import (
    BYTES_16BIT,
    checkpoint_format,
    held_16_bit_active_parameters,
    held_16_bit_linear_parameters,
    kv_bytes_per_token_layer,
    layer_weight_bytes_per_rank,
    mla_kv_b_copy_parameters,
    routed_expert_bytes_per_rank,
    stage_layers,
)
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.moe_kernels import (
    expert_kernel,
    expert_layout,
    expert_split,
    grouped_block_fp8,
    grouped_fp8_kernel,
    kept_expert_share,
)

# Every constant under "Fitted" is bench/fit_constants.py's output on the fit set of
# bench/data (tests/unit/test_fit_constants.py checks).
# Fitted: the fraction of datasheet bandwidth that decode's reads reach, and of dense FLOPS
# that the GEMMs reach (prefill, and a decode step's compute where it binds).
BANDWIDTH_EFFICIENCY = 0.8
COMPUTE_EFFICIENCY = 0.75
# Fitted: the bandwidth one for a SKU, the compute one for a GPU die (the catalog's `chip`),
# where their fit rows cover two models or more (with one model, the model's kernels would be
# booked as the GPU's), the compute one only for a die whose rows timing whole prefills (a
# comparable TTFT) cover two models (the A100s have none: a loaded TPOT moved it only through
# the prefills it waits behind). Bandwidth follows the SKU's memory; compute follows the SMs
# and the kernels the engine has for them, which SKUs of one die share (H100 and H200 SXM are both
# GH100, 989 dense BF16 TFLOPS each; fitted apart, the H200's compute efficiency took what the
# rows of its models missed and landed far from the H100's). Others take the values above.
BANDWIDTH_EFFICIENCY_BY_GPU: dict[str, float] = {
    "nvidia-a100-80gb": 0.75,
    "nvidia-b200-180gb": 0.95,
    "nvidia-h100-80gb": 0.85,
    "nvidia-h200-141gb": 0.85,
}
COMPUTE_EFFICIENCY_BY_CHIP: dict[str, float] = {
    "GB100": 0.35,
    "GH100": 0.75,
}
# Fitted: a step's cost per layer beyond the roofline (launch gaps between small kernels), and
# the extra of an MoE layer (routing, token permutation, grouped expert GEMMs and their
# collectives: small kernels whose latency, not their bytes, sets a decode step). The fit
# gives the MoE extra 0-10 us: gpt-oss-120b's whole decode layer costs about what a dense one
# does beyond its reads (the 150 us it had was DeepSeek-R1's MLA, below).
PER_LAYER_OVERHEAD_S = 4.5e-05
MOE_LAYER_OVERHEAD_S = 0.0
# Fitted: the extra of a multi-head latent attention (MLA) layer's decode over a GQA layer's.
# TensorRT-LLM's DeepSeek-R1 decode layer runs the fused down-projection GEMM, two RMSNorms,
# the up-projection GEMM, a batched GEMM into the latent space, the KV concat with RoPE, the
# MLA kernel, a batched GEMM out of it and the output GEMM, where a GQA layer runs a QKV GEMM,
# RoPE, attention and the output GEMM; at batch 1 on 8 B200 that model's step took 14.9 ms
# with CUDA graphs (67 tokens/s, NVIDIA/TensorRT-LLM docs/source/blogs/tech_blog/blog1,
# "Baseline: CUDA Graph + EP8TP8"), while its weight reads take well under 1 ms.
MLA_LAYER_OVERHEAD_S = 0.00011
# Fitted: the extra of an MoE layer whose experts run vLLM's Triton fused_moe kernel, as 16-bit
# expert weights do on CUDA (UnquantizedFusedMoEMethod -> TritonExperts unless FlashInfer's
# CUTLASS MoE is opted into with expert parallelism; vLLM 0.11.0 fused_moe/layer.py). At decode
# batch sizes the call costs a fixed time beyond its expert reads: vLLM's benchmark_moe.py
# (CUDA graphs) with the default config on Qwen3-30B-A3B's experts (E=128, N=768) takes
# 109.2/159.8/268.9/403.1 us at batch 1/2/4/8 on an A100 PCIe 40GB (vllm-project/vllm PR
# #19049), i.e. ~6.3 us per expert touched (9.4 MB: ~1.5 TB/s, the GPU's bandwidth) plus
# ~58 us per call; on a B200 39.6/51.9/73.2 us at batch 1/2/4 (PR #31448), ~27 us per call.
# The fitted value (in effect on Qwen3-30B-A3B's A100 rows, the only 16-bit MoE latency rows
# besides one H100 row) is above the kernel's alone: it takes whatever else those rows miss.
# Other backends (Marlin, FlashInfer, TensorRT-LLM's MoE) take MOE_LAYER_OVERHEAD_S only, as
# does a 16-bit MoE on another engine (StepModel.engine).
TRITON_MOE_LAYER_OVERHEAD_S = 8e-05
# Fitted: a weight-only quantized GEMM (4-bit weights, 16-bit activations: Marlin) turns every
# weight into BF16 in registers before the tensor cores see it, so at decode batch sizes it
# is bound by that conversion on the SMs rather than by the bytes it reads: its cost per
# weight, in BF16 tensor-FLOP equivalents (a rate that follows the SMs, not the HBM: H100
# and H200, the same GH100 compute with 3.35 and 4.8 TB/s, decode gpt-oss-120b's MXFP4
# experts through Marlin at the same speed: 3.71 and 3.68 ms at TP 8 and 4 streams, 11.11
# and 10.80 ms at TP 2 and 32 streams, InferenceMAX rows of bench/data/latency.csv). A
# prefill step pays it per block of tokens (MARLIN_BLOCK_TOKENS). It is in effect Marlin's
# rate: the Hopper MXFP4 fit rows run Marlin (InferenceMAX's servers set
# VLLM_MXFP4_USE_MARLIN=1, bench/data/latency_moe_backend.csv) but for two. Triton's MXFP4 MoE
# on Hopper, vLLM's default there from 0.12.0, converts the same way
# (TRITON_MXFP4_BLOCK_TOKENS) and is charged this rate too: no measurement of its conversion
# apart was found. Those two fit rows run it (vLLM 0.19.1 on an H200,
# natoscott/benchmarks' ns-batch*-gptoss120b) and decode within 3% with it.
WEIGHT_ONLY_DEQUANT_FLOP = 240.0
# Physical, not fitted: where that conversion binds. Marlin was written for Ampere and Ada,
# where it reads 4-bit weights at close to the ideal 4x of 16-bit ones up to 16-32 tokens
# ("MARLIN is not yet optimized for Hopper", IST-DASLab/marlin_artifact README); the Hopper
# rows above are the evidence for the rest, so only Hopper is listed.
DEQUANT_BOUND_ARCHITECTURES = frozenset({"hopper"})
# Physical, not fitted: the rows of a step's tokens one Marlin block multiplies per conversion
# of its weights. vLLM's fused_marlin_moe sorts the tokens by expert, pads each expert's share
# to blocks of block_size_m (the first of 8/16/32/48/64 that the mean share fills less than
# 0.9 times: at most 64) and moe_wna16_marlin_gemm runs one block per thread-block pass,
# converting the expert's weight tiles to BF16 in registers for it (fused_moe/
# fused_marlin_moe.py); the dense Marlin kernel runs its 64-row kernel again for each further
# 64 rows (IST-DASLab/marlin#2, its author). So a prefill chunk converts the weights once per
# 64 tokens (each expert's once per 64 tokens routed to it), where a decode step converts
# them once.
MARLIN_BLOCK_TOKENS = 64
# Physical, not fitted: the same for vLLM's Triton MXFP4 MoE on Hopper (the vendored
# triton_kernels' matmul_ogs, `triton_kernel_fused_experts`, read in the 0.13.0 and 0.19.0
# wheels). It is weight-only too: on SM 9.0 the experts are swizzled to HopperMXValueLayout
# (quantization/utils/mxfp4_utils.py `_swizzle_mxfp4`, which also fixes split_k at 1), TMA is
# off for 4-bit weights ("hopper w/ mxfp4 doesn't support TMA", matmul_ogs.py), so the
# non-persistent `_matmul_ogs` runs, and each K step of a tile loads the 4-bit weights,
# converts them to BF16 in registers (`mxfp4_to_bf16_triton`) and multiplies them with tl.dot
# on the same warps. A tile covers block_m of the expert's gathered rows, block_m being
# max(16, min(next_power_of_2(rows per expert), 128)) (opt_flags.py
# make_default_opt_flags_nvidia; 0.19.0 takes the next power of 2 of twice the rows, at most
# 64, up to 64 rows per expert): each expert's weights are converted once per tile, so once
# up to 128 rows per expert and once per further 128 beyond, where Marlin's blocks stop at 64.
TRITON_MXFP4_BLOCK_TOKENS = 128
# Physical, not fitted: the weight-only formats whose dense linears run Marlin on Hopper. AWQ
# does (vLLM's AWQMarlinLinearMethod; where it picks a kernel, among Conch, Exllama and
# Marlin, its docstring says); symmetric GPTQ runs Machete first, a wgmma kernel whose tiles
# are not Marlin's (kernels/mixed_precision `_POSSIBLE_KERNELS`, Machete before Marlin, on
# compute capability 9.0). MoE experts run fused_marlin_moe in the 4-bit formats.
MARLIN_DENSE_FORMATS = frozenset({Quantization.INT4_AWQ})
# Physical, not fitted: GPU architectures with FP4 tensor cores. vLLM's and TensorRT-LLM's
# MXFP4 MoE kernels that keep the weights 4-bit on the tensor cores (FlashInfer / TRT-LLM-gen
# MXFP4 x MXFP8, DeepGEMM) are gated to Blackwell; on Hopper and older MXFP4 runs weight-only
# W4A16 kernels, Marlin's or Triton's matmul_ogs (vllm-project/vllm PR #53709, "Why Hopper
# specifically"; TRITON_MXFP4_BLOCK_TOKENS). TensorRT-LLM's
# default for MXFP4 checkpoints is W4A8_MXFP4_MXFP8 on Blackwell and W4A16_MXFP4 on Hopper
# (NVIDIA/TensorRT-LLM docs/source/blogs/tech_blog/blog9_Deploying_GPT_OSS_on_TRTLLM.md).
NATIVE_FP4_ARCHITECTURES = frozenset({"blackwell"})
# Fitted: a lone request's host work before its first token (HTTP, tokenization, the hand-off
# to the engine, detokenization); the more that a request sent under load pays before its
# first token, beyond the step it waits for and the queue (not explained by a mechanism: the
# corpus's lone requests imply 0-21 ms of host time in three of four sources, the same
# sources' loaded rows 5-130 ms more than the modelled terms, growing with the streams; a
# benchmark client adds ~40 ms at 32 streams, tenstorrent/tt-inference-server#259; neither
# async scheduling, on by default from vLLM 0.14.0, nor the endpoint separates the sources:
# wmx's L4 rows are async-scheduled like InferenceMAX's, whose TTFT barely moves
# with the streams, docs/benchmarks.md); and the work per token streamed for another stream
# while the new request's host work runs (one token per stream per step).
TTFT_OVERHEAD_S = 0.02
TTFT_LOAD_OVERHEAD_S = 0.0
TTFT_OVERHEAD_PER_STREAMED_TOKEN_S = 0.0
# Fitted: the host's work per running sequence in a vLLM step that the GPU waits for where no
# overlap scheduler runs (`overlap_scheduler`; StepModel.decode). Without async scheduling
# vLLM's engine loop schedules a step, prepares its inputs and launches it, waits for the
# sampled tokens and only then updates each request (vllm/v1/core/sched/scheduler.py
# `update_from_output`, a Python loop over the step's requests its author flags as a possible
# bottleneck); async scheduling plans the next step while this one runs to hide that work
# (vllm-project/vllm PR #19970). Sources put the host's time per step in proportion to the
# batch: V0's output processing took 0.2 ms at batch 1 and 3.4 ms at batch 32 (~0.1 ms per
# sequence; Llama-3-70B on 4 H100, vllm-project/vllm#6913); V1's `update_from_output` alone
# 0.142/0.287 ms at batch 128/256 (PR #46112). The fitted value is near V0's figure and far
# above the V1 loops measured alone: it also takes whatever else the loaded vLLM rows miss.
# Only vLLM pays it (the sources are its Python loop), and only on one pipeline stage: on
# several, its engine keeps a batch per stage in flight and schedules and updates one while
# the others run (vllm/v1/engine/core.py `step_with_batch_queue`).
DECODE_HOST_PER_SEQUENCE_S = 0.000105
# Physical, not fitted: a request's front-end work that depends on vLLM's release and the
# endpoint, read in its wheels. From 0.10.0 to 0.23.0 the API server tokenizes through
# AsyncMicrobatchTokenizer (vllm PR #19334; gone in 0.24.0, absent in 0.9.2), which waits its
# 2 ms batch_wait_timeout_s for more prompts before encoding a lone one. The chat endpoint
# parses the chat template with jinja2 on every request up to 0.9.1 (_detect_content_format,
# cached by vllm PR #20065 from 0.9.2) and again in 0.11.0 (resolve_chat_template_kwargs, new
# in 0.11.0 and cached from 0.11.1; entrypoints/chat_utils.py): 6-8 ms, what PR #20065
# measured for that parse and walk (6-8 s over 1000 requests). Where the endpoint is not
# known the chat endpoint is counted.
TOKENIZER_BATCH_WAIT_S = 0.002
TOKENIZER_BATCH_RELEASES = ("0.10.0", "0.23.0")
CHAT_TEMPLATE_PARSE_S = 0.007
CHAT_TEMPLATE_PARSED_RELEASES = ((None, "0.9.1"), ("0.11.0", "0.11.0"))
# Physical, not fitted: an FP8 GEMM as vLLM runs it (activations quantized at run time) is
# about 1.4x a BF16 GEMM, not the datasheet's 2x: vllm-project/vllm PR #49363 (H100,
# gemma-4-31B N=12288 K=5376, 128 tokens: 352.6 TFLOP/s BF16, 505.7 FP8 with per-token
# activation quantization, 1.43x) and PR #19566 (B200, 1024 tokens: 1379.7 and 1944.8, 1.41x),
# both from vLLM's benchmarks/kernels/bench_fp8_gemm.py. Attention runs in BF16.
FP8_GEMM_SPEEDUP = 1.4
# Physical, not fitted: all-reduce latency per interconnect, and pipeline hand-offs between
# nodes over the cluster network. Measured decode-sized all-reduces on NVLink take 6-14 us,
# 2 to 8 GPUs, with or without a CUDA graph (bench/data/allreduce.csv, cited rows).
ALL_REDUCE_LATENCY_S = {"nvlink": 10e-6, "infinity-fabric": 15e-6, "pcie": 30e-6}
INTER_NODE_LATENCY_S = 50e-6
INTER_NODE_BANDWIDTH_BPS = 25e9
# Physical, not fitted: the releases whose scheduler plans the next step before the running
# one ends, so that a request arriving during a step is fetched after the step behind it is
# already launched and, under load, waits one decode step more than with a scheduler that
# plans each step after the last one ends; a lone request finds the loop idle
# (`overlap_scheduler`).
# - vLLM: SchedulerConfig.async_scheduling defaults to False in 0.13.0 and to None (on unless
#   something is incompatible) from 0.14.0 (vllm/config/scheduler.py). In 0.14.0 VllmConfig
#   turns it off for pipeline_parallel_size > 1, and for any executor but mp, uni and
#   external_launcher (vllm/config/vllm.py); 0.15.0 drops the pipeline condition
#   (vllm-project/vllm PR #32359, async scheduling with PP); the Ray executor never supports
#   it (to 0.24.0: Executor.supports_async_scheduling is False but for the mp and uni ones),
#   and llmdeploy runs a replica spanning nodes on Ray (render/engine_args.py).
# - TensorRT-LLM's PyTorch backend runs `_executor_loop_overlap` unless
#   `disable_overlap_scheduler` is set, off by default from 0.20.0 (NVIDIA/TensorRT-LLM PR
#   #4174, "Enable scheduling overlap by default", in 0.20.0's release notes): each iteration
#   fetches new requests, schedules and launches the next step, and only then waits for the
#   running step's tokens (tensorrt_llm/_torch/pyexecutor/py_executor.py,
#   `_update_requests(previous_batch...)` after `_forward_step`). With pp_size > 1 PyExecutor
#   runs `_executor_loop_pp` instead, whatever the setting (py_executor.py `__init__`).
VLLM_ASYNC_SCHEDULING_SINCE = "0.14.0"
VLLM_ASYNC_SCHEDULING_WITH_PIPELINE_SINCE = "0.15.0"
TRTLLM_OVERLAP_SCHEDULER_SINCE = "0.20.0"
# vLLM V1's chunked-prefill step budget where the caller does not give one (the catalog's
# engines' default).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192


@dataclass(frozen=True, slots=True)
class Performance:
    ttft_s: float
    tpot_s: float
    output_tokens_per_s: float  # per replica at the workload's concurrency
    requests_per_s: float  # per replica


@dataclass(frozen=True, slots=True)
class LatencyCalibration:
    """Measured over predicted latency of a running plan (status.calibration)."""

    ttft: float = 1.0
    tpot: float = 1.0

    def apply(self, perf: Performance) -> Performance:
        # Decode time dominates a replica's throughput: it scales with 1 / TPOT.
        return Performance(
            ttft_s=perf.ttft_s * self.ttft,
            tpot_s=perf.tpot_s * self.tpot,
            output_tokens_per_s=perf.output_tokens_per_s / self.tpot,
            requests_per_s=perf.requests_per_s / self.tpot,
        )


def _all_reduce_s(gpu: Gpu, tensor: int, message_bytes: float) -> float:
    if tensor == 1:
        return 0.0
    ring = 2 * (tensor - 1) / tensor * message_bytes / (gpu.interconnect.bandwidth_gbps * 1e9)
    return ALL_REDUCE_LATENCY_S[gpu.interconnect.kind] + ring


def _communication_s(
    model: ModelFacts, gpu: Gpu, tensor: int, pipeline: int, tokens: float
) -> float:
    """All-reduces of every layer plus pipeline hand-offs, for one step of `tokens`."""
    message = tokens * model.hidden_size * 2
    per_layer = 2 * _all_reduce_s(gpu, tensor, message)
    hops = (pipeline - 1) * (INTER_NODE_LATENCY_S + message / INTER_NODE_BANDWIDTH_BPS)
    return model.layers * per_layer + hops


def _gemm_tflops(gpu: Gpu, fmt: QuantFormat, kernel: str | None = None) -> tuple[float, float]:
    """Dense TFLOPS of the format's GEMMs on the GPU: the 16-bit modules' (BF16) and the
    quantized weights' (MXFP4 weights with MXFP8 activations on FP4 tensor cores: vLLM's
    FlashInfer MXFP4 x MXFP8 MoE where the server opts in, TensorRT-LLM's default
    W4A8_MXFP4_MXFP8, run at the FP8 rate; vLLM's default FlashInfer MXFP4 x BF16 at the BF16
    rate). `kernel`: the experts' kernel where the engine's rules name it (`expert_kernel`)."""
    fp8 = min(gpu.compute_tflops("fp8"), gpu.compute_tflops("bf16") * FP8_GEMM_SPEEDUP)
    gemm = fp8 if fmt.compute_dtype == "fp8" else gpu.compute_tflops(fmt.compute_dtype)
    return gpu.compute_tflops("bf16"), fp8 if _native_fp4(gpu, fmt, kernel) else gemm


def windowed_context(model: ModelFacts, first: float, last: float) -> float:
    """The keys a query attends to on average over the layers, for queries spread evenly over
    the positions `first` to `last` (a prefill: 0 to its prompt; a decode: the prompt to the
    prompt and the output): the query at position x attends to the x keys before it in a
    full-attention layer, to min(x, window) in a sliding-window layer. The attention kernels
    skip the keys outside the window, at prefill as at decode: vLLM passes the layer's window
    to FlashAttention (v1/attention/backends/flash_attn.py FlashAttentionImpl:
    `window_size=(sliding_window - 1, 0)` into flash_attn_varlen_func, read in the 0.14.0
    wheel), whose kernels bound each query tile's loop over key tiles by it
    (Dao-AILab/flash-attention hopper/block.h `BlockMN::get_n_block_min_max` with Is_local,
    from window_size_left), so a tile does not visit the keys left of its window. The tile
    granularity is not counted: a query tile visits the key tiles from its first row's window
    start to its last row, so with 128 x 128 tiles a 128-token window takes two key tiles,
    about twice the window. The mean is that of the bound, not the bound of the mean position: over
    a prompt of two windows a query attends to 3/4 of the window (Gemma 2 at 8192 tokens: 3072
    of 4096). Sliding layers: the catalog's `slidingWindowLayers` (gpt-oss: 18 of 36 with a
    128-token window; Gemma 2: every other layer, 4096)."""
    full = (first + last) / 2
    window = model.sliding_window
    if not window:
        return full

    def keys_to(x: float) -> float:  # the integral of min(position, window) up to x
        return x * x / 2 if x <= window else window * (x - window / 2)

    if last > first:
        sliding = (keys_to(last) - keys_to(first)) / (last - first)
    else:
        sliding = min(first, window)
    share = model.sliding_window_layers / model.layers
    return full * (1 - share) + sliding * share


def _attention_flops(model: ModelFacts, tokens: float, context: float) -> float:
    """FLOPs of `tokens` query tokens attending to `context` tokens each through every layer
    (QK^T and PV: 2 x 2 x heads x head_dim a pair)."""
    return 4 * model.layers * model.attention_heads * model.head_dim * context * tokens


def _flops_s(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    tensor: int,
    tokens: float,
    context: float,
    efficiency: float,
    logit_rows: float,
    *,
    gemm_tflops: tuple[float, float],
    grouped_experts: float = 0.0,
    held_16_bit: float = 0.0,
    layout: float = 1.0,
    kept_experts: float = 0.0,
) -> float:
    """Compute time of `tokens` tokens attending to `context` tokens through every layer, each
    stage's layers on its `tensor` GPUs, the pipeline stages one after another (a stage's
    output is the next stage's input). The input embedding is a lookup, and the engine
    computes logits only for `logit_rows` positions: the last scheduled token of each
    sequence in the step (vLLM gpu_model_runner.py: `logits_indices = query_start_loc[1:] -
    1`, then `compute_logits(hidden_states[logits_indices])`), so a prefill runs the lm_head
    once, not once per prompt token. `grouped_experts`: the active routed expert parameters
    whose math is left out here, charged at the grouped kernel's measured rate instead
    (`_grouped_expert_math_s`): those of the MoE layers the checkpoint quantizes, not those
    of a MoE layer it keeps whole (`held_16_bit`, below). `held_16_bit`: the active
    parameters a pre-quantized checkpoint leaves 16-bit (memory.held_16_bit_active_parameters),
    the routed experts of the MoE layers it keeps whole among them. `gemm_tflops`: the
    16-bit and the quantized GEMMs' rates, `_gemm_tflops` for the experts' kernel
    (`expert_kernel`), which StepModel computes once for its steps. It is required, so that
    no caller takes the architecture's rate where the kernel decides it (review7 F9: vLLM's
    default FlashInfer MXFP4 x BF16 kernel runs at the BF16 rate). `layout`: the routed
    experts' size as the engine lays them out, over their size as the checkpoint holds them
    (`expert_layout`): the MoE kernel multiplies the padded tensors it is handed, so the
    experts' math grows with their padding as their reads do
    (gpt-oss-120b's MXFP4 experts on FlashInfer's SM100 kernel at TP 8: each rank's
    intermediate slice of 360 padded to 512 and the hidden size 2880 to 3072, 1.52 times the
    math; at TP 1 to 4, 1.14). `kept_experts`: the share of the routed experts in the MoE
    layers the checkpoint keeps whole (`kept_expert_share`), the same share `_expert_read_s`
    reads as 16-bit: where the format holds only the experts, those experts are not in it,
    run at the 16-bit rate and are not padded (in `held_16_bit` too, they are the 16-bit
    share either way); an MXFP4 checkpoint keeps none (`kept_expert_share`).

    The modules held 16-bit run 16-bit GEMMs whatever the format: a linear layer the
    checkpoint's config leaves unquantized gets UnquantizedLinearMethod (vLLM 0.13.0
    quantization/fbgemm_fp8.py FBGEMMFp8Config.get_quant_method, `modules_to_not_convert`;
    fp8.py Fp8Config.get_quant_method, `ignored_layers`), a BF16 F.linear; the lm_head is a
    ParallelLMHead, a VocabParallelEmbedding and not a LinearBase, for which
    Fp8Config.get_quant_method returns no quantized method (vocab_parallel_embedding.py)."""
    body = model.active_parameters - model.embedding_parameters - grouped_experts
    # The parameters in the format; the rest (and the lm_head) stay 16-bit.
    quantized = max(0.0, body - held_16_bit)
    if fmt.applies_to == "experts":
        # The routed experts of the layers the format quantizes, less any run grouped.
        experts = model.active_routed_expert_parameters * (1 - kept_experts)
        quantized = max(0.0, experts - grouped_experts)
    # The routed experts' padding (`layout`), multiplied at the format's rate.
    routed = 0.0 if grouped_experts else min(quantized, model.active_routed_expert_parameters)
    padding = (layout - 1) * routed
    logits = 2 * model.vocab_size * model.hidden_size * logit_rows
    attention = _attention_flops(model, tokens, context)
    sixteen_bit_gemm, quantized_gemm = gemm_tflops
    seconds = (
        2 * (quantized + padding) * tokens / quantized_gemm
        + (2 * (body - quantized) * tokens + logits) / sixteen_bit_gemm
        + attention / sixteen_bit_gemm  # the BF16 rate
    )
    return seconds / tensor / (1e12 * efficiency)


# Physical, not fitted: the routed experts' grouped GEMM at prefill sizes takes its math plus
# one read of its weights, not the larger of the two (`_expert_read_s`). Kernel tables,
# measured time over that sum:
# - vLLM's Triton fused_moe (both GEMMs), BF16, E=128 N=704 K=2816 top 8 on an H200, 4096
#   tokens (256 rows per expert): 1189.6 us (vllm-project/vllm PR #44818); E=64 N=1408
#   K=2048 top 6 on an A100 80GB, 4096 tokens (384 rows): 2636.6 us (PR #40542). Even with
#   the math at the datasheet peak (989 and 312 TFLOPS) that is 1.67x and 1.38x the sum;
# - DeepGEMM's FP8 masked grouped GEMM, N=4096 K=7168 on an H800, with the math at its own
#   dense rate (1304 TFLOPS at M=4096): 932, 1040 and 1233 TFLOPS at 256, 512 and 1024 rows
#   per group (deepseek-ai/DeepGEMM README, early-2025 tables), 0.75x, 0.85x and 0.82x.
# The larger of the two (the plain roofline) is below every one of them (1.06-1.4x for
# DeepGEMM, 3.0x and 1.9x for Triton).
def _expert_read_s(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    tensor: int,
    tokens: float,
    bandwidth: float,
    grouped: GroupedShares | None = None,
    layout: float = 1.0,
    kept: float = 0.0,
    kernel: str | None = None,
) -> float:
    """One rank's read of the routed experts a prefill step of `tokens` tokens routes to (its
    pipeline stages one after another): a grouped GEMM of tokens x top-k / experts rows per
    expert does not hide it behind its math, so it adds to the step's GEMMs. The weight-only
    4-bit formats on Marlin pay their conversion instead (`_marlin_prefill_s`); block-scaled
    FP8 experts stream theirs at the share of the datasheet bandwidth measured for the
    grouped kernel and expert split the layout runs (`grouped`: `grouped_fp8_shares`). A rank
    holds 1/tensor of the expert weights whatever the split: with EP ranks, whole experts
    (experts / EP of them) split tensor / EP ways. `layout`: the bytes read as the engine lays
    the experts out over the bytes held (`expert_layout`). `kept`: the share of the routed
    experts in the MoE layers the checkpoint keeps whole in 16-bit (`kept_expert_share`):
    16-bit bytes, streamed by the unquantized MoE at the plain rate, not by `grouped`, and
    read where the others pay Marlin's conversion instead (`_marlin_prefill_s` leaves them
    out). `kernel`: the experts' kernel where the engine's rules name it (`expert_kernel`)."""
    if not model.is_moe:
        return 0.0
    touched = (model.routed_expert_parameters - _untouched_experts(model, tokens)) / tensor
    if _dequant_bound(gpu, fmt, kernel):
        return touched * kept * BYTES_16BIT / bandwidth
    quantized_bandwidth = bandwidth
    if grouped is not None:
        quantized_bandwidth = gpu.bandwidth_gbps * 1e9 * grouped.read
    quantized_s = touched * (1 - kept) * fmt.weight_bytes * layout / quantized_bandwidth
    return quantized_s + touched * kept * BYTES_16BIT / bandwidth


# Physical, not fitted: DeepGEMM's FP8 grouped GEMM with 128x128 weight block scales, at prefill
# sizes, streams the experts and does their math well below the dense GEMMs' rates, and the
# more ways each expert is split the lower both rates are. vLLM PR #13932 (benchmark_moe.py on
# DeepSeek-V3's experts, E=256 K=7168 top 8 on one H100, both GEMMs; -tp splits each expert's
# N=4096 2, 4 or 8 ways, so a column holds 1/tp of every expert) gives each column's times at
# 128 to 2048 tokens (4 to 64 rows per expert). Each column lies within 1.3% of the line
# through its 128- and 2048-token times; its slope is the math of a token's 8 experts' 1/tp
# slices (704.6/tp MFLOP) and its intercept one read of 1/tp of the 11.27 GB of FP8 experts:
# - whole experts: 1.662 us per token on 6.142 ms: 0.214 of the 1979 TFLOPS FP8 peak, 0.548
#   of 3.35 TB/s (the 3072-token time, 11252.75 us, is on the line too);
# - split 2: 1.288 us on 3.580 ms: 0.138, 0.470; split 4: 1.130 us on 2.385 ms: 0.079, 0.353;
#   split 8: 1.062 us on 1.800 ms: 0.042, 0.234.
# The split is the layout's: with TP alone every rank holds 1/tensor of every expert; with
# expert parallelism over the TP ranks (TensorRT-LLM's moe_expert_parallel_size, whose
# product with moe_tensor_parallel_size is tensor_parallel_size: docs/source/features/
# parallel-strategy.md) each rank holds experts / EP whole experts split tensor / EP ways, and
# runs only the rows routed to them. The slopes fall far less than 1/split (a + b/split with
# a = 0.98 us fits all four within 2.4%): most of a split column's time per token is the
# routed rows' work that every TP rank repeats, which EP divides among the ranks. A split
# beyond 8 (TP 16 across nodes) takes the 8-way rates, the most split measured. The PR's
# "H100" is taken as the SXM part; steps above 3072 tokens extrapolate the line. Known to
# over-predict TensorRT-LLM: TensorRT-LLM#5929 measures TP 8 alone 40 / 163 ms slower than EP 8
# at 1600 / 8192 tokens, these rates give 122 / 446 ms (its fused MoE repeats less). A decode step
# reads the same expert bytes per rank on average either way (the busiest rank's excess under
# EP is not counted). TensorRT-LLM runs the same kernel for FP8
# block-scaled experts on Hopper (its DeepGEMM port: grouped_gemm_dispatch ->
# GemmType::GroupedWithOffset, block_m 64 or 128, in cpp/tensorrt_llm/kernels/cutlass_kernels/
# fp8_blockscale_gemm/fp8_blockscale_gemm_kernel.cuh). Measured on Hopper only: elsewhere the
# roofline holds (moe_kernels.GROUPED_FP8_ARCHITECTURES). Block-scaled FP8 is the native format
# of the checkpoints that ship in FP8 (DeepSeek-V3/R1) and the format of pre-quantized
# checkpoints with a weight_block_size (Qwen/Qwen3-235B-A22B-FP8: moe_kernels.grouped_block_fp8);
# an FP8 format quantized at load is per-tensor and runs other kernels. Other models' experts
# are other shapes (Qwen3-235B's: K=4096, N=1536 split TP ways, against DeepSeek-V3's K=7168,
# N=2048): they take these shares unmeasured.
# Without attention data parallelism the layouts communicate alike: every rank has every
# token after the attention's all-reduce, and the MoE's partial outputs are summed by the same
# all-reduce under EP as under TP (TensorRT-LLM CutlassFusedMoE.reducescatter_or_allreduce,
# tensorrt_llm/_torch/modules/fused_moe/fused_moe_cutlass.py; the all-gather and
# reduce-scatter are attention DP's).
GROUPED_FP8_READ_SHARE: dict[int, float] = {1: 0.55, 2: 0.47, 4: 0.35, 8: 0.23}
GROUPED_FP8_MATH_SHARE: dict[int, float] = {1: 0.21, 2: 0.14, 4: 0.079, 8: 0.042}
# Physical, not fitted: vLLM's Triton fused_moe (w8a8, 128x128 block scales) on the same
# experts, PR #13932's Triton columns, read the same way (the line through each column's 128-
# and 2048-token times): split 1: 3.833 us per token on 11.99 ms, 0.093 of the FP8 peak and
# 0.28 of the bandwidth; split 2: 2.128 us on 5.753 ms, 0.084, 0.29; split 4: 1.099 us on
# 2.981 ms, 0.081, 0.28; split 8: 0.566 us on 1.660 ms, 0.079, 0.25. Its times are not a line:
# nearly flat to 1536 tokens, then a step at 2048 (its tuned block sizes change), so the line
# lies above every time between (by up to 30% at 1536) and below the 3072-token one (27189.87
# us at split 1, by 13%). At split 8 it is faster than DeepGEMM at every size (vLLM PR #29346
# made it vLLM's default there).
TRITON_FP8_READ_SHARE: dict[int, float] = {1: 0.28, 2: 0.29, 4: 0.28, 8: 0.25}
TRITON_FP8_MATH_SHARE: dict[int, float] = {1: 0.093, 2: 0.084, 4: 0.081, 8: 0.079}
# The rates of each grouped kernel moe_kernels.grouped_fp8_kernel chooses by release (the
# release rules and their sources are there).
GROUPED_FP8_TABLES: dict[str, tuple[dict[int, float], dict[int, float]]] = {
    "deepgemm": (GROUPED_FP8_READ_SHARE, GROUPED_FP8_MATH_SHARE),
    "triton": (TRITON_FP8_READ_SHARE, TRITON_FP8_MATH_SHARE),
}


class GroupedShares(NamedTuple):
    """Shares of the datasheet bandwidth and FP8 peak a grouped FP8 GEMM runs at."""

    read: float
    math: float


def grouped_fp8_shares(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    engine: str,
    version: str | None,
    tensor: int,
    expert_parallel: int,
    checkpoint: QuantizedCheckpoint | None = None,
) -> GroupedShares | None:
    """The rates of the grouped kernel a prefill step's routed experts run at
    (`grouped_fp8_kernel`), for the measured split at or below the layout's (a split beyond
    8 takes the 8-way rates); None where the roofline holds (`_flops_s` and
    `_expert_read_s` then count them as any GEMM). `checkpoint`: the catalog's facts of the
    pre-quantized checkpoint loaded (`grouped_block_fp8`). Raises unless EP divides TP."""
    split = expert_split(tensor, expert_parallel)
    if not grouped_block_fp8(model, gpu, fmt, checkpoint):
        return None
    kernel = grouped_fp8_kernel(
        engine, version, tensor, expert_parallel, model.moe_intermediate_size, model.hidden_size
    )
    if kernel is None:
        return None
    read, math_share = GROUPED_FP8_TABLES[kernel]
    measured = max(s for s in read if s <= split)
    return GroupedShares(read[measured], math_share[measured])


def _grouped_expert_math_s(
    parameters: float,
    gpu: Gpu,
    tensor: int,
    tokens: float,
    grouped: GroupedShares | None,
) -> float:
    """The math of the active routed expert `parameters` that run a grouped kernel at its
    measured rate (`grouped`; `_flops_s` leaves them out there) in a prefill step of `tokens`
    tokens, the pipeline stages one after another, each stage's experts on its `tensor`
    GPUs."""
    if grouped is None:
        return 0.0
    rate = gpu.compute_tflops("fp8") * 1e12 * grouped.math
    return 2 * parameters * tokens / tensor / rate


def _untouched_experts(model: ModelFacts, tokens: float) -> float:
    """Routed expert parameters no token of a step of `tokens` tokens routes to (a decode
    batch touches few experts, a prefill chunk nearly all)."""
    return model.routed_expert_parameters * _untouched_share(model, tokens)


def _untouched_share(model: ModelFacts, tokens: float) -> float:
    """The share of the routed experts no token of a step of `tokens` tokens routes to."""
    if not model.is_moe:
        return 0.0
    untouched: float = (1 - model.active_experts / model.experts) ** tokens
    return untouched


def _weights_read(
    model: ModelFacts,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    tokens: float,
    checkpoint: QuantizedCheckpoint | None = None,
    layout: float = 1.0,
    layers: float | None = None,
    experts: float | None = None,
) -> float:
    """Weight bytes one rank reads in a step of `tokens` tokens, per pipeline stage (a step
    passes the stages one after another, so `pipeline` times this is the step's read): the
    decoder layers at the checkpoint's group size and with its 16-bit layers, the routed
    experts as the engine lays them out for its kernel (`layout`: `expert_layout`) and only
    those some token routes to (MLA's 16-bit kv_b_proj copy, which only decode reads, is
    `mla_decode_copy_bytes`); of the embeddings, split
    over the vocabulary on the TP ranks and each on one stage, the lm_head's shard whole
    (vLLM's LogitsProcessor multiplies the hidden states by it) and only the step's tokens'
    rows of the input embedding (VocabParallelEmbedding.forward is an F.embedding lookup in
    the rank's shard; vllm/model_executor/layers/vocab_parallel_embedding.py). A tied table
    is one tensor (ParallelLMHead.tie_weights), read whole as the lm_head. `layers` and
    `experts`: `layer_weight_bytes_per_rank` and `routed_expert_bytes_per_rank` of these
    arguments where the caller has them (StepModel).

    The experts no token routes to leave the read at the bytes `layers` holds them in
    (`routed_expert_bytes_per_rank`): a MoE layer the checkpoint keeps whole holds its experts
    16-bit, and its unquantized MoE reads only the routed ones too. On CUDA that is Triton's
    fused_moe_kernel, each of whose programs loads the weights of the one expert its block of
    sorted rows routes to (`b_ptr + off_experts * stride_be`, off_experts from
    moe_align_block_size's expert_ids, which hold blocks only for routed rows; fused_moe.py
    0.11.0 369-393)."""
    if layers is None:
        layers = layer_weight_bytes_per_rank(model, fmt, tensor, pipeline, checkpoint=checkpoint)
    if experts is None:
        experts = routed_expert_bytes_per_rank(model, fmt, tensor, pipeline, checkpoint)
    if layout != 1.0:  # the rank's experts as laid out, not as held (MXFP4 holds no 16-bit ones)
        held = model.routed_expert_parameters * checkpoint_format(fmt, checkpoint).weight_bytes
        padding = held / (tensor * pipeline) * (layout - 1)
        layers += padding
        experts += padding
    untouched = experts * _untouched_share(model, tokens)
    rows = model.vocab_size + min(tokens, model.vocab_size)  # lm_head rows, then looked-up ones
    embeddings = rows * model.hidden_size * BYTES_16BIT
    return layers - untouched + embeddings / (tensor * pipeline)


def mla_decode_copy_bytes(
    model: ModelFacts,
    held: QuantFormat,
    tensor: int,
    pipeline: int,
    checkpoint: QuantizedCheckpoint | None,
    rules: EngineMemory | None,
) -> float:
    """What one rank's decode step reads beyond the checkpoint's bytes where vLLM's MLA keeps a
    16-bit copy of a quantized kv_b_proj (engine_memory.py MLA_DEQUANTIZED_KV_B_SINCE): the
    absorbed decode multiplies by the copy, W_UK_T and W_UV (forward: torch.bmm(decode_q_nope,
    self.W_UK_T); _v_up_proj: torch.bmm(x, self.W_UV)), and not by kv_b_proj, which only the
    prefill path runs (_forward_prefill and _compute_prefill_context: self.kv_b_proj(
    kv_c_normed)); vLLM 0.13.0 v1/attention/backends/mla/common.py. So decode reads the
    copy's 16-bit bytes in place of the quantized projection's, not both; a 16-bit kv_b_proj
    is only viewed (the same bytes), and `held` is the format as the checkpoint holds it: so
    are the layers `checkpoint` keeps whole in 16-bit (`mla_kv_b_copy_parameters`)."""
    if rules is None or not rules.mla_dequantized_kv_b_proj or not model.is_mla:
        return 0.0
    sixteen_bit = held.applies_to == "experts" or (
        checkpoint is not None and checkpoint.unquantized_attention
    )
    linear = BYTES_16BIT if sixteen_bit else held.weight_bytes
    if linear >= BYTES_16BIT:
        return 0.0
    return mla_kv_b_copy_parameters(model, tensor, pipeline, checkpoint) * (BYTES_16BIT - linear)


def _native_fp4(gpu: Gpu, fmt: QuantFormat, kernel: str | None = None) -> bool:
    """MXFP4 weights the GPU's tensor cores take as they are (with MXFP8 activations):
    FlashInfer's MXFP4 x MXFP8 kernel does; its MXFP4 x BF16 one (vLLM's default on
    Blackwell) and Marlin's never (W4A16, moe_kernels.MXFP4_KERNELS); otherwise by the
    architecture (`kernel`: `expert_kernel`)."""
    if fmt.id != Quantization.MXFP4:
        return False
    if kernel in ("flashinfer_bf16", "flashinfer_mxfp8", "marlin"):
        return kernel == "flashinfer_mxfp8"
    return gpu.architecture in NATIVE_FP4_ARCHITECTURES


def _dequant_bound(gpu: Gpu, fmt: QuantFormat, kernel: str | None = None) -> bool:
    """Whether the format's GEMMs dequantize 4-bit weights to BF16 (W4A16) on this GPU at a
    rate below its bandwidth: Marlin's, and Triton's MXFP4 MoE on Hopper, which converts the
    weights in registers per tile as Marlin does (TRITON_MXFP4_BLOCK_TOKENS). The rate is
    WEIGHT_ONLY_DEQUANT_FLOP for both: it was fitted on Marlin's rows, and no measurement of
    Triton's conversion alone was found (`kernel`: `expert_kernel`)."""
    weight_only = fmt.compute_dtype == "bf16" and fmt.weight_bytes < 1
    return (
        weight_only
        and not _native_fp4(gpu, fmt, kernel)
        and gpu.architecture in DEQUANT_BOUND_ARCHITECTURES
    )


def _block_tokens(kernel: str | None) -> int:
    """The rows of each expert a weight-only kernel multiplies per conversion of its weights:
    Triton's MXFP4 tiles (TRITON_MXFP4_BLOCK_TOKENS), else Marlin's (MARLIN_BLOCK_TOKENS)."""
    return TRITON_MXFP4_BLOCK_TOKENS if kernel == "triton" else MARLIN_BLOCK_TOKENS


def _marlin_parameters(
    model: ModelFacts,
    fmt: QuantFormat,
    tokens: float,
    layout: float = 1.0,
    kept: float = 0.0,
    linears_16_bit: float = 0.0,
) -> tuple[float, float]:
    """(routed experts, other linears): the parameters a step of `tokens` tokens runs through
    Marlin's W4A16 kernels. The experts some token routes to run fused_marlin_moe in every
    4-bit format, as the engine lays them out (`layout`: `expert_layout`), but for the share
    `kept` in the MoE layers the checkpoint keeps whole, which run the unquantized MoE
    (`kept_expert_share`); the other linears only where the format's dense kernel is Marlin
    (MARLIN_DENSE_FORMATS), but for `linears_16_bit`, those the checkpoint leaves 16-bit
    (memory.held_16_bit_linear_parameters): AWQ's config gives a
    linear layer in `modules_to_not_convert` UnquantizedLinearMethod, a BF16 GEMM, before it
    looks at Marlin (awq_marlin.py AWQMarlinConfig.get_quant_method, 0.8.5 127-128, 0.11.0
    133-134, 0.19.0 263-269; auto_awq.py 0.24.0 290-296)."""
    touched = model.routed_expert_parameters - _untouched_experts(model, tokens)
    experts = touched * layout * (1 - kept)
    if fmt.applies_to == "experts" or fmt.id not in MARLIN_DENSE_FORMATS:
        return experts, 0.0
    linears = model.parameters - model.embedding_parameters - model.routed_expert_parameters
    return experts, max(0.0, linears - linears_16_bit)


def _dequant_excess_s(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    tokens: float,
    bandwidth: float,
    layout: float = 1.0,
    kernel: str | None = None,
    kept: float = 0.0,
    linears_16_bit: float = 0.0,
) -> float:
    """What a step's Marlin GEMMs take beyond reading their weights: the larger of the two
    binds (the kernel overlaps its loads with the conversion). `layout`: `expert_layout`;
    `kernel`: `expert_kernel` (Triton's MXFP4 MoE on Hopper converts as Marlin does);
    `kept`: `kept_expert_share`, experts not converted, and `linears_16_bit`, other linears
    not converted (`_marlin_parameters`)."""
    if not _dequant_bound(gpu, fmt, kernel):
        return 0.0
    marlin = _marlin_parameters(model, fmt, tokens, layout, kept, linears_16_bit)
    parameters = sum(marlin) / (tensor * pipeline)
    dequant_s = parameters * WEIGHT_ONLY_DEQUANT_FLOP / (gpu.compute_tflops("bf16") * 1e12)
    return pipeline * max(0.0, dequant_s - parameters * fmt.weight_bytes / bandwidth)


def _marlin_prefill_s(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    tensor: int,
    tokens: float,
    layout: float = 1.0,
    *,
    kernel: str | None = None,
    kept: float = 0.0,
    linears_16_bit: float = 0.0,
) -> float:
    """Marlin's conversion time in a prefill step of `tokens` tokens, the pipeline stages one
    after another, each stage's weights on its `tensor` GPUs: every weight it runs is
    converted at least once, and once per 64 tokens it runs (for an expert, routed to it;
    counted in proportion, as the mean share of a step's tokens). It adds to the step's GEMMs:
    Marlin's warps issue both the conversion and the mma.sync, with no producer warps to
    overlap them, where a decode step's conversion only competes with its reads
    (`_dequant_excess_s`). `layout`: the experts as the engine lays them out
    (`expert_layout`). `kernel`: the experts' kernel (`expert_kernel`): Triton's MXFP4 MoE on
    Hopper converts each expert's weights once per 128 rows routed to it, not 64
    (`_block_tokens`); the dense linears' Marlin keeps its 64. `kept`: `kept_expert_share`,
    experts the unquantized MoE runs, and `linears_16_bit`, other linears the checkpoint
    leaves 16-bit: not converted (`_marlin_parameters`)."""
    if not _dequant_bound(gpu, fmt, kernel):
        return 0.0
    experts, dense = _marlin_parameters(model, fmt, tokens, layout, kept, linears_16_bit)
    per_expert = tokens * model.active_experts / model.experts if model.is_moe else 0.0
    converted = model.routed_expert_parameters * layout * (1 - kept)
    blocks = converted * per_expert / _block_tokens(kernel)
    routed = max(experts, blocks)
    parameters = routed + dense * max(1.0, tokens / MARLIN_BLOCK_TOKENS)
    return parameters / tensor * WEIGHT_ONLY_DEQUANT_FLOP / (gpu.compute_tflops("bf16") * 1e12)


class PrefillSteps(NamedTuple):
    """A prefill's chunks: how many, and one chunk's step through all `pipeline` stages."""

    steps: int
    step_s: float
    pipeline: int

    @property
    def latency_s(self) -> float:
        """Until the last chunk has passed every stage. Under pipeline parallelism a chunk
        passes the stages one after another, and the next chunk enters the first stage as
        this one leaves it: vLLM V1 keeps up to `pipeline` scheduled batches in flight
        (EngineCore.step_with_batch_queue, its queue `max_concurrent_batches` deep: the
        pipeline size, a property of the executor in earlier V1 releases and of VllmConfig
        in recent ones)
        and schedules a prompt's next chunk while the previous one runs (Scheduler.schedule
        counts a chunk's tokens as computed when it schedules them). So a lone one-chunk
        prompt costs the chunk through every stage, and N chunks N + pipeline - 1 stage
        times."""
        return self.step_s * (self.steps + self.pipeline - 1) / self.pipeline

    @property
    def occupancy_s(self) -> float:
        """How long the prefill holds each stage (its steps' stage times): the service time
        other prompts queue behind, the stages working on other batches meanwhile."""
        return self.steps * self.step_s / self.pipeline


def _prefill_steps(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    *,
    tensor: int,
    pipeline: int,
    weights: float,
    bandwidth: float,
    tokens: float,
    prompt: float,
    chunk: int,
    efficiency: float,
    step_overhead_s: float,
    gemm_tflops: tuple[float, float],
    grouped: GroupedShares | None = None,
    held_16_bit: float = 0.0,
    layout: float = 1.0,
    kept_experts: float = 0.0,
    steps: int | None = None,
    kernel: str | None = None,
    linears_16_bit: float = 0.0,
) -> PrefillSteps:
    """Prefill of `tokens` prompt tokens (prompts of `prompt` tokens each) on its own: chunked
    prefill runs them in steps of at most `chunk` tokens (max_num_batched_tokens), each step
    reading the weights once and paying a step's fixed overhead; a token attends to the half
    of its prompt before it on average, at most the window in a sliding-window layer
    (`windowed_context`). A step is compute-bound unless its chunk is short. A
    step passes the pipeline stages one after another, each stage's layers on its `tensor`
    GPUs. `grouped`: the grouped FP8 kernel's rates the routed experts run at, if any
    (`grouped_fp8_shares`); `held_16_bit`: the active parameters the checkpoint leaves 16-bit
    (`_flops_s`); `layout`: the routed experts' bytes as the engine lays them out over those
    held (`expert_layout`); `gemm_tflops`: the GEMM rates (`_flops_s`);
    `kept_experts`: the share of the routed experts in MoE layers the checkpoint keeps whole
    (`kept_expert_share`), which run the unquantized MoE in BF16, not `grouped`; `steps`: the
    steps, of `tokens / steps` each, where the caller knows them (a burst's: `burst_prefill`);
    `kernel`: the routed experts' kernel where the engine's rules name it (`expert_kernel`);
    `linears_16_bit`: the linears besides the routed experts the checkpoint leaves 16-bit
    (`_marlin_parameters`)."""
    steps = steps or max(1, math.ceil(tokens / chunk))
    grouped_experts = 0.0
    if grouped is not None:
        grouped_experts = model.active_routed_expert_parameters * (1 - kept_experts)
    size = tokens / steps
    # One logit row per prompt, and one more for each chunk that ends inside a prompt.
    prompts = tokens / prompt
    # A prefill step's grouped expert GEMMs add their weight read to their math; a decode
    # step's expert reads are its memory time already (StepModel.decode).
    compute_s = _flops_s(
        model,
        gpu,
        fmt,
        tensor,
        tokens,
        windowed_context(model, 0, prompt),
        efficiency,
        prompts + steps - 1,
        grouped_experts=grouped_experts,
        held_16_bit=held_16_bit,
        gemm_tflops=gemm_tflops,
        layout=layout,
        kept_experts=kept_experts,
    ) + steps * (
        _marlin_prefill_s(
            model,
            gpu,
            fmt,
            tensor,
            size,
            layout,
            kernel=kernel,
            kept=kept_experts,
            linears_16_bit=linears_16_bit,
        )
        + _expert_read_s(
            model, gpu, fmt, tensor, size, bandwidth, grouped, layout, kept_experts, kernel
        )
        + _grouped_expert_math_s(grouped_experts, gpu, tensor, size, grouped)
    )
    memory_s = steps * pipeline * weights / bandwidth
    step_s = max(compute_s, memory_s) / steps + (
        _communication_s(model, gpu, tensor, pipeline, size) + step_overhead_s
    )
    return PrefillSteps(steps, step_s, pipeline)


# Pure, and asked for every candidate: cached by release. Its constants are physical, not
# fitted (bench/corpus.py FITTED swaps fitted ones in place, which a cache would not see;
# tests/unit/test_planner_speed.py checks).
@functools.lru_cache(maxsize=256)
def frontend_s(engine: str, version: str | None, endpoint: str = "chat") -> float:
    """A request's release- and endpoint-dependent front-end time (TOKENIZER_BATCH_WAIT_S,
    CHAT_TEMPLATE_PARSE_S); none for another engine or an unknown release."""
    if engine != "vllm" or version is None:
        return 0.0
    wait = TOKENIZER_BATCH_WAIT_S if version_within(version, *TOKENIZER_BATCH_RELEASES) else 0.0
    parse = endpoint == "chat" and any(
        version_within(version, since, until) for since, until in CHAT_TEMPLATE_PARSED_RELEASES
    )
    return wait + parse * CHAT_TEMPLATE_PARSE_S


def overlap_scheduler(
    engine: str,
    version: str | None,
    gpu: Gpu,
    tensor: int,
    pipeline: int,
    *,
    setting: bool | None = None,
) -> bool:
    """Whether the engine's scheduler plans a step ahead (VLLM_ASYNC_SCHEDULING_SINCE,
    TRTLLM_OVERLAP_SCHEDULER_SINCE): `setting` where the serving command sets it, else the
    release's default for the layout. An unknown vLLM release is counted without it (off
    before 0.14.0), an unknown TensorRT-LLM release with it (the default since 0.20.0)."""
    if setting is not None:
        return setting
    if engine == "tensorrt-llm":
        return pipeline == 1 and version_within(version, TRTLLM_OVERLAP_SCHEDULER_SINCE, None)
    multi_node = tensor * pipeline > gpu.gpus_per_node  # a replica on Ray
    if engine != "vllm" or version is None or multi_node:
        return False
    if pipeline > 1:
        return version_within(version, VLLM_ASYNC_SCHEDULING_WITH_PIPELINE_SINCE, None)
    return version_within(version, VLLM_ASYNC_SCHEDULING_SINCE, None)


class DecodeStep(NamedTuple):
    """A step of `batch` decodes: its time alone, and the parts a prefill step shares."""

    step_s: float  # the step on its own
    memory_s: float  # weight and KV reads
    compute_s: float  # the decodes' FLOPs
    communication_s: float  # their all-reduces and pipeline hand-offs
    overhead_s: float  # per-layer kernel gaps (paid once per step)
    host_s: float  # the host's work per running sequence the GPU waits for


@dataclass(slots=True)
class StepModel:
    """One replica's step times for a workload of `input_tokens` / `output_tokens` requests:
    the terms `estimate_performance` combines (and bench/ttft_simulation.py replays). The
    GPU's efficiencies and a step's fixed cost are read once, when it is made (the planner
    makes one per layout it tries)."""

    model: ModelFacts
    gpu: Gpu
    fmt: QuantFormat
    tensor: int
    pipeline: int
    kv_dtype_bytes: float
    input_tokens: int
    output_tokens: int
    engine: str = "vllm"  # the serving engine's id: whose MoE kernels run
    # Ranks the routed experts are spread over whole (1: every rank holds a 1/tensor slice of
    # every expert); a divisor of tensor. Plans choose it (optimizer._expert_degrees).
    expert_parallel: int = 1
    checkpoint: QuantizedCheckpoint | None = None  # the catalog's facts of a loaded checkpoint
    overlapped: bool = False  # an overlap scheduler hides the host's work (`overlap_scheduler`)
    # The engine's release (None: unknown): which grouped FP8 kernel its MoE runs.
    engine_version: str | None = None
    # The engine's memory rules for the release (engine_memory.py; None: the checkpoint's own
    # layout): how it lays out what a step reads (`expert_layout`, `mla_decode_copy_bytes`).
    memory_rules: EngineMemory | None = None
    bandwidth: float = field(init=False)  # bytes/s decode's reads reach
    compute_efficiency: float = field(init=False)
    overhead_s: float = field(init=False)  # a step's per-layer kernel gaps
    host_per_sequence_s: float = field(init=False)  # the host work a decode step waits for
    held: QuantFormat = field(init=False)  # the format as the checkpoint holds it
    # The active parameters the checkpoint leaves 16-bit, computed at the 16-bit rate, and the
    # share of the routed experts in the MoE layers it keeps whole (`kept_expert_share`).
    held_16_bit: float = field(init=False)
    kept_experts: float = field(init=False)
    # The other linears it leaves 16-bit (`_marlin_parameters`).
    linears_16_bit: float = field(init=False)
    # The grouped FP8 kernel's rates a prefill's routed experts run at (`grouped_fp8_shares`).
    grouped: GroupedShares | None = field(init=False)
    layout: float = field(init=False)  # the routed experts' bytes as laid out over as held
    decode_copy_bytes: float = field(init=False)  # what decode reads of MLA's 16-bit copy
    # Computed once for the steps: the decoder layers' bytes a step reads (`_weights_read`),
    # and the GEMM rates (`_gemm_tflops`; the same for the format as held: only its bytes
    # differ).
    read_layers: float = field(init=False)
    read_experts: float = field(init=False)  # the routed experts' bytes among them, as held
    gemm_tflops: tuple[float, float] = field(init=False)
    # The routed experts' kernel where the memory rules name it (`expert_kernel`).
    kernel: str | None = field(init=False)

    def __post_init__(self) -> None:
        gpu, model = self.gpu, self.model
        self.held = checkpoint_format(self.fmt, self.checkpoint)
        self.held_16_bit = held_16_bit_active_parameters(model, self.checkpoint)
        self.kept_experts = kept_expert_share(model, self.checkpoint)
        self.linears_16_bit = held_16_bit_linear_parameters(model, self.checkpoint)
        self.read_layers = layer_weight_bytes_per_rank(
            model, self.fmt, self.tensor, self.pipeline, checkpoint=self.checkpoint
        )
        self.read_experts = routed_expert_bytes_per_rank(
            model, self.fmt, self.tensor, self.pipeline, self.checkpoint
        )
        rules = self.memory_rules
        self.kernel = expert_kernel(self.held, rules)
        self.gemm_tflops = _gemm_tflops(gpu, self.fmt, self.kernel)
        self.layout = expert_layout(
            model, self.held, self.tensor, self.pipeline, rules, self.expert_parallel
        )
        self.decode_copy_bytes = mla_decode_copy_bytes(
            model, self.held, self.tensor, self.pipeline, self.checkpoint, rules
        )
        self.grouped = grouped_fp8_shares(
            model,
            gpu,
            self.fmt,
            self.engine,
            self.engine_version,
            self.tensor,
            self.expert_parallel,
            self.checkpoint,
        )
        efficiency = BANDWIDTH_EFFICIENCY_BY_GPU.get(gpu.id, BANDWIDTH_EFFICIENCY)
        self.bandwidth = gpu.bandwidth_gbps * 1e9 * efficiency
        self.compute_efficiency = COMPUTE_EFFICIENCY_BY_CHIP.get(gpu.chip or "", COMPUTE_EFFICIENCY)
        moe_layers = model.layers - model.first_dense_layers if model.is_moe else 0
        mla_layers = model.layers if model.is_mla else 0
        # vLLM's 16-bit experts run Triton's fused_moe, those of the MoE layers a quantized
        # checkpoint keeps whole too (`kept_expert_share`).
        triton_moe = self.engine == "vllm" and self.fmt.weight_bytes >= 2
        kept = self.kept_experts if self.engine == "vllm" else 0.0
        triton_share = 1.0 if triton_moe else kept
        triton_moe_layers = moe_layers * triton_share
        self.overhead_s = (
            model.layers * PER_LAYER_OVERHEAD_S
            + moe_layers * MOE_LAYER_OVERHEAD_S
            + triton_moe_layers * TRITON_MOE_LAYER_OVERHEAD_S
            + mla_layers * MLA_LAYER_OVERHEAD_S
        )
        # vLLM's engine loop waits for its host work unless async scheduling plans a step
        # ahead or, on several stages, other batches run meanwhile (DECODE_HOST_PER_SEQUENCE_S).
        host_waited = self.engine == "vllm" and not self.overlapped and self.pipeline == 1
        self.host_per_sequence_s = DECODE_HOST_PER_SEQUENCE_S if host_waited else 0.0

    def decode(self, batch: int) -> DecodeStep:
        """A step of `batch` decodes, each reading its request's mean context."""
        model, gpu, fmt = self.model, self.gpu, self.fmt
        tensor, pipeline = self.tensor, self.pipeline
        bandwidth = self.bandwidth
        weights = (
            _weights_read(
                model,
                fmt,
                tensor,
                pipeline,
                batch,
                self.checkpoint,
                self.layout,
                self.read_layers,
                self.read_experts,
            )
            + self.decode_copy_bytes
        )
        context = windowed_context(model, self.input_tokens, self.input_tokens + self.output_tokens)
        kv_read = (
            batch
            * context
            * stage_layers(model, pipeline)
            * kv_bytes_per_token_layer(model, tensor, self.kv_dtype_bytes)
        )
        # Stages run one after another for a token: the step time is the sum over stages.
        # The conversion overlaps the reads of the weights as the checkpoint holds them.
        memory_s = pipeline * (weights + kv_read) / bandwidth + _dequant_excess_s(
            model,
            gpu,
            self.held,
            tensor,
            pipeline,
            batch,
            bandwidth,
            self.layout,
            self.kernel,
            self.kept_experts,
            self.linears_16_bit,
        )
        compute_s = _flops_s(
            model,
            gpu,
            fmt,
            tensor,
            batch,
            context,
            self.compute_efficiency,
            batch,
            held_16_bit=self.held_16_bit,
            gemm_tflops=self.gemm_tflops,
            layout=self.layout,
            kept_experts=self.kept_experts,
        )
        communication_s = _communication_s(model, gpu, tensor, pipeline, batch)
        overhead_s = self.overhead_s
        host_s = batch * self.host_per_sequence_s
        step_s = max(memory_s, compute_s) + communication_s + overhead_s + host_s
        return DecodeStep(step_s, memory_s, compute_s, communication_s, overhead_s, host_s)

    def prefill(self, tokens: float, chunk: int, steps: int | None = None) -> PrefillSteps:
        """The steps of a prefill of `tokens` prompt tokens (prompts of input_tokens) in
        chunks of at most `chunk` tokens, without decodes; in `steps` steps where given (of
        `tokens / steps` each; the caller keeps them within `chunk`)."""
        # The experts' read and conversion count the weights as the checkpoint holds them.
        return _prefill_steps(
            self.model,
            self.gpu,
            self.held,
            tensor=self.tensor,
            pipeline=self.pipeline,
            weights=_weights_read(
                self.model,
                self.fmt,
                self.tensor,
                self.pipeline,
                tokens / steps if steps else min(tokens, chunk),
                self.checkpoint,
                self.layout,
                self.read_layers,
                self.read_experts,
            ),
            bandwidth=self.bandwidth,
            tokens=tokens,
            prompt=self.input_tokens,
            chunk=chunk,
            efficiency=self.compute_efficiency,
            step_overhead_s=self.overhead_s,
            grouped=self.grouped,
            held_16_bit=self.held_16_bit,
            layout=self.layout,
            gemm_tflops=self.gemm_tflops,
            kept_experts=self.kept_experts,
            steps=steps,
            kernel=self.kernel,
            linears_16_bit=self.linears_16_bit,
        )

    def prefill_s(self, tokens: float, chunk: int, steps: int | None = None) -> float:
        """Seconds to prefill `tokens` prompt tokens (prompts of input_tokens), back to back in
        steps of at most `chunk` tokens (`steps` of them where given), without decodes
        (`PrefillSteps.latency_s`)."""
        return self.prefill(tokens, chunk, steps).latency_s

    def mixed_step_s(self, prefill_tokens: float, decodes: int) -> float:
        """One step of a prefill chunk and `decodes` decodes: the chunk's step reads the
        weights and pays the step's fixed cost once for both, so the decodes add only their
        compute and all-reduces (what `estimate_performance` charges a stream per prefill)."""
        if prefill_tokens <= 0:
            return self.decode(decodes).step_s
        step_s = self.prefill_s(prefill_tokens, max(1, math.ceil(prefill_tokens)))
        if decodes == 0:
            return step_s
        decode = self.decode(decodes)
        return step_s + decode.compute_s + decode.communication_s + decode.host_s


def request_host_s(others: int, request_frontend_s: float, decode_step_s: float) -> float:
    """A request's host time before its first token with `others` streams in flight: a lone
    request pays its own host work only; under load it pays more, and during that work the
    others' tokens are streamed, one per stream per step of `decode_step_s`."""
    own_s = TTFT_OVERHEAD_S + request_frontend_s + min(others, 1) * TTFT_LOAD_OVERHEAD_S
    streamed = others * own_s / decode_step_s
    return own_s + streamed * TTFT_OVERHEAD_PER_STREAMED_TOKEN_S


class BurstPrefill(NamedTuple):
    """A burst's prefill steps until the prompts counted are complete, and the prompt tokens
    prefilled by the end of the last of them."""

    steps: int
    tokens: int


@functools.lru_cache(maxsize=1024)  # pure; a loop over the burst's steps
def burst_prefill(
    batch: int,
    input_tokens: int,
    budget: int,
    pipeline: int = 1,
    prompts: float | None = None,
) -> BurstPrefill:
    """The steps of a step `budget` (max_num_batched_tokens) that prefill the first `prompts`
    (all `batch` where None; a fraction counts its share of a prompt) of a burst of `batch`
    prompts of `input_tokens`, sent at once. vLLM V1's scheduler (v1/core/sched/scheduler.py
    `schedule`, 0.11.0 208-299 and 334-524) first gives each running request its tokens, one
    to a request that decodes and the rest of its prompt to one still prefilling, then lets the
    waiting requests, first come first served, take the rest of the budget, the last one
    chunked. A request decodes only after the step that completed its prompt has come back:
    the next step, or with `pipeline` stages `pipeline` steps later, and from then on once
    every `pipeline` steps (a running request is not scheduled again while its batch is in
    flight: the "PP>1 ... not finished yet" skip, and v1/engine/core.py
    `step_with_batch_queue`, 0.11.0 300-352, which schedules the next step only once the
    oldest of the `pipeline` in flight has come back; the decode groups of
    `estimate_performance`). So a step's prompt tokens are the budget less one token per
    prompt completed `pipeline`, 2 x `pipeline`, ... steps before it (at least one token:
    where the decodes take the whole budget no prompt moves, which a burst within
    max_num_seqs does not reach at the budgets served). Requests finishing within the
    burst's prefill are not counted."""
    total = batch * input_tokens
    target = total if prompts is None else prompts * input_tokens
    done = [0]  # prompt tokens prefilled by the end of each step
    completed = [0] * pipeline  # prompts completed, by their step modulo `pipeline`
    while done[-1] < target - 1e-9:
        slot = len(done) % pipeline  # this step's: that of the steps `pipeline` apart
        tokens = min(total, done[-1] + max(1, budget - completed[slot]))
        completed[slot] += tokens // input_tokens - done[-1] // input_tokens
        done.append(tokens)
    return BurstPrefill(len(done) - 1, done[-1])


def burst_to_median(batch: int, input_tokens: int, budget: int, pipeline: int = 1) -> BurstPrefill:
    """The prefill steps until a burst of `batch` prompts of `input_tokens` has completed its
    median request's prompt, and the prompt tokens prefilled by then (`burst_prefill`): the
    median request is preceded by half of the others, and the step that completes its prompt
    is filled with the prompts behind it up to the budget."""
    return burst_prefill(batch, input_tokens, budget, pipeline, 1 + (batch - 1) / 2)


def burst_prefills_after_first_token(
    batch: int, input_tokens: int, budget: int, pipeline: int = 1
) -> float:
    """The prompts (in whole prompts; a chunk of one counts as its share) of a burst that are
    prefilled after its median request's first token, which the median request's decodes run
    with. The step that completes the median request's prompt also takes the prompts behind
    it up to the budget (`burst_to_median`), and those give their first tokens with it:
    only the prompt tokens left beyond that step come after. When the whole burst fits one
    step (batch x input_tokens <= budget) no prefill runs during any request's decode. Never
    more than half of the others (the steps to the median hold the prompts before it)."""
    done = burst_to_median(batch, input_tokens, budget, pipeline).tokens
    return (batch * input_tokens - done) / input_tokens


def estimate_performance(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    *,
    tensor: int,
    pipeline: int,
    kv_dtype_bytes: float,
    concurrency: int,
    input_tokens: int,
    output_tokens: int,
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
    burst: bool = False,
    request_frontend_s: float = 0.0,
    engine: str = "vllm",
    engine_version: str | None = None,
    async_scheduling: bool | None = None,
    expert_parallel: int = 1,
    checkpoint: QuantizedCheckpoint | None = None,
    memory_rules: EngineMemory | None = None,
) -> Performance:
    """Steady load: `concurrency` requests in flight, a new one sent as one finishes (a closed
    loop). `burst`: the `concurrency` requests arrive at once (a benchmark's infinite request
    rate); TTFT and TPOT are then the burst's median request's. `request_frontend_s`: the
    release's front-end work per request (`frontend_s`). `engine`, `engine_version`: the
    serving engine's id and release, and `async_scheduling` its setting where the serving
    command sets it (`overlap_scheduler`). `expert_parallel`: the ranks the routed experts
    are spread over whole (StepModel.expert_parallel; a plan's expertParallel). `checkpoint`:
    the catalog's facts of the pre-quantized checkpoint loaded, whose bytes a step reads as memory
    counts them; `memory_rules`: the engine's memory rules for the release, by which it lays
    out the experts and MLA's projections a step reads (StepModel.memory_rules)."""
    overlapped = overlap_scheduler(
        engine, engine_version, gpu, tensor, pipeline, setting=async_scheduling
    )
    steps_model = StepModel(
        model,
        gpu,
        fmt,
        tensor,
        pipeline,
        kv_dtype_bytes,
        input_tokens,
        output_tokens,
        engine,
        expert_parallel,
        checkpoint,
        overlapped,
        engine_version,
        memory_rules,
    )
    batch = concurrency
    # At steady load a step's token budget holds a prompt's chunk and the other streams'
    # decodes: the prefilling request does not decode. A burst's steps take what the
    # scheduler leaves them (`burst_prefill`).
    chunk = max(1, max_num_batched_tokens - (batch - 1))
    # Under pipeline parallelism vLLM V1 keeps up to `pipeline` batches in flight and
    # schedules a running request again only once its batch has come back (Scheduler.schedule
    # skips it: "PP>1 and we have already scheduled all prompt tokens but they are not
    # finished yet"), so the streams decode in groups that take turns on the stages, one
    # group per batch in flight: as many as the stages, or the streams if fewer; a burst
    # forms one group per batch its prompts fill, the rest joining the batches of those.
    # With as many groups as stages each stage works on one group while the others are on
    # the other stages, so a group's token takes one pass of its step through every stage,
    # as long as each stage's turn through all the groups; with fewer, stages idle.
    groups = min(pipeline, batch)
    if burst:
        whole = burst_prefill(batch, input_tokens, max_num_batched_tokens, pipeline)
        groups = min(groups, whole.steps)
    decode = steps_model.decode(math.ceil(batch / groups))
    decode_step_s = decode.step_s

    prefill = steps_model.prefill(input_tokens, chunk)
    prefill_s = prefill.latency_s
    # Continuous batching runs a prefill in steps with the running decodes. Each such step
    # reads the weights and pays the step's fixed cost once for both, so a prefill delays the
    # decodes by only what it adds beyond their decode steps. A stream sees the prefills of
    # the others: at steady load each other stream brings one per `output_tokens` steps; in a
    # burst the median request decodes through the prompt tokens prefilled after its first
    # token (`burst_prefills_after_first_token`: none where the burst fits that token's step).
    # Under pipeline parallelism a chunk lengthens its group's pass by its step through every
    # stage, and the groups behind it on each stage wait as long (with as many groups as
    # stages no stage has idle time to absorb it); the prompt's further chunks join the next
    # groups' batches a stage behind, so a prompt delays the streams by its prefill's latency,
    # (N + P - 1) / P passes for N chunks on P stages, less the decode step each of those
    # passes shares with it (a replay of the batches through the stages gives the same,
    # tests/unit/test_performance.py). Prompts whose chunks share a pass would overlap on the
    # stages; that is not counted, so under a heavy prefill load on several stages this is an
    # upper bound.
    passes = (prefill.steps + pipeline - 1) / pipeline
    prefill_extra_s = max(
        0.0, prefill_s + passes * (decode.compute_s - decode.memory_s - decode.overhead_s)
    )
    others = batch - 1
    prefills_seen = (
        burst_prefills_after_first_token(batch, input_tokens, max_num_batched_tokens, pipeline)
        if burst
        else others
    )
    tpot = decode_step_s + prefills_seen * prefill_extra_s / output_tokens

    host_s = request_host_s(others, request_frontend_s, decode_step_s)
    if burst:
        # The median request's prompt is prefilled after those of the half of the burst sent
        # before it (first come, first served), the prompts packed into steps of
        # max_num_batched_tokens less the decodes of the prompts already complete; its first
        # token comes at the end of the step that completes its prompt, a step the scheduler
        # fills with the prompts behind it up to the budget (`burst_to_median`).
        to_median = burst_to_median(batch, input_tokens, max_num_batched_tokens, pipeline)
        tokens = to_median.tokens
        ttft = host_s + steps_model.prefill_s(tokens, max_num_batched_tokens, to_median.steps)
    else:
        # A request sent as another finishes arrives while the next step runs, then its
        # prefill shares a step with the others' decodes; it may also queue behind another
        # stream's prefill (M/D/1 on the prefill work the streams bring, each prefill served
        # for as long as it holds a pipeline stage: the stages take other batches meanwhile).
        # A lone request (concurrency 1) has none of that. An overlap scheduler has launched
        # the step after the running one before it fetches the request (`overlap_scheduler`).
        service_s = prefill.occupancy_s
        arrival_rate = others / (output_tokens * tpot)
        load = min(arrival_rate * service_s, 0.95)
        queueing_s = load * service_s / (2 * (1 - load))
        steps_waited = 2 if overlapped else 1
        ttft = host_s + prefill_s + queueing_s + min(others, 1) * steps_waited * decode_step_s

    request_s = ttft + output_tokens * tpot
    return Performance(
        ttft_s=ttft,
        tpot_s=tpot,
        output_tokens_per_s=batch / tpot,
        requests_per_s=batch / request_s,
    )


def request_rate(
    output_tokens_per_s: float, ttft_s: float, tpot_s: float, output_tokens: int
) -> float:
    """Requests/s of one replica from a plan's rounded estimates: `estimate_performance`'s
    batch / (TTFT + output tokens x TPOT), its batch being tokens/s x TPOT."""
    return output_tokens_per_s * tpot_s / (ttft_s + output_tokens * tpot_s)


def replicas_for_rate(requests_per_s: float, per_replica: float) -> int:
    return max(1, math.ceil(requests_per_s / per_replica - 1e-9))
