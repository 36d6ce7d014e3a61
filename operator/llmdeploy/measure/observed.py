"""What a deployment did over a window, beside what was planned (pure).

`observe` turns query readings into `Observed`: every figure is a measurement or None with the
reason in `unknown`; nothing is estimated to fill a gap. `slo_met` and `plan_drift` judge an
`Observed` against the spec: True, False or Unknown, with the numbers in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Literal

from llmdeploy.api.status import MeasuredModel as MeasureModel
from llmdeploy.api.status import Observed, Price
from llmdeploy.api.types import SloSpec, WorkloadSpec, to_camel
from llmdeploy.catalog import Catalog
from llmdeploy.measure.histogram import Histogram, quantile, share_within
from llmdeploy.measure.queries import (
    INPUT_TOKENS,
    INPUT_TOKENS_TOTAL,
    KV_CACHE_USAGE,
    OUTPUT_TOKENS,
    OUTPUT_TOKENS_TOTAL,
    REPLICAS,
    REQUESTS,
    SERVED_SECONDS,
    TPOT,
    TPOT_SUM,
    TTFT,
    TTFT_SUM,
    resolution_seconds,
)
from llmdeploy.measure.results import Readings
from llmdeploy.sizing import Plan

# A percentile, a mean length or an SLO share rests on at least this many finished requests.
MIN_REQUESTS = 20
# SLOMet: this share of requests (of gaps between tokens, for TPOT) within the target.
SLO_SHARE = 0.95
# PlanDrift: measured rate and lengths within planned x (1 +- this).
DRIFT_TOLERANCE = 0.25
SIGNIFICANT_DIGITS = 6

Status = Literal["True", "False", "Unknown"]


class Verdict(MeasureModel):
    """A condition's status, CamelCase reason and message."""

    status: Status
    reason: str
    message: str


