"""render(resource, plan) -> Kubernetes objects. Pure and deterministic: same input, same bytes.

Values are computed here; the jinja2 templates in `templates/` only lay them out, and every
value passes through `tojson`, so no user string can add YAML structure.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmdeploy.api.types import (
    DNS_LABEL_PATTERN,
    NAME_PATTERN,
    EngineName,
    LLMDeployment,
    LLMDeploymentSpec,
    RoutingSpec,
    ScalingSpec,
)
from llmdeploy.autoscale.decision import PER_REPLICA
from llmdeploy.autoscale.policy import cold_start_estimate, effective_scaling
from llmdeploy.autoscale.promql import (
    DEPLOYMENT_LABEL,
    SOURCES,
    activation_query,
    query,
    query_target,
)
from llmdeploy.catalog import Catalog, Engine, Gpu, ImageLock, MetricsEndpoint
from llmdeploy.render.engine_args import (
    ENGINE_PORT,
    MODEL_DIR,
    check_extra_args,
    effective_parallelism,
    engine_command,
    model_reference,
    trtllm_args,
    trtllm_options,
    vllm_args,
)
from llmdeploy.render.images import select_image
from llmdeploy.sizing import Plan, SpecError, resolve_model

# libyaml's loader when PyYAML has it: rendering is dominated by parsing the template output.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MANAGER = "llmdeploy"
SELECTOR_LABEL = "llmdeploy.io/deployment"
# Which generation (workload) of an LLMDeployment a pod belongs to, when there can be two: a
# pilot's candidate beside the current one (docs/rollouts.md). The first workload has none.
GENERATION_LABEL = "llmdeploy.io/generation"
SPEC_HASH_ANNOTATION = "llmdeploy.io/spec-hash"
# No account on the node has this UID (cloud node images give 1000 to their admin user), so
# a process that escaped the container would own nothing there. The images have no passwd
# entry for it either: USER names it for getpass.getuser(), which torch's inductor cache
# calls and which raises for a UID without one (pytorch/pytorch#140765).
ENGINE_UID = 10001
ENGINE_USER = "llmdeploy"
HOME = "/home/llmdeploy"
RAY_PORT = 6379
DNS_LABEL = re.compile(DNS_LABEL_PATTERN)  # fullmatch: `$` alone lets "name\n" through
# The startup probe allows this multiple of the expected start (cold_start_estimate, which the
# autoscaler plans with) before the kubelet restarts the pod: storage at 200 MB/s instead of the
# expected 500, or a slow first CUDA-graph capture, must not end in a restart loop.
STARTUP_PROBE_SAFETY_FACTOR = 5
STARTUP_PROBE_PERIOD_S = 10  # periodSeconds of the startup probe in templates/_pod.yaml.j2
# The root filesystem is read-only; these emptyDirs are where engines may write besides the
# model cache, and their limits keep a runaway cache from filling the node's disk.
HOME_LIMIT_GIB = 10  # HOME: Triton, torch.compile, FlashInfer and vLLM caches, usage stats
TMP_LIMIT_GIB = 10  # /tmp: Ray's session files, torch inductor's scratch
LOGS_GIB = 2  # container logs, which count against ephemeral storage too
# A repository may hold a second copy of the weights (Meta's original/, Mistral's
# consolidated.safetensors), which the download fetches too; plus tokenizer and config files.
CHECKPOINT_COPIES = 2
CHECKPOINT_EXTRA_GIB = 8
HF_TOKEN_DIR = "/var/run/llmdeploy/hf-token"
OPTIONS_FILE = "/etc/llmdeploy/extra-llm-api-options.yaml"

# The leader starts the Ray head, waits for the group's workers, then runs the engine with the
# arguments it was given ("$@"), so no user value is ever parsed by the shell.
RAY_WAIT_FOR_GROUP = """import os, time, ray
ray.init(address="auto")
size = int(os.environ["LWS_GROUP_SIZE"])
while sum(node["Alive"] for node in ray.nodes()) < size:
    time.sleep(5)"""
RAY_LEADER_SCRIPT = (
    f"ray start --head --port={RAY_PORT} --disable-usage-stats && "
    f"python3 -c '{RAY_WAIT_FOR_GROUP}' && "
    'exec vllm serve "$@"'
)
RAY_WORKER_SCRIPT = (
    f'exec ray start --address="$LWS_LEADER_ADDRESS:{RAY_PORT}" --block --disable-usage-stats'
)
DOWNLOAD_SCRIPT = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], revision=sys.argv[2] or None)"
)


# The pod label llm-d's endpoint picker reads to know an engine's metric names, and the key it
# falls back to, the Gateway API Inference Extension's from before the picker moved to llm-d
# (llm-d/llm-d-router, pkg/epp/framework/plugins/datalayer/extractor/metrics: README.md and
# getEngineTypeFromEndpoint in extractor.go). "vllm" and "trtllm-serve" are its built-in engine
# types for the two engines (trtllm-serve is the server llmdeploy runs; "triton-tensorrt-llm"
# is TensorRT-LLM behind Triton, whose metric names differ).
ENGINE_TYPE_LABEL = "llm-d.ai/engine-type"
LEGACY_ENGINE_TYPE_LABEL = "inference.networking.k8s.io/engine-type"
ENGINE_TYPES = {EngineName.VLLM: "vllm", EngineName.TENSORRT_LLM: "trtllm-serve"}
ROLE_LABEL = "llmdeploy.io/role"
INFERENCE_POOL_GROUP = "inference.networking.k8s.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"
MAX_ROUTE_WEIGHT = 1_000_000  # HTTPRoute v1's bound on a backendRef's weight
MAX_ROUTE_BACKENDS = 16  # and on the backendRefs of one rule


class RenderError(ValueError):
    """The plan cannot be rendered (e.g. it is not feasible)."""


CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


class HostAccess(BaseModel):
    """What the operator's settings let an LLMDeployment reach beyond its namespace; by default
    nothing. A hostPath volume reads and writes the node's files (`/` is all of them), and a
    pod on a control-plane node sits beside the API server and etcd."""

    model_config = ConfigDict(frozen=True)
    allowed_host_path_prefixes: tuple[Annotated[str, Field(pattern=r"^/")], ...] = Field(
        default=(), description="Node directories model.cache.hostPath may be in; empty: none."
    )
    allow_control_plane_nodes: bool = Field(
        default=False,
        description="Let placement select or tolerate control-plane nodes.",
    )


NO_HOST_ACCESS = HostAccess()

DEFAULT_PROMETHEUS = "default"  # the endpoint of the operator's flat prometheus_* settings


def prometheus_endpoint(scaling: ScalingSpec | None) -> str:
    """The name of the Prometheus endpoint an object reads (autoscaling, KEDA, measurements)."""
    return (scaling.prometheus if scaling else None) or DEFAULT_PROMETHEUS


KEDA_AUTH_MODES = r"^(bearer|basic|tls|custom)(,(bearer|basic|tls|custom))*$"
# No query, fragment or userinfo: a URL cannot carry a path or credentials in by the back door.
PROMETHEUS_URL_PATTERN = r"^https?://[^\s#?@]+$"


class PrometheusTarget(BaseModel):
    """A Prometheus endpoint of the operator's settings as KEDA sees it: its address and,
    where it needs credentials, the ClusterTriggerAuthentication the cluster admin made for it
    (KEDA's own Secret references; the operator's token never leaves the operator)."""

    model_config = ConfigDict(frozen=True)
    url: str = Field(pattern=PROMETHEUS_URL_PATTERN, max_length=2048)
    keda_authentication: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Name of a ClusterTriggerAuthentication for KEDA's queries.",
    )
    keda_auth_modes: str | None = Field(
        default=None,
        pattern=KEDA_AUTH_MODES,
        description="KEDA's authModes for that endpoint, e.g. bearer or tls.",
    )


def _check_host_path(path: str, access: HostAccess) -> str:
    """The normalized path, if it lies within an allowed prefix."""
    normalized = posixpath.normpath(path)
    allowed = access.allowed_host_path_prefixes
    roots = [posixpath.normpath(prefix) for prefix in allowed]
    inside = any(normalized == r or normalized.startswith(r.rstrip("/") + "/") for r in roots)
    if ".." in path.split("/") or not inside:  # `..` could climb out of a prefix
        where = ", ".join(allowed) if allowed else "none: hostPath is off"
        raise SpecError(
            "spec.model.cache.path",
            f"{path!r} is not within a directory the operator allows ({where}); "
            "use cache type emptyDir or pvc",
        )
    return normalized


def _check_node_access(resource: LLMDeployment, access: HostAccess) -> None:
    if access.allow_control_plane_nodes:
        return
    placement = resource.spec.placement
    refusal = "targets control-plane nodes, which the operator does not allow"
    for key in placement.node_selector:
        if key in CONTROL_PLANE_LABELS:
            raise SpecError("spec.placement.nodeSelector", f"{key} {refusal}")
    for index, toleration in enumerate(placement.tolerations):
        # A toleration without a key and with Exists tolerates every taint, theirs included.
        if toleration.key in CONTROL_PLANE_LABELS or (
            toleration.key is None and toleration.operator == "Exists"
        ):
            raise SpecError(f"spec.placement.tolerations[{index}]", refusal)


def templates_dir() -> Path:
    """`templates/` inside the installed package, or at the source tree's top level."""
    packaged = Path(__file__).resolve().parent.parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "templates"


