"""vLLM's modular MoE kernel keeps its workspace allocated after the profiling step, so it
stands under the dummy sampler run too; Triton's fused_moe called directly frees its caches
(moe_kernels.moe_workspace, memory.activation_bytes). Either way the whole workspace is
allocated inside the forward step's MoE call, so the step counts at least that."""

from __future__ import annotations

import math

import pytest

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog, Gpu, QuantizedCheckpoint
from llmdeploy.sizing import optimizer, plan_deployment
from llmdeploy.sizing.engine_memory import engine_memory
from llmdeploy.sizing.memory import memory_breakdown
from llmdeploy.sizing.model_facts import resolve_model
from llmdeploy.sizing.moe_kernels import (
    NO_MOE_WORKSPACE,
    MoeWorkspace,
    deep_gemm_narrow_workspace,
    moe_workspace,
    moe_workspace_kernel,
    vllm_fused_moe_chunk_tokens,
)

from .conftest import make_spec

R1 = "deepseek-ai/DeepSeek-R1"
H200 = "nvidia-h200-141gb"
GIB = 2**30


def _pinned(
    catalog: Catalog,
    model: str,
    quantization: str,
    tensor: int,
    engine: dict[str, object],
    concurrency: int,
) -> tuple[float, float]:
    """Activation and KV GiB per GPU of the model pinned to TP `tensor`, EP 1, on H200s."""
    spec = make_spec(
        model,
        quantization=quantization,
        engine=engine,
        placement={"gpu": H200},
        parallelism={"tensor": tensor, "pipeline": 1, "expert": 1},
        workload={
            "concurrency": concurrency,
            "inputTokens": 1024,
            "outputTokens": 1024,
            "maxContextLength": 8192,
        },
    )
    p = plan_deployment(spec, catalog)
    assert p.feasible and p.tensor_parallel == tensor and p.expert_parallel == 1
    assert p.activation_gib_per_gpu is not None and p.kv_cache_gib_per_gpu is not None
    return p.activation_gib_per_gpu, p.kv_cache_gib_per_gpu


def test_deepgemm_keeps_its_buffers_where_triton_frees_its_caches(catalog: Catalog) -> None:
    """DeepSeek-R1's block FP8 at TP 8 EP 1 on an H200 (a 256-wide share of each expert):
    0.11.0 and 0.13.0 run Triton's fused_moe, which frees its caches; 0.11.2 runs DeepGEMM
    (E8M0 on Hopper) through the modular kernel, which keeps workspace13 (M_sum x N, N = 512
    in 0.11.1 to 0.12.0), workspace2 (M_sum x K) and the output (8192 x K, in a buffer of its
    own: workspace13 is smaller). The step grows by those over Triton's caches, the ones the
    fitted copies stand for. From 0.11.1 (torch 2.9) Triton's fused_moe writes its output,
    8192 x K, into a tensor of its own beside its caches."""
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]

    def terms(version: str) -> MoeWorkspace:
        return moe_workspace(r1, h200, fp8, 8192, version, 8, 1)

    assert moe_workspace_kernel(r1, h200, fp8, "0.11.0", 8, 1) == "fused_experts"
    assert moe_workspace_kernel(r1, h200, fp8, "0.13.0", 8, 1) == "fused_experts"
    m_sum = math.ceil((8192 * 8 + 256 * 127) / 128) * 128
    kept = (m_sum * (512 + 7168) + 8192 * 7168) * 2
    triton = 8192 * 8 * (7168 + 256) * 2 + 8192 * 8 * 256  # cache13, cache2, its FP8 copy
    output = 8192 * 7168 * 2
    assert terms("0.11.0") == (0.0, 0.0, pytest.approx(triton))
    assert terms("0.13.0") == (0.0, 0.0, pytest.approx(triton + output))
    growth, held, step = terms("0.11.2")
    assert held == pytest.approx(kept)
    assert step == pytest.approx(kept + output)  # and the modular kernel's own output
    # Over Triton's caches, each kernel with its own output (DeepGEMM's behind the modular
    # kernel, Triton's out of place): the outputs cancel.
    assert growth == pytest.approx(kept - triton)
    assert 1.5 < kept / GIB < 1.52
    # At TP 4 (a 512-wide share) 0.13.0 runs DeepGEMM with the wide first workspace, whose
    # M_sum x 7168 holds the output.
    wide = math.ceil((8192 * 8 + 256 * 127) / 128) * 128 * (7168 + 7168) * 2
    assert moe_workspace(r1, h200, fp8, 8192, "0.13.0", 4, 1)[1] == pytest.approx(wide)


