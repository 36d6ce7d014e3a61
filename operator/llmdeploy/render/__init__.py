"""Pure rendering: (LLMDeployment, Plan) -> Kubernetes objects, for the operator and GitOps."""

from llmdeploy.render.manifests import (
    DEFAULT_PROMETHEUS,
    GENERATION_LABEL,
    NO_HOST_ACCESS,
    SELECTOR_LABEL,
    SPEC_HASH_ANNOTATION,
    HostAccess,
    PrometheusTarget,
    RenderError,
    prometheus_endpoint,
    render_manifests,
    to_yaml,
    workload_name,
)

__all__ = [
    "DEFAULT_PROMETHEUS",
    "GENERATION_LABEL",
    "NO_HOST_ACCESS",
    "SELECTOR_LABEL",
    "SPEC_HASH_ANNOTATION",
    "HostAccess",
    "PrometheusTarget",
    "RenderError",
    "prometheus_endpoint",
    "render_manifests",
    "to_yaml",
    "workload_name",
]
