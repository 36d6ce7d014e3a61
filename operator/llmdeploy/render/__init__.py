"""Pure rendering: (LLMDeployment, Plan) -> Kubernetes objects, for the operator and GitOps."""

from llmdeploy.render.manifests import (
    NO_HOST_ACCESS,
    SELECTOR_LABEL,
    SPEC_HASH_ANNOTATION,
    HostAccess,
    RenderError,
    render_manifests,
    to_yaml,
)

__all__ = [
    "NO_HOST_ACCESS",
    "SELECTOR_LABEL",
    "SPEC_HASH_ANNOTATION",
    "HostAccess",
    "RenderError",
    "render_manifests",
    "to_yaml",
]
