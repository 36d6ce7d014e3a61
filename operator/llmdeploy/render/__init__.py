"""Pure rendering: (LLMDeployment, Plan) -> Kubernetes objects, for the operator and GitOps."""

from llmdeploy.render.manifests import (
    SELECTOR_LABEL,
    SPEC_HASH_ANNOTATION,
    RenderError,
    render_manifests,
    to_yaml,
)

__all__ = ["SELECTOR_LABEL", "SPEC_HASH_ANNOTATION", "RenderError", "render_manifests", "to_yaml"]
