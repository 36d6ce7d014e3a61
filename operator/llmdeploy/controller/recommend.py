"""Measure what runs against its plan (status.observed, SLOMet, PlanDrift), learn a latency
calibration from it, and recommend a re-plan (status.recommendation)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmdeploy.api.status import (
    Calibration,
    Condition,
    Observed,
    Recommendation,
    RecommendationBasis,
)
from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.controller.planning import cost_at, desired_replicas, plan_for_cluster
from llmdeploy.controller.state import Config, Event, Needs, Snapshot, owner_of
from llmdeploy.controller.status import (
    parse_timestamp,
    plan_summary,
    read_stored,
    recorded_served_since,
    rfc3339,
)
from llmdeploy.measure.calibration import SMOOTHING, calibrated, latency_calibration
from llmdeploy.measure.observed import Verdict, observe, plan_drift, slo_met
from llmdeploy.measure.queries import measurement_queries
from llmdeploy.render import (
    DEFAULT_PROMETHEUS,
    prometheus_endpoint,
)
from llmdeploy.sizing import (
    Plan,
    SpecError,
)
from llmdeploy.sizing.inventory import (
    Inventory,
)

# The status of a measured condition whose transition to it is a Warning event.
WARN_ON = {"SLOMet": "False", "PlanDrift": "True", "Routable": "False"}


def measurement(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    plan: Plan,
    status: Mapping[str, Any],
    generation: int,
    serving: bool,
) -> Needs | tuple[Observed | None, list[tuple[str, Verdict]], float | None]:
    """status.observed, the SLOMet and PlanDrift verdicts, and the seconds until the next
    measurement is due; or the measurement to take first. A measurement is due when status
    has none, or it is an interval old, or the spec changed since (the SLO it was judged
    against may have); otherwise the one in status is reused. Nothing is measured before the
    workload exists."""
    scaling = resource.spec.scaling
    endpoint = prometheus_endpoint(scaling)

    def unknown(reason: str, why: str) -> list[tuple[str, Verdict]]:
        verdict = Verdict(status="Unknown", reason=reason, message=f"not measured: {why}")
        return [("SLOMet", verdict), ("PlanDrift", verdict)]

    if endpoint not in config.prometheus:
        why = (
            f"no Prometheus endpoint named {endpoint} in the operator's settings"
            if endpoint != DEFAULT_PROMETHEUS
            else "no Prometheus configured (LLMDEPLOY_PROMETHEUS_URL)"
        )
        return None, unknown("NoPrometheus", why), None
    engine = config.catalog.engines[resource.spec.engine.name]
    if engine.metrics_for(plan.engine_version) is None:
        why = f"{engine.display_name} {plan.engine_version} serves no Prometheus metrics"
        return None, unknown("NoEngineMetrics", why), None
    if not serving:
        return None, unknown("NotDeployed", "the engines' workload does not exist yet"), None
    now = snap.now.timestamp()
    if snap.measured is not None:
        # When the engines first served, as the first measurement that saw them recorded; until
        # one has, they may first serve inside this window.
        recorded = recorded_served_since(status)
        # The record is of the engine whose metric names were read: another one's (a spec moved
        # from vLLM to TensorRT-LLM) are new series, first served when its engines did.
        if (status.get("plan") or {}).get("engine") not in (None, plan.engine):
            recorded = None
        observed = observe(
            snap.measured,
            plan=plan,
            catalog=config.catalog,
            slo=resource.spec.slo,
            window_s=config.measure_window_s,
            end=now,
            served_since=recorded if recorded is not None else now,
        )
        age = 0.0
    else:
        stored = read_stored(Observed, status.get("observed"))
        end = None if stored is None else parse_timestamp(stored.end)
        age = math.inf if end is None else now - end
        fresh = 0 <= age < config.measure_interval_s
        if stored is None or not fresh or status.get("observedGeneration") != generation:
            owner = owner_of(snap.body)
            queries = measurement_queries(
                owner.namespace, owner.name, resource.spec.engine.name, config.measure_window_s
            )
            return Needs(measure=queries, prometheus=endpoint)
        observed = stored
    verdicts = [
        ("SLOMet", slo_met(observed, resource.spec.slo)),
        ("PlanDrift", plan_drift(observed, resource.spec.workload)),
    ]
    return observed, verdicts, max(1.0, math.ceil(config.measure_interval_s - age))


def stored_calibration(resource: LLMDeployment, status: Mapping[str, Any]) -> Calibration | None:
    if resource.spec.planning.calibration == "off":
        return None
    return read_stored(Calibration, status.get("calibration"))


# A recommendation stands while the smoothed measurement stays this close to the one it was
# made for: wider than PlanDrift's band, so that noise around a measurement made at one of its
# extremes does not make it flap (tests/unit/test_decide.py, thirty noisy minutes).
WORKLOAD_BAND = 0.35
RATIO_BAND = 0.25


def learned(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    plan: Plan,
    status: Mapping[str, Any],
    observed: Observed | None,
    excluded: Sequence[str],
) -> tuple[Calibration | None, Recommendation | None, Event | None]:
    """status.calibration and status.recommendation after this measurement, and the event of
    a new recommendation. Only a new, full measurement changes them; without one (no
    Prometheus, partial data) nothing is recommended."""
    calibration = stored_calibration(resource, status)
    basis = recommendation_basis(observed, calibration)
    if observed is None or basis is None:
        return calibration, None, None
    stored = read_stored(Recommendation, status.get("recommendation"))
    if stored is not None:  # the running plan may have changed since
        stored = _against(stored, plan, desired_replicas(resource, plan))
    if snap.measured is None:  # the measurement in status, reused
        return calibration, stored, None
    if resource.spec.planning.calibration == "auto" and _rolled_out_before(status, observed):
        calibration = calibrated(calibration, observed, resource.spec, plan, config.catalog)
        basis = recommendation_basis(observed, calibration) or basis
    if stored is not None:
        # Noise moves the smoothed measurement little; a lasting change moves it out of the
        # band at once, and the new recommendation is for what is measured now.
        smoothed = _smoothed(stored.measured, basis)
        if _close(stored.basis, smoothed):
            return calibration, stored.model_copy(update={"measured": smoothed}), None
    made = recommend(
        resource,
        plan,
        basis,
        calibration,
        catalog=config.catalog,
        inventory=snap.inventory,
        provisionable=config.provisionable,
        excluded=excluded,
        lock=config.lock,
        now=snap.now,
    )
    if stored is not None and _layout(stored) == _layout(made):
        return calibration, made, None
    if stored is None and made.same_as_running:
        return calibration, made, None
    return calibration, made, Event("Recommended", made.describe())


def recommendation_basis(
    observed: Observed | None, calibration: Calibration | None
) -> RecommendationBasis | None:
    """What a recommendation is made for: a measurement's workload and the calibration; None
    when the measurement lacks one of its figures."""
    if observed is None:
        return None
    rate, inputs, outputs = (
        observed.requests_per_second,
        observed.input_tokens_mean,
        observed.output_tokens_mean,
    )
    if rate is None or inputs is None or outputs is None or rate <= 0:
        return None
    return RecommendationBasis(
        requests_per_second=rate,
        input_tokens=inputs,
        output_tokens=outputs,
        ttft_ratio=calibration.ttft_ratio if calibration else 1.0,
        tpot_ratio=calibration.tpot_ratio if calibration else 1.0,
    )


def _rolled_out_before(status: Mapping[str, Any], observed: Observed) -> bool:
    """Whether the running layout finished rolling out before the measurement's window
    began: only then is every latency in it the layout the plan predicts for (not the one
    before a change, nor a rollout's cold starts)."""
    progressing = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None
    )
    if progressing is None or progressing.get("status") != "False":
        return False
    done, end = (
        parse_timestamp(str(progressing.get("lastTransitionTime") or "")),
        parse_timestamp(observed.end),
    )
    return done is not None and end is not None and done <= end - observed.window_seconds


