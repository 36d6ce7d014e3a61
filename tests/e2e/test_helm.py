"""The Helm chart with the real helm (hack/helm.sh), on a control plane of its own: a second
hack/testenv, so that uninstalling the release (its ServiceAccount, its RBAC) cannot pull them
from under the operator the other e2e tests share. In order: lint and a server-side dry run,
install next to another operator's copy of a kopf CRD, an example made Ready by an operator
under the chart's RBAC, an upgrade that changes the CRD, and an uninstall that keeps the CRDs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .e2e_support import wait_until
from .operator_harness import (
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    Operator,
    kubectl,
    service_account_kubeconfig,
)
from .test_operator import example, ready

CHART = REPO_ROOT / "charts" / "llmdeploy"
RELEASE = "llmdeploy"
FOREIGN = {"other-operator.test/owner": "another-kopf-operator"}
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The admin kubeconfig of a control plane started for this module alone."""
    env = {**os.environ, "LLMDEPLOY_TESTENV_DIR": str(tmp_path_factory.mktemp("helm") / "env")}
    testenv = REPO_ROOT / "hack" / "testenv"
    up = subprocess.run(
        [str(testenv / "up.sh")], env=env, stdout=subprocess.PIPE, text=True, timeout=1800
    )
    try:
        assert up.returncode == 0, "hack/testenv/up.sh failed"
        yield Path(up.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([str(testenv / "down.sh")], env=env, check=False, timeout=180)


@pytest.fixture(scope="module")
def api(cluster: Path) -> Iterator[client.ApiClient]:
    admin = config.new_client_from_config(config_file=str(cluster))
    try:
        yield admin
    finally:
        admin.close()


def helm(cluster: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = subprocess.run(
        [str(REPO_ROOT / "hack" / "helm.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    return subprocess.run(
        [binary, f"--kubeconfig={cluster}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def crd(api: client.ApiClient, name: str) -> client.V1CustomResourceDefinition | None:
    try:
        return client.ApiextensionsV1Api(api).read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def release_objects(cluster: Path) -> list[dict[str, Any]]:
    manifest = helm(cluster, "get", "manifest", RELEASE, "-n", OPERATOR_NAMESPACE)
    assert manifest.returncode == 0, manifest.stderr
    return [d for d in yaml.safe_load_all(manifest.stdout) if d]


def test_lint_and_a_server_side_dry_run_pass(cluster: Path) -> None:
    linted = helm(cluster, "lint", str(CHART), "--strict")
    assert linted.returncode == 0, linted.stdout + linted.stderr
    namespace = kubectl(cluster, "create", "namespace", OPERATOR_NAMESPACE)
    assert namespace.returncode == 0, namespace.stderr
    labelled = kubectl(
        cluster,
        "label",
        "namespace",
        OPERATOR_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    )
    assert labelled.returncode == 0, labelled.stderr
    rendered = helm(cluster, "template", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE)
    assert rendered.returncode == 0, rendered.stderr
    dry_run = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=rendered.stdout)
    assert dry_run.returncode == 0, dry_run.stderr


def test_install_leaves_another_operators_kopf_crd_alone_and_the_example_gets_ready(
    cluster: Path, api: client.ApiClient, tmp_path: Path
) -> None:
    # Another kopf-based operator installed the cluster-wide peering CRD before us.
    theirs = next(
        d
        for d in yaml.safe_load_all(
            (REPO_ROOT / "manifests/kopf-peering-crds/peering.yaml").read_text()
        )
        if d and d["metadata"]["name"] == KOPF_CRDS[0]
    )
    theirs["metadata"]["annotations"] = FOREIGN
    created = kubectl(cluster, "create", "-f", "-", stdin=yaml.safe_dump(theirs))
    assert created.returncode == 0, created.stderr

    installed = helm(cluster, "install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE)
    assert installed.returncode == 0, installed.stderr
    names = {(o["kind"], o["metadata"]["name"]) for o in release_objects(cluster)}
    assert ("CustomResourceDefinition", KOPF_CRDS[1]) in names
    assert ("CustomResourceDefinition", KOPF_CRDS[0]) not in names
    foreign = crd(api, KOPF_CRDS[0])
    assert foreign is not None and foreign.metadata.annotations == FOREIGN
    for name in ("llmdeployments.llmdeploy.io", KOPF_CRDS[1]):
        waited = kubectl(cluster, "wait", "--for=condition=Established", f"crd/{name}")
        assert waited.returncode == 0, waited.stderr

    # The smoke e2e, with the operator under the ServiceAccount and RBAC the chart installed.
    operator = Operator(
        service_account_kubeconfig(api, cluster, tmp_path / "operator.kubeconfig"), tmp_path
    )
    operator.start()
    try:
        created = kubectl(cluster, "create", "namespace", "helm-smoke")
        assert created.returncode == 0, created.stderr
        body = example("llama-3.1-8b-l4")
        applied = kubectl(
            cluster, "-n", "helm-smoke", "apply", "-f", "-", stdin=yaml.safe_dump(body)
        )
        assert applied.returncode == 0, applied.stderr
        wait_until(lambda: ready(api, "helm-smoke", "llama-8b"), what="Ready", timeout=180)
    finally:
        operator.stop()


def test_an_upgrade_changes_the_crd(cluster: Path, api: client.ApiClient, tmp_path: Path) -> None:
    changed = tmp_path / "llmdeploy"
    shutil.copytree(CHART, changed, symlinks=False)  # the links' contents, to edit
    path = changed / "files" / "crds" / "llmdeployments.yaml"
    definition = yaml.safe_load(path.read_text())
    definition["spec"]["names"]["shortNames"].append("llmdx")
    path.write_text(yaml.safe_dump(definition))

    upgraded = helm(cluster, "upgrade", RELEASE, str(changed), "-n", OPERATOR_NAMESPACE)
    assert upgraded.returncode == 0, upgraded.stderr
    after = crd(api, "llmdeployments.llmdeploy.io")
    assert after is not None and "llmdx" in after.spec.names.short_names

    restored = helm(cluster, "upgrade", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE)
    assert restored.returncode == 0, restored.stderr
    after = crd(api, "llmdeployments.llmdeploy.io")
    assert after is not None and "llmdx" not in after.spec.names.short_names


def test_uninstall_removes_llmdeploy_and_keeps_every_crd(
    cluster: Path, api: client.ApiClient
) -> None:
    ours = [o for o in release_objects(cluster) if o["kind"] != "CustomResourceDefinition"]
    assert {o["kind"] for o in ours} >= {"Deployment", "ServiceAccount", "ClusterRole"}
    uninstalled = helm(cluster, "uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr

    def gone(obj: dict[str, Any]) -> bool:
        namespace = obj["metadata"].get("namespace")
        scope = ["-n", namespace] if namespace else []
        found = kubectl(cluster, "get", *scope, obj["kind"], obj["metadata"]["name"])
        return found.returncode != 0 and "NotFound" in found.stderr

    for obj in ours:
        wait_until(
            lambda obj=obj: gone(obj), what=f"{obj['kind']} {obj['metadata']['name']} deleted"
        )
    for name in ("llmdeployments.llmdeploy.io", *KOPF_CRDS):
        assert crd(api, name) is not None, name
    foreign = crd(api, KOPF_CRDS[0])
    assert foreign is not None and foreign.metadata.annotations == FOREIGN
    # Kept CRD, kept objects: the models users deployed outlive the operator.
    assert kubectl(cluster, "-n", "helm-smoke", "get", "llmdeployments", "llama-8b").returncode == 0
