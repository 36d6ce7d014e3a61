"""The optimizer's choices and the traps it must not fall into."""

from __future__ import annotations

import pytest

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog
from llmdeploy.sizing import SpecError, feasible_alternatives, plan_deployment

from .conftest import make_spec, plan_405b_fp8

LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


def test_llama_70b_bf16_on_one_h100_is_infeasible_for_its_weights(catalog: Catalog) -> None:
    spec = make_spec(
        LLAMA_70B,
        placement={"gpu": "nvidia-h100-80gb"},
        quantization="bf16",
        parallelism={"tensor": 1, "pipeline": 1},
    )
    plan = plan_deployment(spec, catalog)
    assert not plan.feasible
    assert any("weights need" in a.reason and "GiB" in a.reason for a in plan.alternatives)
    # ... and it says what would fit instead.
    assert any("would fit with" in r for r in plan.reasons)


def test_llama_70b_on_h100_gets_fp8_or_tp(catalog: Catalog) -> None:
    plan = plan_deployment(
        make_spec(
            LLAMA_70B, placement={"gpu": "nvidia-h100-80gb"}, workload={"maxContextLength": 8192}
        ),
        catalog,
    )
    assert plan.feasible
    assert plan.quantization == "fp8" or (plan.tensor_parallel or 1) >= 2
    assert plan.weights_gib_per_gpu is not None and plan.weights_gib_per_gpu < 72


def test_tp_that_does_not_divide_heads_names_both_numbers(catalog: Catalog) -> None:
    spec = make_spec(
        "Qwen/Qwen2.5-7B-Instruct",
        placement={"gpu": "nvidia-h100-80gb"},
        parallelism={"tensor": 8},
    )
    plan = plan_deployment(spec, catalog)
    assert not plan.feasible
    text = " ".join(a.reason for a in plan.alternatives)
    assert "tensorParallel 8" in text and "28 attention heads" in text


def test_model_too_large_for_allowed_gpus_says_what_would_fit(catalog: Catalog) -> None:
    spec = make_spec(
        "meta-llama/Llama-3.1-405B-Instruct",
        placement={"allowedGpus": ["nvidia-l4"], "maxGpusPerReplica": 4},
        workload={"maxContextLength": 8192},
    )
    plan = plan_deployment(spec, catalog)
    assert not plan.feasible
    hints = [r for r in plan.reasons if r.startswith("would fit with")]
    assert any("another GPU SKU" in h or "more GPUs" in h for h in hints), plan.reasons


def test_online_fp8_needs_fp8_hardware(catalog: Catalog) -> None:
    spec = make_spec(placement={"gpu": "nvidia-a100-80gb"}, quantization="fp8")
    plan = plan_deployment(spec, catalog)
    assert not plan.feasible
    assert any("FP8" in a.reason for a in plan.alternatives)


def test_int4_only_with_a_checkpoint(catalog: Catalog) -> None:
    without = plan_deployment(make_spec(quantization="int4-awq"), catalog)
    assert not without.feasible
    assert any("quantizedVariants" in a.reason for a in without.alternatives)
    awq = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
    spec = LLMDeploymentSpec.model_validate(
        {
            "model": {
                "name": "meta-llama/Llama-3.1-8B-Instruct",
                "quantizedVariants": {"int4-awq": awq},
            },
            "quantization": "int4-awq",
        }
    )
    with_checkpoint = plan_deployment(spec, catalog)
    assert with_checkpoint.feasible and with_checkpoint.quantization == "int4-awq"
    assert with_checkpoint.checkpoint == awq


def test_a_known_fp8_checkpoint_is_sized_with_its_16_bit_modules(catalog: Catalog) -> None:
    def weights(checkpoint: str) -> float:
        plan = plan_405b_fp8(catalog, checkpoint)
        assert plan.weights_gib_per_gpu is not None
        return float(plan.weights_gib_per_gpu)

    # Meta's keeps attention and two layers in bf16 (vllm#6746 logged 57.75 GiB per rank); a
    # checkpoint the catalog does not know is counted as FP8 throughout.
    assert weights("meta-llama/Llama-3.1-405B-Instruct-FP8") == pytest.approx(56.71, abs=0.01)
    assert weights("acme/Llama-3.1-405B-Instruct-FP8") == pytest.approx(47.74, abs=0.01)


def test_min_precision_bf16_forbids_lowering(catalog: Catalog) -> None:
    plan = plan_deployment(make_spec(minPrecision="bf16"), catalog)
    assert plan.feasible
    assert plan.quantization == "bf16" and plan.kv_cache_dtype == "auto"


