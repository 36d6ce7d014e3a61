"""Pilot rollouts on the local control plane, measured through a real Prometheus: each
generation of engines is a simulated vLLM endpoint of its own, scraped with the labels a
PodMonitor copies from its pods (llmdeploy_io_generation for the candidate). A good candidate
on another SKU is piloted behind an HTTPRoute, survives a SIGKILL of the operator,
and is promoted with the serving replicas never below the spec's; a slow one is rolled back
and not retried. Without Prometheus: a crash-looping candidate is rolled back, and one promoted
by the override annotation leaves an object that writes nothing once settled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client

from .e2e_support import KWOK_TOLERATION, gpu_pod, wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl
from .prometheus_harness import Prometheus, VllmMetricsSim
from .test_measure import FAST_TTFT_S, NAME, SLOW_TTFT_S, Traffic, condition, events, served, status
from .testenv_control import WRITE_VERBS, AuditLog

__all__ = ["served"]  # the fixture, shared with test_measure
T = TypeVar("T")
REPLICAS = 2


ROUTING = {
    "inferencePool": {"endpointPicker": {"service": "picker", "port": 9002}},
    "httpRoute": {"gateway": {"name": "inference-gateway"}},
}
POOLS = ("inference.networking.k8s.io", "v1", "inferencepools")
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


def deploy(
    kubeconfig: Path,
    namespace: str,
    routing: bool = False,
    scaling: dict[str, Any] | None = None,
    **pilot: Any,
) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["placement"] = {"gpu": "nvidia-l4", "tolerations": [KWOK_TOLERATION]}
    body["spec"]["replicas"] = REPLICAS
    body["spec"]["rollout"] = {"strategy": "Pilot", "pilot": {"duration": "20s", **pilot}}
    if routing:
        body["spec"]["routing"] = ROUTING
    if scaling:
        body["spec"]["scaling"] = scaling
    result = kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def move_to(kubeconfig: Path, namespace: str, gpu: str) -> None:
    patch = f'{{"spec": {{"placement": {{"gpu": "{gpu}"}}}}}}'
    result = kubectl(
        kubeconfig, "-n", namespace, "patch", "llmdeployment", NAME, "--type=merge", "-p", patch
    )
    assert result.returncode == 0, result.stderr


def ready_replicas(api: client.ApiClient, namespace: str) -> dict[str, int]:
    listed = client.AppsV1Api(api).list_namespaced_deployment(
        namespace, label_selector=f"llmdeploy.io/deployment={NAME}"
    )
    return {d.metadata.name: d.status.ready_replicas or 0 for d in listed.items}


@contextmanager
def polled(read: Callable[[], T], every_s: float) -> Iterator[list[T]]:
    """What `read()` returns every `every_s` seconds while inside (a thread)."""
    seen: list[T] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every_s):
            seen.append(read())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


@contextmanager
def lowest_serving(api: client.ApiClient, namespace: str) -> Iterator[list[int]]:
    """The fewest ready engine replicas, summed over the generations, seen while inside."""
    with polled(lambda: sum(ready_replicas(api, namespace).values()), 0.3) as seen:
        yield seen


def autoscaler_reading(read_status: Callable[[], dict[str, Any]]) -> tuple[str, str]:
    """One reading of status.autoscaler for `autoscaler_timeline`: its time and a line. A read
    that fails is a line of its own, so the polling goes on and the timeline shows the gap
    (an error escaping `polled`'s thread would end it silently)."""
    now = time.strftime("%H:%M:%S")
    try:
        field = read_status().get("autoscaler") or {}
    except client.ApiException as e:
        if e.status != 404:
            return now, f"read failed: ApiException {e.status} {e.reason}"
        field = {}  # not created yet
    except Exception as e:  # a broken connection, a timeout: show it, keep polling
        return now, f"read failed: {type(e).__name__}: {e}"
    return now, (
        f"desired {field.get('desiredReplicas')} metrics {field.get('metrics')} "
        f"reason {field.get('reason')!r} "
        f"recommendations {(field.get('state') or {}).get('recommendations')}"
    )


@pytest.fixture
def autoscaler_timeline(kube_api: client.ApiClient, namespace: str) -> Iterator[Callable[[], str]]:
    """status.autoscaler so far in the test, one line per change: what an assertion on a
    scaling decision shows when it fails (the history it came from)."""

    def read() -> tuple[str, str]:
        return autoscaler_reading(lambda: status(kube_api, namespace))

    with polled(read, 0.5) as seen:
        yield lambda: "\n".join(
            f"{next(group)[0]} {line}" for line, group in groupby(list(seen), key=lambda s: s[1])
        )


@contextmanager
def candidate_engine(
    prometheus: Prometheus, namespace: str, generation: str, ttft_s: float, per_second: int
) -> Iterator[Traffic]:
    sim = VllmMetricsSim()
    prometheus.add_target(
        sim.port,
        {
            "namespace": namespace,
            "llmdeploy_io_deployment": NAME,
            "llmdeploy_io_generation": generation,
        },
    )
    traffic = Traffic(sim, ttft_s, per_second)
    try:
        yield traffic
    finally:
        traffic.close()
        sim.close()


def running_requests(prometheus: Prometheus, namespace: str) -> float:
    """The object's running requests over both generations, as the autoscaler's query sums them."""
    promql = f'sum(vllm:num_requests_running{{namespace="{namespace}"}})'
    return sum(float(r["value"][1]) for r in prometheus.query(promql))


def annotate(kubeconfig: Path, namespace: str, value: str) -> None:
    result = kubectl(
        kubeconfig, "-n", namespace, "annotate", "--overwrite", "llmdeployment", NAME,
        f"llmdeploy.io/pilot={value}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def weights(api: client.ApiClient, namespace: str) -> list[tuple[str, int]]:
    route = client.CustomObjectsApi(api).get_namespaced_custom_object(
        *ROUTES[:2], namespace, ROUTES[2], NAME
    )
    refs = route["spec"]["rules"][0]["backendRefs"]
    return [(r["name"], r["weight"]) for r in refs]


def pool_selectors(api: client.ApiClient, namespace: str) -> dict[str, dict[str, str]]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        *POOLS[:2], namespace, POOLS[2]
    )
    return {p["metadata"]["name"]: p["spec"]["selector"]["matchLabels"] for p in listed["items"]}


def selected(api: client.ApiClient, namespace: str, labels: dict[str, str]) -> set[str]:
    chosen = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=chosen)
    return {p.metadata.name for p in pods.items}


