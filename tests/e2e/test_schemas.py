"""Rendered objects against their real schemas, in the real API server.

Every object `render_manifests` emits is sent as a server-side apply with dryRun=All and
fieldValidation=Strict: the API server decodes it with the schema it serves (built-in kinds,
and the CRDs of KEDA, prometheus-operator, LeaderWorkerSet, the Gateway API Inference
Extension's InferencePool and Gateway API's HTTPRoute at the versions pinned in
hack/crds/versions.env), runs defaulting, validation and CEL rules, and stores nothing. An
unknown or duplicate field is an error, not a silent prune.

The third-party CRDs exist only while this module runs: they are installed labelled
`llmdeploy.io/e2e=true` and deleted (and waited for) afterwards, so the operator tests see a
cluster without them. Nothing here creates an LLMDeployment, so the operator, if it runs, has
nothing to reconcile against them meanwhile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from llmdeploy import monitoring
from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import load_catalog, load_image_lock
from llmdeploy.render import PrometheusTarget, render_manifests, to_yaml
from llmdeploy.render.manifests import MANAGER
from llmdeploy.sizing import plan_deployment

from .e2e_support import wait_until
from .operator_harness import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
# The operator's endpoints as KEDA sees them; "team-a" with credentials KEDA holds (the
# strict server-side check covers authenticationRef and authModes against KEDA's CRD).
PROMETHEUS = {
    "default": PrometheusTarget(url="http://prometheus.monitoring.svc:9090"),
    "team-a": PrometheusTarget(
        url="https://prom-a.team-a.svc:9090", keda_authentication="prom-a", keda_auth_modes="bearer"
    ),
}


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / f"{name}.yaml").read_text())
    return body


def with_scaling(name: str, mode: str, **scaling: Any) -> dict[str, Any]:
    body = example(name)
    body["spec"]["monitoring"] = {"podMonitor": True}
    body["spec"]["scaling"] = {"mode": mode, "minReplicas": 1, "maxReplicas": 6, **scaling}
    return body


def with_routing(name: str) -> dict[str, Any]:
    body = example(name)
    body["spec"]["routing"] = {
        "inferencePool": {
            "endpointPicker": {"service": "epp", "port": 9002, "failureMode": "FailOpen"}
        },
        "httpRoute": {
            "gateway": {"name": "gw", "namespace": "gateways", "sectionName": "https"},
            "hostnames": ["llm.example.com", "*.llm.example.com"],
            "pathPrefix": "/v1/",
        },
    }
    return body


# Beyond the examples: both external autoscalers, with per-replica (AverageValue) and
# absolute (Value) metrics, and a PodMonitor, on a Deployment and on a LeaderWorkerSet.
VARIANTS: dict[str, Callable[[], dict[str, Any]]] = {
    "hpa-deployment": lambda: with_scaling(
        "llama-3.1-8b-l4",
        "hpa",
        metrics=[
            {"type": "runningRequests", "target": 24},
            {"type": "kvCacheUsage", "target": 0.8},
            {"type": "ttftP95", "target": 500},
        ],
    ),
    "keda-deployment": lambda: with_scaling(
        "llama-3.1-8b-l4",
        "keda",
        metrics=[
            {"type": "queueDepth", "target": 4},
            {"type": "kvCacheUsage", "target": 0.8},
            {"type": "tpotP95", "target": 60},
        ],
    ),
    "keda-trtllm": lambda: with_scaling("tensorrt-llm-llama-8b", "keda", prometheus="team-a"),
    "hpa-leaderworkerset": lambda: with_scaling("llama-3.1-405b-multinode", "hpa"),
    "keda-leaderworkerset": lambda: with_scaling("llama-3.1-405b-multinode", "keda"),
    # Every field of spec.routing set, on the leaders of a LeaderWorkerSet and on trtllm-serve.
    "routing-leaderworkerset": lambda: with_routing("llama-3.1-405b-multinode"),
    "routing-trtllm": lambda: with_routing("tensorrt-llm-llama-8b"),
}
CASES: dict[str, Callable[[], dict[str, Any]]] = {
    **{path.stem: partial(example, path.stem) for path in EXAMPLES},
    **VARIANTS,
}


def rendered(body: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    resource = LLMDeployment.model_validate(body)
    catalog, lock = load_catalog(), load_image_lock()
    plan = plan_deployment(resource.spec, catalog, lock)
    assert plan.feasible, plan.reasons
    objects = render_manifests(resource, plan, catalog, lock, prometheus=PROMETHEUS)
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return objects


def dry_run_apply(
    api: client.ApiClient, dynamic: DynamicClient, obj: dict[str, Any], manifest: str = ""
) -> None:
    """Server-side apply that validates strictly and persists nothing; ApiException if the
    API server rejects the object. The body is the YAML `llmdeploy render` prints for `obj`,
    or `manifest` if given."""
    # Discovery of a CRD that was just established can lag a moment behind its condition.
    resource = wait_until(
        lambda: _served(dynamic, obj["apiVersion"], obj["kind"]),
        what=f"{obj['kind']} ({obj['apiVersion']}) in discovery",
        timeout=30,
    )
    path = resource.path(name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"])
    request = api.param_serialize(
        "PATCH",
        path,
        query_params=[
            ("dryRun", "All"),
            ("fieldValidation", "Strict"),
            ("fieldManager", MANAGER),
            ("force", "true"),
        ],
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=manifest or to_yaml([obj]),
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status <= 299:
        api.response_deserialize(response, {})  # raises ApiException with the server's message
    # Warnings are how the API server reports what it accepted but would drop or deprecate.
    warning = response.getheader("Warning")  # type: ignore[no-untyped-call]
    assert not warning, f"{obj['kind']} {obj['metadata']['name']}: {warning}"


def _served(dynamic: DynamicClient, api_version: str, kind: str) -> Any:
    try:
        return dynamic.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        dynamic.resources.invalidate_cache()
        return None


@pytest.fixture(scope="module")
def dynamic(kube_api: client.ApiClient, third_party_crds: list[str]) -> DynamicClient:
    return DynamicClient(kube_api)  # type: ignore[no-untyped-call]


# Kinds each case must have been checked with, so a renderer change that stops emitting one
# cannot make this test pass by validating less.
EXPECTED_KINDS = {
    "hpa-deployment": {"Deployment", "PodMonitor", "HorizontalPodAutoscaler"},
    "keda-deployment": {"Deployment", "PodMonitor", "ScaledObject"},
    "keda-trtllm": {"ConfigMap", "Deployment", "PodMonitor", "ScaledObject"},
    "hpa-leaderworkerset": {"LeaderWorkerSet", "PodMonitor", "HorizontalPodAutoscaler"},
    "keda-leaderworkerset": {"LeaderWorkerSet", "PodMonitor", "ScaledObject"},
    "llama-3.1-405b-multinode": {"LeaderWorkerSet"},
    "llama-3.1-70b-h100": {"PodMonitor"},
    "llama-3.1-8b-routing": {"Deployment", "InferencePool", "HTTPRoute"},
    "routing-leaderworkerset": {"LeaderWorkerSet", "InferencePool", "HTTPRoute"},
    "routing-trtllm": {"ConfigMap", "Deployment", "InferencePool", "HTTPRoute"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_pass_strict_server_side_validation(
    case: str, kube_api: client.ApiClient, dynamic: DynamicClient, namespace: str
) -> None:
    objects = rendered(CASES[case](), namespace)
    kinds = {obj["kind"] for obj in objects}
    assert {"Service", "PodDisruptionBudget"} <= kinds
    assert EXPECTED_KINDS.get(case, set()) <= kinds, kinds
    for obj in objects:
        try:
            dry_run_apply(kube_api, dynamic, obj)
        except ApiException as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} rejected: {exc.body}")


def test_the_monitoring_components_pass_strict_server_side_validation(
    kube_api: client.ApiClient, dynamic: DynamicClient, namespace: str
) -> None:
    """The operator's PodMonitor and the PrometheusRule of manifests/monitoring as shipped."""
    objects = [
        yaml.safe_load((REPO_ROOT / path).read_text())
        for path in ("manifests/monitoring/podmonitor.yaml", monitoring.PROMETHEUS_RULE)
    ]
    assert [o["kind"] for o in objects] == ["PodMonitor", "PrometheusRule"]
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        try:
            dry_run_apply(kube_api, dynamic, obj, manifest=yaml.safe_dump(obj))
        except ApiException as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} rejected: {exc.body}")


