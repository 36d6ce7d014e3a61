"""The operator's own install manifests: its pod is locked down and its replicas can elect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parents[2] / "manifests" / "base"


def _operator_deployment() -> dict[str, Any]:
    documents = yaml.safe_load_all((BASE / "deployment.yaml").read_text())
    return next(d for d in documents if d and d["kind"] == "Deployment")


def test_operator_pod_is_non_root_read_only_and_drops_everything() -> None:
    pod = _operator_deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert "limits" in container["resources"]
        assert "ephemeral-storage" in container["resources"]["limits"]
    for volume in pod["volumes"]:
        if "emptyDir" in volume:
            assert "sizeLimit" in volume["emptyDir"], volume["name"]


def test_a_drain_or_a_node_failure_leaves_a_replica() -> None:
    deployment = _operator_deployment()
    labels = deployment["spec"]["selector"]["matchLabels"]
    budget = yaml.safe_load((BASE / "poddisruptionbudget.yaml").read_text())
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert "poddisruptionbudget.yaml" in kustomization["resources"]
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == labels


def test_the_operator_runs_two_replicas_that_elect_one() -> None:
    deployment = _operator_deployment()
    assert deployment["spec"]["replicas"] > 1
    env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
    assert "LLMDEPLOY_STANDALONE" not in {e["name"] for e in env}
