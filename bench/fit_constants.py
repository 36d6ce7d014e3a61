"""Re-derive every fitted constant of the sizing model from the corpus's fit set only.

Memory (operator/llmdeploy/sizing/memory.py), from the fit rows whose KV memory is logged:
- for each activation shape on a small grid (hidden-state copies, MLP copies; the sampler's
  bytes per logit are read in vLLM's source, engine_memory.py), the non-torch memory each
  row implies is budget - weights - activation - KV (the logged weights where it has them);
- by the accounting era of the row's release (operator/llmdeploy/sizing/engine_memory.py):
  NON_TORCH_SINGLE_GPU_GIB is the median over since-start single-GPU rows; the snapshot era's
  single-GPU term the median over its single-GPU rows, its multi-GPU base and per-TP-rank
  terms a least-squares line over its multi-GPU rows (never below zero), both on releases
  without the CUDA-graph estimate in the profiling (0.18.0) nor the all-reduce fusion
  workspace; NON_TORCH_GRAPH_PROFILING_GIB the median of what the rows with the estimate and
  without the workspace imply above those terms, and NON_TORCH_ALLREDUCE_FUSION_GIB the
  median of what the rows with the workspace imply above them all;
- the activation shape kept is the one whose constants re-plan the rows with the smallest mean
  absolute KV error in GiB (first on the grid among equals).

Performance (performance.py), from the fit rows of latency.csv, in two stages, each a
coordinate descent over a grid of each of its constants until a sweep changes nothing:
- Stage A, the prefill rate: on the rows where a prefill runs alone (concurrency 1, TTFT
  comparable), COMPUTE_EFFICIENCY and TTFT_OVERHEAD_S minimising mean |TTFT error|; then, with
  those fixed, one GPU die (the catalog's `chip`) at a time on its SKUs' lone rows whose
  all-reduce had peer-to-peer, that die's compute efficiency (`COMPUTE_EFFICIENCY_BY_CHIP`)
  where those rows cover two models or more (one model's kernels are not the GPU's). A lone
  prefill measures the GEMM rate and the host time; a loaded TTFT also measures how
  synchronised the client's requests were, which many sources do not say, so loaded rows do
  not set the GEMM rate where lone rows can.
- Stage B, the rest, with stage A's values held: the other shared constants on every fit row,
  minimising mean |TPOT error| (all rows) plus mean |TTFT error| (rows whose TTFT is
  comparable), the per-GPU tables empty but stage A's; then one die at a time on its SKUs'
  fit rows whose all-reduce had peer-to-peer, from the shared values: each SKU's bandwidth
  efficiency (`BANDWIDTH_EFFICIENCY_BY_GPU`) where its rows cover two models or more, and the
  die's compute efficiency where stage A did not fit it and its SKUs' rows with a comparable
  TTFT cover two models (a die's GEMM rate shows in its prefills), on all the die's rows.
Stage A then stage B again, from the last round's values, until a round changes nothing (at
most MAX_ROUNDS; the number it took is printed). The first round starts from a fixed point
that does not read the code.

Run: .venv/bin/python bench/fit_constants.py   (prints the constants; --check compares them
with the code and exits 1 on a difference)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import (
    DEFAULT_UTILIZATION,
    KvRow,
    LatencyRow,
    _gpu,
    _model,
    constants,
    current_constants,
    load_kv,
    load_latency,
    load_split,
    predict_kv,
    predict_latency,
    predict_weights_gib,
    relative_error,
    row_moe_workspace,
    rules,
    scheduler,
)
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.sizing import performance
from llmdeploy.sizing.memory import GIB, activation_bytes, allreduce_fusion

HIDDEN_COPIES = (2, 4, 6, 8)
MLP_COPIES = (2, 4, 6, 8)


def _grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    count = round((stop - start) / step)
    return tuple(round(start + i * step, 9) for i in range(count + 1))


# Grid and starting point of each performance constant (the start does not read the code).
PERFORMANCE_GRID: dict[str, tuple[tuple[float, ...], float]] = {
    "BANDWIDTH_EFFICIENCY": (_grid(0.5, 0.95, 0.05), 0.7),
    "COMPUTE_EFFICIENCY": (_grid(0.3, 0.8, 0.05), 0.5),
    "PER_LAYER_OVERHEAD_S": (_grid(0.0, 0.0001, 0.000005), 0.00005),
    "MOE_LAYER_OVERHEAD_S": (_grid(0.0, 0.0004, 0.00001), 0.0),
    "MLA_LAYER_OVERHEAD_S": (_grid(0.0, 0.0004, 0.00001), 0.0),
    "TRITON_MOE_LAYER_OVERHEAD_S": (_grid(0.0, 0.0002, 0.000005), 0.0),
    "WEIGHT_ONLY_DEQUANT_FLOP": (_grid(0.0, 1000.0, 20.0), 0.0),
    "TTFT_OVERHEAD_S": (_grid(0.0, 0.08, 0.005), 0.04),
    "TTFT_LOAD_OVERHEAD_S": (_grid(0.0, 0.1, 0.005), 0.0),
    "TTFT_OVERHEAD_PER_STREAMED_TOKEN_S": (_grid(0.0, 0.001, 0.00002), 0.0002),
    "DECODE_HOST_PER_SEQUENCE_S": (_grid(0.0, 0.0002, 0.000005), 0.0),
}


def start_values() -> dict[str, float]:
    return {name: start for name, (_, start) in PERFORMANCE_GRID.items()}


# Fitted per GPU SKU (bandwidth) and per GPU die (compute) on top of the shared values.
EFFICIENCY_TABLES = ("BANDWIDTH_EFFICIENCY_BY_GPU", "COMPUTE_EFFICIENCY_BY_CHIP")


def _fit_rows(rows: list[KvRow] | list[LatencyRow]) -> list[str]:
    split = load_split()
    return [r.id for r in rows if split[r.id] == "fit"]


def _implied_non_torch(row: KvRow, catalog: Catalog) -> float:
    """GiB the row leaves to non-torch memory under the activation constants in place (after
    the CUDA graphs its release books inside the budget)."""
    assert row.kv_gib is not None
    model = _model(catalog, row.plan_model)
    _, batched, seqs = scheduler(row, catalog)
    gpu = _gpu(catalog, row.gpu, row.gpu_memory_gib)
    budget = gpu.visible_memory_gib * (row.gpu_memory_utilization or DEFAULT_UTILIZATION)
    weights = row.weights_gib if row.weights_gib is not None else predict_weights_gib(row, catalog)
    row_rules = rules(row, catalog)
    growth, kept, step = row_moe_workspace(row, catalog)
    activation = activation_bytes(model, row.tensor, batched, seqs, row_rules, growth, kept, step)
    activation /= GIB
    return budget - weights - activation - row_rules.cuda_graph_gib - row.kv_gib


def _least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope); a flat line through the median when x does not vary."""
    if len(set(xs)) < 2:
        return statistics.median(ys), 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def fit_memory(catalog: Catalog) -> dict[str, float]:
    fit = set(_fit_rows(load_kv()))
    rows = [
        r
        for r in load_kv()
        if r.id in fit and r.outcome in ("ran", "refused") and r.kv_gib is not None
    ]
    best: tuple[float, dict[str, float]] | None = None
    for hidden, mlp in product(HIDDEN_COPIES, MLP_COPIES):
        shape = {
            "ACTIVATION_HIDDEN_COPIES": float(hidden),
            "ACTIVATION_MLP_COPIES": float(mlp),
        }
        values = {**shape, **_fit_non_torch(rows, catalog, shape)}
        with constants(values):
            score = statistics.fmean(
                abs(predict_kv(r, catalog).kv_gib - (r.kv_gib or 0.0)) for r in rows
            )
        if best is None or score < best[0] - 1e-12:
            best = (score, values)
    assert best is not None
    return best[1]


