"""A pilot's timeline, for docs/rollouts.md: two pilots behind an HTTPRoute, of an object
whose current generation came from an earlier pilot (so its pods carry a generation label and
the weights are exact), driven minute by minute through the operator's own pilot steps
(llmdeploy.controller.rollout.step, pilot_replicas, traffic_share) with simulated measurements
of each generation, drawn to docs/img/pilot-timeline.svg.

The measurements are made up (written below, fixed); the decisions are the operator's.

    .venv/bin/python bench/pilot_timeline.py [--out docs/img/pilot-timeline.svg]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llmdeploy.api.status import Candidate, Generation, GenerationMeasurement, RolloutStatus
from llmdeploy.api.types import PilotSpec
from llmdeploy.controller.rollout import (
    CandidateHealth,
    pilot_replicas,
    step,
    traffic_share,
)
from llmdeploy.pictures import PilotFrame, pilot_picture

START = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
REPLICAS = 4  # of the current generation (L4)
SLO_TTFT_S = 1.5
READY_AFTER_MIN = 3  # the candidate's cold start
CURRENT = (0.62, 1.20)  # TTFT p95 (s) and USD per 1M output tokens, every minute


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def simulate(candidate_ttft: list[float], candidate_cost: float) -> list[PilotFrame]:
    """Thirty minutes of a pilot whose candidate (L40S) measures `candidate_ttft[minute]`."""
    spec = PilotSpec(duration="15m", traffic_percent=10)
    candidate = Candidate(
        generation="3f2a1b9c",
        workload="llama-8b-3f2a1b9c",
        plan_key="3f2a1b9c00000000",
        plan={},
        replicas=pilot_replicas(REPLICAS, spec.traffic_percent),
        started_at=_rfc3339(START),
    )
    rollout = RolloutStatus(phase="Piloting", current=Generation(workload="llama-8b"))
    frames: list[PilotFrame] = []
    ready = 0
    decision = "PilotStarted"
    for minute in range(31):
        now = START + timedelta(minutes=minute)
        if rollout.candidate is None and rollout.phase in ("Stable", "RolledBack"):
            frames.append(PilotFrame(minute, rollout.phase, 100 if rollout.phase == "Stable" else 0,
                                     None, CURRENT[0] if rollout.phase != "Stable" else None,
                                     None, CURRENT[1] if rollout.phase != "Stable" else None,
                                     ""))  # fmt: skip
            continue
        if minute >= READY_AFTER_MIN:
            ready = (
                candidate.replicas
                if rollout.phase == "Piloting"
                else min(candidate.replicas, ready + 1)
            )
        if candidate.serving_since is None and ready >= candidate.replicas:
            candidate = candidate.model_copy(update={"serving_since": _rfc3339(now)})
        measured = None
        if candidate.serving_since is not None:
            measured = GenerationMeasurement(
                generation=candidate.generation,
                end=_rfc3339(now),
                window_seconds=600,
                ttft_within_slo=1.0 if candidate_ttft[minute] <= SLO_TTFT_S else 0.5,
                cost_per_million_output_tokens=candidate_cost,
                slo_met="True" if candidate_ttft[minute] <= SLO_TTFT_S else "False",
                slo_message=f"TTFT p95 {candidate_ttft[minute]:.2f}s against {SLO_TTFT_S}s",
            )
        current = GenerationMeasurement(
            generation="",
            end=_rfc3339(now),
            window_seconds=600,
            cost_per_million_output_tokens=CURRENT[1],
            slo_met="True",
        )
        rollout = rollout.model_copy(update={"candidate": candidate})
        done = step(
            rollout, candidate, spec, REPLICAS, CandidateHealth(ready=ready), measured, current,
            None, now,
        )  # fmt: skip
        share = traffic_share(REPLICAS, done.candidate_replicas)
        if candidate.serving_since is None:
            share = 0  # the route gives a pool no weight before it has a ready pod
        if done.verdict == "promote" and rollout.phase == "Piloting":
            decision = "PilotPromoting"
        elif done.verdict == "switch":
            decision, share = "Promoted", 100
        elif done.verdict == "rollback":
            decision, share = f"PilotRolledBack ({done.reason})", 0
        serving = candidate.serving_since is not None
        frames.append(
            PilotFrame(
                minute,
                done.phase,
                share,
                candidate_ttft[minute] if serving else None,
                CURRENT[0] if done.verdict != "switch" else None,
                candidate_cost if serving else None,
                CURRENT[1] if done.verdict != "switch" else None,
                decision,
            )
        )
        decision = ""
        if done.verdict in ("switch", "rollback"):
            rollout = rollout.model_copy(update={"phase": done.phase, "candidate": None})
        else:
            rollout = rollout.model_copy(update={"phase": done.phase})
            candidate = candidate.model_copy(update={"replicas": done.candidate_replicas})
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/pilot-timeline.svg"))
    args = parser.parse_args()
    good = simulate([0.55 + 0.02 * (m % 3) for m in range(31)], candidate_cost=0.95)
    slow = simulate([0.6 + 0.25 * max(0, m - 5) for m in range(31)], candidate_cost=0.95)
    title = (
        f"Pilots behind an HTTPRoute, trafficPercent 10 of {REPLICAS} replicas: one candidate "
        "replica and its share of the traffic until the gates held 15 minutes,\nthen as many "
        "replicas as the current (50%), then all; an SLO breach rolls back at once\n(simulated "
        "measurements, the operator's decisions)"
    )
    pilot_picture([("promoted", good), ("rolled back", slow)], SLO_TTFT_S, title, args.out)
    for title, frames in (("promoted", good), ("rolled back", slow)):
        told = [(f.minute, f.decision) for f in frames if f.decision]
        print(f"{title}: {told}")


if __name__ == "__main__":
    main()
