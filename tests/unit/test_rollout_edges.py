"""Edge cases of pilots (docs/rollouts.md): operator-mode autoscaling while a candidate loads
or promotes, the GPU cap's count of serving replicas, a stale override given again,
scale-to-zero after a rollback and in keda mode, the phase of an apply that failed mid-pilot."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmdeploy.autoscale.decision import MetricsReading
from llmdeploy.catalog import Catalog
from llmdeploy.controller.decide import decide
from llmdeploy.controller.state import Snapshot
from llmdeploy.measure.results import Readings
from tests.unit.test_rollout import (
    NOW,
    SCALED,
    answered,
    body,
    conditions,
    config,
    ready,
    serving_now,
    written,
)


def _with_annotation(snap: Snapshot, value: str) -> Snapshot:
    metadata = {**snap.body["metadata"], "annotations": {"llmdeploy.io/pilot": value}}
    return replace(snap, body={**snap.body, "metadata": metadata})


def _piloting(
    catalog: Catalog, running: dict[str, Any], metrics: MetricsReading | None = None
) -> tuple[Snapshot, dict[str, Any], str]:
    """`running` serving with all its replicas ready, re-planned (a context length change)
    into a pilot whose candidate has one ready replica: the snapshot, the new spec, and the
    candidate's workload."""
    cfg = config(catalog)
    snap = serving_now(catalog, running)
    snap = ready(snap, "m", snap.children[("Deployment", "m")].workload.replicas)  # type: ignore[union-attr]
    spec = {**running, "workload": {"maxContextLength": 4096}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    started = answered(changed, cfg, metrics=metrics)
    name = next(o["metadata"]["name"] for o in started.apply if o["kind"] == "Deployment")
    return ready(written(changed, started, 1), name, 1), spec, name


def test_promoting_counts_only_the_candidate_replicas_that_take_requests(catalog: Catalog) -> None:
    """No HTTPRoute: the Service splits requests over ready pods. While promoting, 3 of the
    candidate's 4 replicas still load (or wait for GPUs): it takes 1 in 5 requests, not half."""
    cfg = config(catalog)
    steady = MetricsReading({"queueDepth": 20.0})  # 16 on the 4 serving replicas: at target
    snap, _, name = _piloting(catalog, {**SCALED, "replicas": 4}, steady)
    snap = _with_annotation(snap, f"promote/{name[2:]}")
    promoting = answered(snap, cfg, metrics=steady)
    assert promoting.status is not None and promoting.status.rollout is not None
    assert promoting.status.rollout.phase == "Promoting"
    snap = written(snap, promoting, 1)  # the candidate asked for 4, 1 of them ready
    later = answered(snap, cfg, metrics=steady)
    assert later.status is not None and later.status.rollout is not None
    assert later.status.rollout.phase == "Promoting"
    # 20 requests over 5 ready pods: the serving generation carries 16, 4 per replica, its
    # target: nothing to scale. Counting the 3 loading candidate replicas halves its share.
    assert later.scale_to is None, later.scale_reason


def test_an_override_left_from_an_earlier_pilot_can_be_given_again(catalog: Catalog) -> None:
    """docs/rollouts.md: an annotation already on the object when the pilot began is ignored;
    removed and written again, the same value promotes this pilot."""
    cfg = config(catalog)
    snap = serving_now(catalog, {**SCALED, "scaling": None})
    spec = {**SCALED, "scaling": None, "workload": {"maxContextLength": 4096}}
    changed = replace(snap, body=body(snap.body["status"], **spec))
    gen = answered(changed, cfg).apply[0]["metadata"]["name"][2:]
    changed = _with_annotation(changed, f"promote/{gen}")  # left from an earlier pilot
    started = answered(changed, cfg)
    name = f"m-{gen}"
    snap = ready(written(changed, started, 1), name, 1)
    # The user removes it, then writes it again for this pilot.
    snap = _with_annotation(snap, "")
    snap = written(snap, answered(snap, cfg), 1)
    snap = _with_annotation(snap, f"promote/{gen}")
    again = answered(snap, cfg)
    assert again.status is not None and again.status.rollout is not None
    assert again.status.rollout.phase == "Promoting", again.status.rollout.message


def test_a_rolled_back_object_scales_to_zero_when_idle(catalog: Catalog) -> None:
    """docs/rollouts.md: scale-to-zero waits while a pilot runs, not after a rollback, whose
    state lasts until the spec changes."""
    cfg = config(catalog)
    scaling = {**SCALED["scaling"], "scaleToZero": {"idleSeconds": 300}}
    snap, _, name = _piloting(catalog, {**SCALED, "scaling": scaling})
    snap = _with_annotation(snap, f"abort/{name[2:]}")
    aborted = answered(snap, cfg)
    assert aborted.status is not None and aborted.status.rollout is not None
    assert aborted.status.rollout.phase == "RolledBack"
    snap = written(snap, aborted, 1)
    status = {**snap.body["status"], "autoscaler": {"state": {"idleSince": NOW.timestamp() - 3600}}}
    snap = replace(snap, body={**snap.body, "status": status})
    idle = MetricsReading({"queueDepth": 0.0, "runningRequests": 0.0})
    outcome = answered(snap, cfg, metrics=idle)
    assert conditions(outcome)["Stalled"].status == "True"
    assert outcome.scale_to == 0, outcome.scale_reason


KEDA = {
    **SCALED,
    "scaling": {**SCALED["scaling"], "mode": "keda", "scaleToZero": {"idleSeconds": 300}},
}


def test_keda_scaling_to_zero_mid_pilot_does_not_empty_the_serving_generation(
    catalog: Catalog,
) -> None:
    """docs/rollouts.md: "A pilot never scales to zero". In keda mode the ScaledObject writes
    spec.replicas 0 through the object's /scale when idle: the serving workload is held at one
    replica while the candidate runs (else a promotion would switch at once, nothing ready)."""
    cfg = config(catalog)
    snap, spec, _ = _piloting(catalog, KEDA)
    # KEDA: idle for the cooldown, spec.replicas 0.
    snap = replace(snap, body=body(snap.body["status"], **{**spec, "replicas": 0}))
    outcome = answered(snap, cfg)
    assert outcome.scale_workload == ("Deployment", "m", 1), outcome.scale_workload


def test_an_apply_failure_mid_pilot_reads_degraded_in_the_phase_too(catalog: Catalog) -> None:
    """docs/gitops.md: ApplyFailed is phase Degraded, during a pilot as outside one."""
    cfg = config(catalog)
    snap, _, _ = _piloting(catalog, {**SCALED, "scaling": None})
    failed = answered(replace(snap, error="apply Deployment m-x: forbidden"), cfg)
    assert conditions(failed)["Degraded"].status == "True"
    assert failed.status is not None and failed.status.phase == "Degraded"


def test_the_gpu_cap_counts_the_serving_generations_pods_only(catalog: Catalog) -> None:
    """The candidate's pods hold GPUs, but they are not the serving generation's replicas:
    decide asks for the pods of the serving generation (the first workload's carry no
    generation label) to count as placed."""
    snap, _, _ = _piloting(catalog, SCALED)
    asked: list[str | None] = []
    outcome = decide(
        replace(snap, metrics=MetricsReading({"queueDepth": 60.0}), crash=""), config(catalog)
    )
    for _ in range(6):
        if not outcome.needs:
            break
        asked.append(outcome.needs.gpus_in_use)
        snap = replace(
            snap,
            metrics=MetricsReading({"queueDepth": 60.0}),
            crash="",
            serving_exists=True,
            gpus_in_use=({f"l4-{i}": 1 for i in range(4)}, 2)
            if outcome.needs.gpus_in_use is not None
            else snap.gpus_in_use,
            generations_measured={g: Readings({}, {}) for g, _ in outcome.needs.generations}
            or snap.generations_measured,
        )
        outcome = decide(snap, config(catalog))
    assert "" in asked  # the first workload's generation
    # 2 serving pods placed and no GPU free: hold at 2, not a third pod no GPU can take.
    assert outcome.scale_to is None, outcome.scale_reason
