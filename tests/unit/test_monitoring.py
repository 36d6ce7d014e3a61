"""The monitoring components agree with their sources and with each other: the committed
PrometheusRule and dashboard are what `make monitoring` writes, and every operator metric and
recorded series a rule or a panel reads exists. (promtool tests the rules' values: make
rules-test; the e2e test_measure.py runs every panel's query against a real Prometheus.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from llmdeploy import monitoring
from llmdeploy.controller import metrics

REPO = Path(__file__).resolve().parents[2]
OPERATOR_METRIC = re.compile(r"\bllmdeploy_(?!io_deployment\b)[a-z_]+\b")  # not the engines' label
RECORDED = re.compile(r"\bllmdeploy:[a-z0-9_:]+\b")


def test_the_committed_files_are_what_make_monitoring_writes() -> None:
    for path, text in monitoring.generated(REPO).items():
        assert path.read_text() == text, f"{path.relative_to(REPO)} is stale: make monitoring"


def test_the_prometheus_rule_is_the_rule_file() -> None:
    rule = yaml.safe_load((REPO / monitoring.PROMETHEUS_RULE).read_text())
    assert rule["spec"] == yaml.safe_load((REPO / monitoring.RULES).read_text())


def exported() -> set[str]:
    gauges = (*metrics.PLAN_GAUGES.values(), *metrics.CONDITION_GAUGES.values())
    return {gauge._name for gauge in gauges}


def recorded() -> set[str]:
    groups = yaml.safe_load((REPO / monitoring.RULES).read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def queries() -> list[str]:
    dashboard = monitoring.dashboard()
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return variables + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_rules_and_panels_read_only_what_the_operator_and_the_rules_publish() -> None:
    rules = (REPO / monitoring.RULES).read_text()
    texts = [rules, *queries()]
    read = {name for text in texts for name in OPERATOR_METRIC.findall(text)}
    assert read and read <= exported(), read - exported()
    used = {name for text in queries() for name in RECORDED.findall(text)}
    assert used and used <= recorded(), used - recorded()
    # A recording rule reads only series recorded before it in its group (a group runs in
    # order, so it reads this evaluation's); an alert, any recorded series.
    for group in yaml.safe_load(rules)["groups"]:
        seen: set[str] = set()
        for rule in group["rules"]:
            reads = set(RECORDED.findall(rule["expr"]))
            assert reads <= (seen if "record" in rule else recorded()), rule
            seen.add(rule.get("record", ""))


def test_each_panel_shows_one_deployment_and_has_a_place_of_its_own() -> None:
    dashboard = monitoring.dashboard()
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "deployment"]
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert set(re.findall(r"\$\{?(\w+)", target["expr"])) == {"namespace", "deployment"}
        box = panel["gridPos"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert json.loads(monitoring.dashboard_json()) == dashboard
