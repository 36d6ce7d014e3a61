"""`llmdeploy report --prometheus` against a real Prometheus scraping a simulated vLLM engine
(vLLM's metric names and bucket bounds). No control plane: the report reads only Prometheus.

Prometheus extrapolates `increase` to the window's edges, so totals come out a few percent
high; ratios of totals of the same scrapes (tokens per request) and percentiles (every bucket
scaled alike) do not move, and those are asserted exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .e2e_support import wait_until
from .prometheus_harness import Prometheus, VllmMetricsSim

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-l4.yaml"  # llama-8b on L4 or A10G replicas
LABELS = {"namespace": "team-a", "llmdeploy_io_deployment": "llama-8b"}
WINDOW_S = 20
REQUESTS = 100


@pytest.fixture(scope="module")
def served() -> Iterator[Prometheus]:
    """Prometheus has seen the engine idle for longer than the window, then 100 requests of
    1000 prompt and 200 generated tokens, TTFT 0.3 s, 40 ms between tokens."""
    sim = VllmMetricsSim()
    sim.set_load(running=3, waiting=0, kv_usage=0.25)
    prometheus = Prometheus(sim.port, LABELS)
    prometheus.start()
    try:
        wait_until(
            lambda: prometheus.query('vllm:request_success_total{namespace="team-a"}'),
            what="the first scrape of the engine",
        )
        time.sleep(WINDOW_S + 5)  # a window's worth of scrapes of the idle engine
        sim.finish(REQUESTS, ttft_s=0.3, gap_s=0.04, input_tokens=1000, output_tokens=200)
        wait_until(
            lambda: [
                r
                for r in prometheus.query("vllm:request_success_total")
                if r["value"][1] == str(REQUESTS)
            ],
            what="a scrape of the finished requests",
        )
        time.sleep(3)  # a few more scrapes inside the window
        yield prometheus
    finally:
        prometheus.close()
        sim.close()


def llmdeploy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmdeploy.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_report_reads_the_engine_series(served: Prometheus, tmp_path: Path) -> None:
    picture = tmp_path / "report.svg"
    live = llmdeploy(
        "report",
        "-f",
        str(EXAMPLE),
        "--namespace",
        "team-a",
        "--prometheus",
        served.url,
        "--since",
        f"{WINDOW_S}s",
        "--save-results",
        str(tmp_path),
        "--plot",
        str(picture),
        "-o",
        "json",
    )
    assert live.returncode == 0, live.stderr  # SLO met
    report = json.loads(live.stdout)
    seen = report["observed"]
    assert seen["unknown"] == {}
    assert REQUESTS <= seen["requests"] < 1.5 * REQUESTS
    assert seen["requestsPerSecond"] == pytest.approx(seen["requests"] / WINDOW_S, rel=1e-5)
    assert seen["inputTokensMean"] == pytest.approx(1000)
    assert seen["outputTokensMean"] == pytest.approx(200)
    # All 100 TTFTs in (0.25, 0.5]: p50 = 0.25 + 0.25 * 0.5, p95 = 0.25 + 0.25 * 0.95
    assert seen["ttftP50Seconds"] == pytest.approx(0.375)
    assert seen["ttftP95Seconds"] == pytest.approx(0.4875)
    # All 19,900 gaps in (0.025, 0.05]: p50 = 0.025 + 0.025 * 0.5
    assert seen["tpotP50Seconds"] == pytest.approx(0.0375)
    # 1000 prompt tokens in (500, 1000]: p50 = 500 + 500 * 0.5; 200 generated in (100, 200]
    assert seen["inputTokensP50"] == pytest.approx(750)
    assert seen["outputTokensP50"] == pytest.approx(150)
    assert seen["ttftWithinSlo"] == 1.0 and seen["tpotWithinSlo"] == 1.0
    assert seen["kvCacheUsage"] == pytest.approx(0.25)
    assert seen["replicas"] == pytest.approx(1.0)  # one engine, scraped the whole window
    # One engine scraped: one replica of the plan at its GPUs' price (the example lets the
    # planner choose between L4 and A10G, so the GPU follows the fitted model).
    planned = report["planned"]
    per_replica = planned["costPerHour"] / planned["replicas"]
    assert report["gpu"] in ("nvidia-l4", "nvidia-a10g")
    assert seen["costPerHour"] == pytest.approx(per_replica, abs=0.01)
    per_million = seen["costPerHour"] / (seen["outputTokensPerSecond"] * 3600) * 1e6
    assert seen["costPerMillionOutputTokens"] == pytest.approx(per_million, rel=1e-5)
    assert report["sloMet"]["status"] == "True"
    # 100 requests in 20 s against 2 requests/s planned.
    assert report["planDrift"]["status"] == "True"
    assert "requests/s" in report["planDrift"]["message"]
    assert picture.read_bytes().startswith(b"<?xml")

    # The saved results give the same report offline.
    saved = tmp_path / "team-a_llama-8b.json"
    offline = llmdeploy(
        "report",
        "-f",
        str(EXAMPLE),
        "--namespace",
        "team-a",
        "--from-results",
        str(saved),
        "-o",
        "json",
    )
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == live.stdout


def test_report_of_another_deployment_finds_nothing(served: Prometheus) -> None:
    """The queries are scoped: the same engine under another name is not this one's."""
    other = llmdeploy(
        "report",
        "-f",
        str(EXAMPLE),
        "--namespace",
        "team-b",
        "--prometheus",
        served.url,
        "--since",
        f"{WINDOW_S}s",
    )
    assert other.returncode == 4, other.stderr  # SLOMet Unknown
    assert "requests/s, requests finished" in other.stdout
    assert "no request counter (no series)" in other.stdout
    assert "no engine served in the window (scaled to zero, or not scraped)" in other.stdout