def _significant(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def observe(
    readings: Readings,
    *,
    plan: Plan,
    catalog: Catalog,
    slo: SloSpec,
    window_s: int,
    end: float,
    min_requests: int = MIN_REQUESTS,
    served_since: float | None = None,
) -> Observed:
    """The deployment's figures from its readings (queries.measurement_queries' `instant`).
    Rates and the mean replicas are over the seconds measured: the window, or, where the
    window began before its engines first served, the part of it since (`measured_seconds`).
    `served_since`: when they first served, as an earlier measurement recorded it
    (status.observed.servedSince), or `end` where none has seen them serve yet; None where no
    record is kept (a report, a pilot's window): the whole window. The result records it: the
    time passed, or the one this measurement finds where it is the first to see them."""
    new = served_since is not None and served_since > end - window_s
    served = readings.values.get(SERVED_SECONDS)
    if served is None and served_since is not None and end - window_s < served_since < end:
        # The reading failed, but an earlier measurement recorded when they first served
        # inside this window: the first step it saw, as that measurement found it.
        served = end - served_since - resolution_seconds(window_s) / 2
    measured_s, sampled_s = measured_seconds(served, window_s, new)
    figures: dict[str, float | None] = {}
    unknown: dict[str, str] = {}
    # Engines that may have first served inside the window (none recorded when), seen but not
    # when they began: a rate over the whole window would be diluted by the time before them,
    # so the rates are not claimed. Whether they served before the window is not known either
    # (a status written before servedSince, or lost): the reason says only what is.
    served_unknown = served is None
    undated = (
        "no measurement has recorded when the deployment's engines first served, and this "
        f"window's reading of it failed ({readings.why.get(SERVED_SECONDS, 'no data')})"
        if new and served_unknown and readings.values.get(REPLICAS) != 0
        else ""
    )

    def per_second(total: float | None) -> float | None:
        return None if total is None or undated else total / measured_s

    def put(name: str, value: float | None, why: str) -> None:
        if value is None:
            unknown[to_camel(name)] = why
        figures[name] = None if value is None else _significant(value)

    def missing(key: str, what: str) -> str:
        return f"no {what} ({readings.why.get(key, 'no data')})"

    requests = readings.values.get(REQUESTS)
    no_requests = missing(REQUESTS, "request counter")
    put("requests", requests, no_requests)
    put("requests_per_second", per_second(requests), no_requests if requests is None else undated)
    if requests is None:
        few = no_requests
    elif requests < min_requests:
        few = f"{requests:.4g} requests finished in the window, fewer than {min_requests}"
    else:
        few = ""
    counted = requests if not few else None

    for name, total_key, histogram_key, what in (
        ("input", INPUT_TOKENS_TOTAL, INPUT_TOKENS, "prompt token"),
        ("output", OUTPUT_TOKENS_TOTAL, OUTPUT_TOKENS, "generated token"),
    ):
        total = readings.values.get(total_key)
        mean = None if total is None or counted is None else total / counted
        put(f"{name}_tokens_mean", mean, few or missing(total_key, f"{what} counter"))
        p50, why = _from_histogram(
            readings, histogram_key, f"{what} histogram", few, partial(quantile, q=0.5), "p50"
        )
        put(f"{name}_tokens_p50", p50, why)

    for name, key, target_ms in (("ttft", TTFT, slo.ttft_ms), ("tpot", TPOT, slo.tpot_ms)):
        what = f"{name.upper()} histogram"
        for q in (0.5, 0.95):
            percentile = f"p{round(q * 100)}"
            value, why = _from_histogram(
                readings, key, what, few, partial(quantile, q=q), percentile
            )
            put(f"{name}_{percentile}_seconds", value, why)
        sum_key = TTFT_SUM if key == TTFT else TPOT_SUM
        total = readings.values.get(sum_key)
        if total is None:
            put(f"{name}_mean_seconds", None, missing(sum_key, f"{name.upper()} sum"))
        else:
            mean, why = _from_histogram(
                readings, key, what, few, partial(_mean, total=total), "the mean"
            )
            put(f"{name}_mean_seconds", mean, why or "no observations")
        if target_ms is not None:
            within = partial(share_within, limit=target_ms / 1000)
            share, why = _from_histogram(readings, key, what, few, within, "the target")
            put(f"{name}_within_slo", share, why)

    output_total = readings.values.get(OUTPUT_TOKENS_TOTAL)
    tokens_per_s = per_second(output_total)
    no_tokens = missing(OUTPUT_TOKENS_TOTAL, "token counter")
    put("output_tokens_per_second", tokens_per_s, no_tokens if output_total is None else undated)
    put("kv_cache_usage", readings.values.get(KV_CACHE_USAGE), missing(KV_CACHE_USAGE, "gauge"))
    replicas = readings.values.get(REPLICAS)
    why_no_replicas = missing(REPLICAS, "serving engine") if replicas is None else undated
    if replicas is not None:  # the window's average counts no engine before they began
        replicas = None if undated else replicas * window_s / sampled_s
    put("replicas", replicas, why_no_replicas)

    price = _price(plan, catalog)
    if price is None:
        no_price = "the plan names no GPU with a catalog price"
        put("cost_per_hour", None, no_price)
        put("cost_per_million_output_tokens", None, no_price)
    else:
        per_hour = None
        # No engine all window long: scaled to zero, or never scraped; which, only the
        # cluster knows, so the cost is not claimed to be zero.
        unseen = "no engine served in the window (scaled to zero, or not scraped)"
        no_replicas = unknown.get("replicas") or (unseen if replicas == 0 else "")
        if replicas is not None and replicas > 0:
            per_hour = price.usd_per_gpu_hour * price.gpus_per_replica * replicas
        put("cost_per_hour", per_hour, no_replicas)
        per_million: float | None = None
        why = no_replicas or unknown.get("outputTokensPerSecond") or ""
        if per_hour is not None and tokens_per_s is not None:
            if tokens_per_s > 0:
                per_million = per_hour / (tokens_per_s * 3600) * 1e6
            else:
                why = "no output tokens in the window"
        put("cost_per_million_output_tokens", per_million, why)
    if served_since is not None and served_since >= end:
        # The first measurement to see them serve finds when they began (the window's start
        # where it saw them all along); none that saw no engine records a time.
        seen = bool(readings.values.get(REPLICAS)) and not served_unknown
        served_since = end - measured_s if seen else None
    return Observed(
        window_seconds=measured_s,
        end=rfc3339(end),
        served_since=None if served_since is None else rfc3339(served_since),
        price=price,
        unknown=unknown,
        **figures,
    )


def measured_seconds(served: float | None, window_s: int, new: bool) -> tuple[int, float]:
    """(the seconds a measurement covers, the seconds of subquery steps its mean replicas
    average over): the window, or, for a `new` deployment (whose engines first served inside
    the window) the time since. Over the whole window a counter's increase would be divided by
    seconds in which no engine could count, and a new deployment's first measurements would
    say it serves a fraction of its traffic. A deployment that served before the window and
    has a gap at its start (woken from zero, back from an outage) served none in that time, as
    in a gap later in the window: whole-window rates say what it was asked for.

    `served` (SERVED_SECONDS) is the time since the first step that saw an engine, None where
    it is not known. The engines began within the step before it: the seconds covered add half
    a step. The mean replicas average one point a step, and the steps since they began are
    that first one and those after, `served / step + 1` points: served + a step (a steady
    replica over the seconds covered would read above 1). Their first scrape may come up to a
    scrape interval after they began, and `increase` extrapolates at most half an interval
    before it: the first rates of a new deployment can read high by up to half an interval
    over the seconds covered."""
    step = resolution_seconds(window_s)
    if not new or served is None or served + step >= window_s:  # the whole window
        return window_s, window_s
    return max(1, round(served + step / 2)), served + step


def _from_histogram(
    readings: Readings,
    key: str,
    what: str,
    few: str,
    compute: Callable[[Histogram], float | None],
    beyond: str,
) -> tuple[float | None, str]:
    """`compute` of the histogram at `key`, or None and why: no histogram, too few requests,
    or (`beyond`) an answer past the last finite bucket."""
    histogram = readings.histograms.get(key)
    if histogram is None:
        return None, f"no {what} ({readings.why.get(key, 'no data')})"
    if few:
        return None, few
    value = compute(histogram)
    if value is None:
        last = histogram.buckets[-2][0] if len(histogram.buckets) > 1 else 0.0
        return None, f"{beyond} lies above the {what}'s last bucket ({last:g})"
    return value, ""


def _mean(histogram: Histogram, total: float) -> float | None:
    return total / histogram.count if histogram.count > 0 else None


def _price(plan: Plan, catalog: Catalog) -> Price | None:
    gpu = catalog.gpus.get(plan.gpu or "")
    if gpu is None or not plan.feasible or plan.gpu_count is None:
        return None
    return Price(
        gpu=gpu.id,
        gpus_per_replica=plan.gpu_count,
        usd_per_gpu_hour=gpu.price_per_hour,
        date=gpu.price_date,
        source=gpu.sources.get("price"),
    )


def percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def milliseconds(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds * 1000:.0f} ms" if seconds >= 1 / 100 else f"{seconds * 1000:.3g} ms"


def slo_met(observed: Observed, slo: SloSpec, share: float = SLO_SHARE) -> Verdict:
    """True when at least `share` of requests met every target of spec.slo (of the gaps
    between tokens, for TPOT), False when one target was missed, Unknown when that cannot be
    told from the data."""
    targets = [
        ("TTFT", "ttftWithinSlo", slo.ttft_ms, observed.ttft_within_slo, observed.ttft_p95_seconds),
        ("TPOT", "tpotWithinSlo", slo.tpot_ms, observed.tpot_within_slo, observed.tpot_p95_seconds),
    ]
    parts: list[str] = []
    statuses: list[Status] = []
    for label, field, target_ms, within, p95 in targets:
        if target_ms is None:
            continue
        goal = f"{label} {target_ms:g} ms"
        if within is None:
            parts.append(f"{goal}: unknown, {observed.unknown.get(field, 'no data')}")
            statuses.append("Unknown")
        elif within >= share:
            parts.append(f"{goal}: met by {percent(within)} (p95 {milliseconds(p95)})")
            statuses.append("True")
        else:
            parts.append(
                f"{goal}: met by {percent(within)}, under {percent(share)} "
                f"(p95 {milliseconds(p95)})"
            )
            statuses.append("False")
    if not statuses:
        return Verdict(status="True", reason="NoTarget", message="spec.slo sets no target")
    message = "; ".join(parts)
    if "False" in statuses:
        return Verdict(status="False", reason="TargetMissed", message=message)
    if "Unknown" in statuses:
        return Verdict(status="Unknown", reason="NotMeasured", message=message)
    return Verdict(status="True", reason="TargetsMet", message=message)


def plan_drift(
    observed: Observed, workload: WorkloadSpec, tolerance: float = DRIFT_TOLERANCE
) -> Verdict:
    """True when the measured request rate (if one was planned) or mean input or output
    length lies outside the planned value x (1 +- tolerance); False when all lie within;
    Unknown when one is not known and none lies outside."""
    dimensions: list[tuple[str, str, float | None, float]] = [
        (
            "input tokens/request",
            "inputTokensMean",
            observed.input_tokens_mean,
            workload.input_tokens,
        ),
        (
            "output tokens/request",
            "outputTokensMean",
            observed.output_tokens_mean,
            workload.output_tokens,
        ),
    ]
    if workload.requests_per_second is not None:
        dimensions.insert(
            0,
            (
                "requests/s",
                "requestsPerSecond",
                observed.requests_per_second,
                workload.requests_per_second,
            ),
        )
    outside: list[str] = []
    within: list[str] = []
    unknown: list[str] = []
    for label, field, measured, planned in dimensions:
        if measured is None:
            unknown.append(f"{label} unknown ({observed.unknown.get(field, 'no data')})")
            continue
        change = measured / planned - 1
        text = f"{label} {measured:.4g} vs {planned:g} planned ({change:+.0%})"
        (outside if abs(change) > tolerance + 1e-12 else within).append(text)
    band = f"+-{tolerance:.0%}"
    if outside:
        return Verdict(
            status="True",
            reason="WorkloadDrifted",
            message=f"outside {band}: " + "; ".join(outside + within + unknown),
        )
    if unknown:
        return Verdict(status="Unknown", reason="NotMeasured", message="; ".join(within + unknown))
    return Verdict(
        status="False", reason="WithinPlan", message=f"within {band}: " + "; ".join(within)
    )
