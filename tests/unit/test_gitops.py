"""Argo CD's health check (real Lua 5.1) and kstatus (the real library) on LLMDeployments the
e2e runs captured (tests/unit/data/gitops/, refreshed by LLMDEPLOY_CAPTURE_GITOPS=1 on
tests/e2e/test_gitops.py), and the Argo CD component that installs the check."""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmdeploy.catalog import Catalog
from tests.gitops_checks import CAPTURED, HEALTH_LUA, argocd_health, kstatus
from tests.unit.conftest import body
from tests.unit.test_decide import config
from tests.unit.test_rollout import PILOT, answered, serving_now, written

ARGOCD = HEALTH_LUA.parent


def captured(name: str) -> dict[str, Any]:
    return yaml.safe_load((CAPTURED / f"{name}.yaml").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "health", "verdict"),
    [
        ("created", "Progressing", "Current"),  # no status yet: kstatus cannot tell
        ("rolling-out", "Progressing", "InProgress"),
        ("spec-changed", "Progressing", "InProgress"),  # generation 2, observed 1
        ("ready", "Healthy", "Current"),
        ("scaled-to-zero", "Suspended", "Current"),
        ("no-feasible-plan", "Degraded", "Failed"),
        ("starved", "Degraded", "InProgress"),
    ],
)
def test_each_captured_status(name: str, health: str, verdict: str) -> None:
    obj = captured(name)
    assert argocd_health(obj)[0] == health
    assert kstatus([obj])[0][0] == verdict


def test_a_failed_apply_is_degraded_with_its_error() -> None:
    # Not captured: the e2e runs cannot make the API server refuse a child. The ready object
    # as the operator reports a refused apply (decide.status_update).
    obj = copy.deepcopy(captured("ready"))
    for condition in obj["status"]["conditions"]:
        if condition["type"] in {"Degraded", "Ready"}:
            condition["status"] = "True" if condition["type"] == "Degraded" else "False"
            condition["reason"] = "ApplyFailed"
            condition["message"] = "Deployment llama-8b: forbidden"
    obj["status"]["phase"] = "Degraded"
    assert argocd_health(obj) == ("Degraded", "Deployment llama-8b: forbidden")
    assert kstatus([obj])[0][0] == "InProgress"


def test_a_condition_of_an_older_generation_is_not_trusted() -> None:
    obj = copy.deepcopy(captured("ready"))
    for condition in obj["status"]["conditions"]:
        condition["observedGeneration"] = 0
    assert argocd_health(obj)[0] == "Progressing"


def test_the_argocd_component_installs_the_script_as_is(tmp_path: Path) -> None:
    (tmp_path / "argocd-cm.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm"},
                "data": {"url": "https://argocd.example.test"},
            }
        )
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["argocd-cm.yaml"],
                "components": [os.path.relpath(ARGOCD, tmp_path)],
            }
        )
    )
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    (config,) = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert config["metadata"]["name"] == "argocd-cm"
    assert config["data"]["url"] == "https://argocd.example.test"
    key = "resource.customizations.health.llmdeploy.io_LLMDeployment"
    assert config["data"][key] == HEALTH_LUA.read_text()


def test_the_example_application_ignores_the_replicas_the_operator_owns() -> None:
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    (ignored,) = app["spec"]["ignoreDifferences"]
    assert (ignored["group"], ignored["kind"]) == ("llmdeploy.io", "LLMDeployment")
    assert ignored["jsonPointers"] == ["/spec/replicas"]
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_a_pilot_is_in_progress_and_a_rolled_back_plan_failed(catalog: Catalog) -> None:
    # Statuses decide writes (tests/unit/test_rollout.py's steps): the spec's plan is not
    # served while it is piloted, and will not be after a rollback until the spec changes.
    cfg = config(catalog)
    snap = serving_now(catalog, PILOT)
    changed = replace(
        snap, body=body(snap.body["status"], **PILOT, workload={"maxContextLength": 4096})
    )
    started = answered(changed, cfg)
    piloting = written(changed, started)
    name = started.apply[0]["metadata"]["name"]
    abort = {"llmdeploy.io/pilot": f"abort/{name[2:]}"}
    aborted = replace(
        piloting,
        body={**piloting.body, "metadata": {**piloting.body["metadata"], "annotations": abort}},
    )
    rolled_back = written(aborted, answered(aborted, cfg))
    for snapshot, health, verdict in (
        (snap, "Healthy", "Current"),  # before: the spec's plan serves
        (piloting, "Progressing", "InProgress"),
        (rolled_back, "Degraded", "Failed"),
    ):
        assert argocd_health(dict(snapshot.body))[0] == health
        assert kstatus([dict(snapshot.body)])[0][0] == verdict