def _kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def _misspelled_trigger_field(objects: list[dict[str, Any]]) -> dict[str, Any]:
    scaled = _kind(objects, "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    trigger["metricTyp"] = trigger.pop("metricType")
    return scaled


def _min_above_max_replicas(objects: list[dict[str, Any]]) -> dict[str, Any]:
    scaled = _kind(objects, "ScaledObject")
    scaled["spec"]["minReplicaCount"] = scaled["spec"]["maxReplicaCount"] + 1
    return scaled


def _group_size_as_text(objects: list[dict[str, Any]]) -> dict[str, Any]:
    lws = _kind(objects, "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["size"] = "two"
    return lws


def _unknown_restart_policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    lws = _kind(objects, "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Always"
    return lws


def _unknown_endpoint_field(objects: list[dict[str, Any]]) -> dict[str, Any]:
    monitor = _kind(objects, "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["scrapeInterval"] = "15s"
    return monitor


def _metric_target_without_value(objects: list[dict[str, Any]]) -> dict[str, Any]:
    hpa = _kind(objects, "HorizontalPodAutoscaler")
    hpa["spec"]["metrics"][0]["external"]["target"] = {"type": "AverageValue"}
    return hpa


def _duplicate_target_port(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pool = _kind(objects, "InferencePool")
    pool["spec"]["targetPorts"] *= 2
    return pool


def _picker_without_port(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pool = _kind(objects, "InferencePool")
    del pool["spec"]["endpointPickerRef"]["port"]
    return pool


def _backend_as_a_service_without_port(objects: list[dict[str, Any]]) -> dict[str, Any]:
    route = _kind(objects, "HTTPRoute")
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    backend.update(group="", kind="Service")
    return route


# A field the schema does not declare, or a value of the wrong type, fails while the apply
# patch is converted to the typed object, which kube-apiserver reports as 500, not 400
# (kubernetes/kubernetes#139253); the message says which field it is.
NOT_IN_SCHEMA = (400, 500)
INVALID = (422,)


@pytest.mark.parametrize(
    ("case", "break_object", "statuses", "message"),
    [
        pytest.param(
            "keda-deployment",
            _misspelled_trigger_field,
            NOT_IN_SCHEMA,
            ".spec.triggers[0].metricTyp: field not declared in schema",
            id="scaledobject-misspelled-trigger-field",
        ),
        pytest.param(
            "keda-deployment",
            _min_above_max_replicas,
            INVALID,
            "minReplicaCount must be less than or equal to maxReplicaCount",
            id="scaledobject-cel-rule",
        ),
        pytest.param(
            "keda-leaderworkerset",
            _group_size_as_text,
            NOT_IN_SCHEMA,
            ".spec.leaderWorkerTemplate.size: expected numeric",
            id="leaderworkerset-wrong-type",
        ),
        pytest.param(
            "keda-leaderworkerset",
            _unknown_restart_policy,
            INVALID,
            'spec.leaderWorkerTemplate.restartPolicy: Unsupported value: "Always"',
            id="leaderworkerset-enum",
        ),
        pytest.param(
            "hpa-deployment",
            _unknown_endpoint_field,
            NOT_IN_SCHEMA,
            ".spec.podMetricsEndpoints[0].scrapeInterval: field not declared in schema",
            id="podmonitor-unknown-field",
        ),
        pytest.param(
            "hpa-deployment",
            _metric_target_without_value,
            INVALID,
            "spec.metrics[0].external.target.averageValue: Required value",
            id="hpa-missing-target-value",
        ),
        pytest.param(
            "llama-3.1-8b-routing",
            _duplicate_target_port,
            INVALID,
            "port number must be unique",
            id="inferencepool-cel-rule",
        ),
        pytest.param(
            "routing-leaderworkerset",
            _picker_without_port,
            INVALID,
            "port is required when kind is 'Service'",
            id="inferencepool-picker-port",
        ),
        pytest.param(
            "llama-3.1-8b-routing",
            _backend_as_a_service_without_port,
            INVALID,
            "Must have port for Service reference",
            id="httproute-cel-rule",
        ),
    ],
)
def test_a_broken_object_is_rejected(
    case: str,
    break_object: Callable[[list[dict[str, Any]]], dict[str, Any]],
    statuses: tuple[int, ...],
    message: str,
    kube_api: client.ApiClient,
    dynamic: DynamicClient,
    namespace: str,
) -> None:
    # The same case passes unbroken in the test above: only the breakage is rejected.
    broken = break_object(rendered(CASES[case](), namespace))
    with pytest.raises(ApiException) as rejected:
        dry_run_apply(kube_api, dynamic, broken)
    status = json.loads(str(rejected.value.body))
    assert rejected.value.status in statuses, status
    assert message in status["message"], status


def test_a_duplicate_field_is_rejected_because_validation_is_strict(
    kube_api: client.ApiClient, dynamic: DynamicClient, namespace: str
) -> None:
    # Without fieldValidation=Strict the API server would keep the last of the two values.
    scaled = _kind(rendered(CASES["keda-deployment"](), namespace), "ScaledObject")
    manifest = to_yaml([scaled])
    # The first trigger's metricType line, repeated with another value at the same indent.
    line = re.search(r"^( +)metricType: AverageValue\n", manifest, re.MULTILINE)
    assert line, manifest
    doubled = manifest.replace(line[0], line[0] + f"{line[1]}metricType: Value\n", 1)
    with pytest.raises(ApiException) as rejected:
        dry_run_apply(kube_api, dynamic, scaled, doubled)
    status = json.loads(str(rejected.value.body))
    assert rejected.value.status == 400, status
    assert 'key "metricType" already set in map' in status["message"], status
