"""What production does to an operator, done on the real control plane: children deleted and
edited by hand, conflicting writers, the API server restarted, etcd frozen, two operator
replicas of which one dies. After each: the desired state converges, nothing a user wrote is
lost, and there are no duplicate objects. (SIGKILL of the operator is in test_operator.py,
Prometheus down in test_autoscaling.py.)"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .e2e_support import applied, wait_until
from .operator_harness import Operator, kubectl
from .test_operator import GROUP, PLURAL, VERSION, apply, deployment, example, get, ready
from .testenv_control import WRITE_VERBS, AuditLog, frozen, restart

NAME = "llama-8b"


def _start(kubeconfig: Path, kube_api: client.ApiClient, namespace: str) -> dict[str, Any]:
    body = example("llama-3.1-8b-l4")
    assert apply(kubeconfig, namespace, body).returncode == 0
    wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready", timeout=120)
    return body


def _with_context_length(body: dict[str, Any], tokens: int) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    changed["spec"]["workload"]["maxContextLength"] = tokens
    return changed


def _converged(kube_api: client.ApiClient, namespace: str, tokens: int) -> dict[str, Any] | None:
    """Ready at the latest generation with the plan for `tokens`, and the pods running it."""
    obj = ready(kube_api, namespace, NAME)
    if not obj or obj["status"]["plan"]["maxContextLength"] != tokens:
        return None
    dep = deployment(kube_api, namespace, NAME)
    if dep is None:
        return None
    args = dep.spec.template.spec.containers[0].args
    current = args[args.index("--max-model-len") + 1] == str(tokens)
    rolled = (dep.status.updated_replicas or 0) == (dep.status.ready_replicas or 0) == (
        dep.spec.replicas
    ) and (dep.status.replicas or 0) == dep.spec.replicas
    return obj if current and rolled else None


def _no_duplicates(kube_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items] == [NAME]
    assert [s.metadata.name for s in core.list_namespaced_service(namespace).items] == [NAME]
    custom = client.CustomObjectsApi(kube_api)
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    assert [i["metadata"]["name"] for i in items] == [NAME]


def test_child_deleted_or_edited_by_hand_is_repaired_but_scaled_replicas_stay(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    _start(kubeconfig_path, kube_api, namespace)
    planned = get(kube_api, namespace, NAME)["status"]["plan"]["replicas"]
    wanted = 1 if planned != 1 else 2
    # Replicas belong to whoever uses the scale subresource (a user, HPA, KEDA), not the plan.
    scaled = kubectl(
        kubeconfig_path, "-n", namespace, "scale", "llmdep", NAME, f"--replicas={wanted}"
    )
    assert scaled.returncode == 0, scaled.stderr
    wait_until(
        lambda: (d := deployment(kube_api, namespace, NAME)) and d.spec.replicas == wanted,
        what=f"{wanted} replicas",
        timeout=60,
    )
    apps = client.AppsV1Api(kube_api)
    original = deployment(kube_api, namespace, NAME)
    assert original is not None
    engine = original.spec.template.spec.containers[0]

    # A hand edit of fields the operator owns, plus an annotation of the user's own.
    apps.patch_namespaced_deployment(
        NAME,
        namespace,
        [
            {"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": ["x"]},
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil:1"},
            {"op": "add", "path": "/metadata/annotations/team.example~1owner", "value": "me"},
        ],
    )

    def corrected() -> client.V1Deployment | None:
        d = deployment(kube_api, namespace, NAME)
        container = d.spec.template.spec.containers[0] if d else None
        return (
            d
            if container
            and container.args == engine.args
            and container.image == engine.image
            and d.spec.replicas == wanted
            else None
        )

    repaired = wait_until(corrected, what="hand edit taken back", timeout=60)
    assert repaired.metadata.annotations["team.example/owner"] == "me"  # not ours: kept

    # Children deleted by hand come back, under the same names, with the scaled replicas.
    core = client.CoreV1Api(kube_api)
    service_uid = core.read_namespaced_service(NAME, namespace).metadata.uid
    apps.delete_namespaced_deployment(NAME, namespace)
    core.delete_namespaced_service(NAME, namespace)

    def recreated() -> bool:
        d = deployment(kube_api, namespace, NAME)
        try:
            s = core.read_namespaced_service(NAME, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(
            d
            and d.metadata.uid != original.metadata.uid
            and s.metadata.uid != service_uid
            and d.spec.replicas == wanted
            and d.spec.template.spec.containers[0].image == engine.image
        )

    wait_until(recreated, what="Deployment and Service recreated", timeout=60)
    wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready again", timeout=120)
    assert get(kube_api, namespace, NAME)["spec"]["replicas"] == wanted
    _no_duplicates(kube_api, namespace)


def test_conflicting_writes_lose_nothing(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    body = _start(kubeconfig_path, kube_api, namespace)
    custom = client.CustomObjectsApi(kube_api)
    stale = get(kube_api, namespace, NAME)
    # The user changes the spec; the operator re-plans and writes status: both move the
    # resourceVersion past the copy a second writer holds.
    assert apply(kubeconfig_path, namespace, _with_context_length(body, 4096)).returncode == 0
    wait_until(lambda: _converged(kube_api, namespace, 4096), what="re-planned", timeout=120)
    stale["metadata"].setdefault("labels", {})["team"] = "stale"
    with pytest.raises(ApiException) as conflict:
        custom.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, stale)
    assert conflict.value.status == 409  # the stale write cannot undo the newer spec

    # Writers that read-modify-write with retries, as kubectl edit and controllers do, while
    # the operator reconciles a spec change: every write lands, none is lost.
    conflicts = 0
    writers = 3
    per_writer = 5

    def label_writer(index: int) -> None:
        nonlocal conflicts
        for n in range(per_writer):
            while True:
                obj = get(kube_api, namespace, NAME)
                obj["metadata"].setdefault("labels", {})[f"writer-{index}-{n}"] = "done"
                try:
                    custom.replace_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, NAME, obj
                    )
                    break
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    conflicts += 1

    threads = [threading.Thread(target=label_writer, args=(i,)) for i in range(writers)]
    assert apply(kubeconfig_path, namespace, _with_context_length(body, 2048)).returncode == 0
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    final = wait_until(
        lambda: _converged(kube_api, namespace, 2048), what="converged after writers", timeout=120
    )
    labels = final["metadata"]["labels"]
    assert all(
        labels.get(f"writer-{i}-{n}") == "done" for i in range(writers) for n in range(per_writer)
    )
    assert "team" not in labels
    assert final["spec"]["workload"]["maxContextLength"] == 2048
    assert operator.process is not None and operator.process.poll() is None
    _no_duplicates(kube_api, namespace)
    print(f"writers saw {conflicts} conflicts (409) and retried")


def test_api_server_restart_and_frozen_etcd_converge(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    body = _start(kubeconfig_path, kube_api, namespace)

    def api_ready() -> bool:
        probe = kubectl(kubeconfig_path, "--request-timeout=3s", "get", "--raw", "/readyz")
        return probe.returncode == 0 and probe.stdout.strip() == "ok"

    # The operator keeps running while the API server goes away and comes back; its watches
    # must resume and pick up a change made afterwards.
    restart("kube-apiserver", down_seconds=3)
    wait_until(api_ready, what="API server back", timeout=120, interval=0.5)
    assert apply(kubeconfig_path, namespace, _with_context_length(body, 4096)).returncode == 0
    wait_until(
        lambda: _converged(kube_api, namespace, 4096), what="converged after restart", timeout=180
    )

    # etcd frozen while the operator works on a change: its requests time out or stall and
    # are retried.
    assert apply(kubeconfig_path, namespace, _with_context_length(body, 2048)).returncode == 0
    with frozen("etcd"):
        time.sleep(5)
    wait_until(api_ready, what="API server ready after etcd resumed", timeout=60, interval=0.5)
    final = wait_until(
        lambda: _converged(kube_api, namespace, 2048), what="converged after etcd", timeout=180
    )
    assert final["spec"]["workload"]["maxContextLength"] == 2048
    assert operator.process is not None and operator.process.poll() is None
    _no_duplicates(kube_api, namespace)


@contextmanager
def _replicas(
    operator: Operator,
    kubeconfig: Path,
    tmp_path: Path,
    *extra: dict[str, str],
    identity: Path | None = None,
) -> Iterator[tuple[str, list[Operator]]]:
    """Operator replicas in a peering of their own (one per `extra` settings), as the shared
    test operator's ServiceAccount unless `identity` names another kubeconfig, with the shared
    operator stepped aside so that only they can act; stopped and cleaned up after."""
    operator.stop()
    peering = f"e2e-{uuid.uuid4().hex[:6]}"
    settings = {"LLMDEPLOY_PEERING_NAME": peering, "LLMDEPLOY_PEERING_LIFETIME_SECONDS": "10"}
    replicas = [
        Operator(identity or operator.kubeconfig, tmp_path / f"replica-{i}", **settings, **more)
        for i, more in enumerate(extra)
    ]
    for replica in replicas:
        replica.log_dir.mkdir()
    try:
        yield peering, replicas
    finally:
        for replica in replicas:
            replica.stop()
        kubectl(kubeconfig, "delete", "clusterkopfpeering", peering, "--ignore-not-found")
        operator.start()


def test_two_replicas_one_acts_and_the_other_takes_over(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    # Two replicas as manifests/ deploys them: same settings, no explicit priority.
    with _replicas(operator, kubeconfig_path, tmp_path, {}, {}) as (peering, (first, second)):
        audit = AuditLog()

        def peers() -> int:
            try:
                obj = client.CustomObjectsApi(kube_api).get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", peering
                )
            except ApiException as exc:
                if exc.status == 404:  # the first replica is about to create it
                    return 0
                raise
            return len(obj.get("status") or {})

        # The replica that started first stays the active one: the second starts once the
        # first has joined the peering.
        first.start()
        wait_until(lambda: peers() == 1, what="the first replica in the peering", timeout=60)
        second.start()
        wait_until(lambda: peers() == 2, what="both replicas in the peering", timeout=60)
        audit.mark()
        body = _start(kubeconfig_path, kube_api, namespace)
        assert applied(first.logs(), "Deployment")
        # kopf starts a replica paused and resumes it when no live peer outranks it.
        assert "Resuming operations" in first.logs()
        assert "Resuming operations" not in second.logs()
        assert "applied" not in second.logs() and NAME not in second.logs()

        first.kill()
        assert apply(kubeconfig_path, namespace, _with_context_length(body, 4096)).returncode == 0
        wait_until(
            lambda: _converged(kube_api, namespace, 4096), what="second took over", timeout=120
        )
        assert "Resuming operations" in second.logs()
        assert applied(second.logs(), "Deployment")
        _no_duplicates(kube_api, namespace)
        writes = [r for r in audit.requests() if r.verb in WRITE_VERBS and r.namespace == namespace]
        assert writes  # the audit log sees the replicas' writes at all


def test_a_replica_outranked_while_acting_stops_acting(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    # The periodic pass runs outside kopf's handlers, so kopf's pause does not stop it by
    # itself: a replica that was acting and is then outranked must stop its pass as well.
    priorities = ({"LLMDEPLOY_PRIORITY": "1"}, {"LLMDEPLOY_PRIORITY": "2"})
    with _replicas(operator, kubeconfig_path, tmp_path, *priorities) as (_, (low, high)):
        low.start()
        _start(kubeconfig_path, kube_api, namespace)
        high.start()
        wait_until(lambda: "work paused" in low.logs(), what="the low replica paused", timeout=60)
        paused_at = len(low.logs())
        original = deployment(kube_api, namespace, NAME)
        assert original is not None
        client.AppsV1Api(kube_api).delete_namespaced_deployment(NAME, namespace)
        wait_until(
            lambda: (
                (d := deployment(kube_api, namespace, NAME)) is not None
                and d.metadata.uid != original.metadata.uid
            ),
            what="Deployment recreated",
            timeout=60,
        )
        # Two more resyncs of the acting replica: the paused one would have acted by now.
        done = high.reconciles()
        wait_until(lambda: high.reconciles() >= done + 2, what="two more resyncs", timeout=60)
        assert applied(high.logs(), "Deployment")
        assert "applied" not in low.logs()[paused_at:]
        _no_duplicates(kube_api, namespace)
