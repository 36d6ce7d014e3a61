"""The autoscaling decision core and the offline simulator."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from llmdeploy.api.types import ScalingMetric, ScalingSpec
from llmdeploy.autoscale.decision import AutoscalerState, Observation, decide, serving_share
from llmdeploy.autoscale.simulator import TraceError, read_trace

ROOT = Path(__file__).resolve().parents[2]
RUNNING = [ScalingMetric(type="runningRequests", target=10)]


BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 60},
            {"type": "Percent", "value": 100, "periodSeconds": 60},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    },
}


def spec(metrics: list[ScalingMetric] | None = None, **changes: object) -> ScalingSpec:
    body = {"minReplicas": 1, "maxReplicas": 20, "behavior": BEHAVIOR, **changes}
    scaling = ScalingSpec.model_validate(body)
    return scaling.model_copy(update={"metrics": metrics or RUNNING})


def observe(
    now: float,
    current: int,
    running: float | None,
    ready: int | None = None,
    schedulable: int | None = None,
) -> Observation:
    return Observation(
        now, current, current if ready is None else ready, {"runningRequests": running}, schedulable
    )


def test_ratio_scales_up_to_demand() -> None:
    decision = decide(spec(), observe(0, 2, 60), AutoscalerState())
    assert decision.desired_replicas == 6 and decision.metrics_available


def test_within_tolerance_holds() -> None:
    decision = decide(spec(), observe(0, 4, 43), AutoscalerState())  # ratio 1.075
    assert decision.desired_replicas == 4
    assert decide(spec(), observe(0, 4, 46), AutoscalerState()).desired_replicas == 5


def test_max_over_metrics_and_clamp() -> None:
    metrics = [*RUNNING, ScalingMetric(type="kvCacheUsage", target=0.5)]
    obs = Observation(0, 2, 2, {"runningRequests": 10, "kvCacheUsage": 0.9})
    assert decide(spec(metrics), obs, AutoscalerState()).desired_replicas == 4  # kv wins
    assert decide(spec(metrics, maxReplicas=3), obs, AutoscalerState()).desired_replicas == 3


def test_latency_reads_in_seconds_against_a_target_in_milliseconds() -> None:
    # The query answers in seconds (Prometheus's base unit); the spec's target is 500 ms.
    metrics = [ScalingMetric(type="ttftP95", target=500)]
    slow = decide(spec(metrics), Observation(0, 2, 2, {"ttftP95": 1.0}), AutoscalerState())
    assert slow.desired_replicas == 4  # twice the target: twice the replicas
    assert "ttftP95 1000 vs target 500" in slow.reason
    on_target = decide(spec(metrics), Observation(0, 2, 2, {"ttftP95": 0.52}), AutoscalerState())
    assert on_target.desired_replicas == 2  # within tolerance


@pytest.mark.parametrize("value", [None, math.nan])
def test_missing_or_nan_data_holds_and_never_scales_down(value: float | None) -> None:
    decision = decide(spec(), observe(0, 5, value), AutoscalerState())
    assert decision.desired_replicas == 5
    assert not decision.metrics_available and "no data" in decision.reason


def test_scale_down_waits_for_the_stabilization_window() -> None:
    s = spec()  # 300 s window, 1 replica a minute
    state = AutoscalerState()
    current = 6
    for t in range(0, 300, 15):
        d = decide(s, observe(t, current, 60 if t == 0 else 10), state)
        state, current = d.state, d.desired_replicas
        assert current == 6, t  # the 6 recommended at t=0 is still in the window
    d = decide(s, observe(315, current, 10), state)
    assert d.desired_replicas == 5  # window passed; rate limit: one per minute
    d2 = decide(s, observe(330, d.desired_replicas, 10), d.state)
    assert d2.desired_replicas == 5


def test_scale_up_rate_limit() -> None:
    s = spec(
        behavior={
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
            },
        }
    )
    d = decide(s, observe(0, 2, 200), AutoscalerState())
    assert d.desired_replicas == 4
    d = decide(s, observe(30, 4, 200, ready=4), d.state)
    assert d.desired_replicas == 4  # 2 already added within the minute
    d = decide(s, observe(61, 4, 200, ready=4), d.state)
    assert d.desired_replicas == 6


def test_loading_replicas_are_not_capacity_but_are_not_asked_for_twice() -> None:
    # 4 replicas, 2 ready: demand of 4 replicas is covered by the ones loading.
    d = decide(spec(), observe(0, 4, 40, ready=2), AutoscalerState())
    assert d.desired_replicas == 4 and "still loading" in d.reason


def test_scale_up_capped_by_schedulable_gpus() -> None:
    d = decide(spec(), observe(0, 2, 100, schedulable=3), AutoscalerState())
    assert d.desired_replicas == 3 and d.capped_by_capacity and "free GPUs" in d.reason


def test_state_survives_a_restart_through_its_json_form() -> None:
    d = decide(spec(), observe(0, 6, 60), AutoscalerState())
    d = decide(spec(), observe(200, 6, 10), d.state)
    stored = json.loads(json.dumps(d.state.model_dump(mode="json", by_alias=True)))
    restored = AutoscalerState.model_validate(stored)
    # A restarted operator still honours the recommendation from before the restart.
    after = decide(spec(), observe(250, 6, 10), restored)
    assert after.desired_replicas == 6
    # And its history: the lower recommendations have lasted the window (300 s) at 301.
    assert decide(spec(), observe(301, 6, 10), after.state).desired_replicas == 5
    # Without the stored history a restarted operator waits a whole window of its own.
    fresh = decide(spec(), observe(301, 6, 10), AutoscalerState())
    assert fresh.desired_replicas == 6 and "holding until 1970-01-01T00:10:01Z" in fresh.reason


def test_a_first_reading_or_one_after_a_gap_never_scales_down() -> None:
    """As Kubernetes HPA when it first sees an object: a first reading (one engine scraped
    before the others, say) is no window of readings. A gap of no data longer than the
    windows starts the history again; a scale-down window of 0 acts at once."""
    first = decide(spec(), observe(0, 6, 0), AutoscalerState())
    assert first.desired_replicas == 6 and first.state.history_since == 0
    held = decide(spec(), observe(200, 6, None), first.state)  # no data keeps the history
    assert held.state.history_since == 0
    again = decide(spec(), observe(250, 6, 0), held.state)
    assert again.desired_replicas == 6 and "holding until 1970-01-01T00:05:00Z" in again.reason
    down = decide(spec(), observe(301, 6, 0), again.state)
    assert down.desired_replicas == 5
    gap = decide(spec(), observe(700, 6, None), down.state)  # its recommendations all gone
    assert gap.state.history_since is None
    assert decide(spec(), observe(701, 6, 0), gap.state).desired_replicas == 6
    at_once = spec(
        behavior={
            **BEHAVIOR,
            "scaleDown": {**BEHAVIOR["scaleDown"], "stabilizationWindowSeconds": 0},
        }
    )
    assert decide(at_once, observe(0, 6, 0), AutoscalerState()).desired_replicas == 5


def test_the_hold_before_a_whole_window_of_readings_says_the_same_at_every_tick() -> None:
    """Unchanged readings give an unchanged reason while the first window holds: the status
    is written when its reason changes, so a reason that counted the seconds read so far
    would write it at every tick (an unchanged object is not written again).
    It names when the hold ends instead."""
    first = decide(spec(), observe(1000, 6, 0), AutoscalerState())
    later = decide(spec(), observe(1010, 6, 0), first.state)
    assert first.desired_replicas == later.desired_replicas == 6
    assert first.reason == later.reason
    assert "holding until 1970-01-01T00:21:40Z" in first.reason  # 1000 s + the 300 s window
    assert "300s scale-down window" in first.reason


def test_trace_errors_name_the_line() -> None:
    with pytest.raises(TraceError, match="line 3"):
        read_trace("t,requestsPerSecond\n0,1\n0,2\n")
    with pytest.raises(TraceError, match="line 1"):
        read_trace("time,rps\n0,1\n")
    assert read_trace("t,requestsPerSecond\n0,1\n15,\n")[1].requests_per_second is None


def run_sim(
    trace: Path, *args: str, manifest: Path = ROOT / "examples" / "llama-3.1-8b-l4.yaml"
) -> list[dict[str, object]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmdeploy.cli",
            "scale-sim",
            "-f",
            str(manifest),
            "--load",
            str(trace),
            "-o",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_scale_sim_step_trace(tmp_path: Path) -> None:
    rows = ["t,requestsPerSecond"] + [
        f"{t},{0.4 if t < 300 or t >= 1200 else 4}" for t in range(0, 2400, 15)
    ]
    trace = tmp_path / "step.csv"
    trace.write_text("\n".join(rows) + "\n")
    steps = run_sim(trace, "--cold-start", "60")
    keys = {
        "t",
        "requestsPerSecond",
        "readyReplicas",
        "desiredReplicas",
        "queueDepth",
        "estimatedTtftMs",
        "reason",
    }
    assert all(set(s) == keys for s in steps)
    at = {s["t"]: s for s in steps}
    assert at[285]["desiredReplicas"] == 1
    # Scales up within one decision of the step, ready after the cold start.
    assert at[300]["desiredReplicas"] > 1  # type: ignore[operator]
    peak = max(s["desiredReplicas"] for s in steps)  # type: ignore[type-var]
    assert at[300 + 60 + 15]["readyReplicas"] > 1  # type: ignore[operator]
    # No flapping under steady load: at most one change of direction while the load is high
    # (the overshoot from the backlog is given back once, after the window).
    high = [s["desiredReplicas"] for s in steps if 300 <= s["t"] < 1200]  # type: ignore[operator]
    moves = [b - a for a, b in itertools.pairwise(high) if b != a]  # type: ignore[operator]
    turns = sum(1 for a, b in itertools.pairwise(moves) if (a > 0) != (b > 0))
    assert turns <= 1, high
    # Back to minReplicas after the load ends (window + one replica a minute).
    assert steps[-1]["desiredReplicas"] == 1 and peak > 2  # type: ignore[operator]


def test_scale_sim_holds_on_missing_data(tmp_path: Path) -> None:
    rows = ["t,requestsPerSecond"] + [
        f"{t},{'' if 600 <= t < 1500 else (4 if t < 600 else 0.1)}" for t in range(0, 1800, 15)
    ]
    trace = tmp_path / "gaps.csv"
    trace.write_text("\n".join(rows) + "\n")
    steps = run_sim(trace, "--cold-start", "60")
    before_gap = next(s for s in steps if s["t"] == 585)["desiredReplicas"]
    gap = [s for s in steps if 600 <= s["t"] < 1500]  # type: ignore[operator]
    assert all(s["desiredReplicas"] == before_gap for s in gap)
    assert all("no data" in str(s["reason"]) for s in gap)


def test_default_behavior_follows_the_cold_start() -> None:
    from llmdeploy.autoscale.policy import default_behavior

    assert default_behavior(78).scale_down.stabilization_window_seconds == 234
    assert default_behavior(30).scale_down.stabilization_window_seconds == 120  # floor
    assert default_behavior(3000).scale_down.stabilization_window_seconds == 900  # ceiling


IDLE = {"idleSeconds": 600}


def idle_obs(
    now: float, current: int, running: float | None, waiting: float | None = 0
) -> Observation:
    return Observation(now, current, current, {"runningRequests": running, "queueDepth": waiting})


def run_idle(s: ScalingSpec, readings: list[tuple[float, float | None]], current: int = 1):
    """Feed (time, running requests) readings; returns the last decision and the replica path."""
    state = AutoscalerState()
    path = []
    d = None
    for now, running in readings:
        d = decide(s, idle_obs(now, current, running), state)
        state, current = d.state, d.desired_replicas
        path.append(current)
    assert d is not None
    return d, path


def test_idle_for_the_whole_period_goes_to_zero() -> None:
    s = spec(scaleToZero=IDLE)
    d, path = run_idle(s, [(t, 0) for t in range(0, 600, 15)])
    assert path[-1] == 1 and "idle" in d.reason  # 585 s of idleness: not yet
    d = decide(s, idle_obs(600, 1, 0), d.state)
    assert d.desired_replicas == 0 and "scaleToZero.idleSeconds 600" in d.reason
    # Without scaleToZero the same readings stay at minReplicas.
    _, path = run_idle(spec(), [(t, 0) for t in range(0, 1200, 15)])
    assert set(path) == {1}


def test_a_request_restarts_the_idle_period() -> None:
    s = spec(scaleToZero=IDLE)
    readings = [(t, 0.0) for t in range(0, 300, 15)] + [(300, 1.0)]
    readings += [(t, 0.0) for t in range(315, 915, 15)]  # 585 s idle after the request
    d, path = run_idle(s, readings)
    assert 0 not in path
    assert decide(s, idle_obs(915, 1, 0), d.state).desired_replicas == 0


@pytest.mark.parametrize("gap", [None, math.nan])
def test_missing_data_never_goes_to_zero(gap: float | None) -> None:
    s = spec(scaleToZero=IDLE)
    # Idle readings with one missing in the middle, and then nothing but missing data.
    readings = [(t, 0.0 if t != 300 else gap) for t in range(0, 900, 15)]
    d, path = run_idle(s, readings)
    assert 0 not in path  # the gap at 300 s restarted the count: 585 s idle by 885 s
    _, path = run_idle(s, [(t, gap) for t in range(0, 3600, 15)])
    assert set(path) == {1}
    # A missing queue reading is missing data too, even with 0 running.
    d = decide(s, Observation(0, 1, 1, {"runningRequests": 0, "queueDepth": None}), d.state)
    assert d.state.idle_since is None


def test_activation_scales_from_zero_to_min_replicas() -> None:
    s = spec(minReplicas=2, scaleToZero={**IDLE, "activationMetric": {"name": "gateway_pending"}})
    quiet = decide(s, Observation(0, 0, 0, {}, activation=0), AutoscalerState())
    assert quiet.desired_replicas == 0 and quiet.at_zero and not quiet.metrics_available
    missing = decide(s, Observation(0, 0, 0, {}, activation=None), AutoscalerState())
    assert missing.desired_replicas == 0 and "no data" in missing.reason
    d = decide(s, Observation(15, 0, 0, {}, activation=3), quiet.state)
    assert d.desired_replicas == 2 and "the activation metric returned 3" in d.reason
    capped = Observation(15, 0, 0, {}, schedulable_replicas=1, activation=3)
    assert decide(s, capped, quiet.state).desired_replicas == 1
    # Without an activation query only a write to /scale leaves zero.
    s = spec(scaleToZero=IDLE)
    d = decide(s, Observation(0, 0, 0, {}, activation=5), AutoscalerState())
    assert d.desired_replicas == 0 and "scale subresource" in d.reason


def test_a_manual_scale_from_zero_is_not_undone() -> None:
    s = spec(scaleToZero=IDLE)
    at_zero = decide(s, Observation(0, 0, 0, {}), AutoscalerState()).state
    # kubectl scale --replicas=2: loading replicas report nothing, then idle readings.
    d = decide(s, Observation(15, 2, 0, {"runningRequests": None, "queueDepth": None}), at_zero)
    assert d.desired_replicas == 2
    d, path = run_idle(s, [(t, 0) for t in range(30, 600, 15)], current=2)
    assert 0 not in path  # the idle period starts when metrics arrive, not at the old zero


def test_restart_keeps_the_idle_timer() -> None:
    s = spec(scaleToZero=IDLE)
    d, _ = run_idle(s, [(t, 0) for t in range(0, 450, 15)])
    stored = json.loads(json.dumps(d.state.model_dump(mode="json", by_alias=True)))
    assert stored["idleSince"] == 0
    restored = AutoscalerState.model_validate(stored)
    assert decide(s, idle_obs(600, 1, 0), restored).desired_replicas == 0
    # A fresh state would restart the count.
    assert decide(s, idle_obs(600, 1, 0), AutoscalerState()).desired_replicas == 1


def test_scale_to_zero_is_rejected_with_mode_hpa() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="HPAScaleToZero"):
        ScalingSpec.model_validate({"mode": "hpa", "scaleToZero": {}})
    with pytest.raises(ValidationError, match="idleSeconds"):
        ScalingSpec.model_validate({"scaleToZero": {"idleSeconds": 10}})


def test_scale_sim_goes_to_zero_when_idle_and_cold_starts_on_activation(tmp_path: Path) -> None:
    import yaml

    body = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["spec"]["scaling"] = {
        "scaleToZero": {"idleSeconds": 300, "activationMetric": {"name": "gateway_requests"}}
    }
    manifest = tmp_path / "stz.yaml"
    manifest.write_text(yaml.safe_dump(body))
    rows = ["t,requestsPerSecond"] + [
        f"{t},{0.5 if t < 300 else (0 if t < 1500 else 0.5)}" for t in range(0, 2100, 15)
    ]
    trace = tmp_path / "idle.csv"
    trace.write_text("\n".join(rows) + "\n")
    at = {s["t"]: s for s in run_sim(trace, "--cold-start", "60", manifest=manifest)}
    zero = min(t for t, s in at.items() if s["desiredReplicas"] == 0)
    # Idle from t=300 (the first reading of no requests); zero once 300 s have passed.
    assert 600 <= zero <= 630, zero
    assert all(at[t]["desiredReplicas"] == 0 for t in range(int(zero), 1500, 15))
    assert at[1500]["desiredReplicas"] >= 1  # activated by the first load
    assert at[1500]["readyReplicas"] == 0 and at[1500]["estimatedTtftMs"] >= 60_000
    assert at[1500 + 75]["readyReplicas"] >= 1  # ready after the 60 s cold start


def test_a_pilots_serving_generation_carries_its_share_of_the_totals() -> None:
    values = {"queueDepth": 30.0, "runningRequests": None, "kvCacheUsage": 0.5}
    assert serving_share(values, 2, 1) == {
        "queueDepth": 20.0,
        "runningRequests": None,
        "kvCacheUsage": 0.5,  # an average per replica stays as it is
    }
    assert serving_share(values, 0, 0) == values
