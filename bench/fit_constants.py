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

Performance (performance.py), from the fit rows of latency.csv: coordinate descent over a grid
of each constant, from a fixed start, minimising mean |TPOT error| (all rows) plus mean |TTFT
error| (rows whose TTFT is comparable), until a sweep changes nothing. First the shared
constants on every fit row (the per-GPU tables empty); then, with those fixed, one GPU die
(the catalog's `chip`) at a time on its SKUs' fit rows whose all-reduce had peer-to-peer,
starting from the shared values: each SKU's bandwidth efficiency (`BANDWIDTH_EFFICIENCY_BY_GPU`)
where its rows cover two models or more, and the die's compute efficiency
(`COMPUTE_EFFICIENCY_BY_CHIP`) where its SKUs' rows do (one model's kernels are not the GPU's).

Run: .venv/bin/python bench/fit_constants.py   (prints the constants; --check compares them
with the code and exits 1 on a difference)
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
}


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
    activation = activation_bytes(model, row.tensor, batched, seqs, row_rules) / GIB
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


def _descend(
    rows: list[LatencyRow],
    catalog: Catalog,
    values: dict[str, float],
    grids: dict[str, tuple[float, ...]],
) -> dict[str, float]:
    """Coordinate descent over `grids` from `values` until a sweep changes nothing."""
    score = _latency_score(rows, catalog, values)
    for _ in range(30):
        changed = False
        for name, grid in grids.items():
            for candidate in grid:
                trial = {**values, name: candidate}
                trial_score = _latency_score(rows, catalog, trial)
                if trial_score < score - 1e-12:
                    values, score, changed = trial, trial_score, True
        if not changed:
            break
    return values


def fit_performance(catalog: Catalog) -> dict[str, float]:
    """The shared constants on every fit row; then, with those fixed, each GPU die's compute
    efficiency and its SKUs' bandwidth efficiencies on those SKUs' fit rows, where they
    cover two models or more. Rows whose all-reduce ran without GPU peer-to-peer
    (`interconnect` pcie) stay out of that step: their error is the interconnect's."""
    with constants({}):  # restores the tables emptied here: the fit starts without them
        for table in EFFICIENCY_TABLES:
            getattr(performance, table).clear()
        return _fit_performance(catalog)


def _fit_performance(catalog: Catalog) -> dict[str, float]:
    fit = set(_fit_rows(load_latency()))
    rows = [r for r in load_latency() if r.id in fit]
    values = _descend(
        rows,
        catalog,
        {name: start for name, (_, start) in PERFORMANCE_GRID.items()},
        {name: grid for name, (grid, _) in PERFORMANCE_GRID.items()},
    )
    bandwidth_grid, compute_grid = (
        PERFORMANCE_GRID[name][0] for name in ("BANDWIDTH_EFFICIENCY", "COMPUTE_EFFICIENCY")
    )
    own = [r for r in rows if not r.interconnect]
    for chip in sorted({catalog.gpus[r.gpu].chip or r.gpu for r in own}):
        kin = [r for r in own if (catalog.gpus[r.gpu].chip or r.gpu) == chip]
        grids: dict[str, tuple[float, ...]] = {}
        start: dict[str, float] = {}
        for gpu in sorted({r.gpu for r in kin}):
            if len({r.plan_model for r in kin if r.gpu == gpu}) >= 2:
                grids[f"BANDWIDTH_EFFICIENCY_BY_GPU[{gpu}]"] = bandwidth_grid
                start[f"BANDWIDTH_EFFICIENCY_BY_GPU[{gpu}]"] = values["BANDWIDTH_EFFICIENCY"]
        if catalog.gpus[kin[0].gpu].chip and len({r.plan_model for r in kin}) >= 2:
            grids[f"COMPUTE_EFFICIENCY_BY_CHIP[{chip}]"] = compute_grid
            start[f"COMPUTE_EFFICIENCY_BY_CHIP[{chip}]"] = values["COMPUTE_EFFICIENCY"]
        if grids:
            values = _descend(kin, catalog, {**values, **start}, grids)
    return values


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