def _against(r: Recommendation, running: Plan, replicas: int) -> Recommendation:
    """`r`'s comparison with the plan running now, at the replicas wanted now."""
    if not r.feasible:
        return r
    same = _layout(r) == _layout(running, replicas)
    change = round((r.cost_per_hour or 0.0) - cost_at(running, replicas), 2)
    return r.model_copy(update={"same_as_running": same, "cost_per_hour_change": change})


def _smoothed(before: RecommendationBasis, sample: RecommendationBasis) -> RecommendationBasis:
    """The measured workload smoothed as the calibration is (its ratios are already)."""

    def towards(a: float, b: float) -> float:
        return round(a + SMOOTHING * (b - a), 4)

    return sample.model_copy(
        update={
            "requests_per_second": towards(before.requests_per_second, sample.requests_per_second),
            "input_tokens": towards(before.input_tokens, sample.input_tokens),
            "output_tokens": towards(before.output_tokens, sample.output_tokens),
        }
    )


def _close(made_for: RecommendationBasis, now: RecommendationBasis) -> bool:
    def within(a: float, b: float, tolerance: float) -> bool:
        return abs(b / a - 1) <= tolerance if a > 0 else b == a

    return (
        within(made_for.requests_per_second, now.requests_per_second, WORKLOAD_BAND)
        and within(made_for.input_tokens, now.input_tokens, WORKLOAD_BAND)
        and within(made_for.output_tokens, now.output_tokens, WORKLOAD_BAND)
        and within(made_for.ttft_ratio, now.ttft_ratio, RATIO_BAND)
        and within(made_for.tpot_ratio, now.tpot_ratio, RATIO_BAND)
    )


