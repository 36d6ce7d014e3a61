"""Offline replay of a load trace through the same decision core the operator uses.

Replicas serve the plan's estimated requests/s each once ready; new replicas take a cold start
(model load) to become ready; work beyond capacity queues, and queueing shows up in TTFT.
Without a ready replica there are no engine metrics (as in a cluster scaled to zero); the
activation query of scaleToZero is modelled as the offered load, what a gateway would count.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass

from llmdeploy.api.types import ScalingSpec, WorkloadSpec
from llmdeploy.autoscale.decision import AutoscalerState, Observation, decide
from llmdeploy.autoscale.policy import cold_start_estimate
from llmdeploy.sizing import Plan

MAX_TTFT_S = 600.0


class TraceError(ValueError):
    """A malformed trace; the message names the line."""


@dataclass(frozen=True, slots=True)
class TracePoint:
    t: float
    requests_per_second: float | None  # None: metrics unavailable at this step


@dataclass(frozen=True, slots=True)
class SimConfig:
    capacity_rps: float  # requests/s one ready replica serves at the planned concurrency
    concurrency: int
    base_ttft_s: float
    cold_start_s: float
    initial_replicas: int


def read_trace(text: str) -> list[TracePoint]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or {"t", "requestsPerSecond"} - set(reader.fieldnames):
        raise TraceError("line 1: the header must name the columns t and requestsPerSecond")
    points: list[TracePoint] = []
    for line, row in enumerate(reader, start=2):
        try:
            t = float(row["t"])
            raw = (row["requestsPerSecond"] or "").strip()
            rps = float(raw) if raw else None
        except (TypeError, ValueError):
            raise TraceError(f"line {line}: t and requestsPerSecond must be numbers") from None
        if not math.isfinite(t) or (rps is not None and (not math.isfinite(rps) or rps < 0)):
            raise TraceError(f"line {line}: values must be finite and requestsPerSecond >= 0")
        if points and t <= points[-1].t:
            raise TraceError(f"line {line}: t must increase")
        points.append(TracePoint(t, rps))
    if not points:
        raise TraceError("the trace has no rows")
    return points


def config_from_plan(
    plan: Plan, workload: WorkloadSpec, cold_start_s: float | None, replicas: int
) -> SimConfig:
    """A replica serves `concurrency` requests at a time, each taking TTFT + output x TPOT."""
    assert plan.feasible and plan.estimated_ttft_ms and plan.estimated_tpot_ms
    concurrency = plan.max_num_seqs or workload.concurrency
    request_s = (plan.estimated_ttft_ms + workload.output_tokens * plan.estimated_tpot_ms) / 1000
    return SimConfig(
        capacity_rps=concurrency / request_s,
        concurrency=concurrency,
        base_ttft_s=plan.estimated_ttft_ms / 1000,
        cold_start_s=cold_start_s if cold_start_s is not None else cold_start_estimate(plan),
        initial_replicas=replicas,
    )


@dataclass(frozen=True, slots=True)
class SimStep:
    t: float
    requests_per_second: float | None
    ready_replicas: int
    desired_replicas: int
    queue_depth: float
    estimated_ttft_ms: float
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "t": self.t,
            "requestsPerSecond": self.requests_per_second,
            "readyReplicas": self.ready_replicas,
            "desiredReplicas": self.desired_replicas,
            "queueDepth": round(self.queue_depth, 2),
            "estimatedTtftMs": round(self.estimated_ttft_ms, 1),
            "reason": self.reason,
        }


def simulate(trace: list[TracePoint], spec: ScalingSpec, config: SimConfig) -> list[SimStep]:
    """`spec` is the effective policy (autoscale.policy.effective_scaling)."""
    ready_at = [trace[0].t] * config.initial_replicas  # when each replica is (or was) ready
    state = AutoscalerState()
    queue = 0.0
    load = 0.0
    previous_t = trace[0].t
    steps = []
    for point in trace:
        dt = point.t - previous_t
        previous_t = point.t
        if point.requests_per_second is not None:
            load = point.requests_per_second
        ready = sum(1 for t in ready_at if t <= point.t)
        capacity = ready * config.capacity_rps
        queue = max(0.0, queue + (load - capacity) * dt)
        served = min(load + queue / max(dt, 1.0), capacity)
        running = served / config.capacity_rps * config.concurrency if capacity else 0.0
        if capacity:
            wait = queue / capacity
        elif load or queue:  # cold: nothing serves until the first replica is ready
            wait = min(ready_at) - point.t if ready_at else MAX_TTFT_S
        else:
            wait = 0.0
        ttft = min(config.base_ttft_s + wait, MAX_TTFT_S)
        values: dict[str, float | None] = {}
        if point.requests_per_second is not None and ready:
            values = {
                "queueDepth": queue,
                "runningRequests": running,
                "kvCacheUsage": running / max(ready * config.concurrency, 1),
                "ttftP95": ttft,  # seconds, as the query answers
            }
        observation = Observation(
            point.t, len(ready_at), ready, values, activation=point.requests_per_second
        )
        decision = decide(spec, observation, state)
        state = decision.state
        change = decision.desired_replicas - len(ready_at)
        if change > 0:
            ready_at.extend([point.t + config.cold_start_s] * change)
        elif change < 0:
            ready_at.sort(reverse=True)  # remove the newest (still loading) first
            del ready_at[:-change]
        steps.append(
            SimStep(
                point.t,
                point.requests_per_second,
                ready,
                decision.desired_replicas,
                queue,
                ttft * 1000,
                decision.reason,
            )
        )
    return steps


def summarize(steps: list[SimStep], slo_ttft_ms: float | None) -> dict[str, float]:
    """Replica-seconds (what the GPUs cost) and seconds in violation of the TTFT SLO."""
    replica_seconds = 0.0
    violation_seconds = 0.0
    for before, after in itertools.pairwise(steps):
        dt = after.t - before.t
        replica_seconds += before.desired_replicas * dt
        if slo_ttft_ms is not None and before.estimated_ttft_ms > slo_ttft_ms:
            violation_seconds += dt
    return {"replicaSeconds": replica_seconds, "sloViolationSeconds": violation_seconds}