def turns_ready(api: client.ApiClient, namespace: str, what: str, timeout: float) -> None:
    wait_until(
        lambda: condition(api, namespace, "Ready").get("status") == "True",
        what=what,
        timeout=timeout,
    )


def rollout(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return status(api, namespace).get("rollout") or {}


def candidate_started(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: rollout(api, namespace).get("candidate"), what="a candidate", timeout=60
    )


def candidate_ready(
    kubeconfig: Path, api: client.ApiClient, namespace: str, gpu: str
) -> tuple[str, str]:
    """Move a serving Pilot object to `gpu`: the candidate's generation and workload, once its
    first replica is ready."""
    move_to(kubeconfig, namespace, gpu)
    candidate = candidate_started(api, namespace)
    wait_until(
        lambda: ready_replicas(api, namespace).get(candidate["workload"]) == 1,
        what="the candidate's replica ready",
        timeout=60,
    )
    return candidate["generation"], candidate["workload"]


@pytest.mark.usefixtures("third_party_crds")
def test_a_good_candidate_is_piloted_survives_a_restart_and_is_promoted(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    traffic.ttft_s = FAST_TTFT_S
    deploy(kubeconfig_path, namespace, routing=True)
    turns_ready(kube_api, namespace, "Ready", 90)
    assert rollout(kube_api, namespace)["current"]["workload"] == NAME
    assert weights(kube_api, namespace) == [(NAME, 100)]

    move_to(kubeconfig_path, namespace, "nvidia-l40s")
    candidate = candidate_started(kube_api, namespace)
    generation, workload = candidate["generation"], candidate["workload"]
    assert workload == f"{NAME}-{generation}" and candidate["replicas"] == 1
    assert candidate["plan"]["gpu"] == "nvidia-l40s"
    assert status(kube_api, namespace)["gpu"] == "nvidia-l4"  # the current one still serves
    deployments = client.AppsV1Api(kube_api)
    current = deployments.read_namespaced_deployment(NAME, namespace)
    assert current.spec.replicas == REPLICAS
    wait_until(
        lambda: ready_replicas(kube_api, namespace).get(workload) == 1,
        what="the candidate's replica ready",
        timeout=60,
    )
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector=f"llmdeploy.io/generation={generation}"
    )
    assert {p.metadata.labels["llmdeploy.io/deployment"] for p in pods.items} == {NAME}
    # The first workload's pods carry no generation label to leave out, so the route stays on
    # the shared pool, which spreads the requests over both generations' pods: the candidate's
    # share is its share of the replicas.
    pools = pool_selectors(kube_api, namespace)
    every = selected(kube_api, namespace, {"llmdeploy.io/deployment": NAME})
    assert selected(kube_api, namespace, pools[NAME]) == every and len(every) == REPLICAS + 1
    assert {p.metadata.name for p in pods.items} <= every
    assert weights(kube_api, namespace) == [(NAME, 100)] and set(pools) == {NAME}
    wait_until(
        lambda: rollout(kube_api, namespace).get("trafficPercent") == round(100 / (REPLICAS + 1)),
        what="the candidate's share of the replicas",
        timeout=30,
    )
    # The faster SKU serves more per replica: a lower cost per token than the L4s, SLO met.
    with candidate_engine(prometheus, namespace, generation, FAST_TTFT_S, per_second=6):
        wait_until(
            lambda: rollout(kube_api, namespace).get("reason") == "Measuring",
            what="the pilot measuring",
            timeout=60,
        )
        operator.kill()  # SIGKILL mid-pilot: the state is in status alone
        operator.start()
        with lowest_serving(kube_api, namespace) as seen:
            promoted = wait_until(
                lambda: (
                    (r := rollout(kube_api, namespace))["current"]["workload"] == workload and r
                ),
                what="the candidate promoted",
                timeout=180,
            )
            wait_until(
                lambda: NAME not in ready_replicas(kube_api, namespace),
                what="the old generation removed",
                timeout=60,
            )
        assert seen and min(seen) >= REPLICAS, seen
    assert promoted["phase"] == "Stable" and "candidate" not in promoted
    measured = {m["generation"]: m for m in promoted["measurements"]}
    assert measured[generation]["sloMet"] == "True"
    assert (
        measured[generation]["costPerMillionOutputTokens"]
        < measured[""]["costPerMillionOutputTokens"]
    )
    final = status(kube_api, namespace)
    assert final["gpu"] == "nvidia-l40s" and final["plan"]["gpu"] == "nvidia-l40s"
    assert deployments.read_namespaced_deployment(workload, namespace).spec.replicas == REPLICAS
    turns_ready(kube_api, namespace, "Ready on the new generation", 60)
    reasons = {e.reason for e in events(kube_api, namespace, "Promoted")}
    assert reasons == {"Promoted"}
    # All traffic back through the shared pool, which now holds the new generation only.
    wait_until(
        lambda: (
            weights(kube_api, namespace) == [(NAME, 100)]
            and set(pool_selectors(kube_api, namespace)) == {NAME}
        ),
        what="the route and pools after the promotion",
        timeout=30,
    )


def test_a_slow_candidate_is_rolled_back_and_not_retried_unchanged(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    traffic.ttft_s = FAST_TTFT_S
    deploy(kubeconfig_path, namespace, duration="10m")
    turns_ready(kube_api, namespace, "Ready", 90)
    move_to(kubeconfig_path, namespace, "nvidia-l40s")
    candidate = candidate_started(kube_api, namespace)
    generation, workload = candidate["generation"], candidate["workload"]
    with candidate_engine(prometheus, namespace, generation, SLOW_TTFT_S, per_second=2):
        degraded = wait_until(
            lambda: (
                (c := condition(kube_api, namespace, "Degraded")).get("reason") == "PilotRolledBack"
                and c
            ),
            what="the pilot rolled back",
            timeout=120,
        )
    assert degraded["status"] == "True" and "SLOBreach" in degraded["message"]
    assert "TTFT 1500 ms: met by 0.0%" in degraded["message"]  # what was measured
    wait_until(
        lambda: workload not in ready_replicas(kube_api, namespace),
        what="the candidate removed",
        timeout=60,
    )
    state = rollout(kube_api, namespace)
    assert state["phase"] == "RolledBack" and state["current"]["workload"] == NAME
    assert [f["reason"] for f in state["failed"]] == ["SLOBreach"]
    warned = wait_until(
        lambda: events(kube_api, namespace, "PilotRolledBack"), what="the event", timeout=30
    )
    assert warned[0].type == "Warning"
    # Not tried again unchanged: no second candidate over several measurements.
    time.sleep(8)
    assert workload not in ready_replicas(kube_api, namespace)
    assert len(events(kube_api, namespace, "PilotStarted")) == 1
    assert status(kube_api, namespace)["gpu"] == "nvidia-l4"
    assert ready_replicas(kube_api, namespace)[NAME] == REPLICAS


def occupy_l4(api: client.ApiClient, namespace: str, count: int) -> list[str]:
    """Pods that hold `count` L4 GPUs, scheduled: no L4 left for anyone else."""
    core = client.CoreV1Api(api)
    names = [f"gpu-holder-{n}" for n in range(count)]
    for name in names:
        pod = gpu_pod(name, 1, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})
        core.create_namespaced_pod(namespace, pod)

    def unscheduled() -> list[str]:
        pods = [core.read_namespaced_pod(n, namespace) for n in names]
        return [
            f"{p.metadata.name}: {[(c.reason, c.message) for c in p.status.conditions or []]}"
            for p in pods
            if not p.spec.node_name
        ]

    wait_until(lambda: not unscheduled(), what=f"the L4 GPUs held {unscheduled()}", timeout=60)
    return names


@pytest.mark.usefixtures("third_party_crds")
def test_route_weights_follow_the_phases_of_a_second_pilot(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    """After a first promotion every serving pod carries its generation, so the route splits
    exactly: the replica share while piloting, 50/50 while promoting (held there by a full
    cluster), all on the shared pool once switched."""
    deploy(kubeconfig_path, namespace, routing=True, duration="10m")
    turns_ready(kube_api, namespace, "Ready", 90)
    move_to(kubeconfig_path, namespace, "nvidia-l40s")
    first = candidate_started(kube_api, namespace)
    annotate(kubeconfig_path, namespace, f"promote/{first['generation']}")
    wait_until(
        lambda: ready_replicas(kube_api, namespace) == {first["workload"]: REPLICAS},
        what="the first pilot promoted",
        timeout=90,
    )
    # The first plan, piloted again.
    generation, workload = candidate_ready(kubeconfig_path, kube_api, namespace, "nvidia-l4")
    wait_until(
        lambda: weights(kube_api, namespace) == [(NAME, 67), (workload, 33)],
        what="the route split by replicas while piloting",
        timeout=30,
    )
    pools = pool_selectors(kube_api, namespace)
    assert pools[NAME]["llmdeploy.io/generation"] == first["generation"]
    assert selected(kube_api, namespace, pools[workload]) == selected(
        kube_api, namespace, {"llmdeploy.io/generation": generation}
    )
    holders = occupy_l4(kube_api, namespace, 3)  # the promotion cannot get its second L4
    annotate(kubeconfig_path, namespace, f"promote/{generation}")
    # The route is applied before the status that says why is written: wait for both.
    wait_until(
        lambda: (
            weights(kube_api, namespace) == [(NAME, 50), (workload, 50)]
            and rollout(kube_api, namespace)["phase"] == "Promoting"
        ),
        what="50/50 while promoting",
        timeout=30,
    )
    for name in holders:
        client.CoreV1Api(kube_api).delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    wait_until(
        lambda: ready_replicas(kube_api, namespace) == {workload: REPLICAS},
        what="the second pilot promoted and the first generation removed",
        timeout=90,
    )
    wait_until(
        lambda: (
            weights(kube_api, namespace) == [(NAME, 100)]
            and pool_selectors(kube_api, namespace) == {NAME: {"llmdeploy.io/deployment": NAME}}
        ),
        what="all traffic on the shared pool, which holds the new generation alone",
        timeout=30,
    )
    wait_until(
        lambda: (
            selected(kube_api, namespace, {"llmdeploy.io/deployment": NAME})
            == selected(kube_api, namespace, {"llmdeploy.io/generation": generation})
        ),
        what="the old generation's pods gone",
        timeout=60,
    )


# Operator mode on runningRequests, 4 per replica; up at once, never down within the test.
SCALING = {
    "mode": "operator",
    "minReplicas": 1,
    "maxReplicas": 8,
    "metrics": [{"type": "runningRequests", "target": 4}],
    "behavior": {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 8, "periodSeconds": 15}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        },
    },
}


