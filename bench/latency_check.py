"""The latency model on latency rows kept outside the corpus: a blind, out-of-sample check.

Reads a CSV with bench/data/latency.csv's header from any path (rows nobody fitted or chose a
mechanism on), re-plans every row as bench/sizing_accuracy.py does, and prints per metric the
median |error|, p90, max and share within +-10%: over all rows, then per family (dense or MoE,
engine, GPU, concurrency 1 or more), then every row's error. The rows join no set and are not
split: the file need not be in bench/data.
Run: .venv/bin/python bench/latency_check.py PATH [--fitted]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import (
    LatencyRow,
    constants,
    load_latency,
    predict_latency,
    relative_error,
    summarize,
)
from llmdeploy.api.types import ModelSpec
from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.sizing import resolve_model

METRICS = ("TTFT", "TPOT")


@dataclass(frozen=True)
class Checked:
    """One row's prediction and its family."""

    row: LatencyRow
    engine: str
    moe: bool
    ttft_ms: float
    tpot_ms: float

    @property
    def errors(self) -> dict[str, float | None]:
        """Relative error per metric; None for a TTFT the source shows is not whole prefills."""
        ttft = relative_error(self.ttft_ms, self.row.ttft_ms) if self.row.ttft_comparable else None
        return {"TTFT": ttft, "TPOT": relative_error(self.tpot_ms, self.row.tpot_ms)}

    def families(self) -> list[str]:
        load = "concurrency 1" if self.row.concurrency == 1 else "concurrency > 1"
        return [
            "MoE" if self.moe else "dense",
            f"engine {self.engine}",
            f"GPU {self.row.gpu}",
            f"{'MoE' if self.moe else 'dense'} / {self.engine} / {self.row.gpu}",
            load,
        ]


def check(path: Path, catalog: Catalog) -> list[Checked]:
    """Every row of `path` with the committed model's prediction."""
    checked = []
    for row in load_latency(str(path.resolve())):
        ttft, tpot = predict_latency(row, catalog)
        moe = resolve_model(ModelSpec(name=row.plan_model), catalog).experts > 0
        checked.append(Checked(row, row.engine, moe, ttft, tpot))
    return checked


def table(title: str, rows: Iterable[Checked]) -> list[str]:
    """One line per metric: rows, median |error|, p90, max, within +-10%, signed median."""
    lines = []
    rows = list(rows)
    for metric in METRICS:
        errors = [e for r in rows if (e := r.errors[metric]) is not None]
        s = summarize(errors)
        if s is None:
            lines.append(f"| {title} | {metric} | 0 | - | - | - | - | - |")
            continue
        signed = statistics.median(errors)
        lines.append(
            f"| {title} | {metric} | {s.rows} | {100 * s.median:.1f}% | {100 * s.p90:.1f}% "
            f"| {100 * s.max:.1f}% | {100 * s.within_10:.0f}% | {100 * signed:+.1f}% |"
        )
    return lines


def report(checked: list[Checked]) -> str:
    out = [
        "| rows | metric | n | median abs | p90 | max | within +-10% | signed median |",
        "|---|---|---|---|---|---|---|---|",
        *table("all", checked),
    ]
    families: dict[str, list[Checked]] = {}
    for c in checked:
        for family in c.families():
            families.setdefault(family, []).append(c)
    for family in sorted(families):
        out += table(family, families[family])
    out += [
        "",
        "| row | engine | GPU | TP | c | in/out | TTFT ms measured / predicted / error "
        "| TPOT ms measured / predicted / error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in checked:
        r, e = c.row, c.errors
        ttft = (
            f"{r.ttft_ms:g} / {c.ttft_ms:.1f} / {100 * t:+.1f}%"
            if (t := e["TTFT"]) is not None
            else f"{r.ttft_ms:g} / {c.ttft_ms:.1f} / (not whole prefills)"
        )
        tpot_error = e["TPOT"]
        assert tpot_error is not None
        out.append(
            f"| {r.id} | {c.engine} | {r.gpu} | {r.tensor} | {r.concurrency} "
            f"| {r.input_tokens}/{r.output_tokens} | {ttft} "
            f"| {r.tpot_ms:g} / {c.tpot_ms:.2f} / {100 * tpot_error:+.1f}% |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, help="a CSV with latency.csv's header")
    parser.add_argument(
        "--fitted", action="store_true", help="with the constants fit_constants.py derives"
    )
    args = parser.parse_args(argv)
    catalog = load_catalog()
    if args.fitted:
        from fit_constants import fit

        with constants(fit()):
            checked = check(args.path, catalog)
    else:
        checked = check(args.path, catalog)
    print(report(checked))


if __name__ == "__main__":
    main()
