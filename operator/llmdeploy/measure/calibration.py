"""Calibration: how much slower (or faster) than predicted the running plan is (pure).

Each full measurement gives a sample per metric: the measured mean over what the sizing model
predicts for the same layout at the measured load (the concurrency per replica follows from
Little's law: request rate x time in the engine / replicas). Samples are bounded, then
smoothed into status.calibration. The ratios are the model's error for this deployment, so
they carry over to its next plan, where new samples keep correcting them.
"""

from __future__ import annotations

from llmdeploy.api.status import Calibration, Observed
from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog
from llmdeploy.sizing import LatencyCalibration, Performance, Plan, performance_at

# A ratio outside these bounds says the measurement or the model is broken, not slow.
RATIO_BOUNDS = (0.5, 2.0)
# The weight of the newest sample: about five measurements to follow a lasting change.
SMOOTHING = 0.3


def measured_load(observed: Observed) -> tuple[int, int, int] | None:
    """(concurrency per replica, input tokens, output tokens) of a full measurement; None
    when a figure it rests on is Unknown."""
    rate, replicas = observed.requests_per_second, observed.replicas
    ttft, tpot = observed.ttft_mean_seconds, observed.tpot_mean_seconds
    inputs, outputs = observed.input_tokens_mean, observed.output_tokens_mean
    if rate is None or not replicas or ttft is None or tpot is None:
        return None
    if inputs is None or outputs is None:
        return None
    in_engine_s = ttft + max(outputs - 1, 0) * tpot
    return max(1, round(rate * in_engine_s / replicas)), round(inputs), round(outputs)


def _bounded(ratio: float) -> float:
    low, high = RATIO_BOUNDS
    return min(max(ratio, low), high)


def fold(
    previous: Calibration | None, observed: Observed, predicted: Performance
) -> Calibration | None:
    """`previous` with this measurement's samples folded in; `previous` when the
    measurement cannot give a sample."""
    ttft, tpot = observed.ttft_mean_seconds, observed.tpot_mean_seconds
    if ttft is None or tpot is None or predicted.ttft_s <= 0 or predicted.tpot_s <= 0:
        return previous
    samples = (_bounded(ttft / predicted.ttft_s), _bounded(tpot / predicted.tpot_s))
    if previous is None:
        ttft_ratio, tpot_ratio, count = *samples, 1
    else:
        ttft_ratio = previous.ttft_ratio + SMOOTHING * (samples[0] - previous.ttft_ratio)
        tpot_ratio = previous.tpot_ratio + SMOOTHING * (samples[1] - previous.tpot_ratio)
        count = previous.measurements + 1
    return Calibration(
        ttft_ratio=round(ttft_ratio, 4),
        tpot_ratio=round(tpot_ratio, 4),
        measurements=count,
        end=observed.end,
    )


def latency_calibration(calibration: Calibration | None) -> LatencyCalibration | None:
    """What a plan is scaled by: within the bounds whatever the status or a file says."""
    if calibration is None:
        return None
    return LatencyCalibration(
        ttft=_bounded(calibration.ttft_ratio), tpot=_bounded(calibration.tpot_ratio)
    )


def calibrated(
    previous: Calibration | None,
    observed: Observed,
    spec: LLMDeploymentSpec,
    plan: Plan,
    catalog: Catalog,
) -> Calibration | None:
    """`previous` with the sample of this measurement of `plan`'s layout, if it gives one."""
    load = measured_load(observed)
    if load is None:
        return previous
    concurrency, inputs, outputs = load
    predicted = performance_at(
        spec,
        catalog,
        plan,
        concurrency=concurrency,
        input_tokens=inputs,
        output_tokens=outputs,
    )
    return previous if predicted is None else fold(previous, observed, predicted)