def _fit_non_torch(
    rows: list[KvRow], catalog: Catalog, shape: dict[str, float]
) -> dict[str, float]:
    """Non-torch terms by accounting era (engine_memory.py): the median over single-GPU rows,
    a least-squares line in TP over multi-GPU rows (never below zero). Since-start multi-GPU
    memory has no fit row (memory.py keeps vllm#10511's figure). A V1 row counts only where
    its log names the sampler: at H100 defaults the two samplers' peaks differ by up to 4.6
    GiB, which would otherwise be booked as non-torch memory. A pipeline-parallel row counts
    only for its tokens (the KV metrics): its logged GiB are one rank's, often the first
    stage's, which runs no sampler, while vLLM sizes every stage's cache by the smallest
    (llm-d-planner's 0.19.0 Llama-3.1-8B PP 2 log: 1.10 GiB of peak on rank 0 against 1.89 at
    PP 1, and 1,075,312 tokens where rank 0's 66.54 GiB hold 1,090,190)."""
    with constants(shape):
        implied = [
            (r, _implied_non_torch(r, catalog))
            for r in rows
            if (r.sampler or rules(r, catalog).non_torch_since_start) and r.pipeline == 1
        ]
    since_start = [
        y
        for r, y in implied
        if rules(r, catalog).non_torch_since_start and r.tensor * r.pipeline == 1
    ]
    snapshot = [(r, y) for r, y in implied if not rules(r, catalog).non_torch_since_start]
    # First the releases without the graph estimate in the profiling nor the fusion workspace,
    # then each of those terms on top of that era's figure for the row's layout.
    single = [y for r, y in snapshot if r.tensor == 1 and not _graphs(r, catalog)]
    plain = [
        (float(r.tensor), y)
        for r, y in snapshot
        if r.tensor > 1 and not _graphs(r, catalog) and not _fusion(r, catalog)
    ]
    single_gib = round(max(0.0, statistics.median(single)), 2)
    base, per_rank = _least_squares([x for x, _ in plain], [y for _, y in plain])
    base, per_rank = round(max(0.0, base), 2), round(max(0.0, per_rank), 2)

    def before(r: KvRow) -> float:
        return single_gib if r.tensor == 1 else base + per_rank * r.tensor

    graph_rows = [
        y - before(r) for r, y in snapshot if _graphs(r, catalog) and not _fusion(r, catalog)
    ]
    graphs = round(max(0.0, statistics.median(graph_rows)), 2)
    fused = [
        y - before(r) - (graphs if _graphs(r, catalog) else 0.0)
        for r, y in snapshot
        if _fusion(r, catalog)
    ]
    return {
        "NON_TORCH_SINGLE_GPU_GIB": round(max(0.0, statistics.median(since_start)), 2),
        "NON_TORCH_SNAPSHOT_SINGLE_GPU_GIB": single_gib,
        "NON_TORCH_SNAPSHOT_MULTI_GPU_BASE_GIB": base,
        "NON_TORCH_SNAPSHOT_PER_TP_RANK_GIB": per_rank,
        "NON_TORCH_GRAPH_PROFILING_GIB": graphs,
        "NON_TORCH_ALLREDUCE_FUSION_GIB": round(max(0.0, statistics.median(fused)), 2),
    }


