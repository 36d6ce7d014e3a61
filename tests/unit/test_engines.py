"""What is planned is what runs: vendor, engine and image platform agree; engine options and
extraArgs are checked against the release that will run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmdeploy.api.types import LLMDeployment, LLMDeploymentSpec
from llmdeploy.catalog import Catalog, CatalogError, ImageLock, load_image_lock
from llmdeploy.render import render_manifests
from llmdeploy.sizing import Plan, SpecError, engine_memory, memory, optimizer, plan_deployment
from llmdeploy.sizing.moe_kernels import NO_MOE_WORKSPACE
from tests.unit.conftest import engine_options, write_image_lock

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def lock() -> ImageLock:
    return load_image_lock()


def resource(spec: dict[str, Any], name: str = "demo") -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "apiVersion": "llmdeploy.io/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


def plan_and_render(
    spec: dict[str, Any], catalog: Catalog, lock: ImageLock
) -> tuple[Plan, list[dict[str, Any]]]:
    res = resource(spec)
    plan = plan_deployment(res.spec, catalog, lock)
    assert plan.feasible, plan.reasons
    return plan, render_manifests(res, plan, catalog, lock)


def engine_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    workload = next(o for o in objects if o["kind"] in ("Deployment", "LeaderWorkerSet"))
    if workload["kind"] == "Deployment":
        pod = workload["spec"]["template"]["spec"]
    else:
        pod = workload["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "engine")
    assert isinstance(container, dict)
    return container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def spec_of(**spec: Any) -> dict[str, Any]:
    return {"model": {"name": LLAMA_8B}, **spec}


# --- vendor <-> engine <-> image platform -------------------------------------------------------


@pytest.mark.parametrize(
    "model", [LLAMA_8B, "Qwen/Qwen3-30B-A3B", "meta-llama/Llama-3.1-70B-Instruct"]
)
def test_no_amd_plan_renders_a_cuda_image(model: str, catalog: Catalog, lock: ImageLock) -> None:
    for gpu in catalog.gpus.values():
        plan, objects = plan_and_render(
            {"model": {"name": model}, "placement": {"gpu": gpu.id}}, catalog, lock
        )
        container = engine_container(objects)
        pinned = next(e for e in lock.images if e.image == container["image"])
        assert pinned.platform == ("rocm" if gpu.vendor == "amd" else "cuda"), gpu.id
        # The GPU resource is the vendor's, and a ROCm image is the only one that asks amd.com/gpu.
        resources = container["resources"]["limits"]
        assert ("amd.com/gpu" in resources) == (pinned.platform == "rocm"), gpu.id
        assert ("nvidia.com/gpu" in resources) == (pinned.platform == "cuda"), gpu.id
        assert plan.gpu == gpu.id


def test_every_engine_vendor_has_a_default_image(catalog: Catalog, lock: ImageLock) -> None:
    for engine in catalog.engines.values():
        for vendor in engine.vendors:
            platform = "rocm" if vendor == "amd" else "cuda"
            assert lock.choose(engine.id.value, platform), (engine.id, vendor)


def test_tensorrt_llm_never_lands_on_amd(catalog: Catalog, lock: ImageLock) -> None:
    plan = plan_deployment(
        LLMDeploymentSpec.model_validate(spec_of(engine={"name": "tensorrt-llm"})), catalog, lock
    )
    assert plan.feasible and catalog.gpus[plan.gpu or ""].vendor == "nvidia"
    rejected = [a for a in plan.alternatives if a.gpu == "amd-mi300x-192gb"]
    assert rejected and not rejected[0].feasible
    assert "TensorRT-LLM runs on NVIDIA GPUs only" in rejected[0].reason

    pinned = spec_of(engine={"name": "tensorrt-llm"}, placement={"gpu": "amd-mi300x-192gb"})
    plan = plan_deployment(LLMDeploymentSpec.model_validate(pinned), catalog, lock)
    assert not plan.feasible
    assert any("amd-mi300x-192gb is an AMD GPU" in r for r in plan.reasons)


def test_an_engine_version_without_a_rocm_image_keeps_off_amd(
    catalog: Catalog, lock: ImageLock
) -> None:
    spec = spec_of(engine={"version": "0.8.5"}, placement={"allowedGpus": ["amd-mi300x-192gb"]})
    plan = plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog, lock)
    assert not plan.feasible
    assert any("no pinned ROCm image of vLLM 0.8.5" in r for r in plan.reasons)
    # Without the lock the planner cannot know, and keeps the GPU.
    assert plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog).feasible


def test_no_tensorrt_llm_fp8_kv_on_ampere(catalog: Catalog, lock: ImageLock) -> None:
    ampere = [g.id for g in catalog.gpus.values() if g.architecture == "ampere"]
    assert ampere
    for model in (LLAMA_8B, "Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"):
        spec = {
            "model": {"name": model},
            "engine": {"name": "tensorrt-llm"},
            "minPrecision": "fp8",
            "placement": {"allowedGpus": ampere},
            "workload": {"concurrency": 64},
        }
        plan = plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog, lock)
        chosen = [(plan.gpu, plan.kv_cache_dtype)] if plan.feasible else []
        considered = chosen + [(a.gpu, a.kv_cache_dtype) for a in plan.alternatives]
        assert considered
        assert all(kv == "auto" for _, kv in considered), (model, considered)

    pinned = spec_of(
        engine={"name": "tensorrt-llm", "kvCacheDtype": "fp8"},
        placement={"gpu": "nvidia-a100-80gb"},
    )
    plan = plan_deployment(LLMDeploymentSpec.model_validate(pinned), catalog, lock)
    assert not plan.feasible
    assert "TensorRT-LLM has no FP8 KV cache on ampere (nvidia-a100-80gb)" in plan.reasons
    # vLLM keeps FP8 KV on Ampere (its Triton attention backend).
    vllm = spec_of(engine={"kvCacheDtype": "fp8"}, placement={"gpu": "nvidia-a100-80gb"})
    assert plan_deployment(LLMDeploymentSpec.model_validate(vllm), catalog, lock).feasible


def test_rocm_lock_entries_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="rocmVersion"):
        load_image_lock(write_image_lock(tmp_path / "a.yaml", platform="rocm", cudaVersion=None))
    with pytest.raises(CatalogError, match="no cudaVersion"):
        load_image_lock(write_image_lock(tmp_path / "b.yaml", platform="rocm", rocmVersion="7.0"))
    text = (tmp_path / "b.yaml").read_text()
    doubled = yaml.safe_load(text)
    doubled["images"][0].update(platform="cuda")
    doubled["images"].append(dict(doubled["images"][0], engineVersion="0.9.0"))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doubled))
    with pytest.raises(CatalogError, match="more than one default image for vllm on cuda"):
        load_image_lock(tmp_path / "c.yaml")


# --- TensorRT-LLM options -------------------------------------------------------------------


TRT = {"name": "tensorrt-llm"}


@pytest.mark.parametrize("context", [8192, 16384, 32768])
def test_tensorrt_llm_accepts_prompts_of_max_context_length(
    context: int, catalog: Catalog, lock: ImageLock
) -> None:
    spec = spec_of(
        engine=TRT, placement={"gpu": "nvidia-h100-80gb"}, workload={"maxContextLength": context}
    )
    plan, objects = plan_and_render(spec, catalog, lock)
    args = engine_container(objects)["args"]
    options = engine_options(objects)
    assert int(flag(args, "--max_seq_len")) == context
    # A prompt longer than one step's token budget is split over steps (chunked prefill), or
    # the budget holds the whole context; either way trtllm-serve takes it.
    budget = int(flag(args, "--max_num_tokens"))
    assert options.get("enable_chunked_prefill") is True or budget >= context
    assert budget == plan.max_num_batched_tokens


@pytest.mark.parametrize("kv", ["fp8", "auto"])
def test_tensorrt_llm_keeps_the_memory_fraction(kv: str, catalog: Catalog, lock: ImageLock) -> None:
    spec = spec_of(
        engine={**TRT, "kvCacheDtype": kv, "gpuMemoryUtilization": 0.8},
        placement={"gpu": "nvidia-h100-80gb"},
    )
    _, objects = plan_and_render(spec, catalog, lock)
    args = engine_container(objects)["args"]
    kv_cache = engine_options(objects)["kv_cache_config"]
    assert kv_cache["free_gpu_memory_fraction"] == 0.8
    assert kv_cache.get("dtype") == ("fp8" if kv == "fp8" else None)
    assert "--kv_cache_free_gpu_memory_fraction" not in args


def test_tensorrt_llm_options_carry_revision_and_dtype(catalog: Catalog, lock: ImageLock) -> None:
    spec = {
        "model": {"name": LLAMA_8B, "revision": "0e9e39f249a16976918f6564b8830bc894c89659"},
        "engine": TRT,
        "placement": {"gpu": "nvidia-l40s"},
        "quantization": "fp16",
    }
    _, objects = plan_and_render(spec, catalog, lock)
    options = engine_options(objects)
    assert options["revision"] == "0e9e39f249a16976918f6564b8830bc894c89659"
    assert options["dtype"] == "float16"
    # Weights on a volume have no revision.
    spec["model"] = {"name": LLAMA_8B, "revision": "main", "source": "pvc://weights/llama"}
    _, objects = plan_and_render(spec, catalog, lock)
    assert "revision" not in engine_options(objects)


def test_options_change_rolls_the_pods(catalog: Catalog, lock: ImageLock) -> None:
    def spec_hash(utilization: float) -> str:
        engine = {**TRT, "gpuMemoryUtilization": utilization}
        _, objects = plan_and_render(
            spec_of(engine=engine, placement={"gpu": "nvidia-h100-80gb"}), catalog, lock
        )
        workload = next(o for o in objects if o["kind"] == "Deployment")
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["llmdeploy.io/spec-hash"])

    assert spec_hash(0.8) != spec_hash(0.85)


# --- TensorRT-LLM metrics ------------------------------------------------------------------------

SCALED = {"mode": "operator", "minReplicas": 1, "maxReplicas": 4}
METRICS_OPTIONS = {"return_perf_metrics": True, "enable_iter_perf_stats": True}


def podmonitor_path(objects: list[dict[str, Any]]) -> str:
    monitor = next(o for o in objects if o["kind"] == "PodMonitor")
    return str(monitor["spec"]["podMetricsEndpoints"][0]["path"])


def test_tensorrt_llm_1_0_serves_no_metrics_and_1_3_does(catalog: Catalog) -> None:
    engine = catalog.engines["tensorrt-llm"]
    assert engine.metrics_for("1.0.0") is None
    endpoint = engine.metrics_for("1.3.0rc20")
    assert endpoint is not None and endpoint.path == "/prometheus/metrics"
    assert endpoint.options == METRICS_OPTIONS


@pytest.mark.parametrize(
    "reader", [{"scaling": SCALED}, {"monitoring": {"podMonitor": True}}], ids=["scaling", "pm"]
)
def test_what_reads_metrics_gets_a_release_that_serves_them(
    reader: dict[str, Any], catalog: Catalog, lock: ImageLock
) -> None:
    spec = spec_of(engine=TRT, placement={"gpu": "nvidia-h100-80gb"}, **reader)
    plan, objects = plan_and_render(spec, catalog, lock)
    assert plan.engine_version == "1.3.0rc20"
    assert ":1.3.0rc20@" in engine_container(objects)["image"]
    options = engine_options(objects)
    assert {k: options.get(k) for k in METRICS_OPTIONS} == METRICS_OPTIONS
    # The lock's default (1.0.0) stays the choice when nothing reads metrics, with no options
    # it would not know.
    plain, plain_objects = plan_and_render(
        spec_of(engine=TRT, placement={"gpu": "nvidia-h100-80gb"}), catalog, lock
    )
    assert plain.engine_version == "1.0.0"
    assert not set(METRICS_OPTIONS) & set(engine_options(plain_objects))


def test_podmonitor_scrapes_the_engines_own_path(catalog: Catalog, lock: ImageLock) -> None:
    monitored = {"podMonitor": True}
    _, trt = plan_and_render(
        spec_of(engine=TRT, placement={"gpu": "nvidia-h100-80gb"}, monitoring=monitored),
        catalog,
        lock,
    )
    _, vllm = plan_and_render(
        spec_of(placement={"gpu": "nvidia-h100-80gb"}, monitoring=monitored), catalog, lock
    )
    assert podmonitor_path(trt) == "/prometheus/metrics"
    assert podmonitor_path(vllm) == "/metrics"


def test_autoscaling_a_release_without_metrics_is_refused_with_the_release(
    catalog: Catalog, lock: ImageLock
) -> None:
    pinned = spec_of(
        engine={**TRT, "version": "1.0.0"}, placement={"gpu": "nvidia-h100-80gb"}, scaling=SCALED
    )
    plan = plan_deployment(resource(pinned).spec, catalog, lock)
    assert not plan.feasible
    said = " ".join(plan.reasons)
    assert "TensorRT-LLM 1.0.0" in said and "serves no Prometheus metrics" in said
    assert "spec.scaling" in said and "1.3.0rc20 and newer" in said
    # Nodes whose driver runs 1.0.0 only (575 < 590): the same reason, for those nodes.
    unpinned = spec_of(engine=TRT, placement={"gpu": "nvidia-h100-80gb"}, scaling=SCALED)
    old_nodes = plan_deployment(
        resource(unpinned).spec, catalog, lock, {"nvidia-h100-80gb": [(575, 57)]}
    )
    assert not old_nodes.feasible
    assert "TensorRT-LLM 1.0.0" in " ".join(old_nodes.reasons)
    new_nodes = plan_deployment(
        resource(unpinned).spec, catalog, lock, {"nvidia-h100-80gb": [(590, 48)]}
    )
    assert new_nodes.feasible and new_nodes.engine_version == "1.3.0rc20"


def test_an_image_override_of_a_release_without_metrics_is_refused(
    catalog: Catalog, lock: ImageLock
) -> None:
    engine = {
        **TRT,
        "version": "1.0.0",
        "image": "example.invalid/trtllm@sha256:" + "1" * 64,
    }
    monitored = spec_of(
        engine=engine, placement={"gpu": "nvidia-h100-80gb"}, monitoring={"podMonitor": True}
    )
    refused = plan_deployment(resource(monitored).spec, catalog, lock)
    assert not refused.feasible
    assert "spec.monitoring.podMonitor" in " ".join(refused.reasons)
    # The renderer holds a plan made without the PodMonitor to the same rule.
    plan = plan_deployment(resource({**monitored, "monitoring": {}}).spec, catalog, lock)
    with pytest.raises(SpecError) as err:
        render_manifests(resource(monitored), plan, catalog, lock)
    assert err.value.field == "spec.monitoring.podMonitor"
    assert "TensorRT-LLM 1.0.0 serves no Prometheus metrics" in str(err.value)


# --- vLLM ---------------------------------------------------------------------------------------


def test_gemma2_is_never_planned_in_float16(catalog: Catalog, lock: ImageLock) -> None:
    for model in ("google/gemma-2-9b-it", "google/gemma-2-27b-it"):
        spec = {"model": {"name": model}, "quantization": "fp16"}
        plan = plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog, lock)
        assert not plan.feasible
        assert any("refuses float16" in r for r in plan.reasons), plan.reasons
        assert all(a.quantization != "fp16" or not a.feasible for a in plan.alternatives)
    # vLLM 0.8.5 had no such check; pinned to it, fp16 is a valid plan.
    old = {"model": {"name": "google/gemma-2-9b-it"}, "quantization": "fp16"}
    old["engine"] = {"version": "0.8.5"}
    plan = plan_deployment(LLMDeploymentSpec.model_validate(old), catalog, lock)
    assert plan.feasible and plan.quantization == "fp16"


def test_natively_fp8_checkpoint_gets_no_quantization_flag(
    catalog: Catalog, lock: ImageLock
) -> None:
    spec = {
        "model": {"name": "deepseek-ai/DeepSeek-V3"},
        "quantization": "fp8",
        "placement": {"gpu": "nvidia-h200-141gb"},
        "workload": {"maxContextLength": 8192, "concurrency": 4},
    }
    plan, objects = plan_and_render(spec, catalog, lock)
    assert plan.quantization == "fp8" and plan.checkpoint == "deepseek-ai/DeepSeek-V3"
    assert "--quantization" not in engine_container(objects)["args"]
    # A 16-bit checkpoint is still converted at load time.
    _, objects = plan_and_render(
        spec_of(quantization="fp8", placement={"gpu": "nvidia-l4"}), catalog, lock
    )
    assert flag(engine_container(objects)["args"], "--quantization") == "fp8"


def test_mla_kv_estimate_uses_the_release_block_size(
    catalog: Catalog, lock: ImageLock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the block size apart: 0.24.0 also books CUDA graphs inside the budget, what their
    # estimate leaves outside torch and, at TP > 1 on Hopper, the all-reduce fusion workspace;
    # with the experts spread, 0.11.0's DeepGEMM workspace is counted and 0.24.0's FlashInfer
    # one is not (moe_kernels.moe_workspace_kernel).
    monkeypatch.setattr(engine_memory, "CUDA_GRAPH_GIB", 0.0)
    monkeypatch.setattr(memory, "NON_TORCH_GRAPH_PROFILING_GIB", 0.0)
    monkeypatch.setattr(memory, "NON_TORCH_ALLREDUCE_FUSION_GIB", 0.0)
    monkeypatch.setattr(optimizer, "moe_workspace", lambda *_args: NO_MOE_WORKSPACE)

    def tokens(version: str) -> int:
        spec = {
            "model": {"name": "deepseek-ai/DeepSeek-V3"},
            # A budget whose 16-token count is not a multiple of 64, so the two differ.
            "engine": {"version": version, "gpuMemoryUtilization": 0.89},
            "placement": {"gpu": "nvidia-h200-141gb"},
            "workload": {"maxContextLength": 8192, "concurrency": 4},
        }
        plan = plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog, lock)
        assert plan.feasible and plan.kv_cache_tokens
        return plan.kv_cache_tokens

    # 0.11.0 forces 64-token blocks for FlashMLA on Hopper; 0.24.0 keeps 16 (FlashAttention MLA).
    flashmla, flashattn = tokens("0.11.0"), tokens("0.24.0")
    assert flashmla % 64 == 0 and flashattn % 16 == 0
    assert flashmla != flashattn and 0 < flashattn - flashmla < 64
    engine = catalog.engines["vllm"]
    h200, b200 = catalog.gpus["nvidia-h200-141gb"], catalog.gpus["nvidia-b200-180gb"]
    assert engine.block_size_for(h200, mla=True, version="0.11.0") == 64
    assert engine.block_size_for(b200, mla=True, version="0.11.0") == 128
    assert engine.block_size_for(b200, mla=True, version="0.24.0") == 32
    assert engine.block_size_for(h200, mla=False, version="0.11.0") == 16


# --- extraArgs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--swap-space", "4"],
        ["--swap_space=4"],
        ["--disable-log-requests"],
    ],
)
def test_removed_flag_is_invalid_input(extra: list[str], catalog: Catalog, lock: ImageLock) -> None:
    spec = spec_of(
        engine={"version": "0.24.0", "extraArgs": extra}, placement={"gpu": "nvidia-h100-80gb"}
    )
    res = resource(spec)
    plan = plan_deployment(res.spec, catalog, lock)
    with pytest.raises(SpecError) as err:
        render_manifests(res, plan, catalog, lock)
    assert err.value.field == "spec.engine.extraArgs"
    assert "vLLM 0.24.0" in err.value.message
    # The release that still has the flag takes it.
    older = spec_of(
        engine={"version": "0.11.0", "extraArgs": extra}, placement={"gpu": "nvidia-h100-80gb"}
    )
    _, objects = plan_and_render(older, catalog, lock)
    assert engine_container(objects)["args"][-len(extra) :] == extra


@pytest.mark.parametrize(
    "extra",
    [
        ["--tensor-parallel-size", "2"],
        ["-tp=2"],
        ["-pp", "2"],
        ["--quantization", "fp8"],
        ["--max_model_len", "4096"],
        ["--gpu-memory-utilization=0.5"],
        # vLLM's argparse takes an unambiguous prefix of a long option for the option.
        ["--tensor-parallel", "2"],
        ["--gpu-mem=0.5"],
        ["--max_model", "4096"],
    ],
)
def test_overriding_flag_needs_allow_arg_overrides(
    extra: list[str], catalog: Catalog, lock: ImageLock
) -> None:
    spec = spec_of(engine={"extraArgs": extra}, placement={"gpu": "nvidia-h100-80gb"})
    res = resource(spec)
    plan = plan_deployment(res.spec, catalog, lock)
    with pytest.raises(SpecError) as err:
        render_manifests(res, plan, catalog, lock)
    assert err.value.field == "spec.engine.extraArgs"
    spec["engine"]["allowArgOverrides"] = True
    _, objects = plan_and_render(spec, catalog, lock)
    assert engine_container(objects)["args"][-len(extra) :] == extra


@pytest.mark.parametrize(
    ("extra", "gpus"),
    [
        (["--tensor-parallel-size", "2"], "2"),
        (["-tp=4", "-pp", "2"], "8"),
        (["--pipeline_parallel_size=2"], "2"),
        (["--tensor-parallel", "4"], "4"),
    ],
)
def test_allowed_override_sets_the_gpu_request(
    extra: list[str], gpus: str, catalog: Catalog, lock: ImageLock
) -> None:
    spec = spec_of(
        engine={"extraArgs": extra, "allowArgOverrides": True},
        placement={"gpu": "nvidia-h100-80gb"},
    )
    plan, objects = plan_and_render(spec, catalog, lock)
    assert plan.gpu_count == 1
    limits = engine_container(objects)["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpus


def test_a_flag_that_only_begins_like_a_planned_one_is_no_clash(
    catalog: Catalog, lock: ImageLock
) -> None:
    # --max-num-seqs is planned; this is another flag, not a prefix of it.
    extra = ["--max-num-partial-prefills", "2"]
    spec = spec_of(engine={"extraArgs": extra}, placement={"gpu": "nvidia-h100-80gb"})
    _, objects = plan_and_render(spec, catalog, lock)
    assert engine_container(objects)["args"][-2:] == extra


def test_override_with_a_bad_size_is_invalid_input(catalog: Catalog, lock: ImageLock) -> None:
    spec = spec_of(
        engine={"extraArgs": ["-tp", "two"], "allowArgOverrides": True},
        placement={"gpu": "nvidia-h100-80gb"},
    )
    res = resource(spec)
    with pytest.raises(SpecError, match=r"spec\.engine\.extraArgs"):
        render_manifests(res, plan_deployment(res.spec, catalog, lock), catalog, lock)


def test_trtllm_options_file_fields_cannot_be_set_by_flags(
    catalog: Catalog, lock: ImageLock
) -> None:
    for extra in (["--kv_cache_free_gpu_memory_fraction", "0.5"], ["--config", "/tmp/x.yaml"]):
        spec = spec_of(engine={**TRT, "extraArgs": extra}, placement={"gpu": "nvidia-l40s"})
        res = resource(spec)
        with pytest.raises(SpecError, match=r"spec\.engine\.extraArgs"):
            render_manifests(res, plan_deployment(res.spec, catalog, lock), catalog, lock)


def write_manifest(tmp_path: Path, engine: dict[str, Any]) -> Path:
    body = resource(spec_of(engine=engine, placement={"gpu": "nvidia-h100-80gb"}))
    path = tmp_path / "llmd.yaml"
    path.write_text(yaml.safe_dump(body.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return path


@pytest.mark.parametrize(
    "engine",
    [
        {"version": "0.24.0", "extraArgs": ["--swap-space", "4"]},
        {"version": "0.24.0", "extraArgs": ["--disable-log-requests"]},
        {"extraArgs": ["--tensor-parallel-size", "2"]},
        {"extraArgs": ["--max-model-len=2048"]},
    ],
)
def test_cli_exits_2_naming_extra_args(tmp_path: Path, engine: dict[str, Any]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmdeploy.cli",
            "render",
            "-f",
            str(write_manifest(tmp_path, engine)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stdout
    assert "spec.engine.extraArgs" in result.stderr
    assert "Traceback" not in result.stderr


def test_model_type_from_a_config_drives_the_refusal(catalog: Catalog, lock: ImageLock) -> None:
    from llmdeploy.catalog import architecture_from_hf_config

    config = {
        "model_type": "gemma2",
        "num_hidden_layers": 26,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "vocab_size": 256000,
        "max_position_embeddings": 8192,
    }
    facts = architecture_from_hf_config(config)
    assert facts.model_type == "gemma2"
    architecture = facts.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = {
        "model": {"name": "example/gemma-2-2b-finetune", "architecture": architecture},
        "quantization": "fp16",
    }
    plan = plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog, lock)
    assert not plan.feasible and any("gemma2" in r for r in plan.reasons)
    spec["quantization"] = "bf16"
    assert plan_deployment(LLMDeploymentSpec.model_validate(spec), catalog, lock).feasible


def test_tensorrt_llm_refuses_a_served_name_it_cannot_set(
    catalog: Catalog, lock: ImageLock
) -> None:
    spec = {
        "model": {"name": LLAMA_8B, "servedName": "llama"},
        "engine": TRT,
        "placement": {"gpu": "nvidia-l40s"},
    }
    res = resource(spec)
    with pytest.raises(SpecError) as err:
        render_manifests(res, plan_deployment(res.spec, catalog, lock), catalog, lock)
    assert err.value.field == "spec.model.servedName"
    assert LLAMA_8B in err.value.message
    # The name it answers under anyway is accepted.
    spec["model"]["servedName"] = LLAMA_8B
    _, objects = plan_and_render(spec, catalog, lock)
    assert engine_container(objects)["args"][0] == LLAMA_8B
