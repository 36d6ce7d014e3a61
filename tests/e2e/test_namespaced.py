"""The namespaced install (manifests/namespaced): the operator can write only in the namespaces it
watches, works there, and its replicas elect and fail over through a per-namespace peering."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .e2e_support import applied, wait_until
from .operator_harness import (
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    Operator,
    apply_server_side,
    kubectl,
    service_account_kubeconfig,
)
from .test_faults import NAME, _converged, _no_duplicates, _replicas, _with_context_length
from .test_operator import apply, deployment, example, ready


def _namespaced_install(tmp_path: Path) -> list[dict[str, Any]]:
    """manifests/base with the namespaced component, as a user's overlay would build it."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    manifests = Path(os.path.relpath(REPO_ROOT / "manifests", overlay))
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [str(manifests / "base")],
                "components": [str(manifests / "namespaced")],
            }
        )
    )
    built = kubectl(
        Path(os.devnull), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(overlay)
    )
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def _bindings_for(
    documents: list[dict[str, Any]], account: str, watched: str
) -> list[dict[str, Any]]:
    """The component's bindings, for a ServiceAccount of this test and its watched namespace
    (the roles they bind are the ones the session installed from manifests/base)."""
    bindings = [d for d in documents if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    for binding in bindings:
        binding["metadata"]["name"] = f"{binding['metadata']['name']}-{account}"
        if binding["kind"] == "RoleBinding":
            binding["metadata"]["namespace"] = watched
        binding["subjects"] = [
            {"kind": "ServiceAccount", "name": account, "namespace": OPERATOR_NAMESPACE}
        ]
    return bindings


@pytest.fixture
def other_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(kube_api)
    name = f"e2e-unwatched-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"llmdeploy.io/e2e": "true"})
        )
    )
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _can(kubeconfig: Path, account: str, verb: str, resource: str, where: str) -> bool:
    scope = ["-A"] if where == "*" else ([] if where == "-" else ["-n", where])
    answer = kubectl(
        kubeconfig,
        "auth",
        "can-i",
        verb,
        *resource.split(),
        *scope,
        f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{account}",
    )
    assert answer.stdout.strip() in ("yes", "no"), answer.stderr
    return answer.stdout.strip() == "yes"


def test_namespaced_install_writes_only_where_it_watches_and_fails_over(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    other_namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    documents = _namespaced_install(tmp_path)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert ("ClusterRoleBinding", "llmdeploy") not in kinds  # nothing written cluster-wide
    settings = next(d for d in documents if d["kind"] == "ConfigMap")["data"]
    rolebindings = [d for d in documents if d["kind"] == "RoleBinding"]
    # The shipped example is self-consistent: a RoleBinding for each watched namespace.
    assert sorted(settings["LLMDEPLOY_NAMESPACES"].split(",")) == sorted(
        b["metadata"]["namespace"] for b in rolebindings
    )

    account = f"llmdeploy-ns-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        OPERATOR_NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    bindings = _bindings_for(documents, account, namespace)
    try:
        apply_server_side(kubeconfig_path, bindings)
        grants = {
            (verb, resource, where): _can(kubeconfig_path, account, verb, resource, where)
            for verb, resource in (
                ("patch", "deployments.apps"),
                ("create", "services"),
                ("delete", "horizontalpodautoscalers.autoscaling"),
                ("patch", "llmdeployments.llmdeploy.io --subresource=status"),
                ("create", "kopfpeerings.kopf.dev"),
                ("list", "pods"),
                ("create", "events"),
                ("get", "secrets"),
                ("create", "pods"),
                ("update", "deployments.apps"),
            )
            for where in (namespace, other_namespace, "kube-system")
        }
        expected = {
            (verb, resource, where): where == namespace
            and verb not in ("get", "update")
            and (verb, resource) != ("create", "pods")
            for verb, resource, where in grants
        }
        assert grants == expected
        cluster_wide = {
            (verb, resource): _can(kubeconfig_path, account, verb, resource, where)
            for verb, resource, where in (
                ("list", "nodes", "-"),
                ("list", "customresourcedefinitions.apiextensions.k8s.io", "-"),
                ("list", "pods", "*"),
                ("list", "llmdeployments.llmdeploy.io", "*"),
                ("patch", "clusterkopfpeerings.kopf.dev", "-"),
                ("list", "namespaces", "-"),
                ("create", "clusterrolebindings.rbac.authorization.k8s.io", "-"),
            )
        }
        assert cluster_wide == {
            ("list", "nodes"): True,
            ("list", "customresourcedefinitions.apiextensions.k8s.io"): True,
            ("list", "pods"): False,
            ("list", "llmdeployments.llmdeploy.io"): False,
            ("patch", "clusterkopfpeerings.kopf.dev"): False,
            ("list", "namespaces"): True,
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"): False,
        }

        identity = service_account_kubeconfig(
            kube_api, kubeconfig_path, tmp_path / f"{account}.kubeconfig", account
        )
        watch = {"LLMDEPLOY_NAMESPACES": namespace}
        with _replicas(operator, kubeconfig_path, tmp_path, watch, watch, identity=identity) as (
            peering,
            (first, second),
        ):

            def peers() -> int:
                listed = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
                    "kopf.dev", "v1", namespace, "kopfpeerings"
                )["items"]
                return sum(
                    len(p.get("status") or {}) for p in listed if p["metadata"]["name"] == peering
                )

            first.start()
            wait_until(lambda: peers() == 1, what="the first replica in the peering", timeout=60)
            second.start()
            wait_until(lambda: peers() == 2, what="both replicas in the peering", timeout=60)

            body = example("llama-3.1-8b-l4")
            assert apply(kubeconfig_path, other_namespace, body).returncode == 0
            assert apply(kubeconfig_path, namespace, body).returncode == 0
            wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready", timeout=120)
            assert applied(first.logs(), "Deployment")
            assert "applied" not in second.logs()

            first.kill()
            edited = _with_context_length(body, 4096)
            assert apply(kubeconfig_path, namespace, edited).returncode == 0
            wait_until(
                lambda: _converged(kube_api, namespace, 4096),
                what="the second replica took over",
                timeout=120,
            )
            _no_duplicates(kube_api, namespace)
            # The other namespace was never touched, and nothing was refused on the way: the
            # operator asks only for what its namespaces grant.
            assert deployment(kube_api, other_namespace, NAME) is None
            untouched = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
                "llmdeploy.io", "v1alpha1", other_namespace, "llmdeployments", NAME
            )
            assert "status" not in untouched
            for replica in (first, second):
                assert "Forbidden" not in replica.logs() and " 403" not in replica.logs()
    finally:
        kubectl(
            kubeconfig_path,
            "delete",
            "-f",
            "-",
            "--ignore-not-found",
            stdin=yaml.safe_dump_all(bindings),
        )
        core.delete_namespaced_service_account(account, OPERATOR_NAMESPACE)
