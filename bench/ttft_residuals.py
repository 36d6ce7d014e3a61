"""The shape of the TTFT error: signed error by prompt size per GPU, TP, GPU and engine.

For the latency rows of one set (bench/data/split.csv; the fit set unless told) whose TTFT
times whole prefills, prints the signed median TTFT error of each family (prompt tokens per
GPU, i.e. input_tokens / TP, in bands; TP; GPU; engine; lone or loaded; MoE or dense), then
every row with what each of the model's terms adds to its TTFT: the TTFT less the TTFT with
that term removed (performance.py), in ms. Terms:
- host: the request's host time (`request_host_s`: TTFT_OVERHEAD_S, the release's front-end
  time, and under load the fitted TTFT_LOAD_OVERHEAD_S and TTFT_OVERHEAD_PER_STREAMED_TOKEN_S);
- all-reduce: every TP all-reduce (`_all_reduce_s`), the prefill's and the steps waited;
- overhead: the per-layer step costs (PER_LAYER_OVERHEAD_S and the MoE and MLA extras);
- marlin: the W4A16 conversion of a prefill (`_marlin_prefill_s`);
- attention: the prefill's attention FLOPs (`_attention_flops`);
- rest: the GEMMs, weight reads, the steps waited and the queue.
A term removed can shift the queue too, so the terms need not add up to the TTFT exactly.
Read-only: no constant is fitted here and nothing is chosen.

Run: .venv/bin/python bench/ttft_residuals.py [--set fit|held-out|all] [--rows]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import LatencyRow, _model, load_latency, load_split, predict_latency, relative_error
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.sizing import performance

# Prompt tokens per GPU (input_tokens / TP): the bands the rows are grouped in.
BANDS = (256, 1024, 4096)


def _zero(*_args: object, **_kwargs: object) -> float:
    return 0.0


# Each term: the module attributes that, set to these values, remove it from the model.
TERMS: dict[str, dict[str, object]] = {
    "host": {"request_host_s": _zero},
    "all-reduce": {"_all_reduce_s": _zero},
    "overhead": {
        "PER_LAYER_OVERHEAD_S": 0.0,
        "MOE_LAYER_OVERHEAD_S": 0.0,
        "TRITON_MOE_LAYER_OVERHEAD_S": 0.0,
        "MLA_LAYER_OVERHEAD_S": 0.0,
    },
    "marlin": {"_marlin_prefill_s": _zero},
    "attention": {"_attention_flops": _zero},
}


@contextmanager
def without(term: str) -> Iterator[None]:
    """performance.py with `term` removed (TERMS), restored after."""
    with ExitStack() as stack:
        for name, value in TERMS[term].items():
            stack.enter_context(mock.patch.object(performance, name, value))
        yield


def band(row: LatencyRow) -> str:
    per_gpu = row.input_tokens / row.tensor
    low = 0
    for high in BANDS:
        if per_gpu < high:
            return f"{low}-{high - 1}"
        low = high
    return f">={low}"


def families(row: LatencyRow, moe: bool) -> list[str]:
    return [
        f"prompt/GPU {band(row)}",
        f"TP {row.tensor}",
        f"GPU {row.gpu}",
        f"engine {row.engine}",
        "lone" if row.concurrency == 1 else "loaded",
        "MoE" if moe else "dense",
        f"prompt/GPU {band(row)}, TP {row.tensor}",
    ]


def rows_of(which: str) -> list[LatencyRow]:
    split = load_split()
    return [
        r
        for r in load_latency()
        if r.ttft_comparable and (which == "all" or split.get(r.id) == which)
    ]


def ttft_ms(row: LatencyRow, catalog: Catalog) -> float:
    return predict_latency(row, catalog)[0]


def terms_ms(row: LatencyRow, catalog: Catalog, total: float) -> dict[str, float]:
    """What each term adds to the row's predicted TTFT (ms)."""
    added = {}
    for term in TERMS:
        with without(term):
            added[term] = total - ttft_ms(row, catalog)
    added["rest"] = total - sum(added.values())
    return added


def group_table(
    rows: list[LatencyRow], errors: dict[str, float], moe: Callable[[LatencyRow], bool]
) -> list[str]:
    groups: dict[str, list[float]] = {}
    for row in rows:
        for family in families(row, moe(row)):
            groups.setdefault(family, []).append(errors[row.id])
    out = ["| family | rows | signed median | min | max |", "|---|---|---|---|---|"]
    for family in sorted(groups):
        e = groups[family]
        out.append(
            f"| {family} | {len(e)} | {100 * statistics.median(e):+.1f}% "
            f"| {100 * min(e):+.1f}% | {100 * max(e):+.1f}% |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", default="fit", choices=("fit", "held-out", "all"))
    parser.add_argument("--rows", action="store_true", help="every row with its terms")
    args = parser.parse_args(argv)
    catalog = load_catalog()
    rows = rows_of(args.set)
    predicted = {r.id: ttft_ms(r, catalog) for r in rows}
    errors = {r.id: relative_error(predicted[r.id], r.ttft_ms) for r in rows}

    def moe(row: LatencyRow) -> bool:
        return _model(catalog, row.plan_model).is_moe

    print(f"### TTFT signed error, {args.set} set ({len(rows)} rows)\n")
    print("\n".join(group_table(rows, errors, moe)))
    if not args.rows:
        return
    names = [*TERMS, "rest"]
    print(
        "\n| row | TP | c | prompt/GPU | measured | predicted | error | " + " | ".join(names) + " |"
    )
    print("|---|---|---|---|---|---|---|" + "---|" * len(names))
    for row in sorted(rows, key=lambda r: (r.plan_model, r.gpu, r.input_tokens / r.tensor)):
        total = predicted[row.id]
        added = terms_ms(row, catalog, total)
        print(
            f"| {row.id} | {row.tensor} | {row.concurrency} | {row.input_tokens / row.tensor:.0f} "
            f"| {row.ttft_ms:g} | {total:.1f} | {100 * errors[row.id]:+.1f}% | "
            + " | ".join(f"{added[n]:.1f}" for n in names)
            + " |"
        )


if __name__ == "__main__":
    main()