def yaml_quote(value: Any) -> str:
    """JSON that every YAML parser reads back as the same value: DEL and every non-ASCII
    character as YAML escapes (\\uXXXX, or \\UXXXXXXXX beyond the BMP, where JSON's surrogate
    pairs are not YAML), so no user string can end a scalar, fold a line or add structure, and
    no control character (JSON escapes those below 0x20; YAML refuses DEL and C1 raw) breaks
    the parse."""
    text = json.dumps(value, ensure_ascii=False)
    return "".join(
        c if ord(c) < 0x7F else (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        for c in text
    )


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # YAML, not HTML: quoting is done by tojson
        keep_trailing_newline=True,
        # Templates ship with the package: checking each file's mtime on every render cost a
        # third of a periodic reconcile (py-spy, 2026-12-03).
        auto_reload=False,
    )
    environment.filters["tojson"] = yaml_quote
    return environment


def _render_template(name: str, values: dict[str, Any]) -> dict[str, Any]:
    text = _environment().get_template(name).render(v=values)
    document = yaml.load(text, Loader=SafeLoader)  # a safe loader (C when available)
    assert isinstance(document, dict), name
    return document


def _pod_templates(workload: dict[str, Any]) -> list[dict[str, Any]]:
    if workload["kind"] == "LeaderWorkerSet":
        template = workload["spec"]["leaderWorkerTemplate"]
        return [template["leaderTemplate"], template["workerTemplate"]]
    return [workload["spec"]["template"]]