def test_triton_experts_keep_their_workspace_from_0_14(catalog: Catalog) -> None:
    """16-bit experts run Triton's fused_moe directly before 0.14.0 (nothing kept) and its
    TritonExperts behind the modular kernel from it (the workspace kept, no growth: the split
    layout's own kernel)."""
    qwen = resolve_model(make_spec("Qwen/Qwen3-30B-A3B").model, catalog)
    h100, bf16 = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["bf16"]
    rows, width, hidden = 8192 * qwen.active_experts, qwen.moe_intermediate_size, 2048
    caches = rows * (max(2 * width, hidden) + width) * 2  # cache13, cache2
    assert moe_workspace(qwen, h100, bf16, 8192, "0.11.0", 1, 1) == (0, 0, pytest.approx(caches))
    kept = rows * (max(width, hidden) + max(2 * width, hidden)) * 2
    assert moe_workspace(qwen, h100, bf16, 8192, "0.14.0", 1, 1) == (
        0.0,
        pytest.approx(kept),
        pytest.approx(kept + 8192 * hidden * 2),  # and the modular kernel's own output
    )
    amd = catalog.gpus["amd-mi300x-192gb"]  # AITER's kernels: not read
    assert moe_workspace(qwen, amd, bf16, 8192, "0.14.0", 1, 1) == NO_MOE_WORKSPACE


def test_the_kept_workspace_stands_under_the_sampler_step(catalog: Catalog) -> None:
    """With 1024 sequences the sampler step is the profile's peak for R1 at TP 8, and the
    kept workspace adds to it byte for byte; with 16 the forward step is, and a kept
    workspace smaller than the gap between them changes nothing."""
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]
    rules = engine_memory("vllm", "0.11.2", h200, r1.model_type)
    memory = dict(kv_dtype_bytes=2, gpu_memory_utilization=0.9, max_num_batched_tokens=8192)
    memory.update(max_context_length=8192, block_size=64)

    def breakdown(seqs: int, kept: float) -> tuple[float, float]:
        m = memory_breakdown(
            r1, h200, fp8, tensor=8, pipeline=1, rules=rules, max_num_seqs=seqs,
            moe_workspace_kept=kept, **memory,
        )  # fmt: skip
        return m.activation_gib, m.kv_cache_gib

    plain, kept = breakdown(1024, 0.0), breakdown(1024, GIB)
    assert kept[0] - plain[0] == pytest.approx(1.0)
    assert plain[1] - kept[1] == pytest.approx(1.0)
    assert breakdown(16, 0.1 * GIB) == breakdown(16, 0.0)
    assert breakdown(16, 0.0)[0] > 0.3  # the forward step, well above 16 rows of logits


def test_the_planner_books_deepgemm_s_kept_workspace(catalog: Catalog) -> None:
    """R1 pinned to TP 8 EP 1 on 8 H200s with 512 sequences: 0.11.1 runs DeepGEMM and keeps
    its buffers under the sampler step, 0.12.0 runs Triton (PR #29346): the KV cache differs
    by the kept workspace (the rest of the two releases' memory is the same)."""

    def plan(version: str) -> tuple[float, float]:
        return _pinned(catalog, R1, "fp8", 8, {"version": version}, 512)

    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]
    kept = moe_workspace(r1, h200, fp8, 8192, "0.11.1", 8, 1)[1] / GIB
    deepgemm, triton = plan("0.11.1"), plan("0.12.0")
    assert deepgemm[0] - triton[0] == pytest.approx(kept, abs=0.01)
    assert triton[1] - deepgemm[1] == pytest.approx(kept, abs=0.01)


