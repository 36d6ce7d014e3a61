"""Property-based bad input through the real API server and the running operator: every
generated LLMDeployment is rejected at admission with a message, or gets a status the operator
wrote (planned, or a False condition naming the problem). The operator never dies."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client

from tests.spec_strategies import spec_bodies

from .e2e_support import wait_until
from .operator_harness import Operator, kubectl

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
