"""The serving layouts the latency corpus replays (bench/data/README.md)."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import corpus


def test_no_corpus_row_ran_attention_data_parallelism() -> None:
    """With attention DP each rank runs attention for its own requests, a layout the planner does
    not plan, so a row that ran it cannot be replayed as plain TP. Every InferenceMAX row quotes
    the run's decode_dp_attention, and none says true."""
    with (corpus.DATA / "latency.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    recorded = {}
    for row in rows:
        match = re.search(r"dp_attention (\w+)", row["quote"])
        if match:
            recorded[row["id"]] = match.group(1)
    inferencemax = {row["id"] for row in rows if row["id"].startswith("ix-")}
    assert inferencemax
    assert inferencemax <= set(recorded)
    assert {row_id for row_id, value in recorded.items() if value != "false"} == set()