def _layout(r: Recommendation | Plan, replicas: int | None = None) -> tuple[Any, ...]:
    """What runs: SKU, GPUs, format, parallelism and replicas (a plan's, or `replicas`)."""
    return (
        r.gpu,
        r.gpu_count,
        r.quantization,
        r.tensor_parallel,
        r.pipeline_parallel,
        r.expert_parallel or 1,  # a plan made before the field: experts TP-split, as EP 1
        r.replicas if replicas is None else replicas,
    )


def recommend(
    resource: LLMDeployment,
    running: Plan,
    basis: RecommendationBasis,
    calibration: Calibration | None,
    *,
    catalog: Catalog,
    inventory: Inventory,
    provisionable: set[str] | None,
    excluded: Sequence[str],
    lock: ImageLock,
    now: datetime,
) -> Recommendation:
    """The plan for the measured workload, with the calibration, against the running one
    (the operator's status.recommendation and `llmdeploy report`'s)."""
    workload = resource.spec.workload.model_copy(
        update={
            "requests_per_second": round(basis.requests_per_second, 3),
            "input_tokens": max(1, round(basis.input_tokens)),
            "output_tokens": max(1, round(basis.output_tokens)),
        }
    )
    spec = resource.spec.model_copy(update={"workload": workload, "replicas": None})
    since = rfc3339(now)
    try:
        plan = plan_for_cluster(
            resource.model_copy(update={"spec": spec}),
            catalog,
            inventory,
            provisionable,
            excluded,
            lock,
            latency_calibration(calibration),
        )
    except SpecError as exc:
        plan = Plan(feasible=False, model=running.model, engine=running.engine, reasons=[str(exc)])
    if not plan.feasible:
        return Recommendation(
            feasible=False,
            summary="no plan fits the measured workload: " + "; ".join(plan.reasons),
            same_as_running=False,
            basis=basis,
            measured=basis,
            since=since,
        )
    made = Recommendation(
        feasible=True,
        summary=plan_summary(plan),
        gpu=plan.gpu,
        gpu_count=plan.gpu_count,
        quantization=plan.quantization,
        tensor_parallel=plan.tensor_parallel,
        pipeline_parallel=plan.pipeline_parallel,
        expert_parallel=plan.expert_parallel,
        replicas=plan.replicas,
        cost_per_hour=plan.cost_per_hour,
        estimated_ttft_ms=plan.estimated_ttft_ms,
        estimated_tpot_ms=plan.estimated_tpot_ms,
        same_as_running=False,
        basis=basis,
        measured=basis,
        since=since,
    )
    return _against(made, running, desired_replicas(resource, running))


def verdict_condition(type_: str, verdict: Verdict, generation: int) -> Condition:
    return Condition(
        type=type_,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        observed_generation=generation,
    )


def transition_event(
    type_: str, verdict: Verdict, previous: Sequence[Mapping[str, Any]]
) -> Event | None:
    """An event when the condition's status changes (a condition not yet in status counts as
    Unknown): not on every refresh of its numbers."""
    before = next((c.get("status") for c in previous if c.get("type") == type_), "Unknown")
    if before == verdict.status:
        return None
    message = f"{type_}={verdict.status} ({verdict.reason}): {verdict.message}"
    return Event(type_, message, WARN_ON[type_] == verdict.status)
