"""A plan says when an estimated TTFT or TPOT meets its SLO by less than the latency model's
held-out error (optimizer.TTFT_ESTIMATE_BAND, TPOT_ESTIMATE_BAND), unless it is calibrated."""

from __future__ import annotations

from typing import Any

from llmdeploy.catalog import Catalog
from llmdeploy.sizing import LatencyCalibration, plan_deployment
from llmdeploy.sizing.optimizer import TPOT_ESTIMATE_BAND, TTFT_ESTIMATE_BAND
from llmdeploy.sizing.plan import Plan

from .conftest import make_spec

BANDED = "within the latency model's held-out error"


def on_one_l4(
    catalog: Catalog,
    slo: dict[str, float] | None = None,
    calibration: LatencyCalibration | None = None,
    **spec: Any,
) -> Plan:
    """Llama-3.1-8B in fp8 on one L4 (the layout pinned, so the SLO moves no choice)."""
    made = make_spec(
        placement={"gpu": "nvidia-l4"},
        quantization="fp8",
        parallelism={"tensor": 1, "pipeline": 1},
        engine={"kvCacheDtype": "auto"},
        workload={"maxContextLength": 8192, "concurrency": 8},
        slo=slo or {},
        **spec,
    )
    plan = plan_deployment(made, catalog, calibration=calibration)
    assert plan.feasible and plan.gpu == "nvidia-l4" and plan.quantization == "fp8"
    return plan


def estimates(catalog: Catalog) -> tuple[float, float]:
    plan = on_one_l4(catalog)
    assert plan.estimated_ttft_ms and plan.estimated_tpot_ms
    return plan.estimated_ttft_ms, plan.estimated_tpot_ms


def banded(plan: Plan) -> list[str]:
    return [r for r in plan.reasons if BANDED in r]


def test_a_ttft_near_its_slo_says_so_with_the_figures(catalog: Catalog) -> None:
    ttft, _ = estimates(catalog)
    slo = round(ttft / (1 - TTFT_ESTIMATE_BAND / 2))  # half the band above the estimate
    plan = on_one_l4(catalog, {"ttftMs": slo})
    [reason] = banded(plan)
    assert plan.estimated_ttft_ms is not None
    margin = 1 - plan.estimated_ttft_ms / slo
    measured = plan.estimated_ttft_ms / (1 - TTFT_ESTIMATE_BAND)
    assert reason.startswith(
        f"est. TTFT {plan.estimated_ttft_ms:.0f} ms is {margin:.0%} under the {slo} ms SLO, "
        f"{BANDED} (TTFT +-{TTFT_ESTIMATE_BAND:.0%} of the measured value: up to "
        f"{measured:.0f} ms measured): the deployment may miss the SLO; "
    )
    assert "TPOT" not in reason
    assert reason.endswith("status.calibration corrects the estimates of status.recommendation "
                           "and of the next plan")  # fmt: skip


def test_a_tpot_near_its_slo_says_so(catalog: Catalog) -> None:
    ttft, tpot = estimates(catalog)
    plan = on_one_l4(catalog, {"ttftMs": 10 * ttft, "tpotMs": round(tpot * 1.05, 1)})
    [reason] = banded(plan)
    assert reason.startswith(f"est. TPOT {plan.estimated_tpot_ms:.1f} ms is 5% under the ")
    assert f"(TPOT +-{TPOT_ESTIMATE_BAND:.0%} of the measured value: up to " in reason
    assert "TTFT" not in reason


def test_both_near_their_slos_are_one_reason(catalog: Catalog) -> None:
    ttft, tpot = estimates(catalog)
    plan = on_one_l4(catalog, {"ttftMs": round(ttft * 1.1), "tpotMs": round(tpot * 1.02, 1)})
    [reason] = banded(plan)
    assert reason.startswith(f"est. TTFT {plan.estimated_ttft_ms:.0f} ms is ")
    assert f" and TPOT {plan.estimated_tpot_ms:.1f} ms is " in reason
    assert f"(TTFT +-{TTFT_ESTIMATE_BAND:.0%} of the measured value: up to " in reason
    assert f" ms measured; TPOT +-{TPOT_ESTIMATE_BAND:.0%} of the measured value: " in reason


