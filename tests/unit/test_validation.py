"""Input checked against physics, in one place: the rules table gives pydantic and CEL alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llmdeploy.api.crd import build_crd
from llmdeploy.api.types import (
    ARCHITECTURE_RULES,
    LLMDeploymentSpec,
    ModelArchitecture,
    format_validation_error,
    parse_llmdeployment,
)
from llmdeploy.catalog import (
    Catalog,
    CatalogError,
    architecture_from_hf_config,
    load_catalog,
    load_image_lock,
)
from llmdeploy.documents import load_yaml_documents
from llmdeploy.sizing import SpecError, plan_deployment
from tests.unit.conftest import write_image_lock

CONTRADICTIONS = [
    ({"hiddenSize": 64, "attentionHeads": 128}, "attentionHeads must divide hiddenSize"),
    ({"attentionHeads": 8, "kvHeads": 16}, "kvHeads must divide attentionHeads"),
    ({"attentionHeads": 32, "kvHeads": 5}, "kvHeads must divide attentionHeads"),
    ({"experts": 8, "activeExperts": 9}, "activeExperts must not exceed experts"),
    ({"layers": 4, "slidingWindowLayers": 5}, "slidingWindowLayers must not exceed layers"),
    ({"layers": 4, "firstDenseLayers": 5}, "firstDenseLayers must not exceed layers"),
]


@pytest.mark.parametrize(("facts", "message"), CONTRADICTIONS)
def test_contradicting_facts_are_refused(facts: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate({"model": {"name": "m", "architecture": facts}})
    assert message in format_validation_error(caught.value)


def test_head_dim_lifts_the_divisibility_rule() -> None:
    ModelArchitecture.model_validate({"hiddenSize": 64, "attentionHeads": 128, "headDim": 8})


def test_crd_carries_the_same_rules() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    architecture = schema["properties"]["spec"]["properties"]["model"]["properties"]["architecture"]
    assert architecture["x-kubernetes-validations"] == [r.cel() for r in ARCHITECTURE_RULES]
    rule = ARCHITECTURE_RULES[0].cel()["rule"]
    assert rule == (
        "!has(self.attentionHeads) || !has(self.hiddenSize) || has(self.headDim) || "
        "self.hiddenSize % self.attentionHeads == 0"
    )


def test_spec_facts_contradicting_the_catalog_are_a_spec_error(catalog: Catalog) -> None:
    spec = LLMDeploymentSpec.model_validate(
        {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "architecture": {"kvHeads": 64}}}
    )
    with pytest.raises(SpecError) as caught:
        plan_deployment(spec, catalog)
    assert caught.value.field == "spec.model.architecture"
    assert caught.value.message == "kvHeads must divide the catalog's attentionHeads"


def test_parameters_below_the_embeddings_are_a_spec_error(catalog: Catalog) -> None:
    facts = {
        "parameters": 1e6,
        "layers": 2,
        "hiddenSize": 4096,
        "attentionHeads": 32,
        "vocabSize": 128_000,
        "maxContextLength": 4096,
    }
    spec = LLMDeploymentSpec.model_validate({"model": {"name": "acme/tiny", "architecture": facts}})
    with pytest.raises(SpecError, match=r"fewer than the .* embeddings"):
        plan_deployment(spec, catalog)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", True),
        ("concurrency", "16"),
        ("concurrency", 16.0),
        ("requestsPerSecond", "2.5"),
        ("requestsPerSecond", float("nan")),
        ("requestsPerSecond", float("inf")),
    ],
)
def test_types_are_strict_like_the_api_server(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate({"model": {"name": "m"}, "workload": {field: value}})
    assert f"workload.{field}" in format_validation_error(caught.value)


def test_numbers_in_exponent_form_are_numbers() -> None:
    (document,) = load_yaml_documents("model: {name: m}\nworkload: {requestsPerSecond: 1e2}", "x")
    assert LLMDeploymentSpec.model_validate(document).workload.requests_per_second == 100.0


def test_an_unknown_quantization_hears_the_accepted_values() -> None:
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate({"model": {"name": "m"}, "quantization": "fp9"})
    message = format_validation_error(caught.value)
    assert message.startswith("quantization: Input should be 'auto' or 'bf16'")
    assert "'int4-awq'" in message and "mxfp4" in message


@pytest.mark.parametrize("name", ["t1\n", "T1", "-x", "a" * 64])
def test_metadata_name_is_a_whole_dns_label(name: str) -> None:
    body = {"apiVersion": "llmdeploy.io/v1alpha1", "kind": "LLMDeployment"}
    with pytest.raises(ValidationError, match=r"metadata\.name|name"):
        parse_llmdeployment({**body, "metadata": {"name": name}, "spec": {"model": {"name": "m"}}})


def test_no_pattern_accepts_a_trailing_newline() -> None:
    spec = {
        "model": {
            "name": "m",
            "revision": "main\n",
            "tokenSecretRef": {"name": "hf\n", "key": "token\n"},
            "cache": {"type": "pvc", "claimName": "c\n"},
        },
        "engine": {"version": "0.8.5\n"},
        "placement": {"pendingTimeout": "10m\n"},
    }
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate(spec)
    assert len(caught.value.errors()) == 6


def _catalog_with_gpu(tmp_path: Path, **override: object) -> Path:
    row = {
        "id": "nvidia-test",
        "vendor": "nvidia",
        "displayName": "Test",
        "architecture": "hopper",
        "memoryGiB": 80,
        "bandwidthGBps": 3350,
        "tflops": {"bf16": 989},
        "fp8": True,
        "interconnect": {"kind": "nvlink", "bandwidthGBps": 450},
        "gpusPerNode": 8,
        "productLabels": ["Test"],
        "resourceName": "nvidia.com/gpu",
        "pricePerHour": 3.0,
        "priceDate": "2026-11",
        **override,
    }
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump({"gpus": [row]}))
    return path


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"memoryGiB": float("inf")}, "memoryGiB"),
        ({"memoryGiB": float("nan")}, "memoryGiB"),
        ({"memoryGiB": 0}, "memoryGiB"),
        ({"bandwidthGBps": -1}, "bandwidthGBps"),
        ({"bandwidthGBps": 1e300}, "bandwidthGBps"),
        ({"tflops": {"bf16": 0}}, "tflops"),
        ({"tflops": {"fp8": 100}}, "tflops needs bf16"),
        ({"interconnect": {"kind": "nvlink", "bandwidthGBps": float("inf")}}, "interconnect"),
        ({"pricePerHour": -1}, "pricePerHour"),
        ({"pricePerHour": float("nan")}, "pricePerHour"),
        ({"gpusPerNode": 0}, "gpusPerNode"),
        ({"memoryGiB": "80"}, "memoryGiB"),
        ({"cudaVisibleMemoryGiB": 0}, "cudaVisibleMemoryGiB"),
        ({"cudaVisibleMemoryGiB": 79.2}, "cudaVisibleMemoryGiB needs its source"),
    ],
)
def test_catalog_rows_must_be_finite_and_positive(
    tmp_path: Path, override: dict[str, object], field: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog([_catalog_with_gpu(tmp_path, **override)])
    assert "gpus[nvidia-test]" in str(caught.value) and field in str(caught.value)


def test_a_cited_cuda_visible_total_is_kept(tmp_path: Path) -> None:
    row = _catalog_with_gpu(
        tmp_path, cudaVisibleMemoryGiB=79.2, sources={"cudaVisibleMemory": "a public log"}
    )
    gpu = load_catalog([row]).gpus["nvidia-test"]
    assert gpu.visible_memory_gib == 79.2 and gpu.memory_gib == 80


def test_a_free_gpu_is_allowed(tmp_path: Path) -> None:
    catalog = load_catalog([_catalog_with_gpu(tmp_path, pricePerHour=0)])
    assert catalog.gpus["nvidia-test"].price_per_hour == 0


def test_catalog_model_rows_follow_the_architecture_rules(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump({"models": [{"id": "acme/x", "attentionHeads": 8, "kvHeads": 3}]})
    )
    with pytest.raises(CatalogError, match="kvHeads must divide attentionHeads"):
        load_catalog([path])


@pytest.mark.parametrize(
    ("model", "checkpoint", "message"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", {"unquantizedLayers": [32]}, "[32] beyond"),
        ("meta-llama/Llama-3.1-8B-Instruct", {"unquantizedLayers": [-1]}, "unquantizedLayers"),
        ("deepseek-ai/DeepSeek-V2-Lite", {"unquantizedAttention": True}, "MLA"),
        ("meta-llama/Llama-3.1-8B-Instruct", {"unquantizedAttention": "yes"}, "unquantized"),
        ("meta-llama/Llama-3.1-8B-Instruct", {"groupSize": 64}, "[0].groupSize: only int4-awq"),
        (
            "meta-llama/Llama-3.1-8B-Instruct",
            {"quantization": "int4-awq", "groupSize": 100},
            "64 or 128",
        ),
    ],
)
def test_catalog_checkpoints_name_layers_the_model_has(
    tmp_path: Path, model: str, checkpoint: dict[str, object], message: str
) -> None:
    entry = load_catalog().models[model].model_dump(mode="json", by_alias=True, exclude_none=True)
    entry["quantizedCheckpoints"] = [
        {"id": "acme/x-FP8", "quantization": "fp8", "source": "test", **checkpoint}
    ]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}))
    with pytest.raises(CatalogError) as caught:
        load_catalog([path])
    assert f"models[{model}]" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("engineVersion", "1..2"), ("engineVersion", "latest"), ("minDriver", "abc")],
)
def test_malformed_image_lock_versions_are_refused(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(CatalogError, match=field):
        load_image_lock(write_image_lock(tmp_path / "lock.yaml", **{field: value}))


@pytest.mark.parametrize(
    "config",
    [
        [1, 2],
        {"num_hidden_layers": "32", "hidden_size": 4096},
        {
            "num_hidden_layers": 32,
            "sliding_window": 4096,
            "model_type": "gemma2",
            "vocab_size": "x",
        },
    ],
)
def test_hf_configs_are_checked_strictly(config: object) -> None:
    with pytest.raises(ValueError):
        architecture_from_hf_config(config)
