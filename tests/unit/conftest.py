from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog, load_catalog

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog([EXAMPLES / "catalog" / "extension.yaml"])


def make_spec(model: str = "meta-llama/Llama-3.1-8B-Instruct", **spec: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate({"model": {"name": model}, **spec})


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
