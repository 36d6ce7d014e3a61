"""`llmdeploy report`: planned beside measured, as a table or a document (pure)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field

from llmdeploy.api.status import Calibration, Observed, Recommendation
from llmdeploy.api.status import MeasuredModel as MeasureModel
from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.measure.observed import (
    DRIFT_TOLERANCE,
    SLO_SHARE,
    Verdict,
    milliseconds,
    percent,
    plan_drift,
    slo_met,
)
from llmdeploy.sizing import Plan


class Planned(MeasureModel):
    """What the plan promised, in the units `Observed` measures."""

    requests_per_second: float | None = None
    input_tokens: int
    output_tokens: int
    ttft_seconds: float | None = Field(default=None, description="The planner's estimate.")
    tpot_seconds: float | None = None
    ttft_target_seconds: float | None = Field(default=None, description="spec.slo.ttftMs.")
    tpot_target_seconds: float | None = None
    output_tokens_per_second: float | None = Field(
        default=None, description="All replicas at the planned concurrency."
    )
    replicas: int | None = None
    cost_per_hour: float | None = None
    cost_per_million_output_tokens: float | None = Field(
        default=None, description="At the planned concurrency, i.e. fully used."
    )


class Report(MeasureModel):
    namespace: str
    name: str
    engine: str
    gpu: str | None = None
    gpu_count: int | None = None
    quantization: str | None = None
    planned: Planned
    observed: Observed
    slo_met: Verdict
    plan_drift: Verdict
    calibration: Calibration | None = Field(
        default=None, description="This window's measured/predicted latency (unsmoothed)."
    )
    recommendation: Recommendation | None = None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value / 1000, 9)


def planned_figures(spec: LLMDeploymentSpec, plan: Plan) -> Planned:
    workload = spec.workload
    replicas = plan.replicas
    capacity = plan.estimated_tokens_per_second
    return Planned(
        requests_per_second=workload.requests_per_second,
        input_tokens=workload.input_tokens,
        output_tokens=workload.output_tokens,
        ttft_seconds=_ms(plan.estimated_ttft_ms),
        tpot_seconds=_ms(plan.estimated_tpot_ms),
        ttft_target_seconds=_ms(spec.slo.ttft_ms),
        tpot_target_seconds=_ms(spec.slo.tpot_ms),
        output_tokens_per_second=(
            None if capacity is None or replicas is None else round(capacity * replicas, 1)
        ),
        replicas=replicas,
        cost_per_hour=plan.cost_per_hour,
        cost_per_million_output_tokens=plan.cost_per_million_tokens,
    )


def build_report(
    namespace: str,
    name: str,
    spec: LLMDeploymentSpec,
    plan: Plan,
    observed: Observed,
    *,
    slo_share: float = SLO_SHARE,
    drift_tolerance: float = DRIFT_TOLERANCE,
    calibration: Calibration | None = None,
    recommendation: Recommendation | None = None,
) -> Report:
    return Report(
        namespace=namespace,
        name=name,
        engine=plan.engine,
        gpu=plan.gpu,
        gpu_count=plan.gpu_count,
        quantization=plan.quantization,
        planned=planned_figures(spec, plan),
        observed=observed,
        slo_met=slo_met(observed, spec.slo, slo_share),
        plan_drift=plan_drift(observed, spec.workload, drift_tolerance),
        calibration=calibration,
        recommendation=recommendation,
    )


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if value >= 1 else f"{value:.2g}"


def _per_hour(value: float) -> str:
    return f"${value:.2f}"


def _per_million(value: float) -> str:
    return f"${value:.3f}" if value < 100 else f"${value:.0f}"


Format = Callable[[float], str]


def format_report(report: Report) -> str:
    planned, observed = report.planned, report.observed
    ms = milliseconds
    rows: list[tuple[str, float | None, float | None, str | None, Format]] = [
        ("requests/s", planned.requests_per_second, observed.requests_per_second,
         "requestsPerSecond", _number),
        ("requests finished", None, observed.requests, "requests", _number),
        ("input tokens/request", planned.input_tokens, observed.input_tokens_mean,
         "inputTokensMean", _number),
        ("input tokens p50 (1-2-5 buckets)", None, observed.input_tokens_p50,
         "inputTokensP50", _number),
        ("output tokens/request", planned.output_tokens, observed.output_tokens_mean,
         "outputTokensMean", _number),
        ("output tokens p50 (1-2-5 buckets)", None, observed.output_tokens_p50,
         "outputTokensP50", _number),
        ("TTFT p50", planned.ttft_seconds, observed.ttft_p50_seconds, "ttftP50Seconds", ms),
        ("TTFT p95", None, observed.ttft_p95_seconds, "ttftP95Seconds", ms),
        ("TPOT p50", planned.tpot_seconds, observed.tpot_p50_seconds, "tpotP50Seconds", ms),
        ("TPOT p95", None, observed.tpot_p95_seconds, "tpotP95Seconds", ms),
        ("output tokens/s (planned: capacity)", planned.output_tokens_per_second,
         observed.output_tokens_per_second, "outputTokensPerSecond", _number),
        ("KV cache usage", None, observed.kv_cache_usage, "kvCacheUsage", percent),
        ("replicas", planned.replicas, observed.replicas, "replicas", _number),
        ("cost per hour", planned.cost_per_hour, observed.cost_per_hour, "costPerHour", _per_hour),
        ("cost per 1M output tokens", planned.cost_per_million_output_tokens,
         observed.cost_per_million_output_tokens, "costPerMillionOutputTokens", _per_million),
    ]  # fmt: skip
    if planned.ttft_target_seconds is not None:
        rows.append(("TTFT within SLO", None, observed.ttft_within_slo, "ttftWithinSlo", percent))
    if planned.tpot_target_seconds is not None:
        rows.append(("TPOT within SLO", None, observed.tpot_within_slo, "tpotWithinSlo", percent))
    table = [("", "PLANNED", "MEASURED", "MEASURED/PLANNED")]
    unknown: dict[str, list[str]] = {}  # reason: the rows it leaves unknown
    for label, plan_value, measured, field, fmt in rows:
        ratio = (
            f"{measured / plan_value:.2f}"
            if plan_value and measured is not None and fmt is not percent
            else ""
        )
        if measured is None and field in observed.unknown:
            unknown.setdefault(observed.unknown[field], []).append(label)
        table.append(
            (
                label,
                "-" if plan_value is None else fmt(plan_value),
                "unknown" if measured is None else fmt(measured),
                ratio,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    layout = f"{report.gpu} x{report.gpu_count} {report.quantization}" if report.gpu else "no plan"
    lines = [
        f"REPORT {report.namespace}/{report.name}: {report.engine} on {layout}, "
        f"{planned.replicas} replica(s) planned; measured over "
        f"{_window(observed.window_seconds)} up to {observed.end}",
    ]
    lines += [
        "  "
        + "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in table
    ]
    lines = [line.rstrip() for line in lines]
    if unknown:
        lines.append("  unknown:")
        lines += [f"    {', '.join(names)}: {why}" for why, names in unknown.items()]
    for name, verdict in (("SLOMet", report.slo_met), ("PlanDrift", report.plan_drift)):
        lines.append(f"  {name} {verdict.status} ({verdict.reason}): {verdict.message}")
    if report.calibration is not None:
        lines.append(
            f"  calibration: x{report.calibration.ttft_ratio:.2f} TTFT, "
            f"x{report.calibration.tpot_ratio:.2f} TPOT (measured/predicted mean at the "
            "measured load, this window)"
        )
    if report.recommendation is not None:
        lines.append(f"  recommendation: {report.recommendation.describe()}")
    price = observed.price
    if price is not None:
        source = f" ({price.source})" if price.source else ""
        lines.append(
            f"  price: {price.gpu} ${price.usd_per_gpu_hour:.2f} per GPU-hour, "
            f"{price.gpus_per_replica} GPU(s) per replica, as of {price.date}{source}"
        )
    return "\n".join(lines) + "\n"


def _window(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and (unit != "d" or seconds > 86_400):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
