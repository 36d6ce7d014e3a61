"""The autoscaling decision: pure, deterministic, with state that survives restarts.

HPA semantics: per metric, desired = ceil(ready x value / target) unless within tolerance; the
max over metrics; the most conservative recommendation of the stabilization window; rate limits
from the policies over their periods; min/max clamp; scale-up capped by what can be scheduled.
Replicas still loading are not capacity. Missing, stale or NaN data holds the current count:
never scale down on data one does not have.

Scale to zero (spec.scaleToZero) is a rule beside HPA's: engines that report no running and no
waiting requests for the whole idle period go to zero; at zero there are no engine metrics, so
only the activation query (or a write to /scale, which changes `current_replicas`) brings
replicas back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from llmdeploy.api.types import (
    ScaleToZeroSpec,
    ScalingMetric,
    ScalingRules,
    ScalingSpec,
    to_camel,
)
from llmdeploy.autoscale.promql import in_spec_units, query_target

# Metrics whose value is a total over ready replicas, compared per replica.
PER_REPLICA = {"queueDepth", "runningRequests"}
# What "idle" is read from when scaling to zero: both must be present and 0.
IDLE_SIGNALS = ("runningRequests", "queueDepth")


class AutoscalerState(BaseModel):
    """What the decision remembers between runs; stored in the object's status."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    recommendations: list[tuple[float, int]] = Field(
        default_factory=list, description="(time, recommended replicas) within the windows."
    )
    scale_events: list[tuple[float, int]] = Field(
        default_factory=list, description="(time, replica change) within the policy periods."
    )
    last_scale_time: float | None = None
    idle_since: float | None = Field(
        default=None, description="Since when the engines have reported no requests at all."
    )
    history_since: float | None = Field(
        default=None,
        description="Since when the recommendations have been kept without a gap longer "
        "than the windows: the first reading, as for Kubernetes HPA when it first sees an "
        "object. No scale-down before a whole scale-down window of them.",
    )


@dataclass(frozen=True, slots=True)
class Observation:
    """One reading. `values[metric type]`: a total for per-replica metrics, else the average
    over ready replicas; None when missing, stale or NaN."""

    now: float
    current_replicas: int
    ready_replicas: int
    values: dict[str, float | None]
    schedulable_replicas: int | None = None  # how many replicas the GPUs can hold; None: any
    activation: float | None = None  # scaleToZero's activation metric, read only at zero


@dataclass(frozen=True, slots=True)
class MetricsReading:
    """What Prometheus answered: a value per query (None: missing, stale, NaN or
    unreachable), and why there is no data."""

    values: dict[str, float | None]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    desired_replicas: int
    reason: str
    metrics_available: bool
    state: AutoscalerState
    capped_by_capacity: bool = False
    at_zero: bool = False  # decided at zero replicas: engine metrics cannot exist


def serving_share(
    values: dict[str, float | None], serving: int, beside: int
) -> dict[str, float | None]:
    """The readings as a pilot's serving generation's own, its `serving` replicas beside the
    candidate's `beside`: the routing splits the requests by replicas (docs/rollouts.md), so
    the serving generation carries that share of every total; averages per replica stay as
    they are. The count decided is then the serving generation's, and the candidate's
    follows it at its traffic percent."""
    share = serving / (serving + beside) if serving + beside else 1.0
    return {t: v * share if t in PER_REPLICA and v is not None else v for t, v in values.items()}


def _proposal(metric: ScalingMetric, value: float, ready: int, tolerance: float) -> int | None:
    """Replicas one metric asks for, or None when within tolerance."""
    target = query_target(metric.type, metric.target)
    ratio = value / (target * max(ready, 1)) if metric.type in PER_REPLICA else value / target
    if abs(ratio - 1) <= tolerance:
        return None
    return max(0, math.ceil(max(ready, 1) * ratio - 1e-9)) if ready else math.ceil(ratio)


