"""bench/latency_check.py: the latency model on a CSV of rows kept outside the corpus."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import corpus
import latency_check
from llmdeploy.catalog import load_catalog


def _outside_csv(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    """Two committed rows written elsewhere: a dense vLLM row and an MoE one, the MoE row's TTFT
    marked as not whole prefills."""
    with (corpus.DATA / "latency.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        committed = {r["id"]: r for r in reader}
    dense = committed["gs-qwen3-8b-h100-vllm-c1-sharegpt"]
    moe = dict(committed["ix-b200-gptoss120b-mxfp4-vllm-tp1-c4-1024x1024"], ttft_valid="no")
    path = tmp_path / "fresh.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows([dense, moe])
    return path, [dense, moe]


def test_every_row_gets_the_committed_models_error(tmp_path: Path) -> None:
    path, rows = _outside_csv(tmp_path)
    catalog = load_catalog()
    checked = latency_check.check(path, catalog)
    assert [c.row.id for c in checked] == [r["id"] for r in rows]
    dense, moe = checked
    ttft, tpot = corpus.predict_latency(dense.row, catalog)
    assert dense.errors["TTFT"] == pytest.approx(corpus.relative_error(ttft, dense.row.ttft_ms))
    assert dense.errors["TPOT"] == pytest.approx(corpus.relative_error(tpot, dense.row.tpot_ms))
    assert (dense.engine, dense.moe) == ("vllm", False)
    assert moe.moe and moe.errors["TTFT"] is None and moe.errors["TPOT"] is not None


def test_the_report_counts_a_ttft_only_where_it_is_whole_prefills(tmp_path: Path) -> None:
    path, rows = _outside_csv(tmp_path)
    text = latency_check.report(latency_check.check(path, load_catalog()))
    assert "| all | TTFT | 1 |" in text and "| all | TPOT | 2 |" in text
    assert "| MoE | TTFT | 0 |" in text and "| dense | TTFT | 1 |" in text
    for row in rows:
        assert f"| {row['id']} |" in text
    assert "(not whole prefills)" in text
