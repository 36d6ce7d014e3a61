"""The parts of an engine's memory accounting that change between its releases.

Each rule names the vLLM source it was read in (released wheels, Python sources) or the public
log it was checked against. A release between two read ones is assumed to behave like the
older; an unknown release (an image override without a version) like the newest read.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Literal, get_args

from llmdeploy.catalog import Gpu, version_key

Generation = Literal["v0", "v1"]

# Bytes per logit at the peak of the profiling run's dummy sampler step, one row of logits per
# request of the step (vllm/v1/worker/gpu_model_runner.py profile_run -> _dummy_sampler_run,
# top-k vocab-1 and top-p 0.9; read in 0.8.5 to 0.14.0):
# - FlashInfer: model-dtype logits (2) + the sampler's fp32 copy (4, v1/sample/sampler.py) +
#   flashinfer's top_k_top_p_sampling_from_logits: masked logits (4) and probabilities (4).
# - PyTorch (apply_top_k_top_p, v1/sample/ops/topk_topp_sampler.py): 2 + 4, the sorted values
#   (4) and int64 indices (8), torch.sort's int64 index input (8) and its radix sort's
#   alternate key/value buffers (12). Checked on dennislee22/vLLM-benchmarking's 0.10.1.1
#   logs: the A100 run whose log says "FlashInfer is not available" leaves 0.9 GiB less for
#   the cache at 256 x 152064 logits than the runs that use it (24 bytes per logit).
SAMPLER_BYTES_FLASHINFER = 14.0
SAMPLER_BYTES_PYTORCH = 38.0
# From 0.17.0 the PyTorch path masks a batch of 8 rows or more in place with Triton kernels
# instead of sorting it (vllm PR #33538: v1/sample/ops/topk_topp_triton.py, first in the 0.17.0
# wheel; topk_topp_sampler.py apply_top_k_top_p): model-dtype logits (2), the fp32 copy (4),
# the softmax probabilities (4) and random_sample's exponential draws (4), FlashInfer's 14.
# Checked on llm-d-planner's 0.19.0 H100 debug logs of fit-set rows ("torch peak memory
# increase", 1024 rows): 2.21 GiB for Qwen2.5-7B and 3.66 for Gemma-2-27B against 2.09 and 3.49
# at 14 bytes per logit (most of the rest is the kernel's buffer of one fp32 vocabulary row per
# SM, not modelled).
SAMPLER_BYTES_TRITON = 14.0
TRITON_SAMPLER_SINCE = "0.17.0"
TRITON_SAMPLER_MIN_ROWS = 8
# The V2 model runner (V2_RUNNER_MODEL_TYPES_SINCE below) profiles its own sampler with a dummy
# batch of default sampling parameters: no top-k/top-p ("the sampler may skip top_k, top_p, and
# logprobs", v1/worker/gpu/model_runner.py _dummy_sampler_run, 0.24.0), so the step holds the
# model-dtype logits (2) and sample/sampler.py's fp32 copy (4); gumbel_sample's buffers are per
# block of the vocabulary, not per logit.
SAMPLER_BYTES_V2_RUNNER = 6.0
# TensorRT-LLM's sampler bytes were not read: vLLM's former figure. It multiplies one row per
# dummy request of TensorRT-LLM's profiling (tensorrt_llm_memory), about 1 MiB a row.
SAMPLER_BYTES_TENSORRT_LLM = 8.0

# From 0.20.0 vLLM captures its CUDA graphs once during memory profiling and takes their memory
# out of the KV budget (v1/worker/gpu_worker.py determine_available_memory subtracts
# gpu_model_runner.py profile_cudagraph_memory's estimate while
# VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS is 1: its envs.py default is "0" in 0.18.0 and
# 0.19.0, "1" from the 0.20.0 wheel on, although that release's log line says "default since
# v0.21.0"). Only on CUDA: ROCm skips the estimate. Before, the graphs were captured after the
# KV cache was sized, outside the budget.
CUDA_GRAPH_BUDGET_SINCE = "0.20.0"
# Except under the V2 model runner, whose profile_cudagraph_memory() returns 0
# (v1/worker/gpu/model_runner.py, 0.22.0 to 0.24.0): vLLM runs it by default for the
# architectures of config/vllm.py DEFAULT_V2_MODEL_RUNNER_ARCHITECTURES, here by their Hugging
# Face model_type (LlamaForCausalLM: llama, ...), a set that grows by release (0.22.0:
# Qwen3ForCausalLM; 0.23.0: + Llama, Mistral; 0.24.0: + DeepseekV2, Qwen2Moe, GraniteMoe).
# Their graphs are captured outside the budget as before.
V2_RUNNER_MODEL_TYPES_SINCE: dict[str, str] = {
    "qwen3": "0.22.0",
    "llama": "0.23.0",
    "mistral": "0.23.0",
    "qwen2_moe": "0.24.0",
    "deepseek_v2": "0.24.0",
    "granitemoe": "0.24.0",
}
# The estimate is a measurement at startup (the first capture plus the extra of each further
# graph), not a formula of the model. A plan deducts the median of the per-rank figures public
# logs print ("Estimated CUDA graph memory", printed from 0.18.0 whether or not it is deducted;
# one captured pool, vllm#21489): 0.17 to 4.4 GiB over seven logs, so a plan's KV can be off
# by more than the deduction.
CUDA_GRAPH_LOGGED_GIB: dict[str, float] = {
    "gpustack/runner PR #251 (vLLM 0.27.1, TP 2)": 0.36,
    "noonghunna/club-3090 issue #127 (RTX 3090, TP 4)": 0.17,
    "wtdcode/vllm-backport issue #34 (RTX 3090, PP 2 x TP 4)": 0.58,
    "vllm-project/vllm PR #21489 (gemma-3-4b, one 178 GiB GPU, captured pool)": 0.65,
    "vllm-project/vllm PR #37296 (MXFP4 Marlin MoE, TP 2, rank 0)": 4.38,
    "vllm-project/vllm issue #39610 (FP8 MoE on A100, TP 4)": 0.67,
    "vllm-project/vllm PR #30515 (comment of 2026-03-08, hybrid Mamba model)": 0.26,
}
CUDA_GRAPH_GIB = statistics.median(CUDA_GRAPH_LOGGED_GIB.values())


# From 0.17.0 vLLM fuses each all-reduce with the RMSNorm after it by default at TP > 1 on
# SM 9.0 and SM 10.x with FlashInfer installed (config/vllm.py enable_allreduce_rms_fusion,
# -O2; PP 1 is required in 0.17.0 to 0.20.0 and again in 0.23.0, not in 0.22.0 nor 0.24.0;
# 0.21.0 is not on the package index). The fusion pass creates FlashInfer's all-reduce
# workspace while the profiling run compiles the model, after vLLM's memory snapshot, so it is
# booked as non-torch memory (memory.py NON_TORCH_ALLREDUCE_FUSION_GIB, fitted): llm-d-planner's
# 0.19.0 H100 logs of fit-set rows print "Initialized FlashInfer All Reduce workspace" inside
# the profiling and 2.09-2.13 GiB of non-torch increase at TP 2 and 4 against 0.24-0.27 at TP 1
# and 0.07 at PP 2-4. As much at TP 4, whose workspace holds 256 tokens instead of 8192: the
# workspace's buffers alone do not make it, and the other change at TP > 1 in those releases,
# the graph estimate's captures inside the profiling (0.18.0, below; custom all-reduce registers
# their buffers), cannot be told apart on H100 logs. A TP > 1 log of 0.18+ on a GPU without
# the fusion (A100, L40S) would.
ALLREDUCE_FUSION_SINCE = "0.17.0"
# From 0.18.0 determine_available_memory measures the CUDA-graph estimate's captures
# (gpu_model_runner.py profile_cudagraph_memory) inside memory_profiling, whether or not it
# deducts the estimate: what they leave outside torch's pool is booked as non-torch memory
# (memory.py NON_TORCH_GRAPH_PROFILING_GIB, fitted). llm-d-planner logs 0.13-0.14 GiB of
# non-torch memory at TP 1 on vLLM 0.11.0 and 0.24-0.27 on 0.19.0 (H100, both). The V2 model
# runner's estimate captures nothing.
GRAPH_PROFILING_SINCE = "0.18.0"
ALLREDUCE_FUSION_ARCHITECTURES = frozenset({"hopper", "blackwell"})
ALLREDUCE_FUSION_WITH_PIPELINE = (("0.22.0", "0.23.0"), ("0.24.0", None))
# MLA decodes against W_UK and W_UV, the two halves of each layer's kv_b_proj, kept in the model
# dtype since vLLM has no quantized batched matmul for them: where kv_b_proj is quantized, the
# attention's process_weights_after_loading dequantizes it into a new tensor (the layer's
# quant_method applied to an identity matrix; from 0.24.0 quant_utils.py
# get_and_maybe_dequant_weights) and keeps it next to the quantized projection; a 16-bit
# kv_b_proj is only viewed. Read in attention/backends/mla/common.py (V0) and
# v1/attention/backends/mla/common.py of 0.8.4, 0.8.5, 0.10.2, 0.11.0, 0.11.1, 0.12.0 and
# 0.14.0, and model_executor/layers/attention/mla_attention.py of 0.24.0. The loader runs it
# inside load_model, after the quant methods (model_loader/loader.py, later utils.py,
# process_weights_after_loading), so "Model loading took" includes it. Not where MLA is off
# (VLLM_MLA_DISABLE=1: deepseek_v2.py builds DeepseekV2Attention), nor on ROCm with AITER's fp8
# bmm (VLLM_ROCM_USE_AITER, off by default), which keeps fp8 copies; plans assume neither.
MLA_DEQUANTIZED_KV_B_SINCE = "0.8.4"


# The activations of vLLM's MXFP4 MoE: BF16, or MXFP8 where a server's
# VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1 sets FlashInfer's variant (`mxfp4_variant`).
Mxfp4Activation = Literal["bf16", "mxfp8"]
MXFP4_ACTIVATIONS: tuple[Mxfp4Activation, ...] = get_args(Mxfp4Activation)


@dataclass(frozen=True, slots=True)
class Mxfp4Layout:
    """How vLLM lays out MXFP4 expert weights for its MoE kernel (model_executor/layers/
    quantization/mxfp4.py create_weights and process_weights_after_loading, read in 0.10.2,
    0.11.0 and 0.14.0)."""

    backend: str
    intermediate_align: int  # each rank's expert intermediate size is rounded up to this
    hidden_align: int
    # Triton: the swizzled scales are new tensors and the checkpoint's stay registered.
    scales_kept_twice: bool
    # Triton on Hopper, 0.17.0 to 0.20.0: the vendored triton_kernels' HopperMXValueLayout pads
    # both dims of each transposed, byte-packed expert matrix to a multiple of this (0: none).
    swizzle_align: int = 0
    # The activations the experts' GEMMs take: BF16, but for FlashInfer's MXFP4 x MXFP8
    # variant on Blackwell, which a server opts into. Same bytes either way.
    activation: Mxfp4Activation = "bf16"


# Marlin: "n % 256 == 0 and k % 128 == 0" for both expert matmuls (checked on
# dennislee22/vLLM-benchmarking's gpt-oss-120b TP 4 A100 log and vllm#23278's H100 log).
MARLIN = Mxfp4Layout("marlin", 128, 256, scales_kept_twice=False)
TRITON = Mxfp4Layout("triton", 64, 1, scales_kept_twice=True)
# vllm/third_party/triton_kernels/tensor_details/layout_details/hopper_value.py swizzle_data
# "Pre-pad both matrix dims to multiples of 64": in the 0.17.0 to 0.20.0 wheels, not in 0.16.0
# nor 0.22.0 to 0.24.0 (the wheels require no triton_kernels package, so the vendored one
# runs). llm-d-planner's 0.19.0 logs of gpt-oss-20b on H100 ("Using Triton backend"): 7.01 GiB
# per rank at TP 2 (fit-set row) against 6.78 without the padding, 6.92 with it.
TRITON_HOPPER_PADDED = Mxfp4Layout("triton", 64, 1, scales_kept_twice=True, swizzle_align=64)
TRITON_HOPPER_PADDED_RELEASES = ("0.17.0", "0.22.0")
TRITON_ROCM = Mxfp4Layout("triton", 256, 256, scales_kept_twice=True)
# vLLM on SM100 with FlashInfer: MXFP4 x BF16 by default (0.13.0 mxfp4.py get_mxfp4_backend
# SM100_FI_MXFP4_BF16, logging "For faster performance on SM100, consider setting
# VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1"; 0.19.0 fused_moe/oracle/mxfp4.py puts
# FLASHINFER_TRTLLM_MXFP4_BF16 first). The MXFP8 variant, with that variable set, pads alike
# (create_weights: intermediate and hidden to 256 for both).
FLASHINFER_SM100 = Mxfp4Layout("flashinfer", 256, 256, scales_kept_twice=False)
# Where the engine's layout was not read (TensorRT-LLM): the checkpoint's own.
CHECKPOINT = Mxfp4Layout("checkpoint", 1, 1, scales_kept_twice=False)
MXFP4_BACKENDS = {"marlin": MARLIN, "triton": TRITON, "flashinfer": FLASHINFER_SM100}


@dataclass(frozen=True, slots=True)
class EngineMemory:
    """What of the engine's accounting the memory model follows for one release and GPU."""

    # Non-torch memory counted from the process start (CUDA context, NCCL) rather than from
    # vLLM's snapshot after device (and, from 0.11, distributed) initialisation.
    non_torch_since_start: bool
    sampler_bytes_per_logit: float
    mxfp4: Mxfp4Layout
    # CUDA-graph memory per rank the engine takes out of the KV budget (0: captured outside it).
    cuda_graph_gib: float = 0.0
    # The sampler sorts (SAMPLER_BYTES_PYTORCH) a step of fewer rows than this.
    sampler_sort_below_rows: int = 0
    # Whether the CUDA-graph estimate's captures run inside the profiling (GRAPH_PROFILING_SINCE).
    graph_profiling: bool = False
    # Whether a TP > 1 layout books FlashInfer's all-reduce fusion workspace (ALLREDUCE_FUSION_*),
    # and whether also with PP > 1.
    allreduce_fusion: bool = False
    allreduce_fusion_with_pipeline: bool = False
    # Whether MLA keeps a 16-bit copy of a quantized kv_b_proj (MLA_DEQUANTIZED_KV_B_SINCE).
    mla_dequantized_kv_b_proj: bool = False