def _graphs(row: KvRow, catalog: Catalog) -> bool:
    return rules(row, catalog).graph_profiling


def _fusion(row: KvRow, catalog: Catalog) -> bool:
    return allreduce_fusion(row.tensor, row.pipeline, rules(row, catalog))


def _latency_score(rows: list[LatencyRow], catalog: Catalog, values: dict[str, float]) -> float:
    """Stage B's objective: mean |TPOT error| plus mean |TTFT error| (comparable rows)."""
    with constants(values):
        predicted = [predict_latency(r, catalog) for r in rows]
    tpot = statistics.fmean(
        abs(relative_error(p[1], r.tpot_ms)) for p, r in zip(predicted, rows, strict=True)
    )
    ttft_errors = [
        abs(relative_error(p[0], r.ttft_ms))
        for p, r in zip(predicted, rows, strict=True)
        if r.ttft_comparable
    ]
    return tpot + (statistics.fmean(ttft_errors) if ttft_errors else 0.0)


def _lone_ttft_score(rows: list[LatencyRow], catalog: Catalog, values: dict[str, float]) -> float:
    """Stage A's objective: mean |TTFT error| (the rows are lone, comparable prefills)."""
    with constants(values):
        return statistics.fmean(
            abs(relative_error(predict_latency(r, catalog)[0], r.ttft_ms)) for r in rows
        )