def test_block_fp8_triton_keeps_its_workspace_from_0_14(catalog: Catalog) -> None:
    """0.14.0 runs R1's block FP8 at TP 8 on Triton (its TP 8 rule) as TritonExperts behind
    the modular kernel, so its workspace is kept (M x top_k x K twice, the output in the
    first); 0.13.0 calls fused_moe. 0.16.0's oracle puts FlashInfer's CUTLASS MoE first
    (its workspace not read); from 0.17.0 Hopper's block FP8 without EP takes Triton first
    again, as TritonExperts (kept), and with EP FlashInfer's CUTLASS MoE (not read)."""
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]
    kept = pytest.approx(8192 * 8 * (7168 + 7168) * 2)
    # The step also holds the call's own output.
    step = pytest.approx(8192 * 8 * (7168 + 7168) * 2 + 8192 * 7168 * 2)
    assert moe_workspace(r1, h200, fp8, 8192, "0.14.1", 8, 1) == (0.0, kept, step)
    assert moe_workspace(r1, h200, fp8, 8192, "0.13.0", 8, 1)[:2] == (0.0, 0.0)
    assert moe_workspace(r1, h200, fp8, 8192, "0.16.0", 8, 1) == NO_MOE_WORKSPACE
    assert moe_workspace(r1, h200, fp8, 8192, "0.16.0", 8, 8) == NO_MOE_WORKSPACE
    for release in ("0.17.0", "0.18.0", "0.19.0", "0.24.0"):
        assert moe_workspace_kernel(r1, h200, fp8, release, 8, 1) == "triton_experts"
        assert moe_workspace(r1, h200, fp8, 8192, release, 8, 1) == (0.0, kept, step)
        assert moe_workspace_kernel(r1, h200, fp8, release, 8, 8) is None
        assert moe_workspace(r1, h200, fp8, 8192, release, 8, 8) == NO_MOE_WORKSPACE


def test_a_step_beyond_the_release_s_chunk_keeps_chunk_sized_buffers_and_its_whole_output(
    catalog: Catalog,
) -> None:
    """The modular kernel sizes its workspaces for one chunk of VLLM_FUSED_MOE_CHUNK_SIZE
    (32768 tokens in 0.11.2) and, over one chunk, holds the step's whole output, M_full x K,
    in a buffer of its own (review4's chunk and dgws's output buffer, merged)."""
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]

    def kept(tokens: int) -> float:
        return moe_workspace(r1, h200, fp8, tokens, "0.11.2", 8, 1)[1]

    output_growth = (65536 - 32768) * r1.hidden_size * 2
    assert kept(65536) - kept(32768) == pytest.approx(output_growth)
    assert kept(32768) > kept(8192) > 0


def test_a_step_bound_moe_layout_holds_triton_s_caches_in_the_forward_step(
    catalog: Catalog,
) -> None:
    """R1 pinned to TP 8 EP 1 on 8 H200s under 0.13.0 (Triton's fused_moe, called directly)
    with 16 sequences and a 32768-token step: the forward step is the profile's peak, and
    inside its MoE call Triton's caches for one 16384-token chunk (cache13, cache2 and its FP8
    copy: 1.84 GiB) and its output for the whole step (0.44 GiB, a tensor of its own from
    0.11.1) stand beside the step's two hidden-state copies, well above the fitted copies of
    the widest MLP (0.56 GiB). Mixtral's wide experts at TP 2 keep the fitted figure, which is
    above its caches and output."""

    def plan(model: str, quantization: str, tensor: int) -> float:
        engine = {"version": "0.13.0", "maxNumBatchedTokens": 32768}
        return _pinned(catalog, model, quantization, tensor, engine, 16)[0]

    r1 = resolve_model(make_spec(R1).model, catalog)
    hidden = 32768 * 2 * 7168 * 2 / GIB
    caches = 16384 * 8 * ((7168 + 256) * 2 + 256) / GIB
    output = 32768 * 7168 * 2 / GIB
    fitted = 32768 * 4 * r1.mlp_width_per_token / 8 * 2 / GIB
    assert caches > 3 * fitted
    assert plan(R1, "fp8", 8) == pytest.approx(hidden + caches + output, abs=0.01)
    assert caches == pytest.approx(1.84, abs=0.01)
    mixtral = resolve_model(make_spec("mistralai/Mixtral-8x7B-Instruct-v0.1").model, catalog)
    width = mixtral.moe_intermediate_size / 2
    mixtral_caches = (16384 * 2 * (max(2 * width, 4096) + width) + 32768 * 4096) * 2 / GIB
    mixtral_fitted = 32768 * (2 * 4096 + 4 * mixtral.mlp_width_per_token / 2) * 2 / GIB
    assert mixtral_caches < mixtral_fitted - 32768 * 2 * 4096 * 2 / GIB
    assert plan("mistralai/Mixtral-8x7B-Instruct-v0.1", "bf16", 2) == pytest.approx(
        mixtral_fitted, abs=0.01
    )