def _stamp_spec_hash(workload: dict[str, Any], engine_options: str) -> None:
    """Annotate the workload and its pods with a digest of what runs in the pods: it changes
    with the pod templates and the engine's options file (the pods read it only at start), and
    so rolls pods, and not with replicas or operator upgrades that render the same pods."""
    templates = _pod_templates(workload)
    content = (
        {"templates": templates, "engineOptions": engine_options} if engine_options else templates
    )
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    workload["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest
    for template in templates:
        template["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest


def _model_cache_volume(resource: LLMDeployment, access: HostAccess) -> tuple[dict[str, Any], bool]:
    """(volume, read-only mount). A pvc:// source mounts the weights' claim read-only."""
    model = resource.spec.model
    if model.source and model.source.startswith("pvc://"):
        claim = model.source.removeprefix("pvc://").split("/", 1)[0]
        return {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }, True
    cache_spec = model.cache
    if cache_spec.type == "pvc":
        if not cache_spec.claim_name:
            raise SpecError("spec.model.cache.claimName", "required when type is pvc")
        return {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": cache_spec.claim_name},
        }, False
    if cache_spec.type == "hostPath":
        if not cache_spec.path:
            raise SpecError("spec.model.cache.path", "required when type is hostPath")
        path = _check_host_path(cache_spec.path, access)
        return {
            "name": "model-cache",
            "hostPath": {"path": path, "type": "DirectoryOrCreate"},
        }, False
    return {"name": "model-cache", "emptyDir": {}}, False


def _checkpoint_gib(resource: LLMDeployment, plan: Plan, catalog: Catalog) -> float:
    """What the download fetches: the plan's weights over all its GPUs (more than the
    checkpoint, since ranks repeat embeddings and KV heads), in the checkpoint's own format
    when the engine converts the native checkpoint at load (bf16 on disk for fp8 in memory)."""
    loaded = (plan.weights_gib_per_gpu or 0.0) * (plan.gpu_count or 1)
    planned = catalog.quantizations.get(plan.quantization)  # type: ignore[call-overload]
    if plan.checkpoint != resource.spec.model.name or planned is None:
        return loaded  # a pre-quantized variant, stored as it is loaded
    native = catalog.quantizations.get(resolve_model(resource.spec.model, catalog).native_dtype)
    ratio = native.weight_bytes / planned.weight_bytes if native else 1.0
    return loaded * max(1.0, ratio)


def _ephemeral_storage(
    checkpoint_gib: float, cache_in_pod: bool
) -> tuple[str, dict[str, str], dict[str, str]]:
    """(the model-cache emptyDir's sizeLimit, the engine's requests, its limits). emptyDirs
    count against the pod's ephemeral storage, whose bound is its containers' limits: the
    request is what the checkpoint takes (so the scheduler picks a node with that much disk),
    the limit every emptyDir's."""
    cache_limit = math.ceil(CHECKPOINT_COPIES * checkpoint_gib + CHECKPOINT_EXTRA_GIB)
    expected = math.ceil(checkpoint_gib) if cache_in_pod else 0
    in_pod_limit = cache_limit if cache_in_pod else 0
    return (
        f"{cache_limit}Gi",
        {"ephemeral-storage": f"{expected + LOGS_GIB}Gi"},
        {"ephemeral-storage": f"{in_pod_limit + HOME_LIMIT_GIB + TMP_LIMIT_GIB + LOGS_GIB}Gi"},
    )


def _download(resource: LLMDeployment, plan: Plan) -> dict[str, Any] | None:
    """The init step that fills the cache. The token is a file of the Secret's volume
    (huggingface_hub reads HF_TOKEN_PATH), never an environment variable, which crash dumps,
    `/proc/<pid>/environ` and child processes would carry."""
    model = resource.spec.model
    if model.source and model.source.startswith("pvc://"):
        return None
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": MODEL_DIR},
        {"name": "HOME", "value": HOME},
        {"name": "USER", "value": ENGINE_USER},
    ]
    token_volume = None
    if model.token_secret_ref:
        env.append({"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/token"})
        token_volume = {
            "name": "hf-token",
            "secret": {
                "secretName": model.token_secret_ref.name,
                "items": [{"key": model.token_secret_ref.key, "path": "token"}],
                "defaultMode": 0o440,  # readable by the pod's fsGroup, the engine's UID
            },
        }
    return {
        "command": ["python3", "-c", DOWNLOAD_SCRIPT],
        "args": [model_reference(resource.spec, plan), model.revision or ""],
        "env": env,
        "token_volume": token_volume,
        "token_dir": HF_TOKEN_DIR,
        # The container's own writes are its logs (its root filesystem is read-only); the
        # download lands in the model cache, bounded by its sizeLimit and the pod's limit.
        "disk": f"{LOGS_GIB}Gi",
    }


def _tolerations(resource: LLMDeployment, gpu: Gpu) -> list[dict[str, Any]]:
    gpu_taint = {"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
    extra = [
        t.model_dump(by_alias=True, exclude_none=True) for t in resource.spec.placement.tolerations
    ]
    return [gpu_taint, *extra]


def _rolling_update(replicas: int | None) -> dict[str, int]:
    """GPUs are scarce: a surge pod needs a free GPU and, on a full cluster, waits forever.
    Several replicas roll one down at a time instead; a single one keeps serving while its
    successor starts (a cluster autoscaler adds the GPU if none is free)."""
    if (replicas or 0) > 1:
        return {"maxSurge": 0, "maxUnavailable": 1}
    return {"maxSurge": 1, "maxUnavailable": 0}


def _resources(gpu: Gpu, gpus_per_pod: int, shm_gib: int) -> tuple[dict[str, str], dict[str, str]]:
    memory = f"{8 + 8 * gpus_per_pod + shm_gib}Gi"  # shared memory counts against the limit
    requests = {
        "cpu": str(2 + 2 * gpus_per_pod),
        "memory": memory,
        gpu.resource_name: str(gpus_per_pod),
    }
    limits = {"memory": memory, gpu.resource_name: str(gpus_per_pod)}
    return requests, limits


def _metrics_endpoint(
    spec: LLMDeploymentSpec, engine: Engine, version: str | None
) -> MetricsEndpoint | None:
    """Where the release serves Prometheus metrics; refused where something reads them from a
    release that has none (the planner picks releases that have them; this holds a pinned
    image or version to the same rule)."""
    endpoint = engine.metrics_for(version)
    readers = spec.metrics_readers()
    if endpoint is None and readers:
        raise SpecError(
            readers[0],
            f"{engine.display_name} {version} serves no Prometheus metrics; releases that do: "
            f"{engine.releases_with_metrics()} (spec.engine.version)",
        )
    return endpoint


def render_manifests(
    resource: LLMDeployment,
    plan: Plan,
    catalog: Catalog,
    lock: ImageLock,
    node_drivers: Sequence[tuple[int, int]] = (),
    *,
    host_access: HostAccess = NO_HOST_ACCESS,
    prometheus: Mapping[str, PrometheusTarget] | None = None,
    generation: str = "",
    route_backends: Sequence[tuple[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """The objects that run the plan, in apply order. `host_access` and `prometheus` (the
    endpoints an object may name for KEDA) come from the operator's settings, or the CLI's
    flags: what may reach beyond the namespace. `generation`: the workload's id when it is not
    the first one (workload_name). `route_backends`: the HTTPRoute's backends as
    (InferencePool name, weight), in this order; default: this object's own pool, [(name,
    100)]. A pilot passes two generations' pools and their shares."""
    if not plan.feasible or plan.gpu is None:
        raise RenderError("the plan is not feasible: " + "; ".join(plan.reasons))
    name = resource.metadata.name
    if not DNS_LABEL.fullmatch(name):
        raise SpecError("metadata.name", "must be a DNS label (a-z, 0-9, '-', at most 63)")
    _check_node_access(resource, host_access)
    workload = workload_name(name, generation)
    if not DNS_LABEL.fullmatch(workload):
        raise SpecError(
            "metadata.name",
            f"at most {62 - len(generation)} characters: a pilot's workload is named "
            f"<name>-<generation> ({workload!r})",
        )
    spec = resource.spec
    gpu = catalog.gpus[plan.gpu]
    engine = spec.engine.name
    # An image of the GPU's platform only: CUDA for nvidia.com/gpu, ROCm for amd.com/gpu.
    image, pinned = select_image(spec, lock, node_drivers, gpu.platform, plan.engine_version)
    version = pinned.engine_version if pinned else spec.engine.version
    check_extra_args(spec, catalog.engines[engine], version)
    metrics = _metrics_endpoint(spec, catalog.engines[engine], version)
    tensor, pipeline = effective_parallelism(spec, plan)
    multi_node = tensor * pipeline > gpu.gpus_per_node
    gpus_per_pod = tensor if multi_node else tensor * pipeline
    shm_gib = 1 if tensor * pipeline == 1 else 8  # NCCL uses /dev/shm between ranks

    options = (
        trtllm_options(spec, plan, metrics.options if metrics else {})
        if engine is EngineName.TENSORRT_LLM
        else None
    )
    options_configmap = f"{workload}-engine-options" if options else None
    if engine is EngineName.VLLM:
        native = resolve_model(spec.model, catalog).native_dtype
        args = vllm_args(spec, plan, multi_node=multi_node, native=native)
    else:
        args = trtllm_args(spec, plan, OPTIONS_FILE)

    selector = {SELECTOR_LABEL: name}
    labels = {
        "app.kubernetes.io/name": engine.value,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "llmdeploy",
        "app.kubernetes.io/managed-by": MANAGER,
        **selector,
    }
    if pinned is not None:
        labels["app.kubernetes.io/version"] = pinned.engine_version
    # A later generation's workload selects its own pods only; the Service, the PodMonitor and
    # the scale subresource select every generation's by the deployment label.
    workload_selector = {**selector, GENERATION_LABEL: generation} if generation else selector
    engine_type = ENGINE_TYPES[engine]
    pod_labels = {
        **labels,
        ENGINE_TYPE_LABEL: engine_type,
        LEGACY_ENGINE_TYPE_LABEL: engine_type,
        **workload_selector,
    }
    startup_budget_s = STARTUP_PROBE_SAFETY_FACTOR * cold_start_estimate(plan)
    model_cache_volume, cache_read_only = _model_cache_volume(resource, host_access)
    cache_in_pod = "emptyDir" in model_cache_volume
    cache_limit, disk_requests, disk_limits = _ephemeral_storage(
        _checkpoint_gib(resource, plan, catalog), cache_in_pod
    )
    if cache_in_pod:
        model_cache_volume["emptyDir"]["sizeLimit"] = cache_limit
    requests, limits = _resources(gpu, gpus_per_pod, shm_gib)
    requests.update(disk_requests)
    limits.update(disk_limits)
    download = _download(resource, plan)
    env = [
        {"name": "HF_HOME", "value": MODEL_DIR},
        # The init step downloaded the weights: the engine must not reach for the hub.
        *([{"name": "HF_HUB_OFFLINE", "value": "1"}] if download else []),
        {"name": "HOME", "value": HOME},
        {"name": "USER", "value": ENGINE_USER},
        {"name": "XDG_CACHE_HOME", "value": f"{HOME}/.cache"},
    ]
    replicas = plan.replicas if spec.replicas is None else spec.replicas
    values: dict[str, Any] = {
        "name": name,
        "workload_name": workload,
        "namespace": resource.metadata.namespace,
        "labels": labels,
        "annotations": {},
        "pod_annotations": {},
        "selector": selector,
        "workload_selector": workload_selector,
        "service_selector": selector
        if not multi_node
        else {**selector, "leaderworkerset.sigs.k8s.io/worker-index": "0"},
        "pod_labels": {
            "single": pod_labels,
            "leader": {**pod_labels, ROLE_LABEL: "leader"},
            "worker": {**pod_labels, ROLE_LABEL: "worker"},
        },
        "replicas": replicas,
        "rolling_update": _rolling_update(replicas),
        "group_size": pipeline,
        "image": image,
        "uid": ENGINE_UID,
        "home": HOME,
        "model_dir": MODEL_DIR,
        # One term per label that identifies the SKU: terms are ORed, so GFD's product label
        # and a cloud's own accelerator label both work (and tell autoscalers what to add).
        "node_selector_terms": [
            {"matchExpressions": [{"key": key, "operator": "In", "values": values}]}
            for key, values in gpu.selector_terms()
        ],
        "node_selector": dict(sorted(spec.placement.node_selector.items())),
        "tolerations": _tolerations(resource, gpu),
        "download": download,
        "command": {
            "single": engine_command(engine),
            "leader": ["/bin/sh", "-c", RAY_LEADER_SCRIPT, "vllm-leader"],
            "worker": ["/bin/sh", "-c", RAY_WORKER_SCRIPT],
        },
        "args": {"single": args, "leader": args, "worker": []},
        "env": env,
        "port": ENGINE_PORT,
        "health_path": "/health",
        "metrics_path": metrics.path if metrics else None,
        "startup_failure_threshold": max(30, math.ceil(startup_budget_s / STARTUP_PROBE_PERIOD_S)),
        "requests": requests,
        "limits": limits,
        "container_security": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            # Engines write only to volumes: the model cache, HOME (which holds XDG_CACHE_HOME)
            # and /tmp; the working directory is HOME.
            "readOnlyRootFilesystem": True,
        },
        "home_size": f"{HOME_LIMIT_GIB}Gi",
        "tmp_size": f"{TMP_LIMIT_GIB}Gi",
        "model_cache_volume": model_cache_volume,
        "model_cache_read_only": cache_read_only,
        "shm_size": f"{shm_gib}Gi",
        "options_configmap": options_configmap,
        "options_yaml": yaml.safe_dump(options, sort_keys=True) if options else "",
    }
    objects = []
    if options_configmap:
        objects.append(_render_template("configmap.yaml.j2", values))
    workload_object = _render_template(
        "leaderworkerset.yaml.j2" if multi_node else "deployment.yaml.j2", values
    )
    _stamp_spec_hash(workload_object, values["options_yaml"])
    objects.append(workload_object)
    objects.append(_render_template("service.yaml.j2", values))
    objects.append(_render_template("poddisruptionbudget.yaml.j2", values))
    if spec.monitoring.pod_monitor:
        objects.append(_render_template("podmonitor.yaml.j2", values))
    if spec.network_policy.enabled:
        values["multi_node"] = multi_node
        values["network_allowed_namespaces"] = sorted(set(spec.network_policy.allowed_namespaces))
        objects.append(_render_template("networkpolicy.yaml.j2", values))
    scaling = spec.scaling
    if scaling is not None and scaling.mode in ("hpa", "keda"):
        values.update(_scaling_values(resource, plan, prometheus or {}))
        template = (
            "horizontalpodautoscaler.yaml.j2" if scaling.mode == "hpa" else "scaledobject.yaml.j2"
        )
        objects.append(_render_template(template, values))
    if spec.routing is not None and spec.routing.inference_pool is not None:
        # The pool holds the pods that answer requests: a multi-node replica's leader only.
        pool_selector = {**selector, ROLE_LABEL: "leader"} if multi_node else selector
        values.update(_routing_values(spec.routing, name, pool_selector, route_backends))
        objects.append(_render_template("inferencepool.yaml.j2", values))
        if values["route"] is not None:
            objects.append(_render_template("httproute.yaml.j2", values))
    return objects


def workload_name(name: str, generation: str = "") -> str:
    """The workload (and engine-options ConfigMap prefix) of one generation."""
    return f"{name}-{generation}" if generation else name


def _routing_values(
    routing: RoutingSpec,
    name: str,
    selector: Mapping[str, str],
    backends: Sequence[tuple[str, int]] | None,
) -> dict[str, Any]:
    """Values for the InferencePool and, if wanted, the HTTPRoute."""
    assert routing.inference_pool is not None
    picker = routing.inference_pool.endpoint_picker
    picker_ref: dict[str, Any] = {
        "kind": "Service",
        "name": picker.service,
        "port": {"number": picker.port},
    }
    if picker.failure_mode is not None:
        picker_ref["failureMode"] = picker.failure_mode
    pool = {
        "selector": dict(selector),
        "target_ports": [{"number": ENGINE_PORT}],
        "endpoint_picker_ref": picker_ref,
    }
    route = None
    if routing.http_route is not None:
        gateway = routing.http_route.gateway
        parent = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name}
        if gateway.namespace is not None:
            parent["namespace"] = gateway.namespace
        if gateway.section_name is not None:
            parent["sectionName"] = gateway.section_name
        route = {
            "parent_ref": parent,
            "hostnames": list(routing.http_route.hostnames),
            "path_prefix": routing.http_route.path_prefix,
            "backend_refs": route_backend_refs([(name, 100)] if backends is None else backends),
        }
    return {"pool": pool, "route": route}


def route_backend_refs(backends: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    """An HTTPRoute rule's backendRefs: each (InferencePool name, weight) in order. Raises
    RenderError for what the HTTPRoute CRD would refuse, or a route that sends nothing."""
    names = [pool for pool, _ in backends]
    if not 1 <= len(backends) <= MAX_ROUTE_BACKENDS or len(set(names)) != len(names):
        raise RenderError(
            f"route backends must be 1 to {MAX_ROUTE_BACKENDS} distinct pools: {names}"
        )
    for pool, weight in backends:
        if not DNS_LABEL.fullmatch(pool):
            raise RenderError(f"route backend {pool!r} is not a DNS label")
        if isinstance(weight, bool) or not 0 <= weight <= MAX_ROUTE_WEIGHT:
            raise RenderError(f"route backend {pool}: weight {weight} not in 0..{MAX_ROUTE_WEIGHT}")
    if sum(weight for _, weight in backends) == 0:
        raise RenderError(f"route backends {names} all have weight 0: no traffic would pass")
    return [
        {"group": INFERENCE_POOL_GROUP, "kind": "InferencePool", "name": pool, "weight": weight}
        for pool, weight in backends
    ]


ACTIVATION_ONLY_THRESHOLD = "1000000000"


def _scaling_values(
    resource: LLMDeployment, plan: Plan, prometheus: Mapping[str, PrometheusTarget]
) -> dict[str, Any]:
    """Values for an HPA (external metrics via prometheus-adapter) or a KEDA ScaledObject."""
    assert resource.spec.scaling is not None
    scaling = effective_scaling(resource.spec.scaling, plan)
    assert scaling.behavior is not None
    namespace = resource.metadata.namespace or "default"
    name = resource.metadata.name
    engine = resource.spec.engine.name
    rendered = []
    for metric in scaling.metrics:
        per_replica = metric.type in PER_REPLICA
        target = f"{query_target(metric.type, metric.target):g}"
        rendered.append(
            {
                "type": metric.type,
                # prometheus-adapter serves it under this name (docs/autoscaling.md, its rules)
                "external_name": SOURCES[engine][metric.type].external_name,
                "selector": {DEPLOYMENT_LABEL: name},
                "hpa_target": {"type": "AverageValue", "averageValue": target}
                if per_replica
                else {"type": "Value", "value": target},
                "keda_metric_type": "AverageValue" if per_replica else "Value",
                "query": query(metric.type, namespace, name, engine),
                "threshold": target,
            }
        )
    keda_prometheus = None
    if scaling.mode == "keda":
        endpoint = prometheus_endpoint(scaling)
        keda_prometheus = prometheus.get(endpoint)
        if keda_prometheus is None:
            raise SpecError(
                "spec.scaling.prometheus",
                f"no Prometheus endpoint named {endpoint} in the operator's settings "
                "(LLMDEPLOY_PROMETHEUS_URL, LLMDEPLOY_PROMETHEUS_ENDPOINTS)",
            )
    stz = scaling.scale_to_zero
    activation = None
    if stz is not None and stz.activation_metric is not None:
        activation = activation_query(stz.activation_metric, namespace)
    if activation:
        # Wakes the workload only: any value above 0 activates it, and a threshold no query
        # reaches keeps it from voting for a replica count beside the engine metrics.
        rendered.append(
            {
                "type": "activation",
                "keda_metric_type": "Value",
                "query": activation,
                "threshold": ACTIVATION_ONLY_THRESHOLD,
            }
        )
    return {
        "scaling": scaling,
        "scaling_metrics": rendered,
        "hpa_behavior": scaling.behavior.model_dump(mode="json", by_alias=True),
        "prometheus": keda_prometheus,
    }


def to_yaml(objects: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML with sorted keys: identical input gives identical bytes."""
    return "".join(
        "---\n" + yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=1000)
        for obj in objects
    )
