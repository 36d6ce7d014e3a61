"""`llmdeploy report` and the `--plot` pictures, run as a user runs them (offline)."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from llmdeploy import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-l4.yaml"
RESULTS = ROOT / "tests" / "golden" / "report" / "results"


def report(*args: str) -> int:
    return cli.main(["report", "-f", str(EXAMPLE), *args])


def test_results_from_a_directory_by_namespace_and_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(RESULTS / "healthy.json", tmp_path / "default_llama-8b.json")
    assert report("--from-results", str(tmp_path)) == cli.EXIT_FEASIBLE
    assert "SLOMet True (TargetsMet)" in capsys.readouterr().out
    # Another namespace looks for another file.
    assert report("--from-results", str(tmp_path), "--namespace", "prod") == cli.EXIT_INVALID
    assert "prod_llama-8b.json: cannot read" in capsys.readouterr().err


def test_results_of_another_deployment_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads((RESULTS / "healthy.json").read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**document, "name": "other"}))
    assert report("--from-results", str(other)) == cli.EXIT_INVALID
    assert "results of default/other (vllm), not of default/llama-8b (vllm)" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "v0"}, "format: Input should be 'llmdeploy.io/report-results/v1'"),
        ({"window": "1w"}, "window: String should match pattern"),
        ({"instant": {"requests": {"result": []}}}, "instant.requests.promql: Field required"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_malformed_results_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], message: str
) -> None:
    document = json.loads((RESULTS / "healthy.json").read_text())
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**document, **change}))
    assert report("--from-results", str(broken)) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken}: ") and message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prometheus", "http://127.0.0.1:9", "--since", "1w"], "--since: '1w' is not a"),
        (["--prometheus", "127.0.0.1:9090"], "not an http:// or https:// URL"),
        (["--prometheus", "http://127.0.0.1:9", "--timeout", "0"], "--timeout: must be above 0"),
        (
            ["--from-results", str(RESULTS / "healthy.json"), "--since", "1h"],
            "--since and --save-results go with --prometheus",
        ),
        (
            ["--from-results", str(RESULTS / "healthy.json"), "--plot", "report.pdf"],
            "--plot report.pdf: the file name must end in .svg or .png",
        ),
    ],
)
def test_bad_options_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(*args) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_unreachable_prometheus_reports_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens on port 9 (discard): every figure is Unknown, exit 4."""
    code = report("--prometheus", "http://127.0.0.1:9", "--since", "1h", "--timeout", "2")
    assert code == cli.EXIT_UNMEASURED
    out = capsys.readouterr().out
    assert "SLOMet Unknown (NotMeasured)" in out
    assert "no request counter (connection failed)" in out


def test_plan_from_a_file_replaces_planning_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plan", "-f", str(EXAMPLE), "-o", "json"]) == cli.EXIT_FEASIBLE
    plan = json.loads(capsys.readouterr().out)
    plan.update(gpu="nvidia-a10g", gpuCount=2, costPerHour=8.08)
    given = tmp_path / "plan.json"
    given.write_text(json.dumps(plan))
    results = str(RESULTS / "healthy.json")
    assert report("--from-results", results, "--plan", str(given), "-o", "json") == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["gpu"], document["gpuCount"]) == ("nvidia-a10g", 2)
    assert document["observed"]["price"]["gpu"] == "nvidia-a10g"
    assert document["planned"]["costPerHour"] == 8.08


def test_plan_plot_svg_is_the_same_bytes_twice(tmp_path: Path) -> None:
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    for path in (first, second):
        argv = ["plan", "-f", str(EXAMPLE), "--plot", str(path)]
        assert cli.main(argv) == cli.EXIT_FEASIBLE
    svg = first.read_bytes()
    assert svg == second.read_bytes()
    assert b"<dc:date>" not in svg  # no time of drawing in the metadata
    assert svg.count(b"<path") > 50  # text is drawn as paths, not left to the reader's fonts


def test_report_plot_svg_is_the_same_bytes_twice(tmp_path: Path) -> None:
    results = str(RESULTS / "drifted.json")
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    for path in (first, second):
        assert report("--from-results", results, "--plot", str(path)) == cli.EXIT_INFEASIBLE
    assert first.read_bytes() == second.read_bytes()
    assert b"<dc:date>" not in first.read_bytes()


def test_report_plot_png(tmp_path: Path) -> None:
    picture = tmp_path / "report.png"
    results = str(RESULTS / "drifted.json")
    assert report("--from-results", results, "--plot", str(picture)) == cli.EXIT_INFEASIBLE
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_plot_into_a_missing_directory_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "plan.svg"
    assert cli.main(["plan", "-f", str(EXAMPLE), "--plot", str(target)]) == cli.EXIT_INVALID
    assert f"--plot {target}: No such file or directory" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator image installs no plot extra: --plot is then an input error, and the
    rest of the command line works without matplotlib."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    monkeypatch.delitem(sys.modules, "llmdeploy.pictures", raising=False)
    target = tmp_path / "plan.svg"
    assert cli.main(["plan", "-f", str(EXAMPLE), "--plot", str(target)]) == cli.EXIT_INVALID
    assert "--plot needs matplotlib: pip install 'llmdeploy[plot]'" in capsys.readouterr().err
    assert not target.exists()
    assert cli.main(["plan", "-f", str(EXAMPLE)]) == cli.EXIT_FEASIBLE


def test_a_manifest_with_the_operators_status_is_measured_from_when_its_engines_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kubectl get -o yaml` gives the manifest the operator's status.observed.servedSince:
    engines that first served 6 hours before the end of the 24 hours (the first 172 s step
    that saw them 21514 s before it) are measured over those 6 hours, as the operator measures
    them, not over a day in which no engine could count a request. Without a status, the day."""
    document = json.loads((RESULTS / "healthy.json").read_text())
    served = {**document["instant"]["replicas"], "promql": "(servedSeconds)"}
    served["result"] = [{"metric": {}, "value": [document["end"], "21514"]}]
    results = tmp_path / "young.json"
    results.write_text(
        json.dumps({**document, "instant": {**document["instant"], "servedSeconds": served}})
    )
    since = datetime.fromtimestamp(document["end"] - 21600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["status"] = {"observed": {"windowSeconds": 21600, "end": since, "servedSince": since}}
    live = tmp_path / "live.yaml"
    live.write_text(yaml.safe_dump(manifest))

    def observed(path: Path) -> dict[str, object]:
        cli.main(["report", "-f", str(path), "--from-results", str(results), "-o", "json"])
        return json.loads(capsys.readouterr().out)["observed"]

    young = observed(live)
    assert (young["windowSeconds"], young["servedSince"]) == (21600, since)
    assert young["requestsPerSecond"] == pytest.approx(155520 / 21600)  # not a quarter of it
    day = observed(EXAMPLE)
    assert day["windowSeconds"] == 86400 and "servedSince" not in day
    assert day["requestsPerSecond"] == pytest.approx(155520 / 86400)