Score = Callable[[list[LatencyRow], Catalog, dict[str, float]], float]


def _descend(
    rows: list[LatencyRow],
    catalog: Catalog,
    values: dict[str, float],
    grids: dict[str, tuple[float, ...]],
    score_of: Score = _latency_score,
) -> dict[str, float]:
    """Coordinate descent over `grids` from `values` until a sweep changes nothing."""
    score = score_of(rows, catalog, values)
    for _ in range(30):
        changed = False
        for name, grid in grids.items():
            for candidate in grid:
                trial = {**values, name: candidate}
                trial_score = score_of(rows, catalog, trial)
                if trial_score < score - 1e-12:
                    values, score, changed = trial, trial_score, True
        if not changed:
            break
    return values


# Stage A's shared constants: what a lone prefill measures (the GEMM rate, the host time).
PREFILL_CONSTANTS = ("COMPUTE_EFFICIENCY", "TTFT_OVERHEAD_S")
MAX_ROUNDS = 8


def lone_rows(rows: list[LatencyRow]) -> list[LatencyRow]:
    """The rows whose prefill ran alone: concurrency 1, the TTFT comparable."""
    return [r for r in rows if r.concurrency == 1 and r.ttft_comparable]


def _chip(row: LatencyRow, catalog: Catalog) -> str:
    return catalog.gpus[row.gpu].chip or row.gpu


def _chip_rows(rows: list[LatencyRow], catalog: Catalog) -> dict[str, list[LatencyRow]]:
    """Rows whose all-reduce had peer-to-peer, by die (without pcie rows: their error is the
    interconnect's)."""
    own = [r for r in rows if not r.interconnect]
    return {
        chip: [r for r in own if _chip(r, catalog) == chip]
        for chip in sorted({_chip(r, catalog) for r in own})
    }


def compute_chips(rows: list[LatencyRow], catalog: Catalog) -> set[str]:
    """Dies whose compute efficiency `rows` fit: a catalog `chip` whose SKUs' rows cover two
    models or more."""
    return {
        chip
        for chip, kin in _chip_rows(rows, catalog).items()
        if catalog.gpus[kin[0].gpu].chip and len({r.plan_model for r in kin}) >= 2
    }


def _compute_name(chip: str) -> str:
    return f"COMPUTE_EFFICIENCY_BY_CHIP[{chip}]"


def stage_a(rows: list[LatencyRow], catalog: Catalog, values: dict[str, float]) -> dict[str, float]:
    """The prefill constants on the lone rows among `rows`, the others held: the shared ones
    with the stage's per-die entries removed, then those dies one at a time from the shared
    value."""
    lone = lone_rows(rows)
    chips = compute_chips(lone, catalog)
    held = {k: v for k, v in values.items() if k not in {_compute_name(c) for c in chips}}
    values = _descend(
        lone,
        catalog,
        held,
        {name: PERFORMANCE_GRID[name][0] for name in PREFILL_CONSTANTS},
        _lone_ttft_score,
    )
    kin = _chip_rows(lone, catalog)
    for chip in sorted(chips):
        name = _compute_name(chip)
        values = _descend(
            kin[chip],
            catalog,
            {**values, name: values["COMPUTE_EFFICIENCY"]},
            {name: PERFORMANCE_GRID["COMPUTE_EFFICIENCY"][0]},
            _lone_ttft_score,
        )
    return values


