from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog, load_catalog

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog([DATA / "rtx3090.yaml"])


def make_spec(model: str = "meta-llama/Llama-3.1-8B-Instruct", **spec: Any) -> LLMDeploymentSpec:
    return LLMDeploymentSpec.model_validate({"model": {"name": model}, **spec})
