"""Pilot rollouts (spec.rollout.strategy Pilot), the pure part: where a pilot stands and what
comes next. A new plan runs as a second generation beside the current one on a share of the
traffic, is measured from its own series, and is promoted or rolled back (docs/rollouts.md).

The state lives in status.rollout only, so an operator that restarts picks a pilot up where
it was: every step here is a function of that status, the spec, and what was observed now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from llmdeploy.api.status import Candidate, GenerationMeasurement, RolloutPhase, RolloutStatus
from llmdeploy.api.types import PilotSpec, duration_seconds
from llmdeploy.sizing.diff import candidate_replicas

GENERATION_LENGTH = 8  # hex digits of the plan key that name a generation
OVERRIDE_ANNOTATION = "llmdeploy.io/pilot"  # "promote/<generation>" or "abort/<generation>"
# A candidate pod restarted this often has crashed, not hiccupped: vLLM exits when it cannot
# allocate the KV cache, and the kubelet restarts it with growing back-off.
CRASH_RESTARTS = 3

Verdict = Literal["wait", "promote", "switch", "rollback"]


def generation_of(plan_key: str) -> str:
    return plan_key[:GENERATION_LENGTH]


def pilot_replicas(current_replicas: int, percent: int) -> int:
    """Replicas of the candidate while piloting: its share of the current count, at least one
    (the rule `llmdeploy plan --diff` prices the overlap with)."""
    return candidate_replicas(percent, current_replicas)


def traffic_share(current: int, candidate: int) -> int:
    """The candidate's share of the requests, in percent: its share of the replicas. An
    HTTPRoute's weights make it exact; without one (or while the current generation's pods
    carry no generation label) the shared Service and pool spread requests over both
    generations, which approximates it. Equal load per replica is what makes the two
    generations' costs per token comparable."""
    total = current + candidate
    return round(100 * candidate / total) if total else 0


@dataclass(frozen=True, slots=True)
class CandidateHealth:
    """What the candidate's pods show now."""

    ready: int
    crash: str | None = None  # which pod crashed and how, when one did


@dataclass(frozen=True, slots=True)
class Step:
    verdict: Verdict
    phase: RolloutPhase
    candidate_replicas: int
    reason: str
    message: str


def override(annotations: dict[str, str], candidate: Candidate) -> str | None:
    """`promote` or `abort` when the annotation names this candidate; an override left on the
    object from an earlier pilot names another generation, or was there before this pilot of
    the same plan began, and is ignored."""
    value = annotations.get(OVERRIDE_ANNOTATION, "")
    action, _, generation = value.partition("/")
    if value == candidate.stale_override:
        return None
    if generation == candidate.generation and action in ("promote", "abort"):
        return action
    return None


def _cost_holds(
    spec: PilotSpec,
    candidate: GenerationMeasurement | None,
    current: GenerationMeasurement | None,
) -> tuple[bool | None, str]:
    new = candidate.cost_per_million_output_tokens if candidate else None
    old = current.cost_per_million_output_tokens if current else None
    if new is None or old is None:
        return None, "cost per 1M output tokens not measured for both generations"
    limit = old * (1 + spec.cost_tolerance_percent / 100)
    text = f"${new:.2f} per 1M output tokens against ${old:.2f} (limit ${limit:.2f})"
    return new <= limit, text


def step(
    rollout: RolloutStatus,
    candidate: Candidate,
    spec: PilotSpec,
    current_replicas: int,
    health: CandidateHealth,
    measured: GenerationMeasurement | None,
    current_measured: GenerationMeasurement | None,
    action: str | None,
    now: datetime,
    serving_gone: bool = False,
) -> Step:
    """The next step of a pilot under way. `measured` and `current_measured`: the last
    measurement of the candidate's and the current generation's own series, taken since the
    candidate served; `action`: the override for this candidate; `serving_gone`: the serving
    workload was deleted, so the candidate is all that is left to serve."""
    # Its share of the current count (which the autoscaler may move), or fewer when that was
    # all a full cluster had room for.
    piloting = pilot_replicas(current_replicas, spec.traffic_percent)
    if candidate.capacity_limit is not None:
        piloting = min(piloting, candidate.capacity_limit)

    def rollback(reason: str, message: str) -> Step:
        return Step("rollback", "RolledBack", 0, reason, message)

    if action == "abort":
        return rollback("ManualAbort", f"aborted by the {OVERRIDE_ANNOTATION} annotation")
    if health.crash:
        return rollback("CrashLoop", health.crash)
    if rollout.phase == "Promoting":
        if health.ready >= current_replicas:
            return Step("switch", "Stable", current_replicas, "Promoted", "")
        return Step(
            "wait",
            "Promoting",
            current_replicas,
            "Promoting",
            f"{health.ready}/{current_replicas} candidate replicas ready",
        )

    def promote(message: str) -> Step:
        return Step("promote", "Promoting", current_replicas, "Promoting", message)

    if action == "promote":
        return promote(f"promoted by the {OVERRIDE_ANNOTATION} annotation")
    if serving_gone:
        return promote("the serving workload is gone: nothing left to protect")
    if candidate.serving_since is None:
        return Step(
            "wait",
            "Piloting",
            piloting,
            "Starting",
            f"{health.ready}/{candidate.replicas} candidate replicas ready",
        )
    if spec.gates.slo and measured is not None and measured.slo_met == "False":
        return rollback("SLOBreach", measured.slo_message)
    due = _parse(candidate.serving_since) + timedelta(seconds=duration_seconds(spec.duration))
    if now < due:
        # No clock in the message: a status that changes only when something happens.
        return Step(
            "wait",
            "Piloting",
            piloting,
            "Measuring",
            f"gates judged at {due.strftime('%Y-%m-%dT%H:%M:%SZ')}; "
            + _gates_text(spec, measured, current_measured),
        )
    held, text = _gates(spec, measured, current_measured)
    if held is False:
        return rollback("CostPerTokenWorse", text)
    if held is None:
        return Step("wait", "Piloting", piloting, "WaitingForMeasurements", text)
    return promote(f"the gates held for {spec.duration}: {text or 'no gate set'}")


def _gates(
    spec: PilotSpec,
    measured: GenerationMeasurement | None,
    current_measured: GenerationMeasurement | None,
) -> tuple[bool | None, str]:
    """Whether the gates hold now (None: not told yet), and what was measured."""
    parts = []
    if spec.gates.slo:
        if measured is None or measured.slo_met != "True":
            return None, "SLO of the candidate not measured yet" + (
                f" ({measured.slo_message})" if measured and measured.slo_message else ""
            )
        parts.append(f"SLO met ({measured.slo_message})")
    if spec.gates.cost_per_token:
        held, text = _cost_holds(spec, measured, current_measured)
        if held is not True:
            return held, text
        parts.append(text)
    return True, "; ".join(parts)


def _gates_text(
    spec: PilotSpec,
    measured: GenerationMeasurement | None,
    current_measured: GenerationMeasurement | None,
) -> str:
    return _gates(spec, measured, current_measured)[1] or "no gate"


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