def test_the_releases_workspace_rules_each_have_a_function() -> None:
    """DeepGEMM's narrow workspace13 (M_sum x N) in 0.11.1 to 0.12.x, the wide one (M_sum x
    max(N, K)) before and after; the fused-MoE chunk of each release beside it."""
    narrow = {"0.10.2": False, "0.11.0": False, "0.11.1": True, "0.11.2": True}
    narrow |= {"0.12.0": True, "0.13.0": False, "0.14.0": False, "0.24.0": False}
    assert {version: deep_gemm_narrow_workspace(version) for version in narrow} == narrow
    chunks = {"0.11.1": 32768, "0.12.0": 16384, "0.17.0": 16384, "0.18.0": None}
    assert {version: vllm_fused_moe_chunk_tokens(version) for version in chunks} == chunks


QWEN_MOE = "Qwen/Qwen3-30B-A3B"


def test_4_bit_experts_run_marlin_s_moe_where_the_rank_s_share_fits_it_else_triton_s(
    catalog: Catalog,
) -> None:
    """AWQ/GPTQ experts (moe_kernels._wna16_moe_kernel): from 0.8.5 Marlin's MoE where the
    rank's intermediate share is a multiple of max(64, group), else MoeWNA16, Triton's
    fused_moe with 4-bit weights; before 0.8.5 MoeWNA16 for more than 32 local experts (the
    lmc503 log, 0.8.4, R1 AWQ: int4_w4a16). Qwen3-30B-A3B (768 wide, 2048 hidden, top 8) at
    TP 2 holds a 384-wide share (Marlin at the catalog's group of 128), at TP 4 a 192-wide one
    (Triton; Marlin again with a group of 64). Marlin, called directly up to 0.19.0, takes
    cache13 and cache2 for the whole step (it does not chunk) and its own output, and frees
    them; 0.24.0 runs it as MarlinExperts behind the modular kernel, TritonExperts' shapes,
    kept."""
    qwen = resolve_model(make_spec(QWEN_MOE).model, catalog)
    h100, awq = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations["int4-awq"]
    gptq = catalog.quantizations["int4-gptq"]
    tokens, top_k, hidden = 32768, 8, 2048
    assert (qwen.hidden_size, qwen.moe_intermediate_size, qwen.active_experts) == (2048, 768, 8)
    for fmt in (awq, gptq):
        assert moe_workspace_kernel(qwen, h100, fmt, "0.13.0", 2, 1) == "marlin"
        assert moe_workspace_kernel(qwen, h100, fmt, "0.13.0", 4, 1) == "fused_experts"
        assert moe_workspace_kernel(qwen, h100, fmt, "0.19.0", 2, 1) == "marlin"
        assert moe_workspace_kernel(qwen, h100, fmt, "0.24.0", 2, 1) == "marlin_experts"
    group_64 = QuantizedCheckpoint(
        id="some/Qwen3-30B-A3B-AWQ", quantization="int4-awq", group_size=64, source="a test"
    )
    assert moe_workspace_kernel(qwen, h100, awq, "0.13.0", 4, 1, group_64) == "marlin"
    output = tokens * hidden
    marlin = (tokens * top_k * (max(768, hidden) + 384) + output) * 2
    assert moe_workspace(qwen, h100, awq, tokens, "0.13.0", 2, 1) == (
        0.0,
        0.0,
        pytest.approx(marlin),
    )
    triton = (16384 * top_k * (max(384, hidden) + 192) + output) * 2  # one 16384-token chunk
    assert moe_workspace(qwen, h100, awq, tokens, "0.13.0", 4, 1) == (
        0.0,
        0.0,
        pytest.approx(triton),
    )
    kept = tokens * top_k * (max(384, hidden) + max(768, hidden)) * 2
    step = kept + output * 2  # and the modular kernel's own output, per call
    assert moe_workspace(qwen, h100, awq, tokens, "0.24.0", 2, 1) == (
        0.0,
        pytest.approx(kept),
        pytest.approx(step),
    )
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200 = catalog.gpus[H200]
    assert moe_workspace_kernel(r1, h200, awq, "0.8.4", 8, 1) == "fused_experts"
    assert moe_workspace_kernel(r1, h200, awq, "0.8.5", 8, 1) == "marlin"
    mixtral = resolve_model(make_spec("mistralai/Mixtral-8x7B-Instruct-v0.1").model, catalog)
    assert moe_workspace(mixtral, h100, awq, tokens, "0.8.4", 2, 1) == NO_MOE_WORKSPACE
    amd = catalog.gpus["amd-mi300x-192gb"]
    assert moe_workspace(qwen, amd, awq, tokens, "0.13.0", 2, 1) == NO_MOE_WORKSPACE


