"""The LLMDeployment API (llmdeploy.io/v1alpha1)."""

from llmdeploy.api.types import (
    API_VERSION,
    GROUP,
    KIND,
    VERSION,
    LLMDeployment,
    LLMDeploymentSpec,
    parse_llmdeployment,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "VERSION",
    "LLMDeployment",
    "LLMDeploymentSpec",
    "parse_llmdeployment",
]
