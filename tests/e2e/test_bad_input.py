"""Bad input through the real API server and the running operator: every generated
LLMDeployment is rejected at admission with a message, or gets a status the operator wrote
(planned, or a False condition naming the problem), and the operator never dies. Nonsense
architectures are refused at admission with the field's path, or, where only the catalog's
facts show the contradiction, get InvalidSpec once and no workload; so does a hostPath cache
of `/` under the default settings."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.spec_strategies import spec_bodies

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl

COUNTER = itertools.count()


@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=spec_bodies())
def test_generated_resources_are_rejected_or_get_a_status(
    body: dict[str, Any],
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
) -> None:
    name = f"prop-{next(COUNTER)}"
    manifest = {
        "apiVersion": "llmdeploy.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": body,
    }
    result = kubectl(
        kubeconfig_path, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(manifest)
    )
    if result.returncode != 0:
        # Rejected at admission: the message names the field.
        assert "spec" in result.stderr or "metadata" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        return

    def handled() -> dict[str, Any] | None:
        obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "llmdeploy.io", "v1alpha1", namespace, "llmdeployments", name
        )
        status = obj.get("status") or {}
        return (
            status
            if status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("conditions")
            else None
        )

    status = wait_until(handled, what=f"status of {name}", timeout=60)
    planned = next(c for c in status["conditions"] if c["type"] == "Planned")
    if planned["status"] == "False":
        assert planned["message"] and "Traceback" not in planned["message"]
    assert operator.process is not None and operator.process.poll() is None


def example(name: str, **model: Any) -> dict[str, Any]:
    """The L4 example under another name, with `model` merged into spec.model."""
    body: dict[str, Any] = yaml.safe_load(
        (REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text()
    )
    body["metadata"]["name"] = name
    body["spec"]["model"].update(model)
    body["spec"]["placement"]["tolerations"] = [KWOK_TOLERATION]
    return body


def apply(kubeconfig: Path, namespace: str, body: dict[str, Any]) -> Any:
    return kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))


@pytest.mark.parametrize(
    ("architecture", "field", "reason"),
    [
        (
            {"attentionHeads": 32, "kvHeads": 64},
            "spec.model.architecture.kvHeads",
            "kvHeads must divide attentionHeads",
        ),
        (
            {"layers": 4, "firstDenseLayers": 8},
            "spec.model.architecture.firstDenseLayers",
            "firstDenseLayers must not exceed layers",
        ),
        (
            {"hiddenSize": 64, "attentionHeads": 128},
            "spec.model.architecture.attentionHeads",
            "attentionHeads must divide hiddenSize unless headDim is given",
        ),
    ],
)
@pytest.mark.usefixtures("operator")  # the installed CRD
def test_a_nonsense_architecture_is_refused_at_admission_with_the_field(
    kubeconfig_path: Path,
    namespace: str,
    architecture: dict[str, int],
    field: str,
    reason: str,
) -> None:
    result = apply(kubeconfig_path, namespace, example("nonsense", architecture=architecture))
    assert result.returncode != 0
    assert f"{field}: Invalid value" in result.stderr and reason in result.stderr, result.stderr


def _refused_once(
    api: client.ApiClient, namespace: str, name: str, operator: Operator
) -> dict[str, Any]:
    """The object gets Planned=False with reason InvalidSpec, one Warning event and no
    workload, and then no more writes: neither its status nor its events change while the
    operator's periodic passes go over it (its reconciles stop at the settled no-op). Returns
    the Planned condition."""
    custom = client.CustomObjectsApi(api)

    def read() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(  # type: ignore[return-value]
            "llmdeploy.io", "v1alpha1", namespace, "llmdeployments", name
        )

    def invalid() -> dict[str, Any] | None:
        obj = read()
        conditions = (obj.get("status") or {}).get("conditions") or []
        planned = next((c for c in conditions if c["type"] == "Planned"), None)
        return planned if planned and planned["reason"] == "InvalidSpec" else None

    planned = wait_until(invalid, what=f"InvalidSpec on {name}", timeout=60)
    assert planned["status"] == "False" and read()["status"]["phase"] == "Failed"

    def events() -> list[tuple[str | None, str | None, str | None, int]]:
        listed = client.CoreV1Api(api).list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        )
        return [(e.reason, e.type, e.message, e.count or 1) for e in listed.items]

    told = wait_until(events, what=f"the InvalidSpec event of {name}")
    assert told == [("InvalidSpec", "Warning", planned["message"], 1)]
    version = read()["metadata"]["resourceVersion"]
    bugs = operator.metric("llmdeploy_reconcile_total", result="exception")
    # Three periodic passes, each of which queues every tracked object once.
    passes = 3 * max(1, int(operator.metric("llmdeploy_objects_tracked")))
    target = operator.reconciles() + passes
    wait_until(lambda: operator.reconciles() >= target, what="three periodic passes")
    assert read()["metadata"]["resourceVersion"] == version
    assert events() == told
    assert operator.metric("llmdeploy_reconcile_total", result="exception") == bugs
    try:
        client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        assert exc.status == 404
    else:
        raise AssertionError(f"{name} got a Deployment")
    return planned


def test_an_architecture_contradicting_the_catalog_gets_invalid_spec_once(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """kvHeads alone passes admission (CEL sees no attentionHeads); the catalog's Llama 3.1 8B
    has 32 heads, which 64 KV heads cannot serve."""
    body = example("against-catalog", architecture={"kvHeads": 64})
    assert apply(kubeconfig_path, namespace, body).returncode == 0
    planned = _refused_once(kube_api, namespace, "against-catalog", operator)
    message = "spec.model.architecture: kvHeads must divide the catalog's attentionHeads"
    assert planned["message"] == message


def test_a_host_path_cache_of_the_root_is_refused_by_default(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    body = example("root-cache", cache={"type": "hostPath", "path": "/"})
    assert apply(kubeconfig_path, namespace, body).returncode == 0  # the schema allows it
    planned = _refused_once(kube_api, namespace, "root-cache", operator)
    assert planned["message"].startswith("spec.model.cache.path: '/' is not within")
    assert "hostPath is off" in planned["message"]
