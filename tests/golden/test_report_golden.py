"""`llmdeploy report --from-results` of saved query results against committed golden reports.

The results under report/results/ are written by report/make_results.py (a described day of
traffic per scenario). Regenerate the reports after an intended change:
LLMDEPLOY_UPDATE_GOLDEN=1 pytest tests/golden
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmdeploy import cli

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "report"
# scenario: (example manifest, exit code)
SCENARIOS = {
    "healthy": ("llama-3.1-8b-l4", cli.EXIT_FEASIBLE),
    "drifted": ("llama-3.1-8b-l4", cli.EXIT_INFEASIBLE),  # SLO missed
    "few-requests": ("tensorrt-llm-llama-8b", cli.EXIT_FEASIBLE),  # no SLO to miss
    "unreachable": ("llama-3.1-8b-l4", cli.EXIT_UNMEASURED),
}


@pytest.mark.parametrize("output", ["table", "json"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_report_matches_golden(
    scenario: str, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    example, code = SCENARIOS[scenario]
    results = HERE / "results" / f"{scenario}.json"
    manifest = ROOT / "examples" / f"{example}.yaml"
    argv = ["report", "-f", str(manifest), "--from-results", str(results), "-o", output]
    assert cli.main(argv) == code
    report = capsys.readouterr().out
    golden = HERE / "expected" / f"{scenario}.{'txt' if output == 'table' else 'json'}"
    if os.environ.get("LLMDEPLOY_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(report, encoding="utf-8")
    assert golden.exists(), f"no golden file for {scenario}; run with LLMDEPLOY_UPDATE_GOLDEN=1"
    assert report == golden.read_text(encoding="utf-8")
