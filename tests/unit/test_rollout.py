"""Pilot rollouts: the steps (controller/rollout.py) and decide's pilot path, with plain data."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from llmdeploy.api.status import Candidate, Generation, GenerationMeasurement, RolloutStatus
from llmdeploy.api.types import PilotSpec
from llmdeploy.autoscale.decision import MetricsReading
from llmdeploy.catalog import Catalog
from llmdeploy.cluster.objects import LiveChild, PendingPod, WorkloadStatus, crash_of
from llmdeploy.controller.decide import decide
from llmdeploy.controller.rollout import (
    CandidateHealth,
    override,
    pilot_replicas,
    step,
    traffic_share,
)
from llmdeploy.controller.state import Outcome, Snapshot
from llmdeploy.measure.results import Readings
from tests.unit.conftest import body
from tests.unit.test_decide import HEALTHY, NOW, conditions, config, measured_by, settled

CANDIDATE = Candidate(
    generation="abcd1234",
    workload="m-abcd1234",
    plan_key="abcd1234ffff0000",
    plan={},
    replicas=1,
    started_at="2026-11-22T12:00:00Z",
)
PILOTING = RolloutStatus(phase="Piloting", current=Generation(workload="m"), candidate=CANDIDATE)
SPEC = PilotSpec(duration="15m")


def measurement(slo: str = "True", cost: float | None = 10.0, gen: str = "abcd1234") -> Any:
    return GenerationMeasurement(
        generation=gen,
        end="2026-11-22T12:20:00Z",
        window_seconds=600,
        slo_met=slo,  # type: ignore[arg-type]
        slo_message=f"slo {slo}",
        cost_per_million_output_tokens=cost,
    )


def serving(minutes: float) -> Candidate:
    since = NOW - timedelta(minutes=minutes)
    return CANDIDATE.model_copy(update={"serving_since": since.strftime("%Y-%m-%dT%H:%M:%SZ")})


def test_the_pilot_gets_its_share_of_replicas_and_traffic() -> None:
    assert pilot_replicas(4, 10) == 1 and pilot_replicas(20, 10) == 2 and pilot_replicas(0, 10) == 1
    assert traffic_share(9, 1) == 10 and traffic_share(4, 1) == 20 and traffic_share(4, 4) == 50
    assert traffic_share(0, 0) == 0


def test_a_candidate_is_measured_for_the_duration_then_promoted_then_switched() -> None:
    health = CandidateHealth(ready=1)
    starting = step(PILOTING, CANDIDATE, SPEC, 4, health, None, None, None, NOW)
    assert (starting.verdict, starting.reason, starting.candidate_replicas) == (
        "wait",
        "Starting",
        1,
    )
    early = step(PILOTING, serving(5), SPEC, 4, health, measurement(), measurement(), None, NOW)
    assert early.verdict == "wait" and early.reason == "Measuring"
    later = step(PILOTING, serving(5), SPEC, 4, health, measurement(), measurement(), None, NOW)
    assert later == early  # no clock in the message: no status write per reconcile
    done = step(PILOTING, serving(16), SPEC, 4, health, measurement(), measurement(), None, NOW)
    assert (done.verdict, done.phase, done.candidate_replicas) == ("promote", "Promoting", 4)
    promoting = PILOTING.model_copy(update={"phase": "Promoting"})
    half = step(promoting, serving(17), SPEC, 4, CandidateHealth(ready=3), None, None, None, NOW)
    assert half.verdict == "wait" and half.phase == "Promoting"
    full = step(promoting, serving(18), SPEC, 4, CandidateHealth(ready=4), None, None, None, NOW)
    assert full.verdict == "switch"


def test_an_slo_breach_a_crash_or_an_abort_rolls_back_at_once() -> None:
    health = CandidateHealth(ready=1)
    slow = step(PILOTING, serving(2), SPEC, 4, health, measurement("False"), None, None, NOW)
    assert (slow.verdict, slow.reason, slow.message) == ("rollback", "SLOBreach", "slo False")
    crash = CandidateHealth(ready=0, crash="pod x: container engine restarted 3 times")
    crashed = step(PILOTING, CANDIDATE, SPEC, 4, crash, None, None, None, NOW)
    assert crashed.verdict == "rollback" and crashed.reason == "CrashLoop"
    aborted = step(PILOTING, serving(2), SPEC, 4, health, None, None, "abort", NOW)
    assert aborted.verdict == "rollback" and aborted.reason == "ManualAbort"
    promoted = step(PILOTING, CANDIDATE, SPEC, 4, health, None, None, "promote", NOW)
    assert promoted.verdict == "promote"


def test_the_cost_gate_rolls_back_a_dearer_candidate_and_waits_without_data() -> None:
    health = CandidateHealth(ready=1)
    within = step(
        PILOTING,
        serving(16),
        SPEC,
        4,
        health,
        measurement(cost=10.4),
        measurement(cost=10),
        None,
        NOW,
    )
    assert within.verdict == "promote"
    dear = step(
        PILOTING,
        serving(16),
        SPEC,
        4,
        health,
        measurement(cost=10.6),
        measurement(cost=10),
        None,
        NOW,
    )
    assert dear.verdict == "rollback" and dear.reason == "CostPerTokenWorse"
    unknown = step(
        PILOTING, serving(16), SPEC, 4, health, measurement(cost=None), measurement(), None, NOW
    )
    assert unknown.verdict == "wait" and unknown.reason == "WaitingForMeasurements"
    no_slo_yet = step(
        PILOTING, serving(16), SPEC, 4, health, measurement("Unknown"), None, None, NOW
    )
    assert no_slo_yet.verdict == "wait"
    off = SPEC.model_copy(update={"gates": SPEC.gates.model_copy(update={"cost_per_token": False})})
    assert step(
        PILOTING, serving(16), off, 4, health, measurement(cost=None), None, None, NOW
    ).verdict == ("promote")


def test_an_override_names_its_candidate() -> None:
    assert override({"llmdeploy.io/pilot": "promote/abcd1234"}, CANDIDATE) == "promote"
    assert override({"llmdeploy.io/pilot": "abort/abcd1234"}, CANDIDATE) == "abort"
    assert override({"llmdeploy.io/pilot": "promote/00000000"}, CANDIDATE) is None  # an old one
    assert override({"llmdeploy.io/pilot": "maybe/abcd1234"}, CANDIDATE) is None


def test_a_pod_that_keeps_restarting_is_a_crash_told_without_its_message() -> None:
    pod = {
        "metadata": {"name": "m-abcd1234-x"},
        "status": {
            "containerStatuses": [
                {
                    "name": "engine",
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "secret"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "message": "x"}},
                }
            ]
        },
    }
    told = crash_of(pod)
    assert told is not None and "Error, exit code 1" in told and "secret" not in told
    pod["status"]["containerStatuses"][0]["state"] = {"running": {}}
    assert crash_of(pod) is None  # two restarts and running: not yet a crash loop


# --- decide's pilot path ---

PILOT = {"replicas": 4, "rollout": {"strategy": "Pilot", "pilot": {"duration": "10m"}}}


def answered(
    snap: Snapshot,
    cfg: Any,
    crash: str = "",
    measured: Readings | None = None,
    pending: tuple[PendingPod, ...] = (),
    metrics: MetricsReading | None = None,
    serving_exists: bool = True,
) -> Outcome:
    """decide, with its needs answered: no crash, `pending` pods waiting for GPUs,
    `measured` for every generation, the autoscaler's `metrics` and free GPUs, and whether a
    serving workload the watch does not show exists."""
    outcome = decide(snap, cfg)
    for _ in range(6):
        if not outcome.needs:
            return outcome
        if outcome.needs.serving is not None:
            snap = replace(snap, serving_exists=serving_exists)
        if outcome.needs.queries:
            snap = replace(snap, metrics=metrics or MetricsReading({}))
        if outcome.needs.gpus_in_use is not None:
            snap = replace(snap, gpus_in_use=({}, 0))
        if outcome.needs.pending_pods:
            snap = replace(snap, pending=pending)
        if outcome.needs.crashes_of is not None:
            snap = replace(snap, crash=crash)
        if outcome.needs.measure is not None:
            snap = replace(snap, measured=measured or Readings({}, {}))
        if outcome.needs.generations:
            data = measured or Readings({}, {})
            snap = replace(
                snap, generations_measured={g: data for g, _ in outcome.needs.generations}
            )
        outcome = decide(snap, cfg)
    raise AssertionError(f"still needs {outcome.needs}")


def written(snap: Snapshot, outcome: Outcome, minutes: float = 0) -> Snapshot:
    """What the act left: status written, children applied (by this process, a workload
    keeping its ready replicas), pruned children gone."""
    assert outcome.status is not None
    status = outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    children = dict(snap.children)
    applied = dict(snap.applied)
    for key, _ in outcome.prune:
        children.pop(key)
    for obj in outcome.apply:
        key = (obj["kind"], obj["metadata"]["name"])
        digest = obj["metadata"]["annotations"]["llmdeploy.io/applied-hash"]
        workload = None
        if obj["kind"] == "Deployment":
            before = children.get(key)
            ready_now = before.workload.ready_replicas if before and before.workload else 0
            count = obj["spec"]["replicas"]
            workload = WorkloadStatus(True, count, ready_now, ready_now, True, count)
        children[key] = LiveChild(f"uid-{key[1]}", "u1", digest, "g2", workload)
        applied[key] = (digest, "g2")
    return replace(
        snap,
        body={**snap.body, "status": status},
        children=children,
        applied=applied,
        now=snap.now + timedelta(minutes=minutes),
        crash=None,
        pending=None,
        generations_measured=None,
        serving_exists=None,
    )


def ready(snap: Snapshot, name: str, count: int) -> Snapshot:
    key = ("Deployment", name)
    live = snap.children[key]
    assert live.workload is not None
    workload = replace(live.workload, ready_replicas=count, updated_replicas=count)
    return replace(snap, children={**snap.children, key: replace(live, workload=workload)})


def serving_now(catalog: Catalog, spec: dict[str, Any]) -> Snapshot:
    """A settled object whose status says its replicas are ready."""
    snap, _ = settled(catalog, body(**spec))
    return written(snap, answered(snap, config(catalog)))


def test_a_changed_plan_is_piloted_measured_promoted_and_the_old_generation_removed(
    catalog: Catalog,
) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, PILOT)
    assert snap.body["status"]["rollout"]["current"] == {
        "generation": "",
        "workload": "m",
        "planKey": snap.body["status"]["planKey"],
    }
    running_key = snap.body["status"]["planKey"]
    changed = replace(
        snap, body=body(snap.body["status"], **PILOT, workload={"maxContextLength": 4096})
    )
    started = answered(changed, cfg)
    assert [e.reason for e in started.events] == ["PilotStarted"]
    assert started.prune == ()  # the current generation keeps serving
    # A restarted operator whose watches have not shown the children yet pilots all the same:
    # status says what serves.
    restarted = answered(replace(changed, children={}, applied={}), cfg)
    assert [o["metadata"]["name"] for o in restarted.apply] == [
        o["metadata"]["name"] for o in started.apply
    ]
    [candidate] = started.apply
    name = candidate["metadata"]["name"]
    assert name.startswith("m-") and candidate["spec"]["replicas"] == 1
    labels = candidate["spec"]["template"]["metadata"]["labels"]
    assert (
        labels["llmdeploy.io/generation"] == name[2:] and labels["llmdeploy.io/deployment"] == "m"
    )
    assert candidate["spec"]["selector"]["matchLabels"]["llmdeploy.io/generation"] == name[2:]
    assert started.status is not None and started.status.plan_key == running_key  # still serving
    assert conditions(started)["Progressing"].reason == "PilotPiloting"
    # Serving, but not the spec's plan yet: GitOps tools wait for the pilot's outcome.
    assert conditions(started)["Ready"].status == "False"
    assert conditions(started)["Ready"].reason == "PilotPiloting"
    assert started.status.phase == "Progressing"

    snap = ready(written(changed, started, 1), name, 1)
    up = answered(snap, cfg)
    assert up.status is not None and up.status.rollout is not None
    assert up.status.rollout.candidate is not None and up.status.rollout.candidate.serving_since

    # Ten minutes of the candidate meeting the SLO at the current generation's cost per token.
    snap = written(snap, up, 11)
    due = decide(replace(snap, crash=""), cfg)
    assert [g for g, _ in due.needs.generations] == [name[2:], ""]
    assert 'llmdeploy_io_generation=""' in due.needs.generations[1][1].instant["requests"]
    promoting = answered(snap, cfg, measured=measured_by(HEALTHY))
    assert promoting.status is not None and promoting.status.rollout is not None
    assert promoting.status.rollout.phase == "Promoting", promoting.status.rollout.message
    assert [o["spec"]["replicas"] for o in promoting.apply] == [4]
    assert [e.reason for e in promoting.events] == ["PilotPromoting"]

    snap = ready(written(snap, promoting, 1), name, 4)
    switched = answered(snap, cfg, measured=measured_by(HEALTHY))
    assert [e.reason for e in switched.events] == ["Promoted"]
    assert switched.status is not None and switched.status.plan_key != running_key
    assert switched.requeue_after_s == 0.0

    snap = written(snap, switched)
    settled_again = answered(snap, cfg, measured=measured_by(HEALTHY))
    assert ("Deployment", "m") in [key for key, _ in settled_again.prune]  # the old generation
    assert settled_again.status is not None and settled_again.status.rollout is not None
    assert settled_again.status.rollout.current.workload == name


def test_a_breaching_candidate_is_rolled_back_and_not_retried_unchanged(catalog: Catalog) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, PILOT)
    spec = {**PILOT, "workload": {"maxContextLength": 4096}, "slo": {"ttftMs": 500}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg)
    name = started.apply[0]["metadata"]["name"]
    snap = written(changed, started, 1)
    snap = written(snap, answered(ready(snap, name, 1), cfg), 2)  # serving since
    snap = ready(snap, name, 1)
    breach = answered(snap, cfg, measured=measured_by(HEALTHY))  # 60% within 500 ms
    assert [e.reason for e in breach.events] == ["PilotRolledBack"]
    assert breach.events[0].warning and "SLOBreach" in breach.events[0].message
    assert ("Deployment", name) in [key for key, _ in breach.prune]
    assert conditions(breach)["Degraded"].reason == "PilotRolledBack"
    # Not the spec's plan, and no retry helps until the spec changes: kstatus Failed.
    assert conditions(breach)["Stalled"].status == "True"
    assert conditions(breach)["Ready"].status == "False"
    assert breach.status is not None and breach.status.phase == "Degraded"
    assert breach.status is not None and breach.status.rollout is not None
    assert [f.reason for f in breach.status.rollout.failed] == ["SLOBreach"]

    again = answered(written(snap, breach, 5), cfg)
    assert again.apply == () and again.events == ()  # not retried, told once
    assert conditions(again)["Degraded"].status == "True"
    # Not even once nothing serves (a node lost, a namespace going): never in place.
    assert again.status is not None
    down = again.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    lost = answered(replace(snap, body=body({**down, "readyReplicas": 0}, **spec)), cfg)
    assert lost.apply == () and conditions(lost)["Degraded"].reason == "PilotRolledBack"
    # A new spec is a new plan: piloted again.
    newer = body(
        again.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if again.status
        else {},
        **{**spec, "slo": {"ttftMs": 5000}},
    )
    retried = answered(replace(written(snap, breach, 5), body=newer), cfg)
    assert [e.reason for e in retried.events] == ["PilotStarted"]


def test_rolling_objects_go_out_in_place(catalog: Catalog) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, {"replicas": 4})
    assert "rollout" not in snap.body["status"]
    changed = replace(
        snap, body=body(snap.body["status"], replicas=4, workload={"maxContextLength": 4096})
    )
    outcome = answered(changed, cfg)
    assert [o["metadata"]["name"] for o in outcome.apply if o["kind"] == "Deployment"] == ["m"]


def test_a_candidate_on_a_full_cluster_waits_then_goes_on_with_what_it_got(
    catalog: Catalog,
) -> None:
    cfg = config(catalog)
    spec = {**PILOT, "replicas": 20, "placement": {"pendingTimeout": "5m"}}
    snap = serving_now(catalog, spec)
    changed = replace(
        snap, body=body(snap.body["status"], **{**spec, "workload": {"maxContextLength": 4096}})
    )
    started = answered(changed, cfg)
    [candidate] = started.apply
    name = candidate["metadata"]["name"]
    assert candidate["spec"]["replicas"] == 2
    snap = ready(written(changed, started, 1), name, 1)
    waiting = PendingPod("p2", snap.now, "0/9 nodes: Insufficient nvidia.com/gpu")
    early = answered(snap, cfg, pending=(waiting,))
    assert conditions(early)["CapacityAvailable"].status == "True"  # within the timeout
    assert early.requeue_after_s is not None and early.requeue_after_s <= 300
    late = answered(replace(snap, now=snap.now + timedelta(minutes=6)), cfg, pending=(waiting,))
    capacity = conditions(late)["CapacityAvailable"]
    assert capacity.status == "False" and capacity.message.startswith(f"candidate {name}: ")
    assert late.status is not None and late.status.rollout is not None
    pilot = late.status.rollout.candidate
    assert pilot is not None and pilot.replicas == 1 and pilot.serving_since  # what it got
    assert pilot.capacity_limit == 1  # remembered: its share is not asked for again
    snap = written(snap, late, 1)
    on = answered(snap, cfg)
    assert on.status is not None and on.status.rollout is not None
    assert on.status.rollout.candidate is not None and on.status.rollout.candidate.replicas == 1
    assert conditions(late)["Available"].status == "True"  # the current generation serves on
    assert late.status.phase == "Pending"


ROUTED = {
    **PILOT,
    "routing": {
        "inferencePool": {"endpointPicker": {"service": "picker", "port": 9002}},
        "httpRoute": {"gateway": {"name": "gw"}},
    },
}


def promoted_by_override(snap: Snapshot, cfg: Any, spec: dict[str, Any]) -> tuple[Snapshot, str]:
    """A re-plan to `spec`, piloted and promoted by the annotation, settled after the switch."""
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg)
    name = next(o["metadata"]["name"] for o in started.apply if o["kind"] == "Deployment")
    snap = ready(written(changed, started, 1), name, 1)
    metadata = {
        **snap.body["metadata"],
        "annotations": {"llmdeploy.io/pilot": f"promote/{name[2:]}"},
    }
    snap = replace(snap, body={**snap.body, "metadata": metadata})
    snap = ready(written(snap, answered(snap, cfg), 1), name, 4)  # promoting, then all ready
    snap = written(snap, answered(snap, cfg), 1)  # the switch
    return written(snap, answered(snap, cfg)), name  # the old generation pruned


def test_a_second_pilot_behind_a_route_gets_exactly_its_weight(catalog: Catalog) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, ROUTED)
    snap, first = promoted_by_override(
        snap, cfg, {**ROUTED, "workload": {"maxContextLength": 4096}}
    )
    assert ("Deployment", "m") not in snap.children and ("Deployment", first) in snap.children
    changed = replace(
        snap, body=body(snap.body["status"], **{**ROUTED, "workload": {"maxContextLength": 2048}})
    )
    started = answered(changed, cfg)
    second = next(o["metadata"]["name"] for o in started.apply if o["kind"] == "Deployment")
    # No weight for the candidate's pool before it has a ready pod: the route stays as it was.
    assert [o["kind"] for o in started.apply] == ["Deployment"]
    assert started.status is not None and started.status.rollout is not None
    assert started.status.rollout.traffic_percent == 0
    serving = answered(ready(written(changed, started, 1), second, 1), cfg)
    pools = {
        o["metadata"]["name"]: o["spec"]["selector"]["matchLabels"]
        for o in serving.apply
        if o["kind"] == "InferencePool"
    }
    # The shared pool holds the current generation only while the pilot runs: exact weights.
    assert pools["m"]["llmdeploy.io/generation"] == first[2:]
    assert pools[second]["llmdeploy.io/generation"] == second[2:]
    [route] = [o for o in serving.apply if o["kind"] == "HTTPRoute"]
    refs = [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]]
    # Its share of the replicas (1 of 5): both generations serve the same load per replica.
    assert refs == [("m", 80), (second, 20)]
    assert serving.status is not None and serving.status.rollout is not None
    assert serving.status.rollout.traffic_percent == 20


def test_a_pilot_replaced_by_an_infeasible_spec_leaves_no_weight_on_its_pool(
    catalog: Catalog,
) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, ROUTED)
    snap, _ = promoted_by_override(snap, cfg, {**ROUTED, "workload": {"maxContextLength": 4096}})
    spec = {**ROUTED, "workload": {"maxContextLength": 2048}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg)
    name = next(o["metadata"]["name"] for o in started.apply if o["kind"] == "Deployment")
    snap = ready(written(changed, started, 1), name, 1)
    snap = written(snap, answered(snap, cfg), 1)  # serving: the route weighs its pool
    assert ("InferencePool", name) in snap.children
    impossible = {**spec, "placement": {"allowedGpus": ["nvidia-h200-141gb"]}}
    outcome = answered(replace(snap, body=body(snap.body["status"], **impossible)), cfg)
    assert conditions(outcome)["Planned"].reason == "NoFeasiblePlan"
    [route] = [o for o in outcome.apply if o["kind"] == "HTTPRoute"]
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [
        ("m", 100)
    ]
    [pool] = [o for o in outcome.apply if o["kind"] == "InferencePool"]
    assert "llmdeploy.io/generation" not in pool["spec"]["selector"]["matchLabels"]
    pruned = {key for key, _ in outcome.prune}
    assert {("Deployment", name), ("InferencePool", name)} <= pruned


def test_a_name_too_long_for_a_generation_is_invalid_never_in_place(catalog: Catalog) -> None:
    cfg = config(catalog)

    def named(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        b = body(status, **spec)
        return {**b, "metadata": {**b["metadata"], "name": "m" * 60}}

    snap, _ = settled(catalog, named(**PILOT))
    snap = written(snap, answered(snap, cfg))
    assert snap.body["status"]["readyReplicas"] == 4
    changed = named(snap.body["status"], **PILOT, workload={"maxContextLength": 4096})
    outcome = answered(replace(snap, body=changed), cfg)
    assert outcome.apply == () and outcome.prune == ()
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert "metadata.name" in outcome.events[0].message


def test_an_init_step_that_cannot_pull_or_keeps_failing_is_a_crash() -> None:
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "initContainerStatuses": [
                {"name": "download-model", "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff", "message": "x"}}}
            ]
        },
    }  # fmt: skip
    told = crash_of(pod)
    assert told is not None and "download-model cannot start (ImagePullBackOff)" in told
    pod["status"]["initContainerStatuses"][0] = {
        "name": "download-model",
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"reason": "Error", "exitCode": 1}},
    }
    assert "download-model restarted 4 times (Error, exit code 1)" in (crash_of(pod) or "")


SCALED = {
    **PILOT,
    "replicas": 2,
    "scaling": {
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 8,
        "metrics": [{"type": "queueDepth", "target": 4}],
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 20, "periodSeconds": 15}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 20, "periodSeconds": 15}],
            },
        },
    },
}


def test_the_autoscaler_counts_both_generations_during_a_pilot(catalog: Catalog) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, SCALED)
    pilot = {"strategy": "Pilot", "pilot": {"duration": "10m", "trafficPercent": 50}}
    spec = {**SCALED, "rollout": pilot, "workload": {"maxContextLength": 4096}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg)
    name = next(o["metadata"]["name"] for o in started.apply if o["kind"] == "Deployment")
    snap = ready(written(changed, started, 1), name, 1)
    # 18 requests queued over 3 ready replicas, 2 of them the serving generation's: its share
    # is 12, 3 replicas at 4 each (not the 5 that 18 would ask of it alone).
    outcome = answered(snap, cfg, metrics=MetricsReading({"queueDepth": 18.0}))
    assert outcome.scale_to == 3 and "2 of 3 replicas" in outcome.scale_reason
    assert outcome.scale_workload == ("Deployment", "m", 3)  # its template left as it runs
    assert all(o["metadata"]["name"] != "m" for o in outcome.apply)
    assert outcome.status is not None and outcome.status.autoscaler is not None
    assert outcome.status.autoscaler["metrics"]["queueDepth"] == 18.0  # what was read
    assert conditions(outcome)["MetricsAvailable"].status == "True"
    # The object's /scale written: the candidate's count follows at its share.
    snap = written(snap, outcome, 1)
    snap = replace(snap, body=body(snap.body["status"], **{**spec, "replicas": 3}))
    grown = answered(snap, cfg, metrics=MetricsReading({"queueDepth": 18.0}))
    candidate = next(o for o in grown.apply if o["metadata"]["name"] == name)
    assert candidate["spec"]["replicas"] == 2  # 50% of 3
    # Idle for longer than scaleToZero asks: down to the minimum, never to zero while the
    # pilot compares the generations.
    status = {**snap.body["status"], "autoscaler": {"state": {"idleSince": NOW.timestamp() - 3600}}}
    scaling = {**SCALED["scaling"], "scaleToZero": {"idleSeconds": 300}}
    snap = replace(snap, body=body(status, **{**spec, "replicas": 3, "scaling": scaling}))
    idle = MetricsReading({"queueDepth": 0.0, "runningRequests": 0.0})
    assert answered(snap, cfg, metrics=idle).scale_to == 1


def test_a_rolled_back_object_still_scales_its_serving_generation(catalog: Catalog) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, SCALED)
    spec = {**SCALED, "workload": {"maxContextLength": 4096}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg)
    name = next(o["metadata"]["name"] for o in started.apply if o["kind"] == "Deployment")
    snap = ready(written(changed, started, 1), name, 1)
    metadata = {**snap.body["metadata"], "annotations": {"llmdeploy.io/pilot": f"abort/{name[2:]}"}}
    snap = replace(snap, body={**snap.body, "metadata": metadata})
    aborted = answered(snap, cfg)
    assert aborted.status is not None and aborted.status.rollout is not None
    assert aborted.status.rollout.phase == "RolledBack"
    snap = written(snap, aborted, 1)
    busy = answered(snap, cfg, metrics=MetricsReading({"queueDepth": 10.0}))
    assert busy.scale_to == 3 and busy.scale_workload == ("Deployment", "m", 3)
    assert busy.apply == ()  # the serving template is never re-applied from a rolled-back spec


def test_an_override_left_from_an_earlier_pilot_of_the_same_plan_does_not_decide(
    catalog: Catalog,
) -> None:
    left = CANDIDATE.model_copy(update={"stale_override": "promote/abcd1234"})
    assert override({"llmdeploy.io/pilot": "promote/abcd1234"}, left) is None
    assert override({"llmdeploy.io/pilot": "abort/abcd1234"}, left) == "abort"  # a new one
    cfg = config(catalog)
    snap = serving_now(catalog, PILOT)
    changed = replace(
        snap, body=body(snap.body["status"], **PILOT, workload={"maxContextLength": 4096})
    )
    gen = answered(changed, cfg).apply[0]["metadata"]["name"][2:]
    metadata = {**changed.body["metadata"], "annotations": {"llmdeploy.io/pilot": f"promote/{gen}"}}
    started = answered(replace(changed, body={**changed.body, "metadata": metadata}), cfg)
    assert started.status is not None and started.status.rollout is not None
    candidate = started.status.rollout.candidate
    assert candidate is not None and candidate.stale_override == f"promote/{gen}"


def test_a_garbled_rollout_status_keeps_the_promoted_workload_serving(catalog: Catalog) -> None:
    cfg = config(catalog)
    snap, name = promoted_by_override(
        serving_now(catalog, PILOT), cfg, {**PILOT, "workload": {"maxContextLength": 4096}}
    )
    garbled = {**snap.body["status"], "rollout": "written by hand"}
    outcome = answered(replace(snap, body={**snap.body, "status": garbled}), cfg)
    assert outcome.apply == () and outcome.prune == ()  # no switch back to a first workload
    assert outcome.status is not None and outcome.status.rollout is not None
    assert outcome.status.rollout.current.workload == name


def test_a_deleted_serving_workload_promotes_the_candidate_or_says_nothing_serves(
    catalog: Catalog,
) -> None:
    cfg = config(catalog)
    snap = serving_now(catalog, PILOT)
    spec = {**PILOT, "workload": {"maxContextLength": 4096}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg)
    name = started.apply[0]["metadata"]["name"]
    snap = ready(written(changed, started, 1), name, 1)
    deleted = replace(snap, children={k: v for k, v in snap.children.items() if k[1] != "m"})
    asked = decide(deleted, cfg)
    assert asked.needs.serving == "m"  # not shown by the watch: read fresh
    restarted = answered(deleted, cfg)  # it exists: a restart whose watch is behind
    assert restarted.status is not None and restarted.status.rollout is not None
    assert restarted.status.rollout.phase == "Piloting"
    gone = answered(deleted, cfg, serving_exists=False)
    assert gone.status is not None and gone.status.rollout is not None
    assert gone.status.rollout.phase == "Promoting", gone.status.rollout.message
    assert "serving workload is gone" in gone.status.rollout.message
    assert [o["spec"]["replicas"] for o in gone.apply if o["kind"] == "Deployment"] == [4]
    # Rolled back, then the serving workload deleted: the rolled-back plan is still not
    # applied, and the status says that nothing serves.
    metadata = {**snap.body["metadata"], "annotations": {"llmdeploy.io/pilot": f"abort/{name[2:]}"}}
    aborted = replace(snap, body={**snap.body, "metadata": metadata})
    snap = written(aborted, answered(aborted, cfg), 1)
    snap = replace(snap, children={k: v for k, v in snap.children.items() if k[1] != "m"})
    lost = answered(snap, cfg, serving_exists=False)
    assert lost.apply == ()
    degraded = conditions(lost)["Degraded"]
    assert degraded.reason == "PilotRolledBack" and "m is gone: nothing serves" in degraded.message
    assert conditions(lost)["Ready"].status == "False"
