"""vLLM's FlashInfer MXFP4 MoE on Blackwell: MXFP4 x BF16 by default, MXFP4 x MXFP8 where the
server sets VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8. A plan prices what its rendered workload runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.render import render_manifests
from llmdeploy.sizing import moe_kernels, optimizer, performance, plan_deployment, resolve_model
from llmdeploy.sizing.engine_memory import (
    MXFP4_ACTIVATIONS,
    EngineMemory,
    mxfp4_variant,
    vllm_memory,
)

from .conftest import make_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import corpus

B200 = "nvidia-b200-180gb"
MXFP8_VARIABLE = "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8"


def prefill_s(catalog: Catalog, rules: EngineMemory) -> float:
    """gpt-oss-120b's 8192-token prefill at TP 2 on B200s under the engine's `rules`."""
    model = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    steps = performance.StepModel(
        model,
        catalog.gpus[B200],
        catalog.quantizations["mxfp4"],
        2,
        1,
        2,
        8192,
        1024,
        memory_rules=rules,
    )
    return steps.prefill_s(8192, 8192)


def test_the_default_is_bf16_and_the_variable_selects_mxfp8_with_the_same_layout(
    catalog: Catalog,
) -> None:
    """vLLM 0.13.0 get_mxfp4_backend: SM100_FI_MXFP4_BF16 unless the variable is set; both
    pad the experts to 256, so only the kernel's name moves. Marlin and Triton have no MXFP8
    variant: the variable is not read for them."""
    b200 = catalog.gpus[B200]
    default = vllm_memory("0.13.0", b200)
    mxfp8 = vllm_memory("0.13.0", b200, mxfp4_activation="mxfp8")
    assert default.mxfp4.activation == "bf16" and mxfp8.mxfp4.activation == "mxfp8"
    assert (default.mxfp4.intermediate_align, default.mxfp4.hidden_align) == (256, 256)
    assert (mxfp8.mxfp4.intermediate_align, mxfp8.mxfp4.hidden_align) == (256, 256)
    fmt = catalog.quantizations["mxfp4"]
    assert moe_kernels.expert_kernel(fmt, default) == "flashinfer_bf16"
    assert moe_kernels.expert_kernel(fmt, mxfp8) == "flashinfer_mxfp8"
    marlin = vllm_memory("0.13.0", b200, mxfp4_backend="marlin")
    assert mxfp4_variant(marlin.mxfp4, "mxfp8") == marlin.mxfp4
    with pytest.raises(ValueError):
        mxfp4_variant(default.mxfp4, "nvfp4")


def test_every_activation_names_a_kernel_the_step_model_prices(catalog: Catalog) -> None:
    """Mxfp4Layout.activation is a Literal (review7 F11), its values MXFP4_ACTIVATIONS: each
    one a server can set makes FlashInfer's layout name a kernel of MXFP4_KERNELS, which
    expert_kernel would otherwise drop to None (the architecture's rate)."""
    b200, fmt = catalog.gpus[B200], catalog.quantizations["mxfp4"]
    assert MXFP4_ACTIVATIONS == ("bf16", "mxfp8")
    for activation in MXFP4_ACTIVATIONS:
        rules = vllm_memory("0.13.0", b200, mxfp4_activation=activation)
        assert rules.mxfp4.activation == activation
        assert moe_kernels.expert_kernel(fmt, rules) == f"flashinfer_{activation}"
        assert f"flashinfer_{activation}" in moe_kernels.MXFP4_KERNELS


def test_the_bf16_variant_multiplies_at_the_bf16_rate_the_mxfp8_one_at_fp8(
    catalog: Catalog,
) -> None:
    """trtllm-gen's BatchedGemmMxE2m1Bf16 template widens the weights to BF16 (dtypeMmaA bf16,
    mmaK 16); the MxE2m1 x MxE4m3 ones multiply on the FP8 tensor cores (mmaK 32)."""
    b200, fmt = catalog.gpus[B200], catalog.quantizations["mxfp4"]
    bf16 = b200.compute_tflops("bf16")
    assert performance._gemm_tflops(b200, fmt, "flashinfer_bf16")[1] == pytest.approx(bf16)
    assert performance._gemm_tflops(b200, fmt, "flashinfer_mxfp8")[1] > bf16


def test_the_step_model_s_gemm_rates_are_its_experts_kernel_s(catalog: Catalog) -> None:
    """review7 F9: the GEMM rates reach `_flops_s` one way, for the experts' kernel. On a B200
    vLLM's default FlashInfer MXFP4 x BF16 kernel gives the BF16 rate where the architecture
    alone would give the FP8 one."""
    b200, fmt = catalog.gpus[B200], catalog.quantizations["mxfp4"]
    model = resolve_model(make_spec("openai/gpt-oss-120b").model, catalog)
    steps = performance.StepModel(
        model, b200, fmt, 2, 1, 2, 8192, 1024, memory_rules=vllm_memory("0.13.0", b200)
    )
    assert steps.kernel == "flashinfer_bf16"
    assert steps.gemm_tflops == performance._gemm_tflops(b200, fmt, "flashinfer_bf16")
    assert steps.gemm_tflops[1] < performance._gemm_tflops(b200, fmt)[1]
    with pytest.raises(TypeError):
        performance._flops_s(model, b200, fmt, 2, 8192, 4096, 1.0, 1)  # type: ignore[call-arg]


def test_a_long_prefill_under_the_default_costs_more_than_under_mxfp8(catalog: Catalog) -> None:
    """The experts' math of an 8192-token prefill is charged at the BF16 rate by default."""
    b200 = catalog.gpus[B200]
    default = prefill_s(catalog, vllm_memory("0.13.0", b200))
    mxfp8 = prefill_s(catalog, vllm_memory("0.13.0", b200, mxfp4_activation="mxfp8"))
    assert default > 1.1 * mxfp8


def test_the_corpus_b200_rows_replay_the_mxfp8_kernel_their_servers_set(
    catalog: Catalog,
) -> None:
    """InferenceMAX's vLLM B200 rows set the variable (latency_moe_activation.csv): they are
    replayed with the MXFP8 kernel, their TensorRT-LLM siblings by the architecture."""
    rows = [r for r in corpus.load_latency() if r.id.startswith("ix-b200-gptoss120b")]
    fmt = catalog.quantizations["mxfp4"]
    kernels = set()
    for row in rows:
        model, gpu, _, _ = corpus.latency_setup(row, catalog)
        kernels.add(
            (row.engine, moe_kernels.expert_kernel(fmt, corpus.latency_rules(row, model, gpu)))
        )
    assert kernels == {("vllm", "flashinfer_mxfp8"), ("tensorrt-llm", None)}


def test_a_b200_plan_prices_the_kernel_its_rendered_workload_runs(catalog: Catalog) -> None:
    """The rendered pods set no MoE variable, so vLLM runs its default MXFP4 x BF16 kernel: the
    plan's reasons name it."""
    resource = LLMDeployment.model_validate(
        {
            "apiVersion": "llmdeploy.io/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": "gpt-oss", "namespace": "default"},
            "spec": {
                "model": {"name": "openai/gpt-oss-120b"},
                "placement": {"gpu": B200},
                "workload": {"maxContextLength": 16384, "inputTokens": 8192},
            },
        }
    )
    lock = load_image_lock()
    plan = plan_deployment(resource.spec, catalog, lock)
    assert plan.feasible and plan.quantization == "mxfp4", plan.reasons
    named = optimizer.MXFP4_KERNEL_NAMES["flashinfer_bf16"]
    assert f"MXFP4 experts priced as {named}" in plan.reasons
    assert set(optimizer.MXFP4_KERNEL_NAMES) == moe_kernels.MXFP4_KERNELS
    text = repr(render_manifests(resource, plan, catalog, lock))
    assert MXFP8_VARIABLE not in text
