"""Pod Security Admission, by the API server's own PodSecurity plugin: the engine pods of every
example and the operator's pod are admitted where `restricted` is enforced; a hostPath model
cache (possible only when the operator's settings allow its prefix) is refused even at
`baseline`. Pods are created with dryRun=All: admitted or refused, nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import load_catalog, load_image_lock
from llmdeploy.render import HostAccess, render_manifests
from llmdeploy.sizing import plan_deployment

from .operator_harness import REPO_ROOT, kubectl

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


def _enforce(api: client.ApiClient, namespace: str, level: str) -> None:
    labels = {"pod-security.kubernetes.io/enforce": level}
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": labels}})


def _pod_templates(body: dict[str, Any], access: HostAccess | None = None) -> list[dict[str, Any]]:
    resource = LLMDeployment.model_validate(body)
    catalog = load_catalog()
    plan = plan_deployment(resource.spec, catalog)
    assert plan.feasible, plan.reasons
    objects = render_manifests(
        resource, plan, catalog, load_image_lock(), host_access=access or HostAccess()
    )
    templates = []
    for obj in objects:
        if obj["kind"] == "Deployment":
            templates.append(obj["spec"]["template"])
        elif obj["kind"] == "LeaderWorkerSet":
            group = obj["spec"]["leaderWorkerTemplate"]
            templates += [group["leaderTemplate"], group["workerTemplate"]]
    assert templates
    return templates


def _create_dry_run(api: client.ApiClient, namespace: str, template: dict[str, Any]) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "psa-", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod, dry_run="All")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_engine_pods_are_admitted_under_restricted(
    path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    _enforce(kube_api, namespace, "restricted")
    for template in _pod_templates(yaml.safe_load(path.read_text())):
        try:
            _create_dry_run(kube_api, namespace, template)
        except ApiException as exc:
            pytest.fail(f"refused under restricted: {exc.body}")


def test_the_operator_pod_is_admitted_under_restricted(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    _enforce(kube_api, namespace, "restricted")
    rendered = kubectl(kubeconfig_path, "kustomize", str(REPO_ROOT / "manifests"))
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, {"metadata": {"name": account}}
    )
    try:
        _create_dry_run(kube_api, namespace, deployment["spec"]["template"])
    except ApiException as exc:
        pytest.fail(f"refused under restricted: {exc.body}")


def test_a_host_path_cache_is_refused_even_under_baseline(
    kube_api: client.ApiClient, namespace: str
) -> None:
    _enforce(kube_api, namespace, "baseline")
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["spec"]["model"]["cache"] = {"type": "hostPath", "path": "/var/cache/models"}
    access = HostAccess(allowed_host_path_prefixes=("/var/cache",))
    (template,) = _pod_templates(body, access)
    with pytest.raises(ApiException) as refused:
        _create_dry_run(kube_api, namespace, template)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "baseline' in message, message
    assert 'hostPath volumes (volume "model-cache")' in message, message