def test_pinned_values_are_used(catalog: Catalog) -> None:
    spec = make_spec(
        LLAMA_70B,
        placement={"gpu": "nvidia-h100-80gb"},
        quantization="bf16",
        parallelism={"tensor": 4},
        engine={"kvCacheDtype": "auto"},
        workload={"maxContextLength": 32768},
    )
    plan = plan_deployment(spec, catalog)
    assert (plan.gpu, plan.tensor_parallel, plan.quantization, plan.kv_cache_dtype) == (
        "nvidia-h100-80gb",
        4,
        "bf16",
        "auto",
    )
    # 70.6e9 params x 2 bytes / 4 ranks, embeddings included
    assert plan.weights_gib_per_gpu == pytest.approx(70.6e9 * 2 / 4 / 2**30, rel=0.02)


def test_request_rate_sets_replicas_and_cost(catalog: Catalog) -> None:
    one = plan_deployment(make_spec(placement={"gpu": "nvidia-l4"}), catalog)
    many = plan_deployment(
        make_spec(placement={"gpu": "nvidia-l4"}, workload={"requestsPerSecond": 20}), catalog
    )
    assert one.replicas == 1 and many.replicas is not None and many.replicas > 1
    assert many.cost_per_hour == pytest.approx(one.cost_per_hour * many.replicas, rel=0.01)


def test_slo_excludes_slow_configurations(catalog: Catalog) -> None:
    relaxed = plan_deployment(make_spec(placement={"gpu": "nvidia-l4"}), catalog)
    assert relaxed.feasible and relaxed.estimated_tpot_ms is not None
    strict = plan_deployment(
        make_spec(placement={"gpu": "nvidia-l4"}, slo={"tpotMs": relaxed.estimated_tpot_ms / 10}),
        catalog,
    )
    assert not strict.feasible
    assert "no configuration meets the SLO" in strict.reasons[0]


def test_mla_model_is_planned_across_gpus(catalog: Catalog) -> None:
    plan = plan_deployment(
        make_spec("deepseek-ai/DeepSeek-V3", workload={"maxContextLength": 16384}), catalog
    )
    assert plan.feasible and plan.gpu_count is not None and plan.gpu_count >= 4


def test_context_beyond_model_maximum_is_a_spec_error(catalog: Catalog) -> None:
    with pytest.raises(SpecError) as err:
        plan_deployment(make_spec(workload={"maxContextLength": 10_000_000}), catalog)
    assert err.value.field == "spec.workload.maxContextLength"


def test_unknown_gpu_is_a_spec_error(catalog: Catalog) -> None:
    with pytest.raises(SpecError) as err:
        plan_deployment(make_spec(placement={"gpu": "nvidia-rtx-9090"}), catalog)
    assert err.value.field == "spec.placement.gpu"


def test_unknown_model_without_architecture_is_a_spec_error(catalog: Catalog) -> None:
    with pytest.raises(SpecError) as err:
        plan_deployment(make_spec("acme/unknown-13b"), catalog)
    assert err.value.field == "spec.model.architecture"


def test_plan_is_deterministic(catalog: Catalog) -> None:
    spec = make_spec(LLAMA_70B, workload={"requestsPerSecond": 3})
    assert plan_deployment(spec, catalog) == plan_deployment(spec, catalog)


def test_feasible_alternatives_are_every_fitting_configuration(catalog: Catalog) -> None:
    spec = make_spec(
        placement={"allowedGpus": ["nvidia-l4", "nvidia-a10g"]},
        workload={"maxContextLength": 8192, "requestsPerSecond": 2},
        slo={"ttftMs": 1500, "tpotMs": 60},
    )
    plan = plan_deployment(spec, catalog)
    every = feasible_alternatives(spec, catalog)
    chosen = every[0]
    assert chosen.reason == "chosen"
    assert (chosen.gpu, chosen.gpu_count, chosen.quantization, chosen.kv_cache_dtype) == (
        plan.gpu,
        plan.gpu_count,
        plan.quantization,
        plan.kv_cache_dtype,
    )
    assert all(a.feasible and a.estimated_ttft_ms is not None for a in every)
    # More than the plan lists: it keeps a few runners-up and one per GPU.
    listed = [a for a in plan.alternatives if a.feasible]
    assert len(every) > len(listed) + 1
    # Those that meet the SLO come first, cheapest first.
    meeting = [a for a in every if a.meets_slo]
    assert every[: len(meeting)] == meeting
    costs = [a.cost_per_hour or 0.0 for a in meeting]
    assert costs == sorted(costs)
    assert any(not a.meets_slo for a in every)  # bf16 on one L4 misses TPOT 60 ms
