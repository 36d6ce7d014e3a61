"""The latency estimate bands a plan's reasons quote (optimizer.TTFT_ESTIMATE_BAND,
TPOT_ESTIMATE_BAND) are what bench/sizing_accuracy.py derives from the held-out rows alone;
bench/calibration_transfer.py, what a calibration would leave of the error."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import calibration_transfer
import corpus
import sizing_accuracy
from llmdeploy.sizing import optimizer


def test_the_codes_latency_bands_are_the_held_out_p90() -> None:
    assert sizing_accuracy.latency_estimate_bands() == {
        "TTFT": optimizer.TTFT_ESTIMATE_BAND,
        "TPOT": optimizer.TPOT_ESTIMATE_BAND,
    }


def test_the_bands_read_the_held_out_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Doubling every fit row's measurements leaves the bands as they were, doubling the
    held-out rows' moves them, and no file of the outside (blind) set is opened."""
    before = sizing_accuracy.latency_estimate_bands()
    split, rows = corpus.load_split(), corpus.load_latency()

    def doubled(which: str) -> list[corpus.LatencyRow]:
        return [
            dataclasses.replace(r, ttft_ms=2 * r.ttft_ms, tpot_ms=2 * r.tpot_ms)
            if split[r.id] == which
            else r
            for r in rows
        ]

    opened: list[str] = []
    read = corpus._read

    def recorded(name: str) -> list[dict[str, str]]:
        opened.append(name)
        return read(name)

    monkeypatch.setattr(corpus, "_read", recorded)
    monkeypatch.setattr(sizing_accuracy, "load_latency", lambda name="": doubled("fit"))
    assert sizing_accuracy.latency_estimate_bands() == before
    monkeypatch.setattr(sizing_accuracy, "load_latency", lambda name="": doubled("held-out"))
    moved = sizing_accuracy.latency_estimate_bands()
    assert moved["TTFT"] != before["TTFT"] and moved["TPOT"] != before["TPOT"]
    monkeypatch.setattr(sizing_accuracy, "load_latency", corpus.load_latency)
    assert sizing_accuracy.latency_estimate_bands() == before
    assert opened and not [name for name in opened if "outside" in name]


def test_a_calibration_absorbs_an_error_common_to_a_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every measurement doubled, each setup's ratio doubles with it: the error a ratio carried
    to another concurrency leaves is the same, and it is scored on held-out rows only."""
    before = calibration_transfer.transfer_errors(both_held_out=False)
    assert len(before["TTFT"]) >= 10 and len(before["TPOT"]) >= 10
    rows = corpus.load_latency()
    twice = [dataclasses.replace(r, ttft_ms=2 * r.ttft_ms, tpot_ms=2 * r.tpot_ms) for r in rows]
    monkeypatch.setattr(calibration_transfer, "load_latency", lambda name="": twice)
    after = calibration_transfer.transfer_errors(both_held_out=False)
    for metric, errors in before.items():
        assert after[metric] == pytest.approx(errors), metric
    split = corpus.load_split()
    fit_only = [r for r in rows if split[r.id] == "fit"]
    monkeypatch.setattr(calibration_transfer, "load_latency", lambda name="": fit_only)
    assert calibration_transfer.transfer_errors(both_held_out=False) == {"TTFT": [], "TPOT": []}