def stage_b(
    rows: list[LatencyRow], catalog: Catalog, values: dict[str, float], prefill_chips: set[str]
) -> dict[str, float]:
    """Every other constant on all fit rows with stage A's held: the shared ones with the
    stage's table entries removed, then each die's SKUs' bandwidth efficiencies and, where
    stage A did not fit it, the die's compute efficiency, from the shared values."""
    prefill = {_compute_name(c) for c in prefill_chips}
    held = {k: v for k, v in values.items() if "[" not in k or k in prefill}
    values = _descend(
        rows,
        catalog,
        held,
        {n: grid for n, (grid, _) in PERFORMANCE_GRID.items() if n not in PREFILL_CONSTANTS},
    )
    bandwidth_grid, compute_grid = (
        PERFORMANCE_GRID[name][0] for name in ("BANDWIDTH_EFFICIENCY", "COMPUTE_EFFICIENCY")
    )
    # A die's GEMM rate shows in its prefills: a die gets an entry of its own only where its
    # rows with a comparable TTFT cover two models (a loaded TPOT moves with it only through
    # the prefills it waits behind); the entry is then fitted on all the die's rows.
    own_chips = compute_chips([r for r in rows if r.ttft_comparable], catalog) - prefill_chips
    for chip, kin in _chip_rows(rows, catalog).items():
        grids: dict[str, tuple[float, ...]] = {}
        start: dict[str, float] = {}
        for gpu in sorted({r.gpu for r in kin}):
            if len({r.plan_model for r in kin if r.gpu == gpu}) >= 2:
                grids[f"BANDWIDTH_EFFICIENCY_BY_GPU[{gpu}]"] = bandwidth_grid
                start[f"BANDWIDTH_EFFICIENCY_BY_GPU[{gpu}]"] = values["BANDWIDTH_EFFICIENCY"]
        if chip in own_chips:
            grids[_compute_name(chip)] = compute_grid
            start[_compute_name(chip)] = values["COMPUTE_EFFICIENCY"]
        if grids:
            values = _descend(kin, catalog, {**values, **start}, grids)
    return values


@contextmanager
def empty_tables() -> Iterator[None]:
    """The per-GPU tables emptied (the fit starts without them), restored after."""
    with constants({}):
        for table in EFFICIENCY_TABLES:
            getattr(performance, table).clear()
        yield


def fit_performance(catalog: Catalog) -> dict[str, float]:
    """Stage A then stage B, from a fixed start, until a round changes nothing."""
    with empty_tables():
        values, rounds = _fit_performance(catalog)
    print(f"# performance: the staged fit settled in {rounds} rounds", file=sys.stderr)
    return values


def _fit_performance(catalog: Catalog) -> tuple[dict[str, float], int]:
    fit = set(_fit_rows(load_latency()))
    rows = [r for r in load_latency() if r.id in fit]
    prefill_chips = compute_chips(lone_rows(rows), catalog)
    values = start_values()
    for rounds in range(1, MAX_ROUNDS + 1):
        after = stage_b(rows, catalog, stage_a(rows, catalog, values), prefill_chips)
        if after == values:
            return values, rounds
        values = after
    raise SystemExit(f"the staged fit did not settle in {MAX_ROUNDS} rounds")


def fit() -> dict[str, float]:
    catalog = load_catalog()
    return {**fit_memory(catalog), **fit_performance(catalog)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the code's constants")
    args = parser.parse_args()
    fitted = fit()
    code = current_constants()
    differ = False
    for name in sorted(set(code) - set(fitted)):
        differ = True
        print(f"{name}   # in the code, not fitted: {code[name]!r}")
    for name, value in fitted.items():
        known = name in code
        mark = (
            ""
            if known and abs(code[name] - value) < 1e-9
            else f"   # code has {code[name]!r}"
            if known
            else "   # not in the code"
        )
        differ |= bool(mark)
        print(f"{name} = {value!r}{mark}")
    if args.check and differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