def _rate_limit(
    rules: ScalingRules, events: Sequence[tuple[float, int]], now: float, current: int, up: bool
) -> int:
    """The furthest the policies allow from `current` in this direction."""
    if rules.select_policy == "Disabled":
        return current
    limits = []
    for policy in rules.policies:
        changed = sum(d for t, d in events if now - t < policy.period_seconds and (d > 0) == up)
        start = current - changed  # replicas when the period began
        if policy.type == "Pods":
            limit = start + policy.value if up else start - policy.value
        elif up:
            limit = math.ceil(start * (1 + policy.value / 100))
        else:
            limit = math.floor(start * (1 - policy.value / 100))
        limits.append(limit)
    pick = max if (rules.select_policy == "Max") == up else min
    return int(pick(limits))


def decide(spec: ScalingSpec, obs: Observation, state: AutoscalerState) -> Decision:
    """`spec` is the effective policy (autoscale.policy.effective_scaling)."""
    behavior, metrics = spec.behavior, spec.metrics
    assert behavior is not None and metrics, "use effective_scaling() first"
    current = obs.current_replicas
    windows = max(
        behavior.scale_up.stabilization_window_seconds,
        behavior.scale_down.stabilization_window_seconds,
    )
    periods = max(
        p.period_seconds for r in (behavior.scale_up, behavior.scale_down) for p in r.policies
    )
    recommendations = [(t, n) for t, n in state.recommendations if obs.now - t <= windows]
    events = [(t, d) for t, d in state.scale_events if obs.now - t <= periods]
    # A history whose recommendations all left the windows is gone: the next reading starts
    # one (a state stored before the field also starts anew: one more window to wait).
    history_since = state.history_since if recommendations else None

    stz = spec.scale_to_zero
    if stz is not None and current == 0:
        return _from_zero(spec, stz, obs, recommendations, events, state.last_scale_time)
    idle_since = _idle_since(spec, obs, state)
    if stz is not None and idle_since is not None and obs.now - idle_since >= stz.idle_seconds:
        events.append((obs.now, -current))
        idle = f"{obs.now - idle_since:.0f}s"
        return Decision(
            0,
            f"{current} -> 0: no running or waiting requests for {idle} "
            f"(scaleToZero.idleSeconds {stz.idle_seconds})",
            True,
            AutoscalerState(
                recommendations=recommendations,
                scale_events=events,
                last_scale_time=obs.now,
                history_since=history_since,
            ),
        )

    values = [obs.values.get(m.type) for m in metrics]
    missing = [m.type for m, v in zip(metrics, values, strict=True) if _missing(v)]
    if missing:
        held = AutoscalerState(
            recommendations=recommendations,
            scale_events=events,
            last_scale_time=state.last_scale_time,
            history_since=history_since,
        )
        return Decision(
            current, f"holding {current}: no data for {', '.join(missing)}", False, held
        )

    proposals = []
    for metric, value in zip(metrics, values, strict=True):
        assert value is not None
        proposal = _proposal(metric, value, obs.ready_replicas, spec.tolerance)
        shown = (
            value / max(obs.ready_replicas, 1)
            if metric.type in PER_REPLICA
            else in_spec_units(metric.type, value)
        )
        unit = " per replica" if metric.type in PER_REPLICA else ""
        detail = f"{metric.type} {shown:.4g}{unit} vs target {metric.target:g}"
        # Within tolerance a metric votes for the current count (HPA semantics).
        proposals.append((current if proposal is None else proposal, detail))
    raw, why = max(proposals)
    if obs.ready_replicas < raw <= current:
        # Replicas still loading are not capacity, but they are coming: do not ask again.
        raw, why = current, f"{why}; {current - obs.ready_replicas} replica(s) still loading"
    elif raw == current:
        why = "metrics at target"
    raw = min(max(raw, spec.min_replicas), spec.max_replicas)
    recommendations.append((obs.now, raw))
    history_since = obs.now if history_since is None else history_since

    up_window = [
        n
        for t, n in recommendations
        if obs.now - t <= behavior.scale_up.stabilization_window_seconds
    ]
    down_window = [
        n
        for t, n in recommendations
        if obs.now - t <= behavior.scale_down.stabilization_window_seconds
    ]
    desired = current
    if raw > current:
        desired = max(current, min(up_window))
        desired = min(desired, _rate_limit(behavior.scale_up, events, obs.now, current, True))
    elif raw < current:
        window = behavior.scale_down.stabilization_window_seconds
        desired = min(current, max(down_window))
        desired = max(desired, _rate_limit(behavior.scale_down, events, obs.now, current, False))
        if desired < current and obs.now - history_since < window:
            # A first reading, or the first after a gap, may see some engines before others
            # (Prometheus scrapes them apart): one reading is no window of them. The reason
            # names when the hold ends, not how long it has lasted: a count of seconds would
            # change the status (and write it) at every tick of unchanged readings.
            desired = current
            until = _utc(history_since + window)
            why = (
                f"{why}; holding until {until}: the readings began less than the {window}s "
                "scale-down window ago"
            )
        elif desired < current:
            why = f"{why}; stabilized over {window}s"
        else:
            why = f"{why}; holding within the scale-down window"
    desired = min(max(desired, spec.min_replicas), spec.max_replicas)
    capped = False
    schedulable = obs.schedulable_replicas
    if desired > current and schedulable is not None and desired > schedulable:
        capped = True
        why = f"{why}; capped at {schedulable} by free GPUs"
        desired = max(current, schedulable)
    if desired != current:
        events.append((obs.now, desired - current))
    if idle_since is not None and stz is not None:
        why = f"{why}; idle, to zero after scaleToZero.idleSeconds {stz.idle_seconds}"
    new_state = AutoscalerState(
        recommendations=recommendations,
        scale_events=events,
        last_scale_time=obs.now if desired != current else state.last_scale_time,
        idle_since=idle_since,
        history_since=history_since,
    )
    return Decision(desired, f"{current} -> {desired}: {why}", True, new_state, capped)


