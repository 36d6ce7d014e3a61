"""`llmdeploy plan --diff` of committed plans against committed golden output.

running.yaml is examples/llama-3.1-8b-l4.yaml as `kubectl get -o yaml` shows it once the
operator planned it and the autoscaler made 6 replicas of its plan; candidate.json is
`llmdeploy plan -o json` of the same manifest with `allowedGpus: [nvidia-a10g]`. Both are
inputs, kept as written, so a change of the planner does not move these goldens; a change of
the plan's contract fails them. Regenerate after an intended change of the output:
LLMDEPLOY_UPDATE_GOLDEN=1 pytest tests/golden
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmdeploy import cli

HERE = Path(__file__).parent / "diff"
# scenario: (OLD, NEW, extra arguments)
SCENARIOS = {
    "another-sku": ("running.yaml", "candidate.json", ()),
    "another-sku-pilot-50": ("running.yaml", "candidate.json", ("--pilot-percent", "50")),
    "unchanged": ("candidate.json", "candidate.json", ()),
}


@pytest.mark.parametrize("output", ["table", "json"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_diff_matches_golden(
    scenario: str, output: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, extra = SCENARIOS[scenario]
    monkeypatch.chdir(HERE)  # the file names in the output, the same on every machine
    assert cli.main(["plan", "--diff", old, new, *extra, "-o", output]) == cli.EXIT_FEASIBLE
    found = capsys.readouterr().out
    golden = HERE / "expected" / f"{scenario}.{'txt' if output == 'table' else 'json'}"
    if os.environ.get("LLMDEPLOY_UPDATE_GOLDEN"):
        golden.write_text(found, encoding="utf-8")
    assert golden.exists(), f"no golden file for {scenario}; run with LLMDEPLOY_UPDATE_GOLDEN=1"
    assert found == golden.read_text(encoding="utf-8")