def test_a_step_bound_4_bit_moe_layout_holds_marlin_s_caches_in_the_forward_step(
    catalog: Catalog,
) -> None:
    """DeepSeek-R1 in int4-awq (the catalog's AWQ checkpoint, group 64) pinned to TP 8 EP 1 on
    H200s under 0.13.0 with 16 sequences and a 32768-token step: the forward step is the
    profile's peak, and inside its MoE call Marlin's cache13 and cache2 for the whole step
    (a 256-wide share, a multiple of 64) and its output stand beside the step's two
    hidden-state copies, far above the fitted copies of its widest MLP."""
    spec = LLMDeploymentSpec.model_validate(
        {
            "model": {
                "name": R1,
                "quantizedVariants": {"int4-awq": "cognitivecomputations/DeepSeek-R1-AWQ"},
            },
            "quantization": "int4-awq",
            "engine": {"version": "0.13.0", "maxNumBatchedTokens": 32768},
            "placement": {"gpu": H200},
            "parallelism": {"tensor": 8, "pipeline": 1, "expert": 1},
            "workload": {
                "concurrency": 16,
                "inputTokens": 1024,
                "outputTokens": 1024,
                "maxContextLength": 8192,
            },
        }
    )
    p = plan_deployment(spec, catalog)
    assert p.feasible and p.tensor_parallel == 8 and p.expert_parallel == 1
    activation = p.activation_gib_per_gpu
    r1 = resolve_model(spec.model, catalog)
    hidden = 32768 * 2 * 7168 * 2 / GIB
    marlin = (32768 * 8 * (7168 + 256) + 32768 * 7168) * 2 / GIB
    fitted = 32768 * 4 * r1.mlp_width_per_token / 8 * 2 / GIB
    assert marlin > 5 * fitted
    assert activation == pytest.approx(hidden + marlin, abs=0.01)


def test_mxfp4_experts_on_marlin_count_its_padded_workspace(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpt-oss-20b (2880 hidden and wide, top 4) on an A100, where vLLM's MXFP4 backend is
    Marlin (engine_memory.mxfp4_layout): up to 0.16.0 mxfp4.py calls fused_marlin_moe
    directly (cache13, cache2 and its output, freed), from 0.17.0 it runs MarlinExperts
    behind the modular kernel (kept); both on Marlin's padded widths (the share to 2944, the
    hidden size to 3072) with the layer's padded copy of the input, which F.pad takes in
    every call: in the step, not kept under the sampler. Triton's backend on an
    H100 (0.19.0) is not counted, and the planner hands the release's layout on."""
    oss = resolve_model(make_spec("openai/gpt-oss-20b").model, catalog)
    a100, h100 = catalog.gpus["nvidia-a100-80gb"], catalog.gpus["nvidia-h100-80gb"]
    mxfp4 = catalog.quantizations["mxfp4"]

    def terms(gpu: Gpu, version: str) -> MoeWorkspace:
        layout = engine_memory("vllm", version, gpu, oss.model_type).mxfp4
        return moe_workspace(oss, gpu, mxfp4, 8192, version, 1, 1, None, layout)

    tokens, top_k, width, hidden = 8192, 4, 2944, 3072
    padded_input = output = tokens * hidden
    direct = (tokens * top_k * (max(2 * width, hidden) + width) + output + padded_input) * 2
    assert terms(a100, "0.11.0") == (0.0, 0.0, pytest.approx(direct))
    kept = pytest.approx(tokens * top_k * (hidden + 2 * width) * 2)
    step = pytest.approx((tokens * top_k * (hidden + 2 * width) + padded_input + output) * 2)
    assert terms(a100, "0.19.0") == (0.0, kept, step)
    assert terms(h100, "0.19.0") == NO_MOE_WORKSPACE
    assert moe_workspace(oss, a100, mxfp4, 8192, "0.19.0", 1, 1) == NO_MOE_WORKSPACE

    layouts: list[object] = []

    def spy(*args: object) -> MoeWorkspace:
        layouts.append(args[-1])
        return NO_MOE_WORKSPACE

    monkeypatch.setattr(optimizer, "moe_workspace", spy)
    spec = make_spec(
        "openai/gpt-oss-20b",
        engine={"version": "0.19.0"},
        placement={"gpu": "nvidia-a100-80gb"},
        parallelism={"tensor": 1, "pipeline": 1, "expert": 1},
    )
    plan_deployment(spec, catalog)
    assert layouts and all(getattr(layout, "backend", None) == "marlin" for layout in layouts)


