"""The planner's shortcuts for speed (bench/planner_latency.py) give what the long way gives:
the copy of a candidate, figures computed once and passed down, and memoized lookups."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from llmdeploy.api.types import KvCacheDtype, Quantization
from llmdeploy.catalog import Catalog, load_image_lock, version_key
from llmdeploy.sizing import plan_deployment
from llmdeploy.sizing.engine_memory import engine_memory
from llmdeploy.sizing.memory import (
    layer_weight_bytes_per_rank,
    memory_breakdown,
    weight_bytes_per_rank,
)
from llmdeploy.sizing.model_facts import resolve_model
from llmdeploy.sizing.moe_kernels import _vllm_moe_releases, expert_kernel, grouped_fp8_kernel
from llmdeploy.sizing.optimizer import Candidate, _ranked, _search
from llmdeploy.sizing.performance import StepModel, _gemm_tflops, _weights_read, frontend_s

from .conftest import make_spec


def test_with_expert_is_replace_for_every_field(catalog: Catalog) -> None:
    gpu, fmt = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations[Quantization.FP8]
    values = {
        "gpu": gpu,
        "fmt": fmt,
        "tensor": 8,
        "pipeline": 2,
        "kv_dtype": KvCacheDtype.FP8,
        "checkpoint": "org/model-FP8",
        "infeasible": "why",
        "memory": object(),
        "performance": object(),
        "replicas": 3,
        "cost_per_hour": 12.5,
        "cost_per_million_tokens": 0.25,
        "slo_miss": "TTFT",
        "expert": 2,
    }
    # Every field set away from its default: a field with_expert forgets shows.
    assert set(values) == {f.name for f in dataclasses.fields(Candidate)}
    c = Candidate(**values)  # type: ignore[arg-type]
    copy, expected = c.with_expert(8), dataclasses.replace(c, expert=8)
    assert copy is not c
    for f in dataclasses.fields(Candidate):
        assert getattr(copy, f.name) is getattr(expected, f.name) or getattr(
            copy, f.name
        ) == getattr(expected, f.name), f.name
    assert copy.expert == 8 and c.expert == 2


@pytest.mark.parametrize(
    ("model", "quantization", "tensor", "pipeline"),
    [
        ("meta-llama/Llama-3.1-70B-Instruct", Quantization.INT4_AWQ, 4, 1),
        ("Qwen/Qwen3-235B-A22B", Quantization.FP8, 8, 2),
        ("deepseek-ai/DeepSeek-V3", Quantization.FP8, 8, 1),
    ],
)
def test_figures_passed_down_equal_the_recomputed(
    catalog: Catalog, model: str, quantization: Quantization, tensor: int, pipeline: int
) -> None:
    facts = resolve_model(make_spec(model).model, catalog)
    gpu, fmt = catalog.gpus["nvidia-h100-80gb"], catalog.quantizations[quantization]
    rules = engine_memory("vllm", "0.11.0", gpu, facts.model_type)
    layers = layer_weight_bytes_per_rank(facts, fmt, tensor, pipeline)
    for tokens in (1.0, 64.0, 8192.0):
        assert _weights_read(facts, fmt, tensor, pipeline, tokens, layers=layers) == (
            _weights_read(facts, fmt, tensor, pipeline, tokens)
        )
    # The GEMM rates StepModel passes down are its experts' kernel's (`_flops_s` has no other).
    steps = StepModel(facts, gpu, fmt, tensor, pipeline, 2.0, 1024, 128, memory_rules=rules)
    assert steps.gemm_tflops == _gemm_tflops(gpu, fmt, expert_kernel(fmt, rules))
    memory = {
        "tensor": tensor,
        "pipeline": pipeline,
        "kv_dtype_bytes": 2.0,
        "gpu_memory_utilization": 0.9,
        "max_num_batched_tokens": 8192,
        "max_num_seqs": 64,
        "max_context_length": 8192,
        "block_size": 16,
        "rules": rules,
    }
    weights = weight_bytes_per_rank(facts, fmt, tensor, pipeline, rules)
    assert memory_breakdown(facts, gpu, fmt, weights=weights, **memory) == memory_breakdown(  # type: ignore[arg-type]
        facts,
        gpu,
        fmt,
        **memory,  # type: ignore[arg-type]
    )


def test_known_checkpoint_is_the_models_lookup(catalog: Catalog) -> None:
    spec = make_spec("meta-llama/Llama-3.1-405B-Instruct")
    ctx, _ = _search(spec, catalog, None, None)
    fp8, gpu = catalog.quantizations[Quantization.FP8], catalog.gpus["nvidia-h100-80gb"]
    names = [c.id for c in ctx.model.quantized_checkpoints] + ["not/a-checkpoint", None]
    for name in names:
        for fmt in (fp8, catalog.quantizations[Quantization.BF16]):
            for case in (name, name.upper() if name else None):
                c = Candidate(gpu, fmt, 8, 1, KvCacheDtype.AUTO, case)
                expected = ctx.model.quantized_checkpoint(case, fmt.id)
                assert ctx.known_checkpoint(c) is expected  # twice: memoized
                assert ctx.known_checkpoint(c) is expected


def test_cached_functions_read_no_fitted_constant() -> None:
    """bench/fit_constants.py swaps the fitted constants in place and plans again: a cached
    function reading one would answer with the old value."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import corpus

    fitted = {name for _, names in corpus.FITTED.values() for name in names}
    for cached in (frontend_s, grouped_fp8_kernel, _vllm_moe_releases, version_key):
        assert not fitted & set(cached.__wrapped__.__code__.co_names), cached.__name__