def _utc(t: float) -> str:
    """A reading's time as status shows times (RFC 3339, UTC, whole seconds)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _idle_since(spec: ScalingSpec, obs: Observation, state: AutoscalerState) -> float | None:
    """Start of the current idle stretch, or None. Only a complete reading of zero running and
    zero waiting requests continues it; anything missing ends it (never zero on no data)."""
    if spec.scale_to_zero is None:
        return None
    wanted = {*IDLE_SIGNALS, *(m.type for m in spec.metrics)}
    values = [obs.values.get(t) for t in sorted(wanted)]
    if any(_missing(v) for v in values):
        return None
    if any(obs.values.get(t) != 0 for t in IDLE_SIGNALS):
        return None
    return obs.now if state.idle_since is None else state.idle_since


def _from_zero(
    spec: ScalingSpec,
    stz: ScaleToZeroSpec,
    obs: Observation,
    recommendations: list[tuple[float, int]],
    events: list[tuple[float, int]],
    last_scale_time: float | None,
) -> Decision:
    """At zero the engines report nothing: hold unless the activation query reads above 0."""
    activation = obs.activation
    if stz.activation_metric is None and stz.activation_query is None:
        why = "no activation metric: only a write to the scale subresource scales up"
    elif _missing(activation):
        why = "the activation metric returned no data"
    elif activation is not None and activation > 0:
        desired, capped = spec.min_replicas, False
        why = f"the activation metric returned {activation:g}"
        if obs.schedulable_replicas is not None and desired > obs.schedulable_replicas:
            desired, capped = obs.schedulable_replicas, True
            why = f"{why}; capped at {desired} by free GPUs"
        if desired > 0:
            events.append((obs.now, desired))
            state = AutoscalerState(
                recommendations=recommendations, scale_events=events, last_scale_time=obs.now
            )
            return Decision(desired, f"0 -> {desired}: {why}", True, state, capped, at_zero=True)
    else:
        why = f"the activation metric returned {activation:g}"
    state = AutoscalerState(
        recommendations=recommendations, scale_events=events, last_scale_time=last_scale_time
    )
    reason = f"holding 0 (scaled to zero, so no engine metrics): {why}"
    return Decision(0, reason, False, state, at_zero=True)