def _at_least(version: str | None, release: str) -> bool:
    return version is None or version_key(version) >= version_key(release)


def flashinfer_sampler(version: str | None, gpu: Gpu) -> bool:
    """Whether vLLM V1 samples with FlashInfer by default (topk_topp_sampler.py): on CUDA with
    FlashInfer installed (the vllm-openai images; 5 of the 6 dennislee22 0.10.1.1 logs say
    "Using FlashInfer") up to 0.11.0, opt-in from 0.11.1 to 0.14.0, the default again in
    0.24.0 (envs.py VLLM_USE_FLASHINFER_SAMPLER). V0 used it only on request.

    The plan's image is the install: vllm-openai:v0.11.0 logs "[topk_topp_sampler.py:55] Using
    FlashInfer" (vllm#30172, that image unmodified), and docker/Dockerfile installs FlashInfer
    (vllm PRs #23129, #24086 move that step with setup.py's extra). A bare `pip install
    vllm==0.11.0` lacks it (only the wheel's `flashinfer` extra requires it): corpus rows from
    such installs carry `sampler=pytorch`."""
    if gpu.platform != "cuda":
        return False
    return not _at_least(version, "0.11.1") or _at_least(version, "0.24.0")


def mxfp4_layout(version: str | None, gpu: Gpu) -> Mxfp4Layout:
    """vLLM's MXFP4 MoE backend (mxfp4.py get_mxfp4_backend) without opt-in variables:
    Marlin below SM 9.0; on Hopper Triton where the triton_kernels package is there (an
    optional package up to 0.11.x, vendored as vllm/third_party/triton_kernels from 0.12.0),
    else Marlin; FlashInfer on Blackwell; Triton on ROCm.

    0.11.0 on Hopper stays Marlin: its wheel requires no triton_kernels (no Requires-Dist for
    it; mxfp4.py lines 95-102 take Triton only when it imports), and vllm PR #27370
    (2025-10-22, after 0.11.0) says users "have to install triton_kernels manually"; PR
    #27523 dates Triton as the SM90 default to that dependency. vLLM's gpt-oss recipe as
    updated for v0.11.0 (vllm-project/recipes OpenAI/GPT-OSS.md, commit 1e750f8), whose
    quickstart offers the vllm-openai image, says Hopper runs "Marlin MXFP4 MoE" by default;
    that the image adds triton_kernels was not found. If it does, Marlin overstates a plan's
    weights (gpt-oss-120b: 65.84 GiB, Triton 64.05): the safe side.

    The same decision sets the kernel the performance model charges for the experts
    (moe_kernels.expert_kernel reads the backend of these rules)."""
    if gpu.platform == "rocm":
        return TRITON_ROCM
    if gpu.architecture == "blackwell":
        return FLASHINFER_SM100
    if gpu.architecture == "hopper" and _at_least(version, "0.12.0"):
        return _triton(version, gpu)
    return MARLIN


