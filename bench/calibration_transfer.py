"""What a calibration leaves of the latency error, as far as the corpus can say.

The operator's calibration (docs/measure.md) scales every estimate by the measured / predicted
ratio of the running layout at the measured load. The nearest the corpus comes to it: rows of
one setup (the same source, model, GPU, layout, format, engine release, lengths and load kind)
measured at other concurrencies. Each ordered pair takes one row's measured / predicted ratio
and scales the model's estimate for the other row by it; the error left is scored on the
other row, which must be held out (the calibrating row plays the measurement, from either
set). Read-only, the outside set is not read: it says why a calibrated plan claims no band of
its own (optimizer._latency_band_reason), and nothing is fitted or chosen from it.

Run: .venv/bin/python bench/calibration_transfer.py
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import (
    LatencyRow,
    expert_parallel,
    load_latency,
    load_split,
    predict_latency,
    relative_error,
    summarize,
)
from llmdeploy.catalog import load_catalog

Predicted = tuple[str, LatencyRow, float, float]  # set, row, TTFT ms, TPOT ms


def setup_of(row: LatencyRow) -> tuple[object, ...]:
    """What a calibration carries over: everything but the concurrency."""
    return (row.source, row.model, row.plan_model, row.gpu, row.tensor, row.pipeline,
            expert_parallel(row), row.interconnect, row.quantization, row.kv_dtype, row.engine,
            row.engine_version, row.endpoint, row.load, row.input_tokens,
            row.output_tokens)  # fmt: skip


def transfer_errors(both_held_out: bool) -> dict[str, list[float]]:
    """The errors left on held-out rows by a ratio measured on a row of the same setup at
    another concurrency (`both_held_out`: that row held out too)."""
    catalog, split = load_catalog(), load_split()
    setups: dict[tuple[object, ...], list[Predicted]] = defaultdict(list)
    for row in load_latency():
        setups[setup_of(row)].append((split[row.id], row, *predict_latency(row, catalog)))
    errors: dict[str, list[float]] = {"TTFT": [], "TPOT": []}
    for rows in setups.values():
        for source_set, source, source_ttft, source_tpot in rows:
            if both_held_out and source_set != "held-out":
                continue
            for target_set, target, ttft, tpot in rows:
                if target_set != "held-out" or target.concurrency == source.concurrency:
                    continue
                scaled = tpot * source.tpot_ms / source_tpot
                errors["TPOT"].append(relative_error(scaled, target.tpot_ms))
                if source.ttft_comparable and target.ttft_comparable:
                    scaled = ttft * source.ttft_ms / source_ttft
                    errors["TTFT"].append(relative_error(scaled, target.ttft_ms))
    return errors


def main() -> None:
    print("| calibrated on | metric | pairs | median abs error | p90 | max | within +-10% |")
    print("|---|---|---|---|---|---|---|")
    for both, title in ((False, "any row of the setup"), (True, "a held-out row of the setup")):
        for metric, values in transfer_errors(both).items():
            s = summarize(values)
            if s is None:
                print(f"| {title} | {metric} | 0 | - | - | - | - |")
                continue
            print(
                f"| {title} | {metric} | {s.rows} | {100 * s.median:.1f}% | {100 * s.p90:.1f}% "
                f"| {100 * s.max:.1f}% | {100 * s.within_10:.0f}% |"
            )


if __name__ == "__main__":
    main()
