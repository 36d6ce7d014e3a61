"""The operator's RBAC in manifests/ grants what it does to every kind it renders: one list of
child kinds (render/kinds.py) is what the watches, the prune set and these rules follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmdeploy.render.kinds import CHILD_KINDS, CHILD_VERBS, WORKLOAD_KINDS

RBAC = Path(__file__).resolve().parents[2] / "manifests" / "base" / "rbac.yaml"


def cluster_role() -> list[dict[str, Any]]:
    for document in yaml.safe_load_all(RBAC.read_text()):
        if document and document["kind"] == "ClusterRole":
            return list(document["rules"])
    raise AssertionError("no ClusterRole in manifests/base/rbac.yaml")


def granted(rules: list[dict[str, Any]], group: str, plural: str) -> set[str]:
    return {
        verb
        for rule in rules
        if group in rule["apiGroups"] and plural in rule["resources"]
        for verb in rule["verbs"]
    }


def test_every_rendered_kind_gets_the_verbs_the_operator_uses() -> None:
    rules = cluster_role()
    missing = {
        child.kind: sorted(CHILD_VERBS - granted(rules, child.group, child.plural))
        for child in CHILD_KINDS
    }
    assert {kind: verbs for kind, verbs in missing.items() if verbs} == {}


def test_no_verb_is_granted_that_the_operator_does_not_use() -> None:
    rules = cluster_role()
    for child in CHILD_KINDS:
        assert granted(rules, child.group, child.plural) == CHILD_VERBS, child.kind
    assert all("update" not in rule["verbs"] for rule in rules)  # server-side apply only
    assert granted(rules, "", "secrets") == set()


def test_a_pilots_serving_workload_can_be_scaled_and_nothing_more() -> None:
    # Cluster.scale_workload: the serving workload's replicas, never its template.
    rules = cluster_role()
    for child in CHILD_KINDS:
        if child.kind in WORKLOAD_KINDS:
            assert granted(rules, child.group, f"{child.plural}/scale") == {"patch"}, child.kind
