"""The operator on the real control plane: apply, status, change, scale, delete, bad input,
capacity, restart, RBAC. The operator runs as `llmdeploy run` under its own ServiceAccount."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.gitops_checks import argocd_health, capture, kstatus

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import (
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    SERVICE_ACCOUNT,
    Operator,
    kubectl,
)
from .testenv_control import WRITE_VERBS, AuditLog

GROUP, VERSION, PLURAL = "llmdeploy.io", "v1alpha1", "llmdeployments"


def example(name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / f"{name}.yaml").read_text())
    body["spec"].setdefault("placement", {})["tolerations"] = [KWOK_TOLERATION]
    body["spec"].update(changes)
    return body


def apply(kubeconfig: Path, namespace: str, body: dict[str, Any]) -> Any:
    return kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))


def get(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, PLURAL, name
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c  # type: ignore[no-any-return]
    return None


def deployment(api: client.ApiClient, namespace: str, name: str) -> client.V1Deployment | None:
    try:
        return client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def ready(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    obj = get(api, namespace, name)
    status = obj.get("status") or {}
    done = (
        status.get("phase") == "Ready"
        and status.get("observedGeneration") == obj["metadata"]["generation"]
    )
    return obj if done else None


@pytest.mark.usefixtures("operator")
def test_apply_example_runs_on_matching_gpu_nodes(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    body = example("llama-3.1-8b-l4")
    assert apply(kubeconfig_path, namespace, body).returncode == 0
    obj = wait_until(
        lambda: ready(kube_api, namespace, "llama-8b"), what="phase Ready", timeout=120
    )
    status = obj["status"]
    assert status["gpu"] == "nvidia-l4" and status["plan"]["gpu"] == "nvidia-l4"
    assert status["readyReplicas"] == status["replicas"] == status["plan"]["replicas"] >= 1
    assert condition(obj, "Planned")["status"] == "True"  # type: ignore[index]
    assert condition(obj, "Available")["status"] == "True"  # type: ignore[index]
    # Children carry owner references; pods run on L4 nodes only.
    dep = deployment(kube_api, namespace, "llama-8b")
    assert dep is not None and dep.metadata.owner_references[0].kind == "LLMDeployment"
    pods = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(namespace, label_selector="llmdeploy.io/deployment=llama-8b")
        .items
    )
    assert pods and all(p.spec.node_name.startswith("kwok-l4-") for p in pods)
    assert all(p.status.phase == "Running" for p in pods)
    # Printer columns as a user sees them.
    table = kubectl(kubeconfig_path, "-n", namespace, "get", "llmdep", "llama-8b")
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:8] == ["NAME", "GPU", "GPUS", "QUANT", "TP", "REPLICAS", "READY", "$/H"]
    assert row.split()[1:5] == ["nvidia-l4", "1", status["quantization"], "1"]
    assert row.split()[7] == status["costPerHour"]


@pytest.mark.usefixtures("operator")
def test_spec_change_replans_and_rolls_out_scale_follows_and_delete_collects(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    body = example("llama-3.1-8b-l4")
    apply(kubeconfig_path, namespace, body)
    first = wait_until(lambda: ready(kube_api, namespace, "llama-8b"), what="Ready", timeout=120)
    changed = copy.deepcopy(body)
    changed["spec"]["workload"]["maxContextLength"] = 4096
    assert apply(kubeconfig_path, namespace, changed).returncode == 0

    def replanned() -> dict[str, Any] | None:
        obj = ready(kube_api, namespace, "llama-8b")
        return obj if obj and obj["status"]["plan"]["maxContextLength"] == 4096 else None

    second = wait_until(replanned, what="new plan", timeout=120)
    assert second["status"]["planKey"] != first["status"]["planKey"]
    dep = deployment(kube_api, namespace, "llama-8b")
    assert dep is not None
    args = dep.spec.template.spec.containers[0].args
    assert args[args.index("--max-model-len") + 1] == "4096"

    scaled = kubectl(
        kubeconfig_path, "-n", namespace, "scale", "llmdep", "llama-8b", "--replicas=1"
    )
    assert scaled.returncode == 0, scaled.stderr

    def one_replica() -> bool:
        d = deployment(kube_api, namespace, "llama-8b")
        obj = get(kube_api, namespace, "llama-8b")
        return bool(
            d
            and d.spec.replicas == 1
            and d.status.ready_replicas == 1
            and obj["status"].get("replicas") == 1
        )

    wait_until(one_replica, what="one replica", timeout=120)
    # The plan did not change for a replica count.
    assert get(kube_api, namespace, "llama-8b")["status"]["planKey"] == second["status"]["planKey"]

    assert kubectl(kubeconfig_path, "-n", namespace, "delete", "llmdep", "llama-8b").returncode == 0
    wait_until(
        lambda: deployment(kube_api, namespace, "llama-8b") is None,
        what="Deployment garbage-collected",
        timeout=120,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parallelism": {"tensor": "many"}}, "must be auto or an integer"),
        (
            {"placement": {"gpu": "nvidia-h100-80gb", "allowedGpus": ["nvidia-l4"]}},
            "placement.gpu must be one of placement.allowedGpus",
        ),
        ({"workload": {"concurrency": 0}}, "spec.workload.concurrency"),
        ({"quantization": "int3"}, "spec.quantization"),
    ],
)
def test_invalid_resource_is_rejected_by_the_api_server(
    kubeconfig_path: Path,
    namespace: str,
    change: dict[str, Any],
    message: str,
    operator: Operator,
) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"].update(change)
    result = apply(kubeconfig_path, namespace, body)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.usefixtures("operator")
def test_infeasible_spec_gets_a_false_condition_not_a_crash(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    body = example("llama-3.1-405b-multinode")
    body["metadata"]["name"] = "too-big"
    body["spec"]["placement"] = {
        "gpu": "nvidia-l4",
        "maxGpusPerReplica": 2,
        "tolerations": [KWOK_TOLERATION],
    }
    body["spec"]["model"].pop("cache")
    assert apply(kubeconfig_path, namespace, body).returncode == 0

    def failed() -> dict[str, Any] | None:
        obj = get(kube_api, namespace, "too-big")
        return obj if (obj.get("status") or {}).get("phase") == "Failed" else None

    obj = wait_until(failed, what="phase Failed", timeout=60)
    planned = condition(obj, "Planned")
    assert planned and planned["status"] == "False" and planned["reason"] == "NoFeasiblePlan"
    assert "would fit with" in planned["message"]
    assert deployment(kube_api, namespace, "too-big") is None
    # GitOps tools see a failure, not a rollout that never ends (docs/gitops.md).
    capture("no-feasible-plan", obj)
    assert argocd_health(obj)[0] == "Degraded"
    assert kstatus([obj])[0] == ("Failed", planned["message"])


@pytest.mark.usefixtures("operator")
def test_starved_capacity_sets_condition(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    # Three 8-GPU replicas, two 8-GPU H100 nodes: one replica cannot be scheduled.
    body = example("llama-3.1-70b-h100", replicas=3)
    body["spec"]["parallelism"] = {"tensor": 8}
    body["spec"]["placement"]["pendingTimeout"] = "3s"
    body["spec"].pop("monitoring")
    assert apply(kubeconfig_path, namespace, body).returncode == 0

    def starved() -> dict[str, Any] | None:
        obj = get(kube_api, namespace, "llama-70b")
        c = condition(obj, "CapacityAvailable")
        return obj if c and c["status"] == "False" else None

    obj = wait_until(starved, what="CapacityAvailable=False", timeout=120)
    capacity = condition(obj, "CapacityAvailable")
    assert capacity and capacity["reason"] == "InsufficientGPUs"
    assert "Insufficient nvidia.com/gpu" in capacity["message"]
    assert obj["status"]["phase"] == "Pending"
    capture("starved", obj)
    assert argocd_health(obj)[0] == "Degraded"
    assert kstatus([obj])[0][0] == "InProgress"  # Ready=False: kstatus waits (docs/gitops.md)
    kubectl(kubeconfig_path, "-n", namespace, "delete", "llmdep", "llama-70b", "--wait=false")


@pytest.mark.usefixtures("operator")
def test_fallback_replans_without_the_starved_gpu(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    body = example("llama-3.1-70b-h100", replicas=3)
    body["metadata"]["name"] = "fallback"
    body["spec"]["parallelism"] = {"tensor": 8}
    body["spec"].pop("slo")  # L40S must be an acceptable second choice
    body["spec"]["placement"].update(
        allowedGpus=["nvidia-h100-80gb", "nvidia-l40s"], pendingTimeout="3s", fallback=True
    )
    body["spec"].pop("monitoring")
    assert apply(kubeconfig_path, namespace, body).returncode == 0
    first = wait_until(
        lambda: (get(kube_api, namespace, "fallback").get("status") or {}).get("gpu"),
        what="first plan",
        timeout=60,
    )

    other = ({"nvidia-h100-80gb", "nvidia-l40s"} - {first}).pop()

    def fell_back() -> dict[str, Any] | None:
        obj = get(kube_api, namespace, "fallback")
        status = obj.get("status") or {}
        return (
            obj if first in status.get("excludedGpus", []) and status.get("gpu") == other else None
        )

    obj = wait_until(fell_back, what=f"{first} excluded and re-planned on {other}", timeout=120)
    times = {e["gpu"]: e["excludedAt"] for e in obj["status"]["gpuExclusions"]}
    assert times[first].endswith("Z")  # when: its TTL runs from there, across restarts

    def events() -> dict[str, list[str]]:
        listed = client.CoreV1Api(kube_api).list_namespaced_event(
            namespace, field_selector="involvedObject.name=fallback"
        )
        found: dict[str, list[str]] = {}
        for e in listed.items:
            found.setdefault(e.reason, []).append(e.message)
        return found

    # Events are posted after the status write that fell_back saw.
    wait_until(lambda: "FallbackReplan" in events(), what="the FallbackReplan event", timeout=30)

    # The session's operator lets an exclusion expire after 15 s: the SKU is planned with
    # again (an event says so), starves again and is dropped again. (Here the other SKU
    # starves too, three 8-GPU replicas fit on neither, and expires in its turn.)
    def tried_again() -> dict[str, list[str]] | None:
        found = events()
        dropped = [m for m in found.get("FallbackReplan", []) if m.startswith(f"{first} ")]
        expired = [m for m in found.get("ExclusionExpired", []) if m.startswith(f"{first} ")]
        return found if len(dropped) >= 2 and expired else None

    found = wait_until(tried_again, what=f"{first} tried again and dropped again", timeout=120)
    assert sum(m.startswith(f"{first} x8") for m in found["Planned"]) >= 2
    kubectl(kubeconfig_path, "-n", namespace, "delete", "llmdep", "fallback", "--wait=false")


def test_operator_killed_and_restarted_loses_nothing_duplicates_nothing(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    body = example("llama-3.1-8b-l4")
    apply(kubeconfig_path, namespace, body)
    # Kill it while it is working on the new object, then bring it back.
    wait_until(
        lambda: (get(kube_api, namespace, "llama-8b").get("status") or {}).get("planKey"),
        what="planned",
        timeout=60,
        interval=0.05,
    )
    operator.kill()
    before = get(kube_api, namespace, "llama-8b")
    operator.start()
    obj = wait_until(lambda: ready(kube_api, namespace, "llama-8b"), what="Ready", timeout=120)
    assert obj["status"]["planKey"] == before["status"]["planKey"]
    assert obj["spec"] == before["spec"]  # nothing the user wrote changed
    deployments = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    assert [d.metadata.name for d in deployments] == ["llama-8b"]
    replica_sets = client.AppsV1Api(kube_api).list_namespaced_replica_set(namespace).items
    assert len(replica_sets) == 1


def test_operator_killed_while_reconciling_many_loses_nothing_duplicates_nothing(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """SIGKILL while a batch of new objects is being worked on: some planned, some inside a
    handler (4 worker threads), some queued. After a restart each converges with exactly one
    of each child and the spec as the user wrote it."""
    names = [f"batch-{i}" for i in range(12)]
    bodies = []
    for name in names:
        body = example("llama-3.1-8b-l4", replicas=0)
        body["metadata"]["name"] = name
        bodies.append(body)
    created = kubectl(
        kubeconfig_path, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump_all(bodies)
    )
    assert created.returncode == 0, created.stderr

    def planned() -> list[str]:
        return [
            n for n in names if (get(kube_api, namespace, n).get("status") or {}).get("planKey")
        ]

    wait_until(planned, what="a first object planned", timeout=60, interval=0.05)
    operator.kill()
    done_before_kill = planned()
    # Otherwise the kill came after the work, and this test would prove nothing.
    assert len(done_before_kill) < len(names), "every object was done before the kill"
    specs = {n: get(kube_api, namespace, n)["spec"] for n in names}
    operator.start()
    for name in names:
        obj = wait_until(lambda n=name: ready(kube_api, namespace, n), what=name, timeout=120)
        assert obj["spec"] == specs[name]  # nothing the user wrote changed
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    policy = client.PolicyV1Api(kube_api)
    for listing in (
        apps.list_namespaced_deployment(namespace).items,
        apps.list_namespaced_replica_set(namespace).items,
        core.list_namespaced_service(namespace).items,
        policy.list_namespaced_pod_disruption_budget(namespace).items,
    ):
        owners = sorted(
            (o.metadata.labels or {}).get("llmdeploy.io/deployment", "") for o in listing
        )
        assert owners == sorted(names)  # one of each per object, no duplicates


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "deployments.apps", True),
        ("create", "services", True),
        ("patch", "networkpolicies.networking.k8s.io", True),
        ("patch", "llmdeployments.llmdeploy.io --subresource=status", True),
        ("list", "nodes", True),
        ("get", "secrets", False),
        ("create", "pods", False),
        ("delete", "nodes", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("delete", "llmdeployments.llmdeploy.io", False),
        ("update", "deployments.apps", False),
        ("delete", "horizontalpodautoscalers.autoscaling", True),
        ("list", "namespaces", True),
    ],
)
def test_operator_service_account_has_least_privilege(
    kubeconfig_path: Path, operator: Operator, verb: str, resource: str, allowed: bool
) -> None:
    result = kubectl(
        kubeconfig_path,
        "auth",
        "can-i",
        verb,
        *resource.split(),
        "-A",
        f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}",
    )
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


def test_unchanged_object_gets_no_writes(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    apply(kubeconfig_path, namespace, example("llama-3.1-8b-l4"))
    wait_until(lambda: ready(kube_api, namespace, "llama-8b"), what="Ready", timeout=120)

    def versions() -> tuple[str, str, str]:
        obj = get(kube_api, namespace, "llama-8b")
        dep = deployment(kube_api, namespace, "llama-8b")
        service = client.CoreV1Api(kube_api).read_namespaced_service("llama-8b", namespace)
        assert dep is not None
        return (
            obj["metadata"]["resourceVersion"],
            dep.metadata.resource_version,
            service.metadata.resource_version,
        )

    def settled() -> tuple[str, str, str] | None:
        """The versions, once two resyncs (2 s apart) in a row have left them alone."""
        first, start = versions(), operator.reconciles()
        wait_until(lambda: operator.reconciles() >= start + 2, what="two reconciles", timeout=30)
        return first if versions() == first else None

    before = wait_until(settled, what="the last status and rollout updates landed", timeout=60)
    audit = AuditLog()
    audit.mark()
    start = operator.reconciles()
    wait_until(lambda: operator.reconciles() >= start + 4, what="four more resyncs", timeout=60)
    assert versions() == before
    # Request by request, as the API server saw the operator: it reconciled (above) from what
    # its watches show, and wrote nothing.
    requests = audit.requests()
    assert [r for r in requests if r.namespace == namespace and r.verb in WRITE_VERBS] == []
    # ... and needed no read per child for it.
    reads = [r for r in requests if r.namespace == namespace and r.verb == "get"]
    assert [r for r in reads if r.resource in ("deployments", "services")] == []


def test_delete_needs_no_running_operator_and_an_old_finalizer_is_removed(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    apply(kubeconfig_path, namespace, example("llama-3.1-8b-l4"))
    obj = wait_until(lambda: ready(kube_api, namespace, "llama-8b"), what="Ready", timeout=120)
    assert not obj["metadata"].get("finalizers")
    # Objects of releases that used a per-object kopf timer carry kopf's finalizer.
    old = {"metadata": {"finalizers": ["llmdeploy.io/finalizer"]}}
    patched = kubectl(
        kubeconfig_path,
        *("-n", namespace, "patch", "llmdep", "llama-8b", "--type=merge"),
        *("-p", yaml.safe_dump(old)),
    )
    assert patched.returncode == 0, patched.stderr
    wait_until(
        lambda: not get(kube_api, namespace, "llama-8b")["metadata"].get("finalizers"),
        what="the old finalizer removed",
        timeout=60,
    )
    operator.stop()
    try:
        deleted = kubectl(
            kubeconfig_path, "-n", namespace, "delete", "llmdep", "llama-8b", "--wait=false"
        )
        assert deleted.returncode == 0, deleted.stderr

        def gone() -> bool:
            try:
                get(kube_api, namespace, "llama-8b")
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_until(gone, what="deleted with the operator stopped", timeout=30)
        wait_until(
            lambda: deployment(kube_api, namespace, "llama-8b") is None,
            what="Deployment garbage-collected",
            timeout=120,
        )
    finally:
        operator.start()


def test_a_same_named_object_made_by_hand_is_not_taken_over(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    # Someone who may create LLMDeployments (and not Services or PDBs) must not be able to
    # rewrite, adopt or have garbage-collected an object of that name through the operator's
    # rights: not a Service whose selector would conflict, nor a PDB whose every field equals
    # what the operator would set (an apply without force would adopt that one silently).
    body = example("llama-3.1-8b-l4")
    name = body["metadata"]["name"]
    core, policy = client.CoreV1Api(kube_api), client.PolicyV1Api(kube_api)
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(
            selector={"app": "someone-else"}, ports=[client.V1ServicePort(port=8000)]
        ),
    )
    budget = client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodDisruptionBudgetSpec(
            max_unavailable=1,
            selector=client.V1LabelSelector(match_labels={"llmdeploy.io/deployment": name}),
        ),
    )
    core.create_namespaced_service(namespace, service)
    policy.create_namespaced_pod_disruption_budget(namespace, budget)
    assert apply(kubeconfig_path, namespace, body).returncode == 0

    def refused(kind: str) -> dict[str, Any] | None:
        c = condition(get(kube_api, namespace, name), "Degraded")
        return c if c and f"{kind} {name} already exists" in c["message"] else None

    degraded = wait_until(
        lambda: refused("Service"), what="Degraded naming the Service", timeout=60
    )
    assert degraded["status"] == "True"
    theirs = core.read_namespaced_service(name, namespace)
    assert theirs.spec.selector == {"app": "someone-else"}
    assert not theirs.metadata.owner_references
    # Once the Service is gone the operator makes its own, and stops at the PDB.
    core.delete_namespaced_service(name, namespace)
    wait_until(lambda: refused("PodDisruptionBudget"), what="Degraded naming the PDB", timeout=60)
    kept = policy.read_namespaced_pod_disruption_budget(name, namespace)
    assert not kept.metadata.owner_references
    assert not (kept.metadata.labels or {})  # none of the operator's labels either
    assert core.read_namespaced_service(name, namespace).spec.selector != {"app": "someone-else"}
    policy.delete_namespaced_pod_disruption_budget(name, namespace)
    wait_until(lambda: ready(kube_api, namespace, name), what="Ready", timeout=120)
    owners = policy.read_namespaced_pod_disruption_budget(name, namespace).metadata.owner_references
    assert [o.kind for o in owners] == ["LLMDeployment"]
