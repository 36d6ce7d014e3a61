"""bench/ttft_residuals.py: the signed TTFT error by family and each term's share of a row."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import ttft_residuals
from corpus import load_latency
from llmdeploy.catalog import load_catalog
from llmdeploy.sizing import performance


def _row(row_id: str) -> ttft_residuals.LatencyRow:
    return next(r for r in load_latency() if r.id == row_id)


def test_prompt_bands_are_tokens_per_gpu() -> None:
    lone = _row("tt143-h100-qwen2.5-72b-tp2-c1-4096x128")  # 4096 tokens on 2 GPUs
    assert ttft_residuals.band(lone) == "1024-4095"
    tp8 = _row("ix-h100-gptoss120b-mxfp4-vllm-tp8-c16-8192x1024")  # 8192 on 8
    assert ttft_residuals.band(tp8) == "1024-4095"
    assert "prompt/GPU 1024-4095, TP 8" in ttft_residuals.families(tp8, moe=True)


def test_a_term_removed_is_restored_and_a_single_gpu_has_no_all_reduce() -> None:
    catalog = load_catalog()
    host = performance.request_host_s
    single = _row("ix-b200-gptoss120b-mxfp4-vllm-tp1-c4-1024x1024")
    split = _row("ix-b200-gptoss120b-mxfp4-vllm-tp8-c4-1024x1024")
    terms = {}
    for row in (single, split):
        total = ttft_residuals.ttft_ms(row, catalog)
        terms[row.tensor] = ttft_residuals.terms_ms(row, catalog, total)
    assert performance.request_host_s is host  # the term removed is put back
    assert terms[1]["all-reduce"] == 0.0
    assert terms[8]["all-reduce"] > 0.0
    # The host term is the fitted host time plus the release's front-end time, in ms.
    frontend = performance.frontend_s("vllm", "0.13.0", "chat")
    assert terms[8]["host"] == pytest.approx(1000 * (performance.TTFT_OVERHEAD_S + frontend))
    # No Marlin on Blackwell: gpt-oss's MXFP4 experts run on FP4 tensor cores there.
    assert terms[8]["marlin"] == 0.0


def test_the_host_term_holds_the_fitted_load_overhead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded row's host time takes TTFT_LOAD_OVERHEAD_S (fitted; 0 today): the host column
    holds it where a refit sets it, not the rest."""
    catalog = load_catalog()
    row = _row("ix-b200-gptoss120b-mxfp4-vllm-tp8-c4-1024x1024")  # 4 streams: loaded
    monkeypatch.setattr(performance, "TTFT_LOAD_OVERHEAD_S", 0.01)
    terms = ttft_residuals.terms_ms(row, catalog, ttft_residuals.ttft_ms(row, catalog))
    frontend = performance.frontend_s("vllm", "0.13.0", "chat")
    expected = 1000 * (performance.TTFT_OVERHEAD_S + frontend + 0.01)
    assert terms["host"] == pytest.approx(expected)