def _triton(version: str | None, gpu: Gpu) -> Mxfp4Layout:
    """The Triton layout of the release: padded for Hopper's swizzle in 0.17.0 to 0.20.0."""
    low, high = TRITON_HOPPER_PADDED_RELEASES
    padded = _at_least(version, low) and not _at_least(version, high)
    return TRITON_HOPPER_PADDED if padded and gpu.architecture == "hopper" else TRITON


def _mxfp4_backend(name: str, version: str | None, gpu: Gpu) -> Mxfp4Layout:
    """The layout of a backend a log names, as the release lays it out on the GPU."""
    if name == "triton" and gpu.platform == "cuda":
        return _triton(version, gpu)
    return MXFP4_BACKENDS[name]


def mxfp4_variant(layout: Mxfp4Layout, activation: str | None) -> Mxfp4Layout:
    """The layout with the activations a server set (None: the backend's default, BF16).
    Only FlashInfer's SM100 backend has an MXFP8 variant (VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8
    is read only there, mxfp4.py get_mxfp4_backend); Marlin and Triton stay W4A16."""
    if activation is None or layout.backend != "flashinfer":
        return layout
    for known in MXFP4_ACTIVATIONS:
        if activation == known:
            return replace(layout, activation=known)
    raise ValueError(f"unknown MXFP4 activation {activation!r}")


