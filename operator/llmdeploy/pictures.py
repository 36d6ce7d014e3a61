"""`plan --plot` and `report --plot`: pictures for people who would rather look than read.

matplotlib is an optional extra (`pip install 'llmdeploy[plot]'`); only this module imports it.
The same input gives the same SVG bytes: a fixed hash salt for element ids, no date in the
metadata, and text drawn as paths from matplotlib's bundled DejaVu Sans, not from the fonts
of the machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from llmdeploy.api.types import LLMDeployment
from llmdeploy.measure.report import Report
from llmdeploy.measure.results import Series
from llmdeploy.measure.timeline import timeline
from llmdeploy.sizing import Alternative, Plan

STYLE: dict[Any, Any] = {  # matplotlib types the keys as a Literal of every setting
    "svg.hashsalt": "llmdeploy",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# Colour-blind-safe (Okabe-Ito), one per GPU in sorted order.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
SLO_COLOUR = "#D55E00"
PREDICTED_COLOUR = "#555555"


def _save(figure: Figure, path: Path) -> None:
    kind = path.suffix.lower().lstrip(".")
    metadata: dict[str, Any] = {"Date": None} if kind == "svg" else {}
    figure.savefig(path, format=kind, metadata=metadata, dpi=150)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower is better), by the first axis."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(set(points)):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _label(a: Alternative, kv: bool = True) -> str:
    kv_text = ", fp8 KV" if kv and a.kv_cache_dtype == "fp8" else ""
    return f"{a.gpu} x{a.gpu_count} {a.quantization}{kv_text}"


def plan_picture(
    resource: LLMDeployment, plan: Plan, alternatives: Sequence[Alternative], path: Path
) -> None:
    """Cost against predicted TTFT and TPOT of every configuration that fits; the Pareto
    front, the SLO and the choice marked."""
    spec = resource.spec
    by_rate = spec.workload.requests_per_second is not None

    def cost(a: Alternative) -> float | None:
        return a.cost_per_hour if by_rate else a.cost_per_million_tokens

    drawn = [a for a in alternatives if cost(a) is not None]
    gpus = sorted({a.gpu for a in drawn})
    colour = {gpu: COLOURS[i % len(COLOURS)] for i, gpu in enumerate(gpus)}
    chosen = next((a for a in drawn if a.reason == "chosen"), None)
    with rc_context(STYLE):
        figure = Figure(figsize=(11, 5), layout="constrained")
        panels = figure.subplots(1, 2, sharey=True)
        for axes, name, target in (
            (panels[0], "ttft", spec.slo.ttft_ms),
            (panels[1], "tpot", spec.slo.tpot_ms),
        ):
            points = [(_latency(a, name), cost(a), a) for a in drawn]
            for gpu in gpus:
                for meets in (True, False):
                    mine = [(x, y) for x, y, a in points if a.gpu == gpu and a.meets_slo is meets]
                    if mine:
                        axes.scatter(
                            [x for x, _ in mine],
                            [y for _, y in mine],
                            s=36,
                            marker="o",
                            facecolors=colour[gpu] if meets else "none",
                            edgecolors=colour[gpu],
                            linewidths=1.2,
                            zorder=3,
                        )
            front = pareto_front([(x, y) for x, y, _ in points if y is not None])
            axes.step(
                [x for x, _ in front],
                [y for _, y in front],
                where="post",
                color="#333333",
                linewidth=1,
                zorder=2,
            )
            named = {(x, y): a for x, y, a in reversed(points)}  # the best ranked of a spot
            labelled = {_label(chosen, kv=False)} if chosen else set()
            for spot in front:
                text = _label(named[spot], kv=False)  # KV variants sit close: one label
                if text not in labelled:
                    labelled.add(text)
                    axes.annotate(
                        text,
                        spot,
                        xytext=(4, 9),
                        textcoords="offset points",
                        fontsize=7.5,
                        color="#333333",
                    )
            if target is not None:
                axes.axvline(target, color=SLO_COLOUR, linestyle="--", linewidth=1.2, zorder=1)
                axes.annotate(
                    f"SLO {target:g} ms",
                    (target, 1),
                    xycoords=("data", "axes fraction"),
                    xytext=(3, -12),
                    textcoords="offset points",
                    color=SLO_COLOUR,
                )
            if chosen is not None:
                x, y = _latency(chosen, name), cost(chosen)
                axes.scatter([x], [y], s=220, marker="*", color="#000000", zorder=4)
                axes.annotate(
                    "chosen: " + _label(chosen),
                    (x, y),
                    xytext=(10, -16),
                    textcoords="offset points",
                    fontweight="bold",
                )
            axes.set_xlabel(f"predicted {name.upper()} (ms)")
            axes.set_xlim(left=0)
            axes.set_ylim(bottom=0)
        panels[0].set_ylabel(
            "cost, USD per hour (all replicas)" if by_rate else "cost, USD per 1M output tokens"
        )
        _plan_legend(figure, panels[1], gpus, colour)
        figure.suptitle(
            f"{resource.metadata.name}: {spec.model.name} on {plan.engine}, cost vs predicted "
            f"latency of the {len(drawn)} configurations that fit\n"
            "the choice: the lowest cost meeting every SLO; ties go to fewer GPUs, then to "
            "higher precision"
        )
        _save(figure, path)


def _latency(a: Alternative, name: str) -> float:
    value = a.estimated_ttft_ms if name == "ttft" else a.estimated_tpot_ms
    return math.nan if value is None else value


def _plan_legend(figure: Figure, axes: Axes, gpus: list[str], colour: dict[str, str]) -> None:
    handles: list[Artist] = [
        axes.scatter([], [], s=36, color=colour[gpu], label=gpu) for gpu in gpus
    ]
    handles.append(
        axes.scatter([], [], s=36, facecolors="none", edgecolors="#333333", label="misses SLO")
    )
    handles.append(axes.scatter([], [], s=36, color="#333333", label="meets SLO"))
    handles.append(axes.plot([], [], color="#333333", linewidth=1, label="Pareto front")[0])
    handles.append(axes.scatter([], [], s=120, marker="*", color="#000000", label="chosen"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)


def report_picture(report: Report, points: Series, end: float, path: Path) -> None:
    """TTFT and TPOT over time against the SLO and the prediction; realized cost per 1M
    output tokens against the planned one."""
    steps = timeline(points, report.observed.price)
    window = report.observed.window_seconds
    start = datetime.fromtimestamp(end - window, UTC)
    stop = datetime.fromtimestamp(end, UTC)
    times = [datetime.fromtimestamp(p.t, UTC) for p in steps]
    planned = report.planned
    with rc_context(STYLE):
        figure = Figure(figsize=(10, 8), layout="constrained")
        ttft, tpot, cost = figure.subplots(3, 1, sharex=True)
        for axes, name in ((ttft, "ttft"), (tpot, "tpot")):
            p50 = [getattr(p, f"{name}_p50_s") for p in steps]
            p95 = [getattr(p, f"{name}_p95_s") for p in steps]
            predicted = getattr(planned, f"{name}_seconds")
            target = getattr(planned, f"{name}_target_seconds")
            axes.plot(times, _ms(p95), color=COLOURS[0], linewidth=1.6, label="measured p95")
            axes.plot(times, _ms(p50), color=COLOURS[4], linewidth=1.2, label="measured p50")
            if target is not None:
                axes.axhline(
                    target * 1000, color=SLO_COLOUR, linestyle="--", linewidth=1.2, label="SLO"
                )
            if predicted is not None:
                axes.axhline(
                    predicted * 1000,
                    color=PREDICTED_COLOUR,
                    linestyle=":",
                    linewidth=1.4,
                    label="predicted",
                )
            axes.set_ylabel(f"{name.upper()} (ms)")
            axes.set_ylim(bottom=0)
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        realized = [p.cost_per_million_output_tokens for p in steps]
        cost.plot(times, _nan(realized), color=COLOURS[2], linewidth=1.6, label="realized")
        if planned.cost_per_million_output_tokens is not None:
            cost.axhline(
                planned.cost_per_million_output_tokens,
                color=PREDICTED_COLOUR,
                linestyle=":",
                linewidth=1.4,
                label="planned (fully used)",
            )
        cost.set_ylabel("USD per 1M output tokens")
        cost.set_ylim(bottom=0)
        cost.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        cost.set_xlim(start, stop)
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        cost.xaxis.set_major_locator(locator)
        cost.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        cost.set_xlabel("time (UTC)")
        figure.suptitle(
            f"{report.namespace}/{report.name} up to {report.observed.end}: measured against the "
            f"plan; SLOMet {report.slo_met.status}, PlanDrift {report.plan_drift.status}"
        )
        _save(figure, path)


def _nan(values: Sequence[float | None]) -> list[float]:
    """Gaps stay gaps: None becomes NaN, which a line skips."""
    return [math.nan if v is None else v for v in values]


def _ms(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v * 1000 for v in values]


# The corpus's sets: fitted on, held out by the split rule, never fitted (bench/data/README.md).
SET_STYLE = {"fit": (COLOURS[1], "o"), "held-out": (COLOURS[0], "s"), "outside": (COLOURS[5], "^")}


def accuracy_picture(
    points: dict[str, list[tuple[str, float, float]]], title: str, path: Path
) -> None:
    """Predicted against measured, one panel per metric, log-log, each row a mark coloured by
    its set; the diagonal is exact, the bands ±10% and ±25%."""
    metrics = [m for m in points if points[m]]
    columns = 2
    rows = math.ceil(len(metrics) / columns)
    with rc_context(STYLE):
        figure = Figure(figsize=(10, 4.2 * rows), layout="constrained")
        grid = figure.subplots(rows, columns, squeeze=False)
        for axes, metric in zip(grid.flat, metrics, strict=False):
            values = [v for _, measured, predicted in points[metric] for v in (measured, predicted)]
            low, high = min(values) / 1.5, max(values) * 1.5
            line = [low, high]
            for band, alpha in ((0.25, 0.08), (0.10, 0.14)):
                axes.fill_between(
                    line, [x * (1 - band) for x in line], [x * (1 + band) for x in line],
                    color=PREDICTED_COLOUR, alpha=alpha, linewidth=0,
                )  # fmt: skip
            axes.plot(line, line, color=PREDICTED_COLOUR, linewidth=0.8)
            for name, (colour, marker) in SET_STYLE.items():
                mine = [(m, p) for s, m, p in points[metric] if s == name]
                if mine:
                    axes.scatter(
                        [m for m, _ in mine], [p for _, p in mine], s=18, c=colour,
                        marker=marker, label=f"{name} ({len(mine)})", alpha=0.85,
                    )  # fmt: skip
            axes.set_xscale("log")
            axes.set_yscale("log")
            axes.set_xlim(low, high)
            axes.set_ylim(low, high)
            axes.set_title(metric)
            axes.set_xlabel("measured")
            axes.set_ylabel("predicted")
            axes.legend(loc="upper left", fontsize=8)
        for axes in list(grid.flat)[len(metrics) :]:
            axes.set_visible(False)
        figure.suptitle(title)
        _save(figure, path)


@dataclass(frozen=True, slots=True)
class PilotFrame:
    """One minute of a pilot, as its status.rollout and the two generations' measurements
    showed it."""

    minute: int
    phase: str
    traffic_percent: int  # the candidate's share
    candidate_ttft_s: float | None
    current_ttft_s: float | None
    candidate_cost: float | None  # USD per 1M output tokens
    current_cost: float | None
    decision: str  # the Event of that minute, if any


def pilot_picture(
    pilots: Sequence[tuple[str, Sequence[PilotFrame]]], slo_ttft_s: float, title: str, path: Path
) -> None:
    """Pilots side by side: the candidate's share of the traffic, both generations' TTFT
    against the SLO and their cost per 1M output tokens, with the decisions marked."""
    with rc_context(STYLE):
        figure = Figure(figsize=(11, 7), layout="constrained")
        grid = figure.subplots(3, len(pilots), sharex=True, squeeze=False)
        for column, (outcome, frames) in enumerate(pilots):
            share, ttft, cost = (grid[row][column] for row in range(3))
            minutes = [f.minute for f in frames]
            share.step(minutes, [f.traffic_percent for f in frames], where="post",
                       color=COLOURS[0], linewidth=1.6)  # fmt: skip
            share.set_ylim(0, 105)
            share.set_title(f"pilot {outcome}")
            ttft.plot(minutes, _nan([f.current_ttft_s for f in frames]), color=COLOURS[1],
                      linewidth=1.4, label="current (L4)")  # fmt: skip
            ttft.plot(minutes, _nan([f.candidate_ttft_s for f in frames]), color=COLOURS[2],
                      linewidth=1.6, label="candidate (L40S)")  # fmt: skip
            ttft.axhline(slo_ttft_s, color=SLO_COLOUR, linestyle="--", linewidth=1.2, label="SLO")
            ttft.set_ylim(bottom=0)
            cost.plot(minutes, _nan([f.current_cost for f in frames]), color=COLOURS[1],
                      linewidth=1.4, label="current (L4)")  # fmt: skip
            cost.plot(minutes, _nan([f.candidate_cost for f in frames]), color=COLOURS[2],
                      linewidth=1.6, label="candidate (L40S)")  # fmt: skip
            cost.set_ylim(bottom=0)
            cost.set_xlabel("minutes since the re-plan")
            for frame in frames:
                if frame.decision:
                    for axes in (share, ttft, cost):
                        axes.axvline(frame.minute, color=PREDICTED_COLOUR, linestyle=":",
                                     linewidth=1.0)  # fmt: skip
                    share.annotate(frame.decision, (frame.minute, 102), fontsize=7,
                                   rotation=90, va="top", ha="right")  # fmt: skip
            if column == 0:
                share.set_ylabel("candidate's traffic (%)")
                ttft.set_ylabel("TTFT p95 (s)")
                cost.set_ylabel("USD per 1M output tokens")
        grid[1][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        figure.suptitle(title)
        _save(figure, path)
