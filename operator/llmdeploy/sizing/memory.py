"""Per-GPU memory accounting, following vLLM's own (v1 `Worker.determine_available_memory`).

budget = total memory (as torch.cuda.mem_get_info reports it) x gpu_memory_utilization
KV     = budget - weights - peak activation of a profiling step - non-torch memory
         - CUDA graphs (from the releases that profile them inside the budget, engine_memory.py)
blocks = KV // (block_size x KV bytes per token and layer x layers); tokens = blocks x block_size

Everything is per rank of the worst pipeline stage: that rank bounds the replica.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from llmdeploy.api.types import Quantization
from llmdeploy.catalog import Gpu, QuantFormat, QuantizedCheckpoint
from llmdeploy.sizing.engine_memory import SAMPLER_BYTES_PYTORCH, EngineMemory, Mxfp4Layout
from llmdeploy.sizing.model_facts import ModelFacts

GIB = float(2**30)
BYTES_16BIT = 2.0
# Non-torch memory where the engine counts it from the process start (engine_memory.py): the
# CUDA context, cuBLAS workspaces, NCCL and custom all-reduce buffers. Single GPU: fitted
# (bench/fit_constants.py). Multi-GPU: vLLM's profile of Llama-3-8B at TP 2 (3.58 GiB,
# vllm#10511), the only such log; no fit-set row re-derives it.
NON_TORCH_SINGLE_GPU_GIB = 0.0
NON_TORCH_MULTI_GPU_BASE_GIB = 2.9
NON_TORCH_PER_TP_RANK_GIB = 0.35
# Where vLLM counts only the increase since its snapshot after device initialisation (V1 from
# 0.10): what the profiling step and the communicators' later buffers add. Fitted.
NON_TORCH_SNAPSHOT_SINGLE_GPU_GIB = 0.18
NON_TORCH_SNAPSHOT_MULTI_GPU_BASE_GIB = 0.39
NON_TORCH_SNAPSHOT_PER_TP_RANK_GIB = 0.0
# FlashInfer's all-reduce fusion workspace, created after the snapshot at TP > 1 where the
# release fuses all-reduce with RMSNorm (engine_memory.py ALLREDUCE_FUSION_SINCE). Fitted.
NON_TORCH_ALLREDUCE_FUSION_GIB = 1.65
# What the CUDA-graph estimate's captures leave outside torch where the release runs them inside
# the profiling (engine_memory.py GRAPH_PROFILING_SINCE). Fitted.
NON_TORCH_GRAPH_PROFILING_GIB = 0.19
# Profiling activations: hidden states and MLP intermediates of one step of
# max_num_batched_tokens tokens (fitted copies of each).
ACTIVATION_HIDDEN_COPIES = 2
ACTIVATION_MLP_COPIES = 4
# OCP MX FP4: 4-bit elements, one 8-bit scale per block of 32.
MXFP4_ELEMENT_BYTES = 0.5
MXFP4_SCALE_BYTES = 1 / 32
# The catalog's int4 formats count 4-bit elements plus the scale (and AWQ's zero point) of a
# group of 128 inputs (quantizations.yaml). vLLM keeps one 16-bit scale and one 4-bit zero
# per group of K inputs whatever the group: AWQ-Marlin linears (awq_marlin.py 0.11.0) and the
# MoeWNA16 experts (moe_wna16.py MoeWNA16Method.create_weights, 0.8.4 and main 0216619).
INT4_ELEMENT_BYTES = 0.5
CATALOG_INT4_GROUP = 128


@dataclass(frozen=True, slots=True)
class MemoryBreakdown:
    budget_gib: float
    weights_gib: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    kv_cache_gib: float
    kv_bytes_per_token: float  # per rank, over the stage's layers, full-attention accounting
    kv_cache_tokens: int  # per replica
    max_concurrency: float  # requests of max_context_length the cache holds at once

    @property
    def fits(self) -> bool:
        return self.kv_cache_gib > 0


def stage_layers(model: ModelFacts, pipeline: int) -> int:
    """Layers on the largest pipeline stage."""
    return math.ceil(model.layers / pipeline)


def weight_bytes_per_rank(
    model: ModelFacts,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    rules: EngineMemory | None = None,
    checkpoint: QuantizedCheckpoint | None = None,
    expert_parallel: int = 1,
) -> float:
    """Weights on one GPU: its decoder layers (`layer_weight_bytes_per_rank`) and its share of
    the vocab-parallel embeddings (`embedding_bytes_per_rank`)."""
    layers = layer_weight_bytes_per_rank(
        model, fmt, tensor, pipeline, rules, checkpoint, expert_parallel
    )
    return layers + embedding_bytes_per_rank(model, tensor, pipeline)


def checkpoint_format(fmt: QuantFormat, checkpoint: QuantizedCheckpoint | None) -> QuantFormat:
    """The format as the checkpoint holds it: bytes per weight at its own group size where it
    has one (the catalog's int4 formats count a group of 128)."""
    if checkpoint is None or checkpoint.group_size is None:
        return fmt
    return fmt.model_copy(update={"weight_bytes": grouped_weight_bytes(fmt, checkpoint.group_size)})


def embedding_bytes_per_rank(model: ModelFacts, tensor: int, pipeline: int) -> float:
    """One rank's share of the 16-bit embedding tables, split over the vocabulary on its TP
    group (vLLM's VocabParallelEmbedding and ParallelLMHead): the input embedding and the
    lm_head, one table when tied; under PP the first stage holds the embedding, the last the
    lm_head (its own copy even when tied): one table on either."""
    tables = model.embedding_parameters if pipeline == 1 else model.vocab_size * model.hidden_size
    return tables * BYTES_16BIT / tensor


def layer_weight_bytes_per_rank(
    model: ModelFacts,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    rules: EngineMemory | None = None,
    checkpoint: QuantizedCheckpoint | None = None,
    expert_parallel: int = 1,
) -> float:
    """The decoder layers' weights on one GPU of the largest stage: sharded linear layers,
    replicated KV heads, MLA's replicated layers and MoE routers (replicated_parameters);
    with `rules`, MXFP4 experts as the engine lays them out (else as the checkpoint holds
    them) and MLA's 16-bit copy of a quantized kv_b_proj where the engine keeps one; with
    `checkpoint`, the pre-quantized checkpoint's 16-bit layers and attention as such, and its
    group size (`checkpoint_format`). `expert_parallel`: the ranks the routed experts are spread
    over whole (a divisor of `tensor` and of the expert count): a rank holds experts /
    expert_parallel of them, each split tensor / expert_parallel ways, the same bytes as a
    1/tensor slice of every expert but for MXFP4's padding of each expert's slice."""
    fmt = checkpoint_format(fmt, checkpoint)
    body = model.parameters - model.embedding_parameters
    experts = 0.0
    if fmt.applies_to == "experts":
        experts = min(model.routed_expert_parameters, body)
        body_bytes = experts * fmt.weight_bytes + (body - experts) * BYTES_16BIT
        linear_bytes = BYTES_16BIT  # attention projections stay 16-bit
    else:
        body_bytes = body * fmt.weight_bytes
        linear_bytes = fmt.weight_bytes
    per_rank = body_bytes / (tensor * pipeline)
    projections, gates = replicated_parameters(model, pipeline)
    whole_bytes = (
        BYTES_16BIT if checkpoint is not None and checkpoint.unquantized_attention else linear_bytes
    )
    per_rank += projections * (whole_bytes - linear_bytes / tensor)
    per_rank += gates * (BYTES_16BIT - linear_bytes / tensor)
    if checkpoint is not None:
        per_rank += (
            _kept_16_bit(model, checkpoint, pipeline) * (BYTES_16BIT - linear_bytes) / tensor
        )
        if checkpoint.unquantized_attention:
            linear_bytes = BYTES_16BIT
    if rules is not None and rules.mla_dequantized_kv_b_proj and linear_bytes < BYTES_16BIT:
        per_rank += mla_kv_b_copy_parameters(model, tensor, pipeline, checkpoint) * BYTES_16BIT
    if rules is not None and fmt.id == Quantization.MXFP4 and experts:
        per_rank += _mxfp4_layout_bytes(model, tensor, pipeline, rules.mxfp4, expert_parallel)
        per_rank -= experts * fmt.weight_bytes / (tensor * pipeline)
    # With TP > KV heads every rank keeps a whole KV head instead of a 1/TP slice of them.
    if not model.is_mla and tensor > model.kv_heads:
        kv_share = model.kv_projection_parameters / pipeline
        per_rank += kv_share * linear_bytes * (1 / model.kv_heads - 1 / tensor)
    return per_rank


def grouped_weight_bytes(fmt: QuantFormat, group_size: int) -> float:
    """Bytes per weight of a 4-bit checkpoint with its own group size: the 4-bit element and
    the format's per-group bytes over `group_size` inputs instead of 128."""
    per_group = (fmt.weight_bytes - INT4_ELEMENT_BYTES) * CATALOG_INT4_GROUP
    return INT4_ELEMENT_BYTES + per_group / group_size


def replicated_parameters(model: ModelFacts, pipeline: int) -> tuple[float, float]:
    """(MLA down-projections, MoE router gates): parameters of the stage holding the most layers
    that vLLM keeps whole on every TP rank, where the rest of a layer is split.

    MLA: deepseek_v2.py (read in 0.8.4, 0.11.0, 0.11.1, 0.14.0 and 0.24.0) builds q_a_proj
    (hidden x q_lora_rank) and kv_a_proj_with_mqa (hidden x (kv_lora_rank + rope dim)) as
    ReplicatedLinear with the checkpoint's quantization (from 0.11 fused into one
    MergedColumnParallelLinear with disable_tp=True; without q_lora_rank, q_proj is
    column-parallel). TensorRT-LLM's PyTorch backend does the same (tensorrt_llm/_torch: MLA's
    kv_a_proj_with_mqa is one Linear of q_lora_rank + kv_lora_rank + rope dim outputs with no TP
    mapping).

    Gates: each MoE layer's router (hidden x routed experts) is one unsharded layer in the model
    dtype, built without the checkpoint's quantization: deepseek_v2.py `gate` (GateLinear in
    0.24.0), mixtral.py and qwen2_moe.py `gate` ReplicatedLinear with quant_config=None (0.8.5,
    0.10.2, 0.11.0, 0.14.0, 0.24.0), gpt_oss.py `router` torch.nn.Linear (0.10.2 to 0.14.0) then
    ReplicatedLinear with quant_config=None (0.24.0), qwen3_moe.py `gate` ReplicatedLinear with
    quant_config=None (0.8.5). From 0.10.2 qwen3_moe.py passes the checkpoint's quantization to
    its gate, which checkpoints that skip the router (llm-compressor recipes ignore mlp.gate)
    keep 16-bit and online FP8 quantizes to 8 bits: counted 16-bit, up to 0.05 GiB per rank too
    many for Qwen3-235B-A22B. TensorRT-LLM: DeepseekV3Gate's weight is an unsharded parameter in
    the model dtype (fp32 in some early releases, not modelled); its other MoE routers were not
    read and are counted as vLLM's."""
    layers = stage_layers(model, pipeline)
    gates = 0.0
    if model.is_moe:
        moe_layers = min(layers, model.layers - model.first_dense_layers)
        gates = float(moe_layers * model.hidden_size * model.experts)
    if not model.is_mla:
        return 0.0, gates
    width = model.q_lora_rank + model.kv_lora_rank + model.qk_rope_head_dim
    return float(layers * model.hidden_size * width), gates


def mla_kv_b_copy_parameters(
    model: ModelFacts,
    tensor: int,
    pipeline: int,
    checkpoint: QuantizedCheckpoint | None = None,
) -> float:
    """Parameters of one rank's W_UK and W_UV, the 16-bit copy vLLM's MLA keeps of a quantized
    kv_b_proj (engine_memory.py MLA_DEQUANTIZED_KV_B_SINCE): per layer of the stage holding the
    most quantized kv_b_proj, kv_lora_rank x the rank's heads x (qk_nope_head_dim +
    v_head_dim). The facts hold qk_nope_head_dim as head_dim - qk_rope_head_dim; v_head_dim is
    taken equal to it, as in every DeepSeek-V2/V3 config the catalog holds (128 and 128).
    A layer `checkpoint` keeps whole in 16-bit (`unquantized_layers`) has no copy: its
    kv_b_proj gets UnquantizedLinearMethod, and get_and_maybe_dequant_weights returns its own
    weight, which W_UK_T and W_UV only view (vLLM 0.11.0 v1/attention/backends/mla/common.py
    996-1008 and 1072-1074)."""
    if not model.is_mla:
        return 0.0
    nope = model.head_dim - model.qk_rope_head_dim
    heads = model.attention_heads / tensor
    return float(
        _quantized_layers(model, checkpoint, pipeline) * model.kv_lora_rank * heads * 2 * nope
    )


def _quantized_layers(
    model: ModelFacts, checkpoint: QuantizedCheckpoint | None, pipeline: int
) -> int:
    """Decoder layers of the stage holding the most of them that `checkpoint` does not keep
    whole in 16-bit."""
    if checkpoint is None or not checkpoint.unquantized_layers:
        return stage_layers(model, pipeline)
    return max(len(layers) - len(whole) for layers, whole in _stages(model, checkpoint, pipeline))


def _stages(
    model: ModelFacts, checkpoint: QuantizedCheckpoint | None, pipeline: int
) -> list[tuple[range, list[int]]]:
    """Each pipeline stage's decoder layers, and those of them `checkpoint` keeps whole in
    16-bit (`unquantized_layers`)."""
    per_stage = stage_layers(model, pipeline)
    kept = set(checkpoint.unquantized_layers) if checkpoint is not None else set()
    stages = []
    for stage in range(pipeline):
        layers = range(stage * per_stage, min(model.layers, (stage + 1) * per_stage))
        stages.append((layers, sorted(layer for layer in kept if layer in layers)))
    return stages


def _kept_16_bit(
    model: ModelFacts,
    checkpoint: QuantizedCheckpoint,
    pipeline: int,
    *,
    active: bool = False,
    routed: bool = True,
) -> float:
    """Parameters of the stage holding the most of them that a pre-quantized checkpoint leaves
    16-bit: its whole unquantized layers, and the attention of its other layers where the
    checkpoint keeps attention 16-bit. The engine builds those modules unquantized (vLLM's
    FBGEMMFp8Config.get_quant_method gives a layer in `modules_to_not_convert`
    UnquantizedLinearMethod; vllm/model_executor/layers/quantization/fbgemm_fp8.py). `active`:
    only those a token runs through (a MoE layer's routed experts in proportion); `routed`:
    with a MoE layer's routed experts (`_layer_parameters`)."""
    return max(
        _stage_kept_16_bit(model, checkpoint, stage, active=active, routed=routed)
        for stage in _stages(model, checkpoint, pipeline)
    )


def _stage_kept_16_bit(
    model: ModelFacts,
    checkpoint: QuantizedCheckpoint,
    stage: tuple[range, list[int]],
    *,
    active: bool = False,
    routed: bool = True,
) -> float:
    """`_kept_16_bit` of one stage (`_stages`)."""
    layers, whole = stage
    attention = model.attention_parameters_per_layer if checkpoint.unquantized_attention else 0.0
    return sum(
        _layer_parameters(model, layer, active=active, routed=routed) for layer in whole
    ) + attention * (len(layers) - len(whole))


def routed_expert_bytes_per_rank(
    model: ModelFacts,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    checkpoint: QuantizedCheckpoint | None = None,
) -> float:
    """One rank's routed experts as `layer_weight_bytes_per_rank` holds them without the
    engine's rules: at the checkpoint's bytes (`checkpoint_format`), each stage's share of
    them, but those of the MoE layers the checkpoint keeps whole on the stage it counts
    (`_kept_16_bit`) at 16-bit bytes, where the format holds the other linears too (vLLM
    builds such a layer's experts with UnquantizedFusedMoEMethod: moe_kernels.kept_expert_share;
    an experts-only format holds them in the format, as MXFP4's config does)."""
    if not model.is_moe:
        return 0.0
    fmt = checkpoint_format(fmt, checkpoint)
    held = model.routed_expert_parameters * fmt.weight_bytes / (tensor * pipeline)
    if checkpoint is None or not checkpoint.unquantized_layers or fmt.applies_to == "experts":
        return held
    _, whole = max(
        _stages(model, checkpoint, pipeline),
        key=lambda stage: _stage_kept_16_bit(model, checkpoint, stage),
    )
    kept_layers = sum(1 for layer in whole if layer >= model.first_dense_layers)
    per_layer = model.routed_expert_parameters / (model.layers - model.first_dense_layers)
    return held + kept_layers * per_layer * (BYTES_16BIT - fmt.weight_bytes) / tensor


def _layer_parameters(
    model: ModelFacts, layer: int, *, active: bool = False, routed: bool = True
) -> float:
    """Linear parameters of one decoder layer (norms included): a dense model's body over its
    layers; in a MoE model, the attention and dense MLP of a leading dense layer, or an even
    share of the rest (`active`: of the parameters a token runs through; without `routed`,
    the share of the routed experts left out)."""
    total = model.active_parameters if active else model.parameters
    body = total - model.embedding_parameters
    if not model.is_moe:
        return body / model.layers
    dense = model.attention_parameters_per_layer + 3 * model.hidden_size * model.intermediate_size
    if layer < model.first_dense_layers:
        return dense
    moe_layers = model.layers - model.first_dense_layers
    if not routed:
        experts = (
            model.active_routed_expert_parameters if active else model.routed_expert_parameters
        )
        body -= experts
    return (body - dense * model.first_dense_layers) / moe_layers


def held_16_bit_active_parameters(
    model: ModelFacts, checkpoint: QuantizedCheckpoint | None, *, routed: bool = True
) -> float:
    """The parameters a token runs through, over every layer, that a pre-quantized checkpoint
    leaves 16-bit in its decoder layers (`_kept_16_bit`); none without a checkpoint. Without
    `routed`, the routed experts of the layers it keeps whole are left out."""
    if checkpoint is None:
        return 0.0
    return _kept_16_bit(model, checkpoint, 1, active=True, routed=routed)


def held_16_bit_linear_parameters(
    model: ModelFacts, checkpoint: QuantizedCheckpoint | None
) -> float:
    """The parameters, over every layer, of the linears besides the routed experts that a
    pre-quantized checkpoint leaves 16-bit (`_kept_16_bit`); none without a checkpoint. Counted
    of the model's total, as the format's other linears are (performance._marlin_parameters):
    every token runs through them, but the catalog rounds its active count apart from it."""
    if checkpoint is None:
        return 0.0
    return _kept_16_bit(model, checkpoint, 1, routed=False)


def mxfp4_expert_read_bytes(
    model: ModelFacts, tensor: int, pipeline: int, layout: Mxfp4Layout, expert_parallel: int = 1
) -> float:
    """One rank's MXFP4 experts as the engine's MoE kernel reads them: the layout's padded
    tensors with their scales once. Where vLLM keeps the checkpoint's scales next to the
    swizzled ones (Triton), the kernel is handed only the swizzled ones (mxfp4.py
    process_weights_after_loading: PrecisionConfig(weight_scale=w13_scale), 0.13.0)."""
    once = dataclasses.replace(layout, scales_kept_twice=False)
    return _mxfp4_layout_bytes(model, tensor, pipeline, once, expert_parallel)


def _mxfp4_layout_bytes(
    model: ModelFacts, tensor: int, pipeline: int, layout: Mxfp4Layout, expert_parallel: int = 1
) -> float:
    """One rank's MXFP4 experts as vLLM allocates them: each expert's gate/up and down matmuls
    with the rank's intermediate slice and the hidden size rounded up to the kernel's
    alignment; 4-bit elements plus one 8-bit scale per 32 (twice where the scales are kept
    twice). With expert parallelism a rank allocates its experts / expert_parallel experts
    (FusedMoE passes num_experts=local_num_experts to create_weights) with the intermediate
    split tensor / expert_parallel ways (the MoE's tp_size is 1 under vLLM's EP:
    FusedMoEParallelConfig.make, vllm/model_executor/layers/fused_moe/)."""
    split = tensor // expert_parallel
    experts = model.experts / expert_parallel
    intermediate = _round_up(
        math.ceil(model.moe_intermediate_size / split), layout.intermediate_align
    )
    hidden = _round_up(model.hidden_size, layout.hidden_align)
    layers = (model.layers - model.first_dense_layers) / pipeline
    scales = 2 if layout.scales_kept_twice else 1
    per_element = MXFP4_ELEMENT_BYTES + scales * MXFP4_SCALE_BYTES
    if layout.swizzle_align:
        # The byte-packed (K / 2) and the other dim of each matrix, padded apart; the scales
        # are not (engine_memory.py TRITON_HOPPER_PADDED).
        align = layout.swizzle_align
        gate_up = _round_up(hidden // 2, align) * 2 * _round_up(2 * intermediate, align)
        down = _round_up(intermediate // 2, align) * 2 * _round_up(hidden, align)
        padded = (gate_up + down) * MXFP4_ELEMENT_BYTES
        scales_bytes = 3 * intermediate * hidden * scales * MXFP4_SCALE_BYTES
        return experts * layers * (padded + scales_bytes)
    return experts * layers * 3 * intermediate * hidden * per_element


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def activation_bytes(
    model: ModelFacts,
    tensor: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    rules: EngineMemory,
    moe_workspace_growth: float = 0.0,
    moe_workspace_kept: float = 0.0,
    moe_workspace_step: float = 0.0,
) -> float:
    """Peak torch memory of vLLM's profiling run: the forward step of max_num_batched_tokens
    tokens, or the dummy sampler step after it (one row of full-vocabulary logits per request,
    min(max_num_seqs, tokens) of them, next to the step's output hidden states), whichever is
    larger (v1/worker/gpu_model_runner.py profile_run: the step's activations are freed before
    the sampler runs). The step's copies are fitted with each expert split over the TP ranks
    and run by Triton's fused_moe; `moe_workspace_growth`: what the layout's MoE workspace
    adds over that; `moe_workspace_kept`: what the MoE kernel keeps allocated after the step,
    so under the sampler too; `moe_workspace_step`: the layout's whole MoE workspace, alive
    inside the step's MoE call beside the hidden-state copies, so the step's MLP share is at
    least that (all three moe_kernels.moe_workspace)."""
    hidden = max_num_batched_tokens * ACTIVATION_HIDDEN_COPIES * model.hidden_size * BYTES_16BIT
    mlp = max_num_batched_tokens * ACTIVATION_MLP_COPIES * model.mlp_width_per_token / tensor
    step = hidden + max(mlp * BYTES_16BIT + moe_workspace_growth, moe_workspace_step)
    requests = min(max_num_seqs, max_num_batched_tokens)
    per_logit = (
        SAMPLER_BYTES_PYTORCH
        if requests < rules.sampler_sort_below_rows
        else rules.sampler_bytes_per_logit
    )
    sampler = requests * model.vocab_size * per_logit + moe_workspace_kept
    return max(step, sampler + max_num_batched_tokens * model.hidden_size * BYTES_16BIT)


MoeKernel = Literal["fused_experts", "marlin", "triton_experts", "marlin_experts", "deepgemm"]
# DeepGEMM's contiguous grouped layout pads each local expert's rows to its M alignment
# (deep_gemm_utils.py compute_aligned_M: M x top_k + experts x (alignment - 1), rounded up).
DEEP_GEMM_M_ALIGNMENT = 128


def moe_workspace_bytes(
    model: ModelFacts,
    kernel: MoeKernel,
    split: int,
    local_experts: float,
    tokens: int,
    chunk: int | None,
    quantized: bool = False,
    narrow: bool = False,
    out_of_place: bool = False,
    padding: tuple[int, int] = (1, 1),
) -> float:
    """The workspace vLLM's MoE kernel allocates for a step of `tokens` tokens on a rank whose
    routed experts are each split `split` ways, in the activations' 16-bit dtype; N is the
    rank's w13 width (gate and up: 2 x its intermediate share), K the hidden size, M the
    step's tokens up to `chunk`, the release's (moe_kernels.vllm_fused_moe_chunk_tokens; None:
    the whole step). The modular kernel's ("triton_experts", "marlin_experts", "deepgemm")
    also holds the step's output, M_full x K, in workspace13 where that is large enough and
    the step is one chunk, else in a buffer of its own (modular_kernel.py _allocate_buffers,
    0.11.1 and 0.11.2 833-838, 0.13.0 839-855, 0.24.0 1093-1100; 0.11.0 _do_fused_experts
    686-702, 774-778):
    - "fused_experts", the Triton kernel called directly (fused_moe.py fused_experts_impl,
      vLLM 0.8.5 1275-1302, 0.10.2 1553-1587, 0.11.0 1538-1573): cache13 of
      M x top_k x max(N, K) and cache2 of M x top_k x N / 2, and with `quantized` (FP8
      activations) cache2's 1-byte copy the second GEMM reads (moe_kernel_quantize_input,
      0.11.0 1674-1680); with `out_of_place` also its output, M_full x K, taken beside the
      caches (`out_hidden_states = torch.empty_like(hidden_states)`, 0.13.0 1860-1863:
      moe_kernels.VLLM_FUSED_MOE_OUT_OF_PLACE_SINCE);
    - "marlin", Marlin's MoE kernel called directly (fused_marlin_moe.py, 0.8.5 264-273 and
      340, 0.13.0 _fused_marlin_moe 92-110 and fused_marlin_moe 364-368): the same cache13
      and cache2 for the whole step (it does not chunk), and its output, M_full x K: the
      4-bit methods never pass inplace=True (awq_marlin.py, gptq_marlin.py and
      compressed_tensors_moe.py apply, 0.8.5 to 0.14.0), and from 0.16.0 pass
      `not disable_inplace`, False under torch 2.9;
    - "triton_experts", the same kernel behind the modular kernel (fused_moe.py
      TritonExperts.workspace_shapes, 0.14.0 2324-2339): M x top_k x max(N / 2, K) and
      M x top_k x max(N, K); "marlin_experts", Marlin's behind it, asks for the same shapes
      (N there is the intermediate width: fused_marlin_moe.py MarlinExperts.moe_problem_size
      and workspace_shapes, 0.13.0 564-590 and 629-658; experts/marlin_moe.py 0.24.0 684-741);
    - "deepgemm" (deep_gemm_moe.py DeepGemmExperts.workspace_shapes, 0.11.0 182-203, 0.14.0
      150-157): M_sum x max(N, K) and M_sum x max(N / 2, K), M_sum the rows padded per local
      expert (DEEP_GEMM_M_ALIGNMENT); with `narrow` (0.11.1 and 0.12.0, 201-221) workspace13
      is M_sum x N.
    `padding`: the multiples the rank's intermediate share and the hidden size are rounded up
    to (MXFP4's layout, engine_memory.Mxfp4Layout); a padded hidden size also takes the
    layer's padded copy of the step's input, M_full x K (F.pad: fused_moe/layer.py 0.11.0
    1813-1816, runner/default_moe_runner.py 0.19.0 462)."""
    chunked = chunk is not None and tokens > chunk
    rows = min(tokens, chunk) if chunk is not None else tokens
    width = _round_up(math.ceil(model.moe_intermediate_size / split), padding[0])
    hidden, top_k = _round_up(model.hidden_size, padding[1]), model.active_experts
    padded_input = tokens * hidden if hidden != model.hidden_size else 0
    if kernel in ("fused_experts", "marlin"):
        rows = tokens if kernel == "marlin" else rows
        copy = rows * top_k * width / BYTES_16BIT if quantized else 0.0
        output = tokens * hidden if kernel == "marlin" or out_of_place else 0.0
        caches = rows * top_k * (max(2 * width, hidden) + width) + copy
        return (caches + output + padded_input) * BYTES_16BIT
    if kernel in ("triton_experts", "marlin_experts"):
        workspace13 = rows * top_k * max(width, hidden)
        workspace2 = rows * top_k * max(2 * width, hidden)
    else:
        padded = rows * top_k + local_experts * (DEEP_GEMM_M_ALIGNMENT - 1)
        m_sum = math.ceil(padded / DEEP_GEMM_M_ALIGNMENT) * DEEP_GEMM_M_ALIGNMENT
        workspace13 = m_sum * (2 * width if narrow else max(2 * width, hidden))
        workspace2 = m_sum * max(width, hidden)
    output = tokens * hidden
    own_output = chunked or workspace13 < output
    own = (output if own_output else 0) + padded_input
    return (workspace13 + workspace2 + own) * BYTES_16BIT


def allreduce_fusion(tensor: int, pipeline: int, rules: EngineMemory) -> bool:
    """Whether the layout books FlashInfer's all-reduce fusion workspace."""
    return (
        rules.allreduce_fusion
        and tensor > 1
        and (pipeline == 1 or rules.allreduce_fusion_with_pipeline)
    )


def non_torch_bytes(tensor: int, pipeline: int, rules: EngineMemory) -> float:
    if not rules.non_torch_since_start:
        graphs = NON_TORCH_GRAPH_PROFILING_GIB if rules.graph_profiling else 0.0
        if tensor * pipeline == 1:
            return (NON_TORCH_SNAPSHOT_SINGLE_GPU_GIB + graphs) * GIB
        per_rank = NON_TORCH_SNAPSHOT_PER_TP_RANK_GIB * tensor
        fusion = NON_TORCH_ALLREDUCE_FUSION_GIB if allreduce_fusion(tensor, pipeline, rules) else 0
        return (NON_TORCH_SNAPSHOT_MULTI_GPU_BASE_GIB + per_rank + fusion + graphs) * GIB
    if tensor * pipeline == 1:
        return NON_TORCH_SINGLE_GPU_GIB * GIB
    return (NON_TORCH_MULTI_GPU_BASE_GIB + NON_TORCH_PER_TP_RANK_GIB * tensor) * GIB


def kv_heads_per_rank(model: ModelFacts, tensor: int) -> int:
    return max(1, model.kv_heads // tensor)


def kv_bytes_per_token_layer(model: ModelFacts, tensor: int, kv_dtype_bytes: float) -> float:
    """One token's K and V in one layer on one rank. MLA: one latent, neither x2 nor split by TP."""
    if model.is_mla:
        return (model.kv_lora_rank + model.qk_rope_head_dim) * kv_dtype_bytes
    return kv_heads_per_rank(model, tensor) * model.head_dim * 2 * kv_dtype_bytes


def request_kv_bytes(
    model: ModelFacts, tensor: int, pipeline: int, kv_dtype_bytes: float, tokens: int, block: int
) -> float:
    """Cache one request of `tokens` holds on a rank; sliding-window layers keep only the window."""
    layers = stage_layers(model, pipeline)
    window_layers = math.ceil(model.sliding_window_layers / pipeline) if model.sliding_window else 0
    full_layers = layers - window_layers
    blocks = math.ceil(tokens / block)
    window_blocks = min(blocks, math.ceil(model.sliding_window / block) + 1) if window_layers else 0
    per_block = block * kv_bytes_per_token_layer(model, tensor, kv_dtype_bytes)
    return per_block * (full_layers * blocks + window_layers * window_blocks)


def kv_capacity(
    model: ModelFacts,
    tensor: int,
    pipeline: int,
    kv_dtype_bytes: float,
    kv_bytes: float,
    max_context_length: int,
    block_size: int,
) -> tuple[int, float]:
    """(tokens the cache holds as vLLM counts them, requests of max_context_length it holds at
    once). With sliding-window layers vLLM's hybrid allocator shares each block-sized page
    between one layer of every group and reports the pages over the groups as tokens
    (v1/core/kv_cache_utils.py get_kv_cache_config, 0.11.0): the count of a cache without
    windows; the windows show in the number of requests it holds."""
    if kv_bytes <= 0:
        return 0, 0.0
    page = (
        block_size
        * stage_layers(model, pipeline)
        * kv_bytes_per_token_layer(model, tensor, kv_dtype_bytes)
    )
    tokens = int(kv_bytes // page) * block_size
    if model.sliding_window:
        request = request_kv_bytes(
            model, tensor, pipeline, kv_dtype_bytes, max_context_length, block_size
        )
        return tokens, kv_bytes / request
    return tokens, tokens / max_context_length


def tensorrt_llm_profiling_requests(max_num_tokens: int, max_seq_len: int) -> int:
    """Dummy requests of TensorRT-LLM's profiling run: prompts of min(max_num_tokens,
    max_seq_len - 1) tokens up to max_num_tokens in all (engine_memory.py
    tensorrt_llm_memory)."""
    prompt = max(1, min(max_num_tokens, max_seq_len - 1))
    return math.ceil(max_num_tokens / prompt)


def tensorrt_llm_served_context(
    model: ModelFacts,
    tensor: int,
    pipeline: int,
    kv_dtype_bytes: float,
    kv_bytes: float,
    max_seq_len: int,
    block_size: int,
) -> int:
    """The max_seq_len TensorRT-LLM starts with where its KV cache holds less than one request
    of `max_seq_len`: it does not refuse, it lowers each attention window, and max_seq_len with
    the largest, to the longest sequence of whole blocks the cache holds
    (_torch/pyexecutor/resource_manager.py KVCacheManager: get_max_atten_window_upper_bound,
    _validate_and_adjust_attention_windows, "Adjusted max_seq_len to N"; sliding-window
    layers first through adjust_window_sizes_for_vswa). 0 where not one block fits: it then
    stops ("Impossible to fit in any sequence in kvCache"). Read in a stored 2026 main; the
    clamp came with NVIDIA/TensorRT-LLM#5720 (main, July 2025, cherry-picked in #5874), before
    the pinned 1.0.0 (September 2025) and 1.3.0rc20, and 1.1.0rc3 logs it (NVIDIA's DGX Spark
    gpt-oss playbook). Whether the 1.0.0 tag holds it was not read in that tag."""
    fits = 0
    low, high = 1, max_seq_len // block_size
    while low <= high:  # the largest whole number of blocks one request's cache fits in
        mid = (low + high) // 2
        tokens = mid * block_size
        if (
            request_kv_bytes(model, tensor, pipeline, kv_dtype_bytes, tokens, block_size)
            <= kv_bytes
        ):
            fits, low = tokens, mid + 1
        else:
            high = mid - 1
    return fits


def memory_breakdown(
    model: ModelFacts,
    gpu: Gpu,
    fmt: QuantFormat,
    *,
    tensor: int,
    pipeline: int,
    kv_dtype_bytes: float,
    gpu_memory_utilization: float,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    max_context_length: int,
    block_size: int,
    rules: EngineMemory,
    budget_of_free_memory: bool = False,
    checkpoint: QuantizedCheckpoint | None = None,
    expert_parallel: int = 1,
    weights: float | None = None,
    moe_workspace_growth: float = 0.0,
    moe_workspace_kept: float = 0.0,
    moe_workspace_step: float = 0.0,
) -> MemoryBreakdown:
    """Memory of one rank. `budget_of_free_memory`: TensorRT-LLM's KV fraction of what is free;
    `checkpoint`: the known pre-quantized checkpoint the plan loads; `expert_parallel`: the
    ranks the experts are spread over whole (`layer_weight_bytes_per_rank`); `weights`:
    `weight_bytes_per_rank` of these arguments where the caller has it (the planner computes
    it once for a layout's KV dtypes); `moe_workspace_growth`, `moe_workspace_kept`,
    `moe_workspace_step`: what the MoE's workspace adds to the profiling step, keeps under the
    sampler after it, and comes to in the step (`activation_bytes`, moe_kernels.moe_workspace)."""
    total = gpu.visible_memory_gib * GIB
    if weights is None:
        weights = weight_bytes_per_rank(
            model, fmt, tensor, pipeline, rules, checkpoint, expert_parallel
        )
    rows = (
        tensorrt_llm_profiling_requests(max_num_batched_tokens, max_context_length)
        if budget_of_free_memory
        else max_num_seqs
    )
    activation = activation_bytes(
        model,
        tensor,
        max_num_batched_tokens,
        rows,
        rules,
        moe_workspace_growth,
        moe_workspace_kept,
        moe_workspace_step,
    )
    non_torch = non_torch_bytes(tensor, pipeline, rules)
    graphs = rules.cuda_graph_gib * GIB
    if budget_of_free_memory:
        # TensorRT-LLM: free_gpu_memory_fraction x (device total - profiling peak), the peak
        # holding weights, the profiling step and the non-torch memory (CUDA graphs included).
        budget = total
        kv = (total - weights - activation - non_torch - graphs) * gpu_memory_utilization
    else:
        budget = total * gpu_memory_utilization
        kv = budget - weights - activation - non_torch - graphs
    per_token = stage_layers(model, pipeline) * kv_bytes_per_token_layer(
        model, tensor, kv_dtype_bytes
    )
    tokens, concurrency = kv_capacity(
        model, tensor, pipeline, kv_dtype_bytes, kv, max_context_length, block_size
    )
    return MemoryBreakdown(
        budget_gib=budget / GIB,
        weights_gib=weights / GIB,
        activation_gib=activation / GIB,
        non_torch_gib=non_torch / GIB,
        cuda_graph_gib=graphs / GIB,
        kv_cache_gib=kv / GIB,
        kv_bytes_per_token=per_token,
        kv_cache_tokens=tokens,
        max_concurrency=concurrency,
    )