def test_version_key_cached_equals_parsed() -> None:
    for version in ("0.11.1", "0.10.2", "1.3.0rc20", "1.0.0", "0.14.0.dev3"):
        assert version_key(version) == version_key.__wrapped__(version)


def test_plans_with_the_image_lock_do_not_share_memos(catalog: Catalog) -> None:
    """The per-GPU memos live in one plan's context: a spec pinning another release plans
    with that release."""
    lock = load_image_lock()
    default = plan_deployment(make_spec(), catalog, lock)
    versions = lock.versions("vllm", "cuda")
    other = next(v for v in versions if v != default.engine_version)
    pinned = plan_deployment(make_spec(engine={"version": other}), catalog, lock)
    assert pinned.engine_version == other
    assert plan_deployment(make_spec(), catalog, lock) == default


def test_relaxed_searches_reuse_layouts_and_a_listed_twice_gpu_keeps_its_own(
    catalog: Catalog,
) -> None:
    spec = make_spec(
        "meta-llama/Llama-3.1-70B-Instruct",
        placement={"allowedGpus": ["nvidia-l4", "nvidia-l4", "nvidia-h100-80gb"]},
    )
    ctx, space = _search(spec, catalog, None, None)
    first = _ranked(ctx, space, reuse=True)
    assert ctx.layouts  # memoized
    again = _ranked(ctx, space, reuse=True)
    assert [c.label() for c in again] == [c.label() for c in first]
    # The H100's evaluated layouts are reused, not evaluated again.
    h100 = [c for c in first if c.gpu.id == "nvidia-h100-80gb" and c.memory is not None]
    again_ids = {id(c) for c in again}
    assert h100 and all(id(c) in again_ids for c in h100)
    # Within one search, the second listing of a GPU is evaluated anew: no object twice.
    assert len({id(c) for c in first}) == len(first)
    fresh_ctx, _ = _search(spec, catalog, None, None)
    fresh = _ranked(fresh_ctx, space)
    assert [(c.label(), c.infeasible, c.performance) for c in fresh] == [
        (c.label(), c.infeasible, c.performance) for c in first
    ]
    # Without `reuse` (a plan's own search) nothing is kept.
    assert not fresh_ctx.layouts