def test_the_autoscaler_counts_both_generations_during_a_pilot(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
    autoscaler_timeline: Callable[[], str],
) -> None:
    traffic, prometheus = served
    traffic.ttft_s = FAST_TTFT_S
    traffic.sim.set_load(running=8, waiting=0)  # 4 per replica on 2: at target
    deploy(kubeconfig_path, namespace, scaling=SCALING, duration="10m", trafficPercent=50)
    turns_ready(kube_api, namespace, "Ready", 90)
    wait_until(
        lambda: (status(kube_api, namespace).get("autoscaler") or {}).get("desiredReplicas"),
        what="a first autoscaling decision",
        timeout=60,
    )
    # 50% of 2: one replica.
    generation, workload = candidate_ready(kubeconfig_path, kube_api, namespace, "nvidia-l40s")
    deployments = client.AppsV1Api(kube_api)
    template = deployments.read_namespaced_deployment(NAME, namespace).spec.template
    with candidate_engine(prometheus, namespace, generation, FAST_TTFT_S, per_second=2) as pilot:
        # 24 running in all over 3 ready replicas: the routing splits requests by replicas, so
        # the serving generation's 2 carry 16, 4 replicas at 4 each (24 alone would ask for 6).
        # Prometheus scrapes the two engines apart, so the load rises in two steps, the first
        # of which leaves the decision as it is (12 in all: the serving share is 8, at target):
        # a half-seen change must not scale on its own.
        traffic.sim.set_load(running=12, waiting=0)
        wait_until(
            lambda: running_requests(prometheus, namespace) == 12,
            what="the serving engine's 12 running requests in Prometheus",
            timeout=30,
        )
        pilot.sim.set_load(running=12, waiting=0)
        [scaled] = wait_until(
            lambda: events(kube_api, namespace, "Scaled"),
            what="the serving generation scaled on its share of the load",
            timeout=90,
        )
        history = autoscaler_timeline()
        assert scaled.message.startswith("2 -> 4: "), f"{scaled.message}\n{history}"
        assert "share of the load: 2 of 3 replicas" in scaled.message
        wait_until(
            lambda: ready_replicas(kube_api, namespace) == {NAME: 4, workload: 2},
            what="the serving generation at 4 and the candidate at 50% of it",
            timeout=90,
        )
    current = deployments.read_namespaced_deployment(NAME, namespace)
    assert current.spec.template == template  # scaled, never re-applied from the new spec
    obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        "llmdeploy.io", "v1alpha1", namespace, "llmdeployments", NAME
    )
    assert obj["spec"]["replicas"] == 4
    state = rollout(kube_api, namespace)
    assert state["phase"] == "Piloting" and state["candidate"]["replicas"] == 2
    assert status(kube_api, namespace)["gpu"] == "nvidia-l4"  # the current one still serves
    assert condition(kube_api, namespace, "MetricsAvailable")["status"] == "True"