def vllm_memory(
    version: str | None,
    gpu: Gpu,
    generation: Generation | None = None,
    *,
    flashinfer: bool | None = None,
    mxfp4_backend: str | None = None,
    model_type: str | None = None,
    mxfp4_activation: str | None = None,
) -> EngineMemory:
    """vLLM's accounting at `version` on `gpu` for a model of `model_type`. `generation` v0: the
    V0 engine (before 0.10 a release could run either). `flashinfer` and `mxfp4_backend`
    override the defaults where a log says which sampler or MoE kernel ran;
    `mxfp4_activation` where a server set FlashInfer's MXFP8 variant (`mxfp4_variant`).

    Non-torch memory: V0 and V1 up to 0.8.5 (v1/worker/gpu_worker.py determine_available_memory)
    count all device memory torch did not allocate; from 0.10.2 `init_device` takes a
    MemorySnapshot after the CUDA context (0.11.0: also after NCCL's initialisation) and
    `memory_profiling` (vllm/utils) books only the non-torch increase since it.

    Sampler: PyTorch's sort up to 0.16, Triton's in-place masking from 0.17.0 (8 rows or more),
    no top-k/top-p at all under the V2 model runner.
    All-reduce fusion workspace: from 0.17.0 on Hopper and Blackwell (ALLREDUCE_FUSION_*).
    MLA: a 16-bit copy of a quantized kv_b_proj from 0.8.4 (MLA_DEQUANTIZED_KV_B_SINCE).

    CUDA graphs: inside the budget from 0.20.0 on CUDA (CUDA_GRAPH_BUDGET_SINCE), but for the
    model types the V2 model runner serves by default (from 0.22.0, V2_RUNNER_MODEL_TYPES_SINCE).
    """
    v0 = generation == "v0"
    if flashinfer is None:
        flashinfer = not v0 and flashinfer_sampler(version, gpu)
    v2_runner = not v0 and _v2_runner(version, model_type)
    triton = not v0 and not flashinfer and _at_least(version, TRITON_SAMPLER_SINCE)
    fusion = (
        not v0
        and gpu.platform == "cuda"
        and gpu.architecture in ALLREDUCE_FUSION_ARCHITECTURES
        and _at_least(version, ALLREDUCE_FUSION_SINCE)
    )
    return EngineMemory(
        non_torch_since_start=v0 or not _at_least(version, "0.10"),
        sampler_bytes_per_logit=(
            SAMPLER_BYTES_V2_RUNNER
            if v2_runner
            else SAMPLER_BYTES_FLASHINFER
            if flashinfer
            else SAMPLER_BYTES_TRITON
            if triton
            else SAMPLER_BYTES_PYTORCH
        ),
        mxfp4=mxfp4_variant(
            _mxfp4_backend(mxfp4_backend, version, gpu)
            if mxfp4_backend
            else mxfp4_layout(version, gpu),
            mxfp4_activation,
        ),
        cuda_graph_gib=cuda_graph_gib(version, gpu, generation, model_type),
        graph_profiling=not v0
        and gpu.platform == "cuda"
        and _at_least(version, GRAPH_PROFILING_SINCE)
        and not v2_runner,
        sampler_sort_below_rows=TRITON_SAMPLER_MIN_ROWS if triton and not v2_runner else 0,
        allreduce_fusion=fusion,
        allreduce_fusion_with_pipeline=fusion
        and any(
            _at_least(version, low) and (high is None or not _at_least(version, high))
            for low, high in ALLREDUCE_FUSION_WITH_PIPELINE
        ),
        mla_dequantized_kv_b_proj=_at_least(version, MLA_DEQUANTIZED_KV_B_SINCE),
    )