def test_the_reason_gives_the_measured_figure_its_band_allows(catalog: Catalog) -> None:
    """The error is relative to the measured figure, so "+-42%" of a 191 ms estimate does not
    stop at 191 x 1.42 = 271 ms: a deployment estimated at 191 ms may measure 191 / 0.58 =
    329 ms. The reason says that figure, so that a reader can see why an SLO above
    estimate x (1 + band) is flagged."""
    ttft, tpot = estimates(catalog)
    slo = {"ttftMs": round(ttft * (1 + TTFT_ESTIMATE_BAND) * 1.05), "tpotMs": round(tpot * 1.1, 1)}
    plan = on_one_l4(catalog, slo)
    [reason] = banded(plan)
    assert plan.estimated_ttft_ms and plan.estimated_tpot_ms
    worst_ttft = plan.estimated_ttft_ms / (1 - TTFT_ESTIMATE_BAND)
    worst_tpot = plan.estimated_tpot_ms / (1 - TPOT_ESTIMATE_BAND)
    assert worst_ttft > slo["ttftMs"] > plan.estimated_ttft_ms * (1 + TTFT_ESTIMATE_BAND)
    assert f"up to {worst_ttft:.0f} ms measured" in reason
    assert f"up to {worst_tpot:.1f} ms measured" in reason


def test_the_band_is_counted_below_the_slo(catalog: Catalog) -> None:
    """The error is relative to the measured figure: a deployment measured at the SLO may be
    estimated as low as SLO x (1 - band), lower than SLO / (1 + band)."""
    ttft, tpot = estimates(catalog)
    slo = ttft * (1 + TTFT_ESTIMATE_BAND) * 1.05
    assert ttft >= slo * (1 - TTFT_ESTIMATE_BAND)
    assert banded(on_one_l4(catalog, {"ttftMs": slo}))
    beyond = ttft / (1 - TTFT_ESTIMATE_BAND) * 1.02
    assert not banded(on_one_l4(catalog, {"ttftMs": beyond, "tpotMs": 2 * tpot}))


def test_estimates_far_from_the_slo_or_no_slo_say_nothing(catalog: Catalog) -> None:
    ttft, tpot = estimates(catalog)
    assert not banded(on_one_l4(catalog, {"ttftMs": 3 * ttft, "tpotMs": 1.5 * tpot}))
    assert not banded(on_one_l4(catalog))


def test_a_calibrated_plan_is_not_held_to_the_uncalibrated_band(catalog: Catalog) -> None:
    """Its estimates are scaled by the deployment's own measured / predicted ratios."""
    ttft, tpot = estimates(catalog)
    calibration = LatencyCalibration(ttft=1.2, tpot=1.1)
    slo = {"ttftMs": round(ttft * 1.25), "tpotMs": round(tpot * 1.12, 1)}
    calibrated = on_one_l4(catalog, slo, calibration)
    assert calibrated.estimated_ttft_ms and calibrated.estimated_ttft_ms > ttft
    assert not banded(calibrated)
    assert banded(on_one_l4(catalog, slo))  # the same SLO uncalibrated


def test_with_calibration_off_no_measurement_will_correct_it(catalog: Catalog) -> None:
    ttft, _ = estimates(catalog)
    plan = on_one_l4(catalog, {"ttftMs": round(ttft * 1.1)}, planning={"calibration": "off"})
    [reason] = banded(plan)
    assert reason.endswith(
        "spec.planning.calibration is off, so measurements will not correct the estimate"
    )


def test_an_estimate_within_half_a_percent_of_its_slo_is_at_it(catalog: Catalog) -> None:
    ttft, tpot = estimates(catalog)
    plan = on_one_l4(catalog, {"ttftMs": 10 * ttft, "tpotMs": round(tpot * 1.004, 2)})
    [reason] = banded(plan)
    assert reason.startswith(f"est. TPOT {plan.estimated_tpot_ms:.1f} ms is at the ")
