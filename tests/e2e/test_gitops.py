"""Argo CD's health check and kstatus (Flux) on live LLMDeployments: every version of an object
that the API server hands a watcher, from apply through the rollout and a spec change, and scale
to zero. The checks are the real ones (tests/gitops_checks.py); test_operator.py checks them on
a spec that cannot be planned and on replicas starved of GPUs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from tests.gitops_checks import argocd_health, capture, kstatus

from .e2e_support import wait_until
from .operator_harness import kubectl
from .test_operator import example, ready

GROUP, VERSION, PLURAL = "llmdeploy.io", "v1alpha1", "llmdeployments"


def resource_version(api: client.ApiClient, namespace: str) -> str:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    return str(listed["metadata"]["resourceVersion"])


def versions_since(
    api: client.ApiClient,
    namespace: str,
    since: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: int = 120,
) -> list[dict[str, Any]]:
    """Every version of the namespace's LLMDeployments after resourceVersion `since`, as a
    watch delivers them, up to the first one for which `until` holds."""
    seen: list[dict[str, Any]] = []
    stream = watch.Watch().stream(
        client.CustomObjectsApi(api).list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        resource_version=since,
        timeout_seconds=timeout,
    )
    for event in stream:
        seen.append(event["object"])
        if until(event["object"]):
            return seen
    raise AssertionError(f"no version settled in {timeout}s: {[o.get('status') for o in seen]}")


def current(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]


def judged(objects: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    """(generation, observedGeneration, Argo CD health, kstatus) of each version."""
    verdicts = kstatus(objects)
    return [
        (
            obj["metadata"]["generation"],
            str((obj.get("status") or {}).get("observedGeneration")),
            argocd_health(obj)[0],
            status,
        )
        for obj, (status, _) in zip(objects, verdicts, strict=True)
    ]


def settled(obj: dict[str, Any]) -> bool:
    return current(obj) and (obj.get("status") or {}).get("phase") == "Ready"


@pytest.mark.usefixtures("operator")
def test_a_rollout_is_in_progress_then_current_and_healthy(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    since = resource_version(kube_api, namespace)
    applied = kubectl(
        kubeconfig_path,
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(example("llama-3.1-8b-l4")),
    )
    assert applied.returncode == 0, applied.stderr
    rollout = versions_since(kube_api, namespace, since, settled)
    seen = judged(rollout)
    capture("created", rollout[0])
    capture("rolling-out", next(o for o in rollout if current(o) and not settled(o)))
    capture("ready", rollout[-1])
    # As created: no status yet. Argo CD waits; kstatus cannot tell and says Current
    # (docs/gitops.md: a Flux healthCheckExprs for LLMDeployments closes that gap).
    assert seen[0] == (1, "None", "Progressing", "Current"), seen
    # The operator wrote a status for this generation before the replicas were ready ...
    assert (1, "1", "Progressing", "InProgress") in seen, seen
    # ... and then the settled one.
    assert seen[-1] == (1, "1", "Healthy", "Current"), seen

    since = resource_version(kube_api, namespace)
    patch = {"spec": {"workload": {"concurrency": 12}}}  # the example's is 8
    patched = kubectl(
        kubeconfig_path,
        "-n",
        namespace,
        "patch",
        PLURAL,
        "llama-8b",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    assert patched.returncode == 0, patched.stderr
    change = versions_since(kube_api, namespace, since, settled)
    seen = judged(change)
    capture("spec-changed", change[0])
    # The new spec before the operator saw it: neither tool trusts the old status.
    assert seen[0] == (2, "1", "Progressing", "InProgress"), seen
    assert seen[-1] == (2, "2", "Healthy", "Current"), seen


@pytest.mark.usefixtures("operator")
def test_scaled_to_zero_is_suspended_and_current(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    body = example("llama-3.1-8b-l4")
    applied = kubectl(
        kubeconfig_path, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body)
    )
    assert applied.returncode == 0, applied.stderr
    wait_until(lambda: ready(kube_api, namespace, "llama-8b"), what="Ready", timeout=120)
    scaled = kubectl(kubeconfig_path, "-n", namespace, "scale", PLURAL, "llama-8b", "--replicas=0")
    assert scaled.returncode == 0, scaled.stderr

    def at_zero() -> dict[str, Any] | None:
        obj = ready(kube_api, namespace, "llama-8b")
        return obj if obj and obj["status"].get("replicas") == 0 else None

    obj = wait_until(at_zero, what="Ready at zero replicas", timeout=120)
    capture("scaled-to-zero", obj)
    assert argocd_health(obj)[0] == "Suspended"
    assert kstatus([obj])[0][0] == "Current"