def cuda_graph_gib(
    version: str | None,
    gpu: Gpu,
    generation: Generation | None = None,
    model_type: str | None = None,
) -> float:
    """CUDA-graph memory per rank inside vLLM's KV budget: CUDA_GRAPH_GIB from 0.20.0 on CUDA
    (an unknown release counts as the newest read); none on ROCm, in V0, before 0.20.0, or
    where the V2 model runner serves the model."""
    if generation == "v0" or gpu.platform != "cuda":
        return 0.0
    if not _at_least(version, CUDA_GRAPH_BUDGET_SINCE):
        return 0.0
    if _v2_runner(version, model_type):
        return 0.0
    return CUDA_GRAPH_GIB


def _v2_runner(version: str | None, model_type: str | None) -> bool:
    """Whether vLLM serves the model with its V2 model runner by default."""
    since = V2_RUNNER_MODEL_TYPES_SINCE.get(model_type or "")
    return since is not None and _at_least(version, since)


def tensorrt_llm_memory(version: str | None, gpu: Gpu) -> EngineMemory:
    """TensorRT-LLM's accounting under its PyTorch backend (trtllm-serve's default from 1.0), as
    tensorrt_llm/_torch/pyexecutor/_util.py KvCacheCreator sizes the KV cache; read in the
    0.20-era estimate_max_tokens and the later configure_kv_cache_capacity / _cal_max_memory,
    which do the same arithmetic (memory.py memory_breakdown, budget_of_free_memory):

    - the profiling run serves dummy context requests of min(max_num_tokens, max_seq_len - 1)
      prompt tokens each, max_num_tokens in all, one output token each
      (_create_dummy_context_requests): one forward of max_num_tokens tokens and one sampled
      row per request, not one per max_batch_size;
    - its peak is torch's allocated peak plus what the process holds outside torch afterwards
      (torch.cuda.mem_get_info's used memory less torch's current allocation, after
      empty_cache): non-torch memory counted from the process start, CUDA graphs included,
      since PyExecutor.__init__ runs the model's warmup before the profiling (py_executor.py;
      the CUDA-graph captures precede "Memory used after loading model weights" in NVIDIA's
      DGX Spark gpt-oss playbook log of 1.1.0rc3);
    - KV = free_gpu_memory_fraction x (device total - peak + the run's temporary KV cache).

    No difference between the pinned 1.0.0 and 1.3.0rc20 was found in these rules, so the
    release does not key them. MXFP4 experts: TensorRT-LLM's layout was not read; the
    checkpoint's. Nor was what its MLA keeps of a quantized kv_b_proj: none counted."""
    del version, gpu  # one rule set for every release read
    return EngineMemory(
        non_torch_since_start=True,
        sampler_bytes_per_logit=SAMPLER_BYTES_TENSORRT_LLM,
        mxfp4=CHECKPOINT,
    )


def engine_memory(
    engine: str, version: str | None, gpu: Gpu, model_type: str | None = None
) -> EngineMemory:
    """The rules for a plan: vLLM's by release (and, for CUDA graphs, by model type);
    TensorRT-LLM's (tensorrt_llm_memory)."""
    if engine == "vllm":
        return vllm_memory(version, gpu, model_type=model_type)
    return tensorrt_llm_memory(version, gpu)
