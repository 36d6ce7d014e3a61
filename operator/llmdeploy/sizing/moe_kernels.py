"""Which kernel vLLM runs a MoE model's routed experts through, and the workspace it takes.

The rules are vLLM's, release by release, each with the source it was read in: the grouped
kernel for block-scaled FP8 experts on Hopper (DeepGEMM or Triton's fused_moe), the kernel
for 4-bit AWQ/GPTQ experts (Marlin's MoE or Triton's), the MXFP4 backend the memory rules lay
the experts out for and the padding it adds, the share of the experts a checkpoint keeps in
16-bit, and the workspace each kernel allocates in the profiling step, chunked as the release
chunks it. Two sides read them: the memory side (the optimizer hands `moe_workspace`'s
figures to memory.memory_breakdown) and the step model (performance.py), which times the
kernels chosen here at the rates measured for them. They are apart so that the latency
model reads without them; nothing here imports performance.py, and nothing here is fitted.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from llmdeploy.api.types import Quantization
from llmdeploy.catalog import Gpu, QuantFormat, QuantizedCheckpoint, version_within
from llmdeploy.sizing.engine_memory import EngineMemory, Mxfp4Layout
from llmdeploy.sizing.memory import (
    BYTES_16BIT,
    CATALOG_INT4_GROUP,
    MoeKernel,
    held_16_bit_active_parameters,
    moe_workspace_bytes,
    mxfp4_expert_read_bytes,
)
from llmdeploy.sizing.model_facts import ModelFacts


def expert_split(tensor: int, expert_parallel: int) -> int:
    """How many ways each routed expert is split: tensor / expert_parallel (1 with expert
    parallelism over every TP rank, `tensor` without it)."""
    if expert_parallel < 1 or tensor % expert_parallel:
        raise ValueError(f"expert parallel {expert_parallel} does not divide TP {tensor}")
    return tensor // expert_parallel


# Physical, not fitted: the architectures whose grouped FP8 kernels were measured (vLLM PR
# #13932 on an H100: performance.GROUPED_FP8_READ_SHARE and the notes above it); elsewhere
# the roofline holds and no grouped kernel is chosen here.
GROUPED_FP8_ARCHITECTURES = frozenset({"hopper"})


def _block_scaled_fp8(
    model: ModelFacts, fmt: QuantFormat, checkpoint: QuantizedCheckpoint | None = None
) -> bool:
    """Whether the routed experts are held in block-scaled FP8 (`grouped_block_fp8`)."""
    if checkpoint is not None:
        block_scaled = checkpoint.weight_block_size is not None
    else:
        block_scaled = model.native_dtype == Quantization.FP8
    return model.is_moe and fmt.id == Quantization.FP8 and block_scaled


def grouped_block_fp8(
    model: ModelFacts, gpu: Gpu, fmt: QuantFormat, checkpoint: QuantizedCheckpoint | None = None
) -> bool:
    """Whether the routed experts are block-scaled FP8 on an architecture whose grouped
    kernels were measured (GROUPED_FP8_ARCHITECTURES): a pre-quantized FP8 checkpoint whose
    config gives a weight_block_size (QuantizedCheckpoint.weight_block_size), or a model whose
    own checkpoint is FP8 (the catalog's native FP8 models, DeepSeek-V3/R1, are block-scaled
    128x128). The kernel follows the checkpoint's format, not the model: vLLM builds every
    FusedMoE layer under an `fp8` quantization config with Fp8MoEMethod, whose block_quant is
    `weight_block_size is not None` and whose backend (get_fp8_moe_backend: DeepGEMM, Triton)
    is chosen from block_quant and the MoE's tp_size alone (vLLM 0.13.0 quantization/fp8.py
    Fp8Config.get_quant_method, Fp8MoEMethod.__init__). An FP8 format quantized at load
    (online, from a 16-bit checkpoint) has per-tensor scales and no block."""
    return (
        _block_scaled_fp8(model, fmt, checkpoint) and gpu.architecture in GROUPED_FP8_ARCHITECTURES
    )


# Physical, not fitted: the grouped kernel vLLM runs for block-scaled FP8 experts on Hopper
# (`grouped_fp8_kernel`), read in the released sources (vllm/envs.py, quantization/fp8.py,
# fused_moe/oracle/fp8.py) of the pinned releases:
# - to 0.10.2 VLLM_USE_DEEP_GEMM defaults to 0: Triton's fused_moe (fused_experts);
# - 0.11.0 defaults it to 1 (vLLM PR #24462): DeepGEMM (Fp8MoEMethod.allow_deep_gemm; the
#   images ship deep_gemm since vLLM PR #21533), and so in 0.11.1 (get_fp8_moe_backend);
# - from 0.12.0 DeepGEMM's MoE is off, unless VLLM_MOE_USE_DEEP_GEMM is set, where the MoE's
#   tp_size is 8 or more (vLLM PR #29346; 0.14.0's select_fp8_moe_backend alike), Triton
#   then. That tp_size is each expert's split: with --enable-expert-parallel it is 1 and
#   ep_size the TP (FusedMoEParallelConfig.make);
# - 0.16.0 chooses by priority (fused_moe/oracle/fp8.py select_fp8_moe_backend 138-352):
#   AITER, FlashInfer TRTLLM, FlashInfer CUTLASS, DeepGEMM, ..., Triton, the first whose
#   is_supported_config passes, with no TP 8 rule. TRTLLM is Blackwell only
#   (flashinfer_trtllm_moe.py _supports_current_device 30-33); FlashInferExperts takes
#   block FP8 (kFp8Static128BlockSym weights, kFp8Dynamic128Sym activations) on SM 9.0
#   (flashinfer_cutlass_moe.py 86-142) wherever FlashInfer's CUTLASS MoE imports
#   (utils/flashinfer.py has_flashinfer_cutlass_fused_moe 208-225; the wheel requires
#   flashinfer-python 0.6.3). VLLM_USE_FLASHINFER_MOE_FP8 defaults to 0, but the oracle
#   removes FlashInfer only where it is set (envs.is_set), so unset it stays first;
#   QuantKey from Fp8MoEMethod.__init__ (quantization/fp8.py 0.16.0 670-687). So 0.16.x
#   runs FlashInfer's CUTLASS MoE at every split, with or without EP;
# - 0.17.0 adds _get_priority_backends (fused_moe/oracle/fp8.py 0.17.0 57-97, 0.18.0
#   and 0.19.0 57-102; 0.24.0 alike): "On Hopper for Block Fp8, prefer Triton for TP and FI
#   CUTLASS for EP": Triton first where the MoE's ep_size is 1, whatever the split,
#   FlashInfer's CUTLASS MoE first where it is above 1. PR #13932 measured no FlashInfer
#   kernel: the roofline holds there.
# Where the release's backend is DeepGEMM, vLLM still runs Triton's fused_moe for a problem
# DeepGEMM's grouped GEMM does not take (`deep_gemm_moe_width_taken`). DeepGEMM falls back to
# Triton for fewer than 128 rows (_valid_deep_gemm_shape), below the prefill sizes counted
# here. TensorRT-LLM runs its DeepGEMM port on Hopper (the notes on
# performance.GROUPED_FP8_READ_SHARE); an unknown release or engine is counted with DeepGEMM at
# every width and split, what vLLM 0.11.1 runs (0.12.0 to 0.14.0 run Triton at a split of 8 or
# more, VLLM_TRITON_MOE_FROM_SPLIT).
VLLM_DEEP_GEMM_MOE_SINCE = "0.11.0"
VLLM_TRITON_MOE_AT_SPLIT_SINCE = "0.12.0"
VLLM_TRITON_MOE_FROM_SPLIT = 8
VLLM_FP8_MOE_ORACLE_SINCE = "0.16.0"
VLLM_HOPPER_BLOCK_FP8_PRIORITY_SINCE = "0.17.0"


# vLLM's fused_experts (and 0.14.0's TritonOrDeepGemmExperts) hands a DeepGEMM backend's
# experts to DeepGEMM only if `is_deep_gemm_e8m0_used() or _valid_deep_gemm(...)`, else to
# Triton's fused_moe (fused_moe.py fused_experts: 0.11.0 1398-1399, 0.11.1 1601-1603, 0.12.0
# 1598-1600; 0.14.0 triton_deep_gemm_moe.py 72). `_valid_deep_gemm` (deep_gemm_moe.py 0.11.0
# 34-95, 0.11.1 to 0.14.0 44-108) reads N and K off w2, shaped (experts, hidden, the rank's
# share of the intermediate width): N and K must be multiples of DeepGEMM's 128-wide blocks
# (_valid_deep_gemm_shape) and N above 512 ("DeepGemm disabled for N <= 512", 0.11.0 63,
# 0.11.1 and 0.12.0 74). The share is intermediate / the MoE's tp_size (layer.py
# intermediate_size_per_partition), and --enable-expert-parallel makes that tp_size 1, so
# under EP a rank's share is the whole width. E8M0 scales skip the check: in 0.11.0 on Hopper
# only with VLLM_USE_DEEP_GEMM_E8M0_HOPPER, default 0 (utils/deep_gemm.py
# is_deep_gemm_e8m0_used 54-57, envs.py 1156-1157); vLLM PR #26197 ("Enable E8M0 by Default on
# Hopper for DeepGEMM") dropped that switch, so from 0.11.1 VLLM_USE_DEEP_GEMM_E8M0 (default 1;
# envs.py 0.11.1 1132-1133, 0.12.0 1177-1178) turns them on for Hopper too (utils/deep_gemm.py
# 75-77) and DeepGEMM takes every width.
DEEP_GEMM_MOE_MIN_WIDTH = 512
DEEP_GEMM_MOE_BLOCK = 128
VLLM_DEEP_GEMM_E8M0_HOPPER_SINCE = "0.11.1"


def deep_gemm_moe_width_taken(
    version: str, intermediate: int, hidden: int, tensor: int, expert_parallel: int
) -> bool:
    """Whether vLLM's release hands a rank's block-FP8 experts to DeepGEMM's grouped GEMM on
    Hopper where its backend is DeepGEMM: every width from VLLM_DEEP_GEMM_E8M0_HOPPER_SINCE,
    before it only a rank's share of each expert's `intermediate` width above 512 and, with
    `hidden`, a multiple of 128 (`_valid_deep_gemm`; Triton's fused_moe runs the rest)."""
    if version_within(version, VLLM_DEEP_GEMM_E8M0_HOPPER_SINCE, None):
        return True
    width = intermediate // expert_split(tensor, expert_parallel)
    aligned = width % DEEP_GEMM_MOE_BLOCK == 0 and hidden % DEEP_GEMM_MOE_BLOCK == 0
    return aligned and width > DEEP_GEMM_MOE_MIN_WIDTH


@functools.cache  # pure; parsing the release for every layout tried cost ~20 us
def grouped_fp8_kernel(
    engine: str,
    version: str | None,
    tensor: int,
    expert_parallel: int,
    intermediate: int,
    hidden: int,
) -> str | None:
    """The grouped kernel ("deepgemm", "triton") the engine's release runs for block-scaled
    FP8 experts of an `intermediate` width on a `hidden`-wide model on Hopper with the
    layout's split; None for one not measured (the roofline). The releases' rules:
    VLLM_DEEP_GEMM_MOE_SINCE and what follows it, and `deep_gemm_moe_width_taken`."""
    split = expert_split(tensor, expert_parallel)
    if engine != "vllm" or version is None:
        return "deepgemm"
    if not version_within(version, VLLM_DEEP_GEMM_MOE_SINCE, None):
        return "triton"
    if version_within(version, VLLM_HOPPER_BLOCK_FP8_PRIORITY_SINCE, None):
        return "triton" if expert_parallel == 1 else None
    if version_within(version, VLLM_FP8_MOE_ORACLE_SINCE, None):
        return None  # FlashInfer's CUTLASS MoE, first by priority
    at_split = version_within(version, VLLM_TRITON_MOE_AT_SPLIT_SINCE, None)
    if at_split and split >= VLLM_TRITON_MOE_FROM_SPLIT:
        return "triton"
    taken = deep_gemm_moe_width_taken(version, intermediate, hidden, tensor, expert_parallel)
    return "deepgemm" if taken else "triton"


def kept_expert_share(model: ModelFacts, checkpoint: QuantizedCheckpoint | None) -> float:
    """The share of the routed experts that sit in MoE layers a pre-quantized checkpoint keeps
    whole in 16-bit (each MoE layer holds an even share of them). vLLM builds such a layer's
    experts with UnquantizedFusedMoEMethod, not the format's MoE method (quantization/fp8.py
    Fp8Config.get_quant_method: a FusedMoE whose prefix is in `ignored_layers`, 0.11.0
    178-182, 0.12.0 325-331, 0.14.0 232-238), which runs Triton's fused_moe in BF16 on CUDA
    (fused_moe/layer.py 0.11.0 forward_cuda, FlashInfer's CUTLASS MoE only where
    VLLM_USE_FLASHINFER_MOE_FP16 is set under EP): not the grouped FP8 kernel, and at the
    16-bit rate and bytes; AWQ's config does the same for a FusedMoE in
    `modules_to_not_convert` (awq_marlin.py AWQMarlinConfig.get_quant_method, 0.11.0 147-149,
    0.19.0 285-290; auto_awq.py 0.24.0 334-340). MXFP4's does not: Mxfp4Config.get_quant_method
    checks `ignored_layers` for linear layers only and builds every FusedMoE with its MXFP4 MoE
    method (mxfp4.py 0.10.2 142-143, 0.11.0 147-148, 0.14.0 221-227, 0.19.0 81-82, 0.24.0
    88-89; GptOssMxfp4Config inherits it), so an MXFP4 checkpoint keeps no experts 16-bit, as
    memory.layer_weight_bytes_per_rank holds them. Other formats' kept layers are counted as
    FP8's, as `held_16_bit_active_parameters` counts their modules."""
    if not model.is_moe or model.active_routed_expert_parameters <= 0:
        return 0.0
    if checkpoint is not None and checkpoint.quantization == Quantization.MXFP4:
        return 0.0
    kept = held_16_bit_active_parameters(model, checkpoint) - held_16_bit_active_parameters(
        model, checkpoint, routed=False
    )
    return kept / model.active_routed_expert_parameters


# Physical, not fitted: the MXFP4 MoE kernels of vLLM the performance model knows
# (engine_memory.Mxfp4Layout backend and activation): Marlin's and Triton's weight-only
# kernels, and FlashInfer's two on Blackwell. Its default, MXFP4 x BF16, is weight-only too:
# TensorRT-LLM's export of the trtllm-gen batched GEMMs (cpp/tensorrt_llm/kernels/
# trtllmGenKernels/batchedGemm/trtllmGen_bmm_export/config.json at 117e500, template
# BatchedGemmMxE2m1Bf16LowLatency; the kernel family FlashInfer's trtllm_fp4_block_scale_moe
# runs, whose own prebuilt cubins were not read) sets dtypeMmaA and dtypeMmaB to bf16 with
# mmaK 16, so the 4-bit weights are widened to BF16 and multiplied at the BF16 rate; its
# MxE2m1 x MxE4m3 templates (the MXFP8 variant) multiply with mmaK 32 on the FP8 tensor
# cores. The memory side lays the experts out for the same backend, so one decision
# (engine_memory.mxfp4_layout, or the backend and activations a server set) sets both the
# bytes and the kernel (`expert_kernel`).
MXFP4_KERNELS = frozenset({"marlin", "triton", "flashinfer_bf16", "flashinfer_mxfp8"})


def expert_kernel(fmt: QuantFormat, rules: EngineMemory | None) -> str | None:
    """The kernel that runs the format's routed experts where the engine's rules decide it:
    for MXFP4 on vLLM, the backend the memory rules lay the experts out for (`rules.mxfp4`:
    engine_memory.mxfp4_layout, the release's default, or the backend a log names), so that
    the bytes and the kernel's costs follow the same decision (MXFP4_KERNELS); FlashInfer's
    named with its activations (`flashinfer_bf16`, the default; `flashinfer_mxfp8` where the
    server set VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8). None for other
    formats and where the engine's layout was not read (TensorRT-LLM's rules hold the
    checkpoint's): the GPU's architecture decides (performance._native_fp4 and
    performance._dequant_bound)."""
    if rules is None or fmt.id != Quantization.MXFP4:
        return None
    layout = rules.mxfp4
    kernel = f"flashinfer_{layout.activation}" if layout.backend == "flashinfer" else layout.backend
    return kernel if kernel in MXFP4_KERNELS else None


def expert_layout(
    model: ModelFacts,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    rules: EngineMemory | None,
    expert_parallel: int = 1,
) -> float:
    """The bytes a step reads of a rank's routed experts as the engine lays them out for its
    MoE kernel, over the bytes the checkpoint holds (1: read as held, or `rules` unknown);
    under expert parallelism each expert is padded as split tensor / `expert_parallel` ways.

    MXFP4: vLLM allocates each rank's experts with the intermediate size, and for some kernels
    the hidden size, rounded up to the kernel's alignment (vLLM 0.13.0 quantization/mxfp4.py
    Mxfp4MoEMethod.create_weights: round_up(intermediate_size_per_partition, 64) for Triton;
    128, and the hidden size to 256, for Marlin; 256 and 256 for FlashInfer on SM100) and sets
    those padded sizes as the layer's, so the MoE kernel runs over the padded tensors it is
    handed (apply: triton_kernel_moe_forward / fused_marlin_moe / the FlashInfer MoE with
    `layer.w13_weight`); memory counts the same layout (engine_memory.py Mxfp4Layout,
    memory.py), its scales once (`mxfp4_expert_read_bytes`). TensorRT-LLM's layout was not
    read: its rules hold the checkpoint's (engine_memory.py CHECKPOINT)."""
    if rules is None or fmt.id != Quantization.MXFP4 or not model.is_moe:
        return 1.0
    held = model.routed_expert_parameters * fmt.weight_bytes / (tensor * pipeline)
    read = mxfp4_expert_read_bytes(model, tensor, pipeline, rules.mxfp4, expert_parallel)
    return read / held


# From this release vLLM runs 16-bit MoE through the modular kernel's TritonExperts (0.14.0
# unquantized_fused_moe_method.py process_weights_after_loading), before it calls
# fused_experts directly (0.8.5 and 0.10.2 layer.py, 0.11.1 and 0.12.0
# unquantized_fused_moe_method.py forward_cuda); memory.moe_workspace_bytes sizes both.
VLLM_TRITON_EXPERTS_SINCE = "0.14.0"
# From this release 16-bit experts take the first MoE backend by priority that supports the
# GPU (fused_moe/oracle/unquantized.py _get_priority_backends and its loop over
# is_supported_config, 0.24.0): on CUDA FlashInfer's TensorRT-LLM and CUTLASS MoE come first,
# but Hopper moves them behind Triton, and they support only the SM 10.x family
# (experts/trtllm_bf16_moe.py) and SM 9.0, 10.x and 12.x (experts/flashinfer_cutlass_moe.py
# `_supports_current_device`), so Ampere and Ada run Triton as well. FlashInfer's workspace
# was not read: Blackwell is not counted.
VLLM_MOE_PRIORITY_SINCE = "0.24.0"
FLASHINFER_MOE_ARCHITECTURES = frozenset({"blackwell"})
# 0.14.0 runs block-FP8 experts whose backend is Triton (TP 8 and beyond: fused_moe/oracle/
# fp8.py select_fp8_moe_backend 115-150) as TritonExperts behind the modular kernel
# (quantization/fp8.py 951-967, the layer's `self.kernel`), and so do the releases whose
# Hopper priority puts Triton first without EP (VLLM_HOPPER_BLOCK_FP8_PRIORITY_SINCE):
# Fp8MoEMethod builds `self.moe_kernel = make_fp8_moe_kernel(...)`, a FusedMoEModularKernel
# over the oracle's experts class (quantization/fp8.py 0.17.0 and 0.18.0 859, 0.19.0 781,
# 0.24.0 711), whose buffers come from the WorkspaceManager (modular_kernel.py 0.18.0 1063)
# and whose TritonExperts.workspace_shapes are 0.14.0's (fused_moe.py 0.18.0 1979-1994).
# FlashInfer's CUTLASS MoE (0.16.x, and EP from 0.17.0: `grouped_fp8_kernel` None): its
# workspace not read.


# 4-bit AWQ and GPTQ experts (W4A16; the formats whose weights take under a byte, MXFP4 aside)
# run one of two kernels, by the same rule in awq_marlin.py and gptq_marlin.py get_quant_method
# and, from 0.10.2 on, compressed_tensors_moe.py's W4A16 branch:
# - before 0.8.5, MoeWNA16 (Triton's fused_experts with int4_w4a16 weights) where the rank holds
#   more than 32 experts (awq_marlin.py 0.8.4 138-144, gptq_marlin.py 0.8.4 155-161; the
#   lmc503 row's 0.8.4 log names its int4_w4a16 config for R1 AWQ at TP 8), else an older
#   Marlin MoE kernel whose caches the C op allocates (not read: not counted);
# - from 0.8.5 Marlin's MoE (fused_marlin_moe) wherever check_moe_marlin_supports_layer holds
#   (utils/marlin_utils.py 0.8.5 154-164, 0.13.0 199-222, 0.19.0 229-245, 0.24.0 333-354): the
#   hidden size a multiple of 128 and the rank's intermediate share a multiple of max(64,
#   group), group -1, 32, 64 or 128, else MoeWNA16 ("Falling back to Moe WNA16 kernels":
#   awq_marlin.py 0.8.5 137-146, 0.13.0 199-218, 0.19.0 282-301; moe_wna16.py apply calls
#   fused_experts in every release read, 0.8.5 316-323 to 0.24.0 351-363). From 0.11.0 the
#   check also wants SiLU and no router weight on the input (0.11.0 171-187), facts the
#   catalog does not hold;
# - the methods call fused_marlin_moe directly up to 0.19.0 (awq_marlin.py 0.19.0 809,
#   gptq_marlin.py 905, compressed_tensors_moe.py 0.17.0 1631-1632); 0.24.0 builds a
#   modular kernel over MarlinExperts (fused_moe/oracle/int_wna16.py
#   select_wna16_moe_backend: FlashInfer's MxInt4 first, which wants SwiGLU-OAI and a group
#   of 32 (experts/trtllm_mxint4_moe.py 46-72), then Marlin; vLLM PRs #37990 and #42483
#   moved GPTQ and AWQ onto it). Releases between 0.19.0 and 0.24.0 were not read: they
#   count as 0.19.0. compressed-tensors before 0.10.2 chose MoeWNA16 by expert count and
#   dtype (compressed_tensors_moe.py 0.8.5 55-68): int4-gptq plans follow GPTQ's rule.
VLLM_MARLIN_MOE_SINCE = "0.8.5"
VLLM_WNA16_MOE_MAX_LOCAL_EXPERTS = 32
VLLM_WNA16_MOE_MODULAR_SINCE = "0.24.0"
MARLIN_MOE_HIDDEN_MULTIPLE = 128
MARLIN_MOE_MIN_WIDTH_MULTIPLE = 64
# From this release Triton's fused_experts writes its output into a new M_full x K tensor even
# when asked for inplace: `if inplace and not disable_inplace()` (fused_moe.py 0.11.1
# 1819-1822, 0.13.0 1860-1863), disable_inplace() being `is_torch_equal_or_newer("2.9")`
# (fused_moe/utils.py 0.11.1 331-332) and the wheel requiring torch 2.9.0 (0.11.0: 2.8.0);
# from 0.16.0 the methods pass `inplace=not disable_inplace` and 0.24.0 always takes the new
# tensor (fused_moe.py 1649). It is taken beside cache13 and cache2 (memory.moe_workspace_bytes).
VLLM_FUSED_MOE_OUT_OF_PLACE_SINCE = "0.11.1"


def _wna16_moe_kernel(
    model: ModelFacts,
    version: str,
    tensor: int,
    expert_parallel: int,
    checkpoint: QuantizedCheckpoint | None,
) -> MoeKernel | None:
    """The kernel vLLM's release runs 4-bit AWQ/GPTQ experts through on CUDA (the rules above):
    the checkpoint's group where the catalog has it, else the catalog's 128."""
    if not version_within(version, VLLM_MARLIN_MOE_SINCE, None):
        if model.experts / expert_parallel > VLLM_WNA16_MOE_MAX_LOCAL_EXPERTS:
            return "fused_experts"
        return None
    split = expert_split(tensor, expert_parallel)
    group = CATALOG_INT4_GROUP
    if checkpoint is not None and checkpoint.group_size is not None:
        group = checkpoint.group_size
    width, uneven = divmod(model.moe_intermediate_size, split)
    marlin = (
        model.hidden_size % MARLIN_MOE_HIDDEN_MULTIPLE == 0
        and not uneven
        and width % max(MARLIN_MOE_MIN_WIDTH_MULTIPLE, group) == 0
    )
    if not marlin:
        return "fused_experts"
    if version_within(version, VLLM_WNA16_MOE_MODULAR_SINCE, None):
        return "marlin_experts"
    return "marlin"


# MXFP4 experts: Marlin's backend (engine_memory.mxfp4_layout, or the one a log names) calls
# fused_marlin_moe directly up to 0.16.0 (mxfp4.py apply: 0.10.2 745-759, 0.11.0 785-799,
# 0.13.0 and 0.14.0 through `fused_marlin_moe(`, 0.16.0 with `inplace=not
# self.moe.disable_inplace`), and from 0.17.0 runs MarlinExperts behind the modular kernel
# (mxfp4.py 0.17.0 443-451;
# 0.19.0 fused_moe/oracle/mxfp4.py backend_to_kernel_cls 119-124), its buffers from the
# WorkspaceManager (modular_kernel.py 0.17.0 1107-1153). Both on the layout's padded widths
# (oracle/mxfp4.py 0.19.0 mxfp4_round_up_hidden_size_and_intermediate_size 376-385).
# Triton's backend (triton_kernels' matmul_ogs: gpt_oss_triton_kernels_moe.py) and
# FlashInfer's were not read through: not counted.
VLLM_MXFP4_MARLIN_MODULAR_SINCE = "0.17.0"


def moe_workspace_kernel(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    version: str | None,
    tensor: int,
    expert_parallel: int,
    checkpoint: QuantizedCheckpoint | None = None,
    mxfp4_backend: str | None = None,
) -> MoeKernel | None:
    """The MoE kernel whose workspace vLLM's release allocates for the layout's routed experts
    on NVIDIA GPUs (memory.moe_workspace_bytes), or None where that was not read: MXFP4
    experts on a backend other than Marlin (`mxfp4_backend`, the release's layout's: see
    VLLM_MXFP4_MARLIN_MODULAR_SINCE), 4-bit experts before 0.8.5 on Marlin's older kernel
    (`_wna16_moe_kernel`), block-scaled FP8 off Hopper or where the release runs
    FlashInfer (`grouped_fp8_kernel` None), other FP8 experts from 0.14.0 on, 16-bit experts
    on Blackwell from 0.24.0 (FlashInfer's MoE), AMD GPUs (AITER's kernels), an unknown release.
    Block-scaled FP8 on Hopper runs `grouped_fp8_kernel`'s kernel (DeepGEMM only for a share
    it takes: `deep_gemm_moe_width_taken`), Triton's as TritonExperts from 0.14.0; 4-bit
    experts run Marlin's MoE or Triton's (`_wna16_moe_kernel`); the rest runs Triton's
    fused_moe."""
    if version is None or gpu.platform != "cuda" or not model.is_moe:
        return None
    if fmt.id == Quantization.MXFP4:
        if mxfp4_backend != "marlin":
            return None
        modular = version_within(version, VLLM_MXFP4_MARLIN_MODULAR_SINCE, None)
        return "marlin_experts" if modular else "marlin"
    if fmt.weight_bytes < 1:
        return _wna16_moe_kernel(model, version, tensor, expert_parallel, checkpoint)
    hopper = gpu.architecture in GROUPED_FP8_ARCHITECTURES
    block_triton = False
    if fmt.id == Quantization.FP8 and _block_scaled_fp8(model, fmt, checkpoint):
        widths = (model.moe_intermediate_size, model.hidden_size)
        kernel = (
            grouped_fp8_kernel("vllm", version, tensor, expert_parallel, *widths)
            if hopper
            else None
        )
        if kernel is None:
            return None
        if kernel == "deepgemm":
            return "deepgemm"
        block_triton = True
    modular, by_priority = _vllm_moe_releases(version)
    if not modular:
        return "fused_experts"
    if fmt.id == Quantization.FP8:
        return "triton_experts" if block_triton else None
    if by_priority and gpu.architecture in FLASHINFER_MOE_ARCHITECTURES:
        return None
    return "triton_experts"


@functools.cache  # pure; parsing the release for every layout tried costs (grouped_fp8_kernel)
def _vllm_moe_releases(version: str) -> tuple[bool, bool]:
    """Whether the release runs 16-bit experts through TritonExperts
    (VLLM_TRITON_EXPERTS_SINCE), and whether it chooses MoE backends by priority
    (VLLM_MOE_PRIORITY_SINCE)."""
    return (
        version_within(version, VLLM_TRITON_EXPERTS_SINCE, None),
        version_within(version, VLLM_MOE_PRIORITY_SINCE, None),
    )


# vLLM runs a MoE step's tokens through its fused-MoE kernels in chunks of at most
# VLLM_FUSED_MOE_CHUNK_SIZE tokens (fused_moe.py fused_experts_impl `M = min(num_tokens,
# CHUNK_SIZE)`, 0.8.5 1275-1276, 0.11.0 1538-1539, 0.14.0 2065-2066; the modular kernel's
# chunks likewise). Its default is what envs.py's getenv reads, not the type annotation at the
# top of the file (64 x 1024 there in every release): 32768 from 0.8.5 to 0.11.1 (0.11.0
# envs.py 777-778), 16 x 1024 from 0.12.0 (0.12.0 789-791, 0.14.0 821-823, 0.17.0 824-826).
# 0.18.0 no longer chunks, nor do 0.19.0 and 0.24.0: envs.py has no VLLM_FUSED_MOE_CHUNK_SIZE,
# fused_experts_impl takes `M = num_tokens` (fused_moe.py 0.18.0 1697; 0.17.0 1698-1699 still
# `min(num_tokens, CHUNK_SIZE)`) and the modular kernel allocates for the whole step
# (modular_kernel.py 0.18.0 1176-1193, _allocate_buffers(M_full, M_full, ...)).
VLLM_FUSED_MOE_CHUNK_TOKENS = 32768
VLLM_FUSED_MOE_CHUNK_16K_SINCE = "0.12.0"
VLLM_FUSED_MOE_CHUNK_16K_TOKENS = 16384
VLLM_FUSED_MOE_UNCHUNKED_SINCE = "0.18.0"


def vllm_fused_moe_chunk_tokens(version: str) -> int | None:
    """The most tokens vLLM's release runs through its fused-MoE kernels at once
    (VLLM_FUSED_MOE_CHUNK_SIZE's default); None where a step's tokens run in one chunk."""
    if version_within(version, VLLM_FUSED_MOE_UNCHUNKED_SINCE, None):
        return None
    if version_within(version, VLLM_FUSED_MOE_CHUNK_16K_SINCE, None):
        return VLLM_FUSED_MOE_CHUNK_16K_TOKENS
    return VLLM_FUSED_MOE_CHUNK_TOKENS


# vLLM's modular MoE kernel ("triton_experts", "deepgemm") keeps its workspaces once the
# profiling step has sized them: class-level buffers shared by every layer and kept between
# calls (modular_kernel.py SharedResizableBuffer and FusedMoEModularKernel.shared_buffers,
# 0.11.0 594-639, 0.11.1 and 0.11.2 658-705, 0.12.0 664-711), from 0.13.0 the worker's
# WorkspaceManager, made before the model runner and grown, never shrunk (v1/worker/
# workspace.py _ensure_workspace_size; gpu_worker.py 0.14.0 242-244), locked after the CUDA
# graphs (gpu_model_runner.py 0.14.0 4848-4850). profile_run frees only the step's outputs
# before the dummy sampler run (gpu_model_runner.py 0.11.2 4135-4148), and the profile counts
# torch's allocated peak (utils/mem_utils.py MemorySnapshot.measure, memory_profiling), so
# those buffers stand under the sampler step too. Triton's fused_experts called directly
# allocates its caches per call (fused_moe.py fused_experts_impl, 0.13.0 1838-1847): freed.
# DeepGemmExperts.workspace_shapes sizes workspace13 M_sum x N in these releases
# (deep_gemm_moe.py 0.11.1, 0.11.2 and 0.12.0 201-221), M_sum x max(N, K) before them and
# again from 0.13.0 (its first workspace M_sum x max(N / 2, K), the second M_sum x max(N, K):
# deep_gemm_moe.py 0.13.0 154-155).
VLLM_DEEP_GEMM_NARROW_WORKSPACE_SINCE = "0.11.1"
VLLM_DEEP_GEMM_WIDE_WORKSPACE_SINCE = "0.13.0"


def deep_gemm_narrow_workspace(version: str) -> bool:
    """Whether vLLM's release sizes DeepGEMM's MoE workspace13 M_sum x N rather than
    M_sum x max(N, K) (VLLM_DEEP_GEMM_NARROW_WORKSPACE_SINCE up to, not including,
    VLLM_DEEP_GEMM_WIDE_WORKSPACE_SINCE)."""
    return version_within(
        version, VLLM_DEEP_GEMM_NARROW_WORKSPACE_SINCE, None
    ) and not version_within(version, VLLM_DEEP_GEMM_WIDE_WORKSPACE_SINCE, None)


# Inside the profiling step the layout's MoE workspace is allocated in full, kept after it or
# not. profile_run runs the forward step of max_num_tokens (_dummy_run, is_profile) before the
# dummy sampler run (gpu_model_runner.py 0.13.0 4473-4487); the MoE layer runs as the custom op
# moe_forward (or moe_forward_shared), which torch.compile does not trace into (fused_moe/
# layer.py 0.13.0 1727-1746, 2074-2130);
# Triton's fused_experts_impl takes cache13 and cache2 with torch.empty for a chunk of M tokens
# at the start of each call (fused_moe.py 0.11.0 1539-1575, 0.13.0 1807-1849) and frees them
# when it returns; the methods ask it to write its output into its input (inplace=True:
# quantization/fp8.py 0.13.0 1289, unquantized_fused_moe_method.py 0.13.0 331), which it does
# up to 0.11.0 only (VLLM_FUSED_MOE_OUT_OF_PLACE_SINCE); Marlin's MoE likewise, for the whole
# step and with an output of its own; the modular kernel takes its buffers before its experts
# run. The profile books the rise of torch's allocated_bytes.all.peak over the run
# (utils/mem_utils.py 0.13.0 memory_profiling 202-205), so caches freed after the call
# count in full, beside the decoder layer's hidden states alive around it (the residual and
# the MoE's input: models/deepseek_v2.py 0.14.0 1231-1232); the MLP intermediates
# memory.ACTIVATION_MLP_COPIES fit belong to a dense MLP, another layer. For DeepSeek-R1 at TP 8
# Triton's caches come to 0.92 GiB at 8192 tokens where the fitted copies of its widest MLP
# give 0.14 GiB.
class MoeWorkspace(NamedTuple):
    """vLLM's MoE workspace on one rank in its profiling run (`moe_workspace`), in bytes."""

    growth: float  # added to the step over the split layout's kernel
    kept: float  # still allocated under the dummy sampler step
    # The layout's kernel's whole workspace, allocated inside the step's MoE call, and the
    # modular kernel's own output where it takes one (DIRECT_MOE_KERNELS, below).
    step: float


NO_MOE_WORKSPACE = MoeWorkspace(0.0, 0.0, 0.0)
# The kernels called directly, whose caches are freed when the call returns.
DIRECT_MOE_KERNELS: frozenset[MoeKernel] = frozenset({"fused_experts", "marlin"})
# Under torch 2.9 (VLLM_FUSED_MOE_OUT_OF_PLACE_SINCE) the modular kernel, too, takes an output
# of its own in every call: FusedMoEModularKernel.forward keeps `output = hidden_states` only
# where inplace holds and disable_inplace() does not, else `output = torch.zeros_like(
# hidden_states)` (modular_kernel.py 0.11.1 and 0.11.2 1181-1184, 0.12.0 1285-1288, 0.13.0
# 1255-1258, 0.14.0 1210-1213; from 0.16.0 the methods pass inplace=not disable_inplace:
# 0.16.0 1330-1333, 0.17.0 1519-1522, 0.18.0 and 0.19.0 1347-1350, 0.24.0 1396, always
# `torch.empty_like`). It is a tensor beside the fused_out its experts write (`_allocate_
# buffers`, memory.moe_workspace_bytes), which `_finalize` reduces into it, the step's whole
# M_full x K (on the padded hidden size where the layout pads it), and is not kept: it is the
# layer's output. 0.24.0 hands it to the experts as `output_alias`, but uses it as their
# fused_out only on ROCm with AITER's fused MoE (modular_kernel.py 1248-1264), not on CUDA.
# 0.11.0 writes into the input unless the kernel holds shared experts (modular_kernel.py 899;
# not counted).


def moe_workspace(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    tokens: int,
    version: str | None,
    tensor: int,
    expert_parallel: int,
    checkpoint: QuantizedCheckpoint | None = None,
    mxfp4: Mxfp4Layout | None = None,
) -> MoeWorkspace:
    """What vLLM's MoE kernel on each rank adds to a profiling step of `tokens` tokens over the
    workspace the fitted activation copies (memory.ACTIVATION_MLP_COPIES) stand for, what it
    keeps allocated after the step, under the dummy sampler run (the modular kernel's
    buffers, see above), and the layout's whole workspace, which is allocated inside the
    step's MoE call whether kept or freed after it (memory.activation_bytes counts the step
    at least that, beside the layer's hidden states). The copies stand for Triton's fused_moe
    with each expert split over the `tensor` ranks: every MoE row the fit reads ran it, or a
    modular kernel whose buffers are counted as kept. So the growth is the layout's kernel
    (`moe_workspace_kernel`) over the split layout's, or over Triton's fused_moe where that is
    DeepGEMM (before 0.14.0; from it only DeepGEMM's kept buffers are counted). Each
    kernel sizes its workspace from the rank's own expert width (memory.moe_workspace_bytes),
    and under --enable-expert-parallel that width is each expert's whole (the MoE's tp_size
    is 1: FusedMoEParallelConfig.make). Without data parallelism every rank runs every token
    (no all-to-all: use_all2all_kernels needs dp_size > 1), and the workspaces count
    M x top_k rows whatever the expert map keeps. None where a kernel was not read
    (`moe_workspace_kernel`). `mxfp4`: the release's MXFP4 layout (EngineMemory.mxfp4), whose
    backend picks MXFP4 experts' kernel and whose alignments pad its widths. vLLM's only:
    TensorRT-LLM's MoE workspace was not read. The MoE layers `checkpoint` keeps whole in
    16-bit run the unquantized MoE (`kept_expert_share`), whose kernel's workspace stands in
    the step beside the quantized layers' (`_with_kept_layers`)."""
    share = kept_expert_share(model, checkpoint)
    if checkpoint is not None and share > 0:
        # The kept layers' experts are built as a 16-bit checkpoint's are: the same rules and
        # kernels (moe_workspace_kernel's 16-bit branch), unpadded; the other layers as the
        # checkpoint holds them.
        sixteen_bit = fmt.model_copy(
            update={
                "id": Quantization.BF16,
                "weight_bytes": BYTES_16BIT,
                "applies_to": "linear",
                "compute_dtype": "bf16",
            }
        )
        whole_layers = moe_workspace(
            model, gpu, sixteen_bit, tokens, version, tensor, expert_parallel
        )
        if share >= 1:
            return whole_layers
        others = checkpoint.model_copy(update={"unquantized_layers": ()})
        quantized_layers = moe_workspace(
            model, gpu, fmt, tokens, version, tensor, expert_parallel, others, mxfp4
        )
        return _with_kept_layers(quantized_layers, whole_layers)
    mxfp4 = mxfp4 if fmt.id == Quantization.MXFP4 else None
    backend = mxfp4.backend if mxfp4 is not None else None
    kernel = functools.partial(moe_workspace_kernel, model, gpu, fmt, version, tensor)
    layout = kernel(expert_parallel, checkpoint, backend)
    split = kernel(1, checkpoint, backend)
    if layout is None or version is None:
        return NO_MOE_WORKSPACE
    chunk = vllm_fused_moe_chunk_tokens(version)
    quantized = fmt.id == Quantization.FP8  # Triton's FP8 copy of its intermediate
    narrow = deep_gemm_narrow_workspace(version)
    out_of_place = version_within(version, VLLM_FUSED_MOE_OUT_OF_PLACE_SINCE, None)
    padding = (mxfp4.intermediate_align, mxfp4.hidden_align) if mxfp4 is not None else (1, 1)
    sized = functools.partial(
        moe_workspace_bytes,
        tokens=tokens,
        chunk=chunk,
        quantized=quantized,
        narrow=narrow,
        out_of_place=out_of_place,
        padding=padding,
    )
    whole = sized(model, layout, tensor // expert_parallel, model.experts / expert_parallel)
    # The step's tensors of M_full x the (padded) hidden size that one call takes and frees:
    # the layer's padded copy of the input (in `whole`) and the modular kernel's own output.
    hidden = math.ceil(model.hidden_size / padding[1]) * padding[1]
    per_call = tokens * hidden * BYTES_16BIT
    padded_input = per_call if hidden != model.hidden_size else 0.0
    kept = 0.0 if layout in DIRECT_MOE_KERNELS else whole - padded_input

    def in_step(kernel: MoeKernel, workspace: float) -> float:
        """A kernel's workspace with the modular kernel's own output, as the step holds it."""
        modular = kernel not in DIRECT_MOE_KERNELS
        return workspace + (per_call if modular and out_of_place else 0.0)

    step = in_step(layout, whole)
    if split == "deepgemm":
        split = None if _vllm_moe_releases(version)[0] else "fused_experts"
    if split is None or (split == layout and expert_parallel == 1):
        return MoeWorkspace(0.0, kept, step)
    # Like with like: both kernels' step tensors, outputs included (a direct call's own
    # output is in its workspace from VLLM_FUSED_MOE_OUT_OF_PLACE_SINCE).
    fitted = in_step(split, sized(model, split, tensor, model.experts))
    return MoeWorkspace(step - fitted, kept, step)


def _with_kept_layers(quantized: MoeWorkspace, kept: MoeWorkspace) -> MoeWorkspace:
    """The MoE workspace of a step whose quantized MoE layers size `quantized` and whose kept
    16-bit ones size `kept`, each layer's kernel called in turn (review6 finding 8).
    - What stays: the larger of the two kept shares. The modular kernels' buffers are one
      buffer per worker, each call's tensors views of it, grown to the largest request and
      never shrunk (v1/worker/workspace.py WorkspaceManager.get_simultaneous and
      _ensure_workspace_size, which frees the old buffer before it takes the larger one).
      Before 0.13.0 (class-level shared buffers) the kept layers called Triton directly.
    - The step: a call's own tensors (a direct call's caches, the modular kernel's output,
      the layer's padded input) come on top of what the other kernel keeps. Which layer runs
      first is not counted, so the step takes the larger of the two calls over the larger
      kept share: an upper bound where every kept layer runs after the quantized ones.
    - The growth over the fitted copies is the larger layer's."""
    held = max(quantized.kept, kept.kept)
    call = max(quantized.step - quantized.kept, kept.step - kept.kept)
    return MoeWorkspace(max(quantized.growth, kept.growth), held, held + call)
