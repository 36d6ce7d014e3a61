"""The controller's single reconcile path on the local control plane: every scaling mode's
children through the operator's own ServiceAccount, a burst of edits that coalesces, and an
API server that stops answering."""

from __future__ import annotations

import copy
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client

from .e2e_support import healthy, wait_until
from .operator_harness import KEDA_ENDPOINT, KEDA_PROMETHEUS, Operator, free_port
from .test_faults import _no_duplicates
from .test_operator import GROUP, PLURAL, VERSION, apply, deployment, example, ready
from .testenv_control import AuditLog

NAME = "llama-8b"


def _children(kube_api: client.ApiClient, namespace: str, kind: str) -> list[str]:
    if kind == "HorizontalPodAutoscaler":
        items = client.AutoscalingV2Api(kube_api).list_namespaced_horizontal_pod_autoscaler(
            namespace
        )
        return [i.metadata.name for i in items.items]
    listed = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects"
    )
    return [i["metadata"]["name"] for i in listed["items"]]


def _scaling(body: dict[str, Any], **scaling: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    changed["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 4, **scaling}
    return changed


@pytest.mark.usefixtures("third_party_crds")
def test_hpa_and_keda_modes_through_the_operator_and_back(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """Under its own ServiceAccount the operator creates the HPA or the ScaledObject and prunes
    it when the mode changes back (KEDA's CRD pinned as in the schema tests)."""
    body = example("llama-3.1-8b-l4")
    assert apply(kubeconfig_path, namespace, _scaling(body, mode="hpa")).returncode == 0
    wait_until(
        lambda: _children(kube_api, namespace, "HorizontalPodAutoscaler") == [NAME],
        what="the HPA",
        timeout=120,
    )
    keda = _scaling(body, mode="keda", prometheus=KEDA_ENDPOINT)
    assert apply(kubeconfig_path, namespace, keda).returncode == 0
    wait_until(
        lambda: (
            _children(kube_api, namespace, "ScaledObject") == [NAME]
            and _children(kube_api, namespace, "HorizontalPodAutoscaler") == []
        ),
        what="the ScaledObject, and the HPA pruned",
        timeout=120,
    )
    scaled = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", NAME
    )
    addresses = {t["metadata"]["serverAddress"] for t in scaled["spec"]["triggers"]}
    assert addresses == {KEDA_PROMETHEUS}  # the endpoint the operator's settings give
    assert apply(kubeconfig_path, namespace, _scaling(body, mode="operator")).returncode == 0
    wait_until(
        lambda: _children(kube_api, namespace, "ScaledObject") == [],
        what="the ScaledObject pruned",
        timeout=120,
    )
    obj = wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready", timeout=120)
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"


def test_fifty_rapid_edits_converge_to_the_last_with_one_workload(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    body = example("llama-3.1-8b-l4")
    assert apply(kubeconfig_path, namespace, body).returncode == 0
    wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready", timeout=120)
    audit = AuditLog()
    audit.mark()
    custom = client.CustomObjectsApi(kube_api)
    lengths = [4096 + 64 * i for i in range(50)]
    for tokens in lengths:
        patch = {"spec": {"workload": {"maxContextLength": tokens}}}
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, patch)

    def converged() -> bool:
        obj = ready(kube_api, namespace, NAME)
        dep = deployment(kube_api, namespace, NAME)
        if not obj or dep is None or obj["status"]["plan"]["maxContextLength"] != lengths[-1]:
            return False
        args = dep.spec.template.spec.containers[0].args
        return bool(args[args.index("--max-model-len") + 1] == str(lengths[-1]))

    wait_until(converged, what="the last edit planned, applied and Ready", timeout=180)
    _no_duplicates(kube_api, namespace)
    applies = [
        r
        for r in audit.requests()
        if r.namespace == namespace and r.resource == "deployments" and r.verb == "patch"
    ]
    # A render per distinct spec at most; edits that arrive while one is being reconciled
    # coalesce into the next reconcile.
    assert 1 <= len(applies) <= len(lengths), len(applies)


class DeadPeerProxy:
    """A loopback TCP proxy to the API server that can play dead: while dead it accepts
    connections and holds them, answering nothing in either direction."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.alive = threading.Event()
        self.alive.set()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                downstream, _ = self._server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.upstream)
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if not self.alive.is_set():  # dead: read nothing, send nothing
                    self.alive.wait(0.2)
                    continue
                if not select.select([source], [], [], 0.2)[0]:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except (OSError, ValueError):  # the other direction closed the sockets
            pass
        finally:
            for end in (source, target):
                end.close()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=5)  # out of accept() before its socket goes
        self._server.close()


@pytest.fixture
def proxied_operator(
    operator: Operator, tmp_path: Path, namespace: str
) -> Iterator[tuple[Operator, DeadPeerProxy]]:
    """An operator for this test's namespace whose every connection goes through the proxy;
    the shared operator is stopped meanwhile, so one replica acts."""
    config: dict[str, Any] = yaml.safe_load(operator.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    proxy = DeadPeerProxy((server.hostname or "127.0.0.1", server.port or 443))
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "proxied.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    health = free_port()
    proxied = Operator(
        kubeconfig,
        tmp_path,
        LLMDEPLOY_STANDALONE="true",
        LLMDEPLOY_NAMESPACES=namespace,
        LLMDEPLOY_HEALTH_PORT=str(health),
        LLMDEPLOY_REQUEST_TIMEOUT_SECONDS="3",
        LLMDEPLOY_CONNECT_TIMEOUT_SECONDS="3",
        LLMDEPLOY_RECONCILE_TIMEOUT_SECONDS="10",
        LLMDEPLOY_STALL_SECONDS="8",
    )
    operator.stop()
    proxied.start()
    try:
        yield proxied, proxy
    finally:
        proxied.stop()
        proxy.close()
        operator.start()


def test_a_dead_peer_times_out_backs_off_reports_the_stall_and_recovers(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    proxied_operator: tuple[Operator, DeadPeerProxy],
) -> None:
    running, proxy = proxied_operator
    port = int(running.settings["LLMDEPLOY_HEALTH_PORT"])
    wait_until(lambda: healthy(port), what="healthy at start", timeout=60)
    body = example("llama-3.1-8b-l4")
    assert apply(kubeconfig_path, namespace, body).returncode == 0
    wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready", timeout=120)

    proxy.alive.clear()  # every request from now on is accepted and never answered
    changed = copy.deepcopy(body)
    changed["spec"]["workload"]["maxContextLength"] = 4096
    assert apply(kubeconfig_path, namespace, changed).returncode == 0  # admin, not proxied
    wait_until(
        lambda: running.logs().count("failed; retry in") >= 2,
        what="reconciles timing out and backing off",
        timeout=90,
    )
    wait_until(lambda: not healthy(port), what="liveness reporting the stall", timeout=60)

    proxy.alive.set()
    wait_until(lambda: healthy(port), what="liveness recovered", timeout=90)

    def converged() -> bool:
        obj = ready(kube_api, namespace, NAME)
        return bool(obj and obj["status"]["plan"]["maxContextLength"] == 4096)

    wait_until(converged, what="the edit made while dead planned and Ready", timeout=180)
    _no_duplicates(kube_api, namespace)


@pytest.mark.usefixtures("third_party_crds")
def test_a_free_prometheus_url_or_promql_is_refused_at_admission(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """The operator would query it with its own credentials, KEDA from its own position: a
    URL or PromQL is refused at admission in every mode, and a name the settings do not hold
    is a condition; the loopback "attacker" never hears from either."""
    heard: list[bytes] = []
    attacker = socket.create_server(("127.0.0.1", 0))
    attacker.settimeout(0.2)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                conn, _ = attacker.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                heard.append(conn.recv(65536))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{attacker.getsockname()[1]}"
    body = example("llama-3.1-8b-l4")
    try:
        for mode in ("operator", "keda"):
            for scaling, field in (
                ({"prometheusUrl": f"{url}/#"}, "prometheusUrl"),
                ({"prometheusUrl": url}, "prometheusUrl"),
                (
                    {"scaleToZero": {"activationQuery": 'up{namespace="kube-system"}'}},
                    "activationQuery",
                ),
            ):
                refused = apply(kubeconfig_path, namespace, _scaling(body, mode=mode, **scaling))
                assert refused.returncode != 0 and field in refused.stderr, refused.stderr
                assert "is not accepted" in refused.stderr
        # A name is all an object can give; one the settings lack is said so in status.
        named = _scaling(body, mode="operator", prometheus="attacker")
        assert apply(kubeconfig_path, namespace, named).returncode == 0

        def reported() -> dict[str, Any] | None:
            obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, NAME
            )
            conditions = (obj.get("status") or {}).get("conditions") or []
            found = [c for c in conditions if c["type"] == "MetricsAvailable"]
            return found[0] if found and "attacker" in found[0]["message"] else None

        said = wait_until(reported, what="MetricsAvailable naming the endpoint", timeout=60)
        assert said["status"] != "True" and "no Prometheus endpoint named" in said["message"]
        # In mode keda the name must resolve before a ScaledObject can be rendered at all.
        keda = _scaling(body, mode="keda", prometheus="attacker")
        assert apply(kubeconfig_path, namespace, keda).returncode == 0

        def invalid() -> dict[str, Any] | None:
            obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, NAME
            )
            status = obj.get("status") or {}
            found = [c for c in status.get("conditions") or [] if c["type"] == "Planned"]
            current = status.get("observedGeneration") == obj["metadata"]["generation"]
            return found[0] if current and found and found[0]["reason"] == "InvalidSpec" else None

        refused = wait_until(invalid, what="InvalidSpec for the unknown endpoint", timeout=60)
        assert "spec.scaling.prometheus" in refused["message"]
        assert _children(kube_api, namespace, "ScaledObject") == []
    finally:
        stop.set()
        thread.join(timeout=5)
        attacker.close()
    assert heard == []