def test_the_modular_kernel_takes_its_own_output_in_the_step_from_0_11_1(
    catalog: Catalog,
) -> None:
    """From 0.11.1 (torch 2.9: disable_inplace) FusedMoEModularKernel.forward takes
    `output = torch.zeros_like(hidden_states)` (empty_like from 0.18.0) beside the fused_out
    its experts write, per call: the step holds it, the sampler step does not (it is not a
    kept buffer). 0.24.0 aliases fused_out to it on ROCm with AITER only, so not on CUDA.
    0.11.0 writes into the input."""
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]
    output = 8192 * r1.hidden_size * 2
    for release in ("0.11.2", "0.14.1", "0.19.0", "0.24.0"):
        _, kept, step = moe_workspace(r1, h200, fp8, 8192, release, 8, 1)
        assert kept > 0 and step - kept == pytest.approx(output)
    # 0.11.0's DeepGEMM at TP 2 (a 1024-wide share; _valid_deep_gemm wants above 512).
    assert moe_workspace_kernel(r1, h200, fp8, "0.11.0", 2, 1) == "deepgemm"
    _, kept, step = moe_workspace(r1, h200, fp8, 8192, "0.11.0", 2, 1)
    assert kept > 0 and step == kept


def test_the_moe_layers_a_checkpoint_keeps_whole_add_tritons_16_bit_workspace(
    catalog: Catalog,
) -> None:
    """A MoE layer a checkpoint keeps whole in 16-bit runs the unquantized MoE, Triton's
    fused_moe in BF16, whatever kernel the quantized layers run (review6 finding 8). Made-up
    DeepSeek-R1 FP8 checkpoint keeping one MoE layer, TP 8 EP 1 on an H200, 8192 tokens."""
    r1 = resolve_model(make_spec(R1).model, catalog)
    h200, fp8 = catalog.gpus[H200], catalog.quantizations["fp8"]
    bf16 = catalog.quantizations["bf16"]
    kept_layer = QuantizedCheckpoint(
        id="example/DeepSeek-R1-FP8-one-moe-layer-16-bit",
        quantization="fp8",
        unquantized_layers=(r1.first_dense_layers + 7,),
        weight_block_size=(128, 128),
        source="made up for the test",
    )

    def terms(version: str, checkpoint: QuantizedCheckpoint | None) -> MoeWorkspace:
        return moe_workspace(r1, h200, fp8, 8192, version, 8, 1, checkpoint)

    def sixteen_bit(version: str) -> MoeWorkspace:
        return moe_workspace(r1, h200, bf16, 8192, version, 8, 1)

    # 0.11.2: DeepGEMM keeps its buffers; the kept layer's direct call takes Triton's caches
    # (cache13, cache2) and its own output on top of them.
    deepgemm = terms("0.11.2", None)
    triton = (8192 * 8 * (7168 + 256) + 8192 * 7168) * 2
    assert sixteen_bit("0.11.2") == (0.0, 0.0, pytest.approx(triton))
    assert deepgemm.step < deepgemm.kept + triton
    assert terms("0.11.2", kept_layer) == (
        deepgemm.growth,
        deepgemm.kept,
        pytest.approx(deepgemm.kept + triton),
    )
    # 0.16.0 runs the FP8 experts on FlashInfer (not read): the kept layer's TritonExperts
    # buffers are what is counted.
    assert terms("0.16.0", None) == NO_MOE_WORKSPACE
    kept_buffers = terms("0.16.0", kept_layer)
    assert kept_buffers == sixteen_bit("0.16.0") and kept_buffers.kept > 0
    # 0.14.1: both run TritonExperts, the same shapes in one shared buffer: nothing moves.
    assert terms("0.14.1", kept_layer) == terms("0.14.1", None)
