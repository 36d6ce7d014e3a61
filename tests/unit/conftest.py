from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog, QuantizedCheckpoint, load_catalog
from llmdeploy.sizing import plan_deployment, resolve_model
from llmdeploy.sizing.inventory import GpuNode, Inventory
from llmdeploy.sizing.performance import StepModel
from llmdeploy.sizing.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GFD = "nvidia.com/gpu.product"
L4_NODES = Inventory(tuple(GpuNode(f"l4-{i}", {GFD: "NVIDIA-L4"}, 1, (550, 90)) for i in range(4)))


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES / "catalog" / "extension.yaml"])


def make_spec(model: str = "meta-llama/Llama-3.1-8B-Instruct", **spec: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate({"model": {"name": model}, **spec})


def qwen3_32b_steps(catalog: Catalog) -> StepModel:
    """Qwen3-32B's step costs in bf16 at TP 2 on H100s, 1024 tokens in and 128 out."""
    return StepModel(
        resolve_model(make_spec("Qwen/Qwen3-32B").model, catalog),
        catalog.gpus["nvidia-h100-80gb"],
        catalog.quantizations["bf16"],
        tensor=2,
        pipeline=1,
        kv_dtype_bytes=2,
        input_tokens=1024,
        output_tokens=128,
    )


def plan_405b_fp8(catalog: Catalog, checkpoint: str, **workload: int) -> Plan:
    """Llama-3.1-405B loaded from an FP8 `checkpoint` on H100s (8k context)."""
    spec = LLMDeploymentSpec.model_validate(
        {
            "model": {
                "name": "meta-llama/Llama-3.1-405B-Instruct",
                "quantizedVariants": {"fp8": checkpoint},
            },
            "quantization": "fp8",
            "placement": {"gpu": "nvidia-h100-80gb"},
            "workload": {"maxContextLength": 8192, **workload},
        }
    )
    plan = plan_deployment(spec, catalog)
    assert plan.feasible and plan.checkpoint == checkpoint and plan.tensor_parallel == 8
    return plan


def write_image_lock(path: Path, **override: object) -> Path:
    """An image lock of one vLLM image, with `override` replacing its fields."""
    entry = {
        "engine": "vllm",
        "engineVersion": "0.8.5",
        "cudaVersion": "12.8",
        "minDriver": "570.26",
        "image": "vllm/vllm-openai@sha256:" + "0" * 64,
        "default": True,
        "source": "test",
        **override,
    }
    path.write_text(yaml.safe_dump({"images": [entry]}))
    return path


def engine_options(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The rendered TensorRT-LLM options file (--extra_llm_api_options), parsed."""
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    options = yaml.safe_load(configmap["data"]["extra-llm-api-options.yaml"])
    assert isinstance(options, dict)
    return options


def body(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """An LLMDeployment as the watch shows it: generation 1, resourceVersion 7."""
    return {
        "apiVersion": "llmdeploy.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "u1",
            "generation": 1,
            "resourceVersion": "7",
        },
        "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **spec},
        "status": status or {},
    }


def block_fp8_checkpoint_keeping(model: str, *layers: int) -> QuantizedCheckpoint:
    """A made-up block-scaled FP8 checkpoint of `model` that keeps `layers` whole in 16-bit (no
    catalog checkpoint of a MoE model has such layers)."""
    return QuantizedCheckpoint(
        id=f"example/{model.split('/')[-1]}-FP8-some-layers-16-bit",
        quantization="fp8",
        unquantized_layers=layers,
        weight_block_size=(128, 128),
        source="made up for the test",
    )
