"""Fixtures for the end-to-end tests: a real Kubernetes API server with simulated GPU nodes.

By default the local control plane of hack/testenv (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok) is used: ``hack/testenv/up.sh`` starts it, or
reuses the one already running. If this session started it, it is stopped with
``hack/testenv/down.sh`` at the end (set LLMDEPLOY_E2E_KEEP=1 to keep it); one that was
already running is left alone.

Set LLMDEPLOY_E2E_KUBECONFIG to a kubeconfig to run against another cluster instead; it must
have nodes like those in hack/testenv/nodes.yaml for the GPU tests to pass.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .e2e_support import status_of, wait_until
from .operator_harness import (
    KEDA_ENDPOINT,
    KEDA_PROMETHEUS,
    Operator,
    apply_server_side,
    install,
    kubectl,
    service_account_kubeconfig,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTENV = REPO_ROOT / "hack" / "testenv"
E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e carries the e2e marker, even if its module forgot it."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def _testenv_kubeconfig() -> Path:
    # Same resolution as hack/testenv/lib.sh.
    cache = Path(
        os.environ.get("LLMDEPLOY_TESTENV_CACHE", Path.home() / ".cache" / "llmdeploy-testenv")
    )
    state = Path(os.environ.get("LLMDEPLOY_TESTENV_DIR", cache / "run"))
    return state / "kubeconfig"


def _api_ready(kubeconfig: Path) -> bool:
    if not kubeconfig.is_file():
        return False
    probe = subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={kubeconfig}",
            "--request-timeout=5s",
            "get",
            "--raw",
            "/readyz",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "ok"


@pytest.fixture(scope="session")
def kubeconfig_path() -> Iterator[Path]:
    """Path of an admin kubeconfig for the cluster the e2e tests run against."""
    external = os.environ.get("LLMDEPLOY_E2E_KUBECONFIG")
    if external:
        yield Path(external)
        return

    already_running = _api_ready(_testenv_kubeconfig())
    # stderr (build and start progress) is left to pytest's capture; stdout ends with the path.
    up = subprocess.run(
        [str(TESTENV / "up.sh")], stdout=subprocess.PIPE, text=True, check=False, timeout=3600
    )
    if up.returncode != 0:
        pytest.fail(f"hack/testenv/up.sh failed with exit code {up.returncode}", pytrace=False)
    path = Path(up.stdout.strip().splitlines()[-1])
    try:
        yield path
    finally:
        if not already_running and not os.environ.get("LLMDEPLOY_E2E_KEEP"):
            subprocess.run([str(TESTENV / "down.sh")], check=False, timeout=120)


@pytest.fixture(scope="session")
def kube_api(kubeconfig_path: Path) -> Iterator[client.ApiClient]:
    """A Kubernetes ApiClient with cluster-admin rights."""
    api = config.new_client_from_config(config_file=str(kubeconfig_path))
    try:
        yield api
    finally:
        api.close()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    slug = slug.removeprefix("test-")[:40].strip("-")
    return f"e2e-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(kube_api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    core = client.CoreV1Api(kube_api)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"llmdeploy.io/e2e": "true"})
        )
    )

    def default_service_account() -> bool:
        # Pods are rejected until the controller-manager has created this account.
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    try:
        wait_until(default_service_account, what=f"service account default in {name}")
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def operator(
    kubeconfig_path: Path, kube_api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    install(kubeconfig_path)
    workdir = tmp_path_factory.mktemp("operator")
    sa_kubeconfig = service_account_kubeconfig(
        kube_api, kubeconfig_path, workdir / "operator.kubeconfig"
    )
    # A short excluded-GPU TTL, so the fallback test sees a starved SKU tried again; an
    # endpoint objects in mode keda may name (nothing listens there: KEDA is not running).
    running = Operator(
        sa_kubeconfig,
        workdir,
        LLMDEPLOY_EXCLUDED_GPU_TTL_SECONDS="15",
        LLMDEPLOY_PROMETHEUS_ENDPOINTS=json.dumps({KEDA_ENDPOINT: {"url": KEDA_PROMETHEUS}}),
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(running.logs()[-5000:])


FETCH_CRDS = REPO_ROOT / "hack" / "crds" / "fetch.sh"
E2E_LABEL = "llmdeploy.io/e2e"


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The pinned upstream CRDs, fetched (once per machine) and checked by sha256."""
    fetched = subprocess.run(
        [str(FETCH_CRDS)], stdout=subprocess.PIPE, text=True, check=False, timeout=600
    )
    if fetched.returncode != 0:
        pytest.fail(f"hack/crds/fetch.sh failed with exit code {fetched.returncode}", pytrace=False)
    return Path(fetched.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def third_party_crds(
    kubeconfig_path: Path, kube_api: client.ApiClient, crd_dir: Path
) -> Iterator[list[str]]:
    """Installs the pinned CRDs (KEDA, LeaderWorkerSet, PodMonitor, PrometheusRule,
    InferencePool, HTTPRoute) once for the session and removes them at its end: removed
    mid-session they would stop the shared operator, since kopf stops an operator whose watch of a
    kind meets a 404 (by design: a pod restarts). A CRD that is already installed without our
    label belongs to someone else: it is used as it is and left in place."""
    extensions = client.ApiextensionsV1Api(kube_api)
    ours: list[dict[str, Any]] = []
    served: list[str] = []
    for path in sorted(crd_dir.glob("*.yaml")):
        crd: dict[str, Any] = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        served.append(name)
        try:
            live = extensions.read_custom_resource_definition(name)
            if ((live.metadata and live.metadata.labels) or {}).get(E2E_LABEL) != "true":
                continue
        except ApiException as exc:
            if exc.status != 404:
                raise
        crd["metadata"].setdefault("labels", {})[E2E_LABEL] = "true"
        ours.append(crd)
    try:
        if ours:
            # Server-side: the LeaderWorkerSet CRD is too large for client-side apply's
            # last-applied annotation.
            apply_server_side(kubeconfig_path, ours)
        for name in served:
            wait_until(
                partial(_established, extensions, name),
                what=f"CRD {name} Established",
                timeout=60,
            )
        yield served
    finally:
        for crd in ours:
            name = crd["metadata"]["name"]
            kubectl(kubeconfig_path, "delete", "crd", name, "--ignore-not-found", "--wait=false")
            wait_until(
                partial(_gone, extensions, name),
                what=f"CRD {name} gone",
                timeout=60,
            )


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    # Not `kubectl wait`: it fails instead of waiting while a new CRD has no conditions yet.
    status = extensions.read_custom_resource_definition(name).status
    conditions = (status and status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _gone(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    return status_of(lambda: extensions.read_custom_resource_definition(name)) == 404