# Without Prometheus: the override, the steady state, and a candidate that crashes.


def crash(api: client.ApiClient, namespace: str, pod: str) -> None:
    """What the kubelet reports of an engine that exits when it cannot allocate its KV cache,
    restarted with a back-off (the simulated nodes run no containers)."""
    status = {
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {
                    "name": "engine",
                    "image": "engine",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {
                            "reason": "Error",
                            "exitCode": 1,
                            "startedAt": "2026-12-05T00:00:00Z",
                            "finishedAt": "2026-12-05T00:00:01Z",
                        }
                    },
                }
            ],
        }
    }
    client.CoreV1Api(api).patch_namespaced_pod_status(pod, namespace, status)


def piloting(kubeconfig: Path, api: client.ApiClient, namespace: str) -> tuple[str, str, set[str]]:
    """A Pilot object serving, then moved to another SKU: the candidate's generation, workload
    and pods, once its replica is ready."""
    deploy(kubeconfig, namespace, duration="10m")
    turns_ready(api, namespace, "Ready", 90)
    generation, workload = candidate_ready(kubeconfig, api, namespace, "nvidia-l40s")
    pods = selected(api, namespace, {"llmdeploy.io/generation": generation})
    return generation, workload, pods


def test_a_crash_looping_candidate_is_rolled_back(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    _, workload, pods = piloting(kubeconfig_path, kube_api, namespace)
    [pod] = pods

    def rolled_back() -> dict[str, Any] | None:
        c = condition(kube_api, namespace, "Degraded")
        if c.get("reason") == "PilotRolledBack":
            return c
        # A real kubelet keeps reporting the crash loop; the simulated node may write its own
        # status over the patch, so the crash is reported again until it is acted on. The
        # rollback deletes the pod, possibly between the read above and this patch.
        try:
            crash(kube_api, namespace, pod)
        except client.ApiException as e:
            if e.status != 404:
                raise
        return None

    degraded = wait_until(rolled_back, what="the crash-looping candidate rolled back", timeout=120)
    assert "CrashLoop" in degraded["message"] and f"pod {pod}" in degraded["message"]
    assert "restarted 3 times (Error, exit code 1)" in degraded["message"]
    wait_until(
        lambda: workload not in ready_replicas(kube_api, namespace),
        what="the candidate removed",
        timeout=60,
    )
    assert ready_replicas(kube_api, namespace) == {NAME: REPLICAS}
    assert [f["reason"] for f in rollout(kube_api, namespace)["failed"]] == ["CrashLoop"]


def test_a_promote_override_switches_and_a_settled_pilot_object_writes_nothing(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    generation, workload, _ = piloting(kubeconfig_path, kube_api, namespace)
    # Nothing measured (no Prometheus): the gates wait, and the override decides.
    assert rollout(kube_api, namespace)["phase"] == "Piloting"
    stale = kubectl(
        kubeconfig_path, "-n", namespace, "annotate", "llmdeployment", NAME,
        "llmdeploy.io/pilot=promote/00000000",
    )  # fmt: skip
    assert stale.returncode == 0, stale.stderr
    time.sleep(3)  # an override naming another generation is ignored
    assert rollout(kube_api, namespace)["phase"] == "Piloting"
    promote = kubectl(
        kubeconfig_path, "-n", namespace, "annotate", "--overwrite", "llmdeployment", NAME,
        f"llmdeploy.io/pilot=promote/{generation}",
    )  # fmt: skip
    assert promote.returncode == 0, promote.stderr
    wait_until(
        lambda: ready_replicas(kube_api, namespace) == {workload: REPLICAS},
        what="the candidate promoted and the old generation removed",
        timeout=90,
    )
    turns_ready(kube_api, namespace, "Ready on the new generation", 60)
    assert rollout(kube_api, namespace)["current"]["workload"] == workload

    def versions() -> tuple[str, ...]:
        obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "llmdeploy.io", "v1alpha1", namespace, "llmdeployments", NAME
        )
        deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(workload, namespace)
        return obj["metadata"]["resourceVersion"], deployment.metadata.resource_version

    def settled() -> tuple[str, ...] | None:
        first, start = versions(), operator.reconciles()
        wait_until(lambda: operator.reconciles() >= start + 2, what="two reconciles", timeout=30)
        return first if versions() == first else None

    before = wait_until(settled, what="the last writes landed", timeout=60)
    audit = AuditLog()
    audit.mark()
    start = operator.reconciles()
    wait_until(lambda: operator.reconciles() >= start + 4, what="four more resyncs", timeout=60)
    assert versions() == before
    writes = [r for r in audit.requests() if r.namespace == namespace and r.verb in WRITE_VERBS]
    assert writes == []


def test_a_pilot_whose_serving_workload_is_deleted_promotes_its_candidate(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    _, workload, _ = piloting(kubeconfig_path, kube_api, namespace)
    client.AppsV1Api(kube_api).delete_namespaced_deployment(NAME, namespace)
    wait_until(
        lambda: ready_replicas(kube_api, namespace) == {workload: REPLICAS},
        what="the candidate promoted to the full count",
        timeout=90,
    )
    state = wait_until(
        lambda: (r := rollout(kube_api, namespace))["current"]["workload"] == workload and r,
        what="the candidate serving",
        timeout=30,
    )
    assert state["phase"] == "Stable" and state["reason"] == "Promoted"
    promoting = events(kube_api, namespace, "PilotPromoting")
    assert "serving workload is gone" in promoting[0].message
