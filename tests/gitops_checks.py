"""How GitOps tools judge an LLMDeployment, with their real code: Argo CD's health check
(gitops/argocd/llmdeployment-health.lua) in Lua 5.1, the dialect of Argo CD's gopher-lua, and
kstatus (Flux, kpt, Config Sync) through hack/kstatus.sh's checker of sigs.k8s.io/cli-utils."""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from lupa import lua51

REPO = Path(__file__).resolve().parents[1]
HEALTH_LUA = REPO / "gitops" / "argocd" / "llmdeployment-health.lua"


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the health script, with `obj` as Argo CD passes it."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


@cache
def _kstatus_binary() -> str:
    built = subprocess.run(
        [str(REPO / "hack" / "kstatus.sh")], capture_output=True, text=True, check=True
    )
    return built.stdout.strip()


def kstatus(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(status, message) that kstatus computes for each object, in order."""
    checked = subprocess.run(
        [_kstatus_binary()],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    verdicts = [json.loads(line) for line in checked.stdout.splitlines()]
    return [(v["status"], v["message"]) for v in verdicts]


CAPTURED = REPO / "tests" / "unit" / "data" / "gitops"


def capture(name: str, obj: dict[str, Any]) -> None:
    """With LLMDEPLOY_CAPTURE_GITOPS=1, keeps a live object as a fixture of the unit tests
    (tests/unit/test_gitops.py), without the fields no health rule reads."""
    if not os.environ.get("LLMDEPLOY_CAPTURE_GITOPS"):
        return
    status = {k: v for k, v in (obj.get("status") or {}).items() if k not in {"plan", "autoscaler"}}
    kept = {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"], "generation": obj["metadata"]["generation"]},
        **({"status": status} if status else {}),
    }
    CAPTURED.mkdir(parents=True, exist_ok=True)
    (CAPTURED / f"{name}.yaml").write_text(
        "# Captured from tests/e2e/test_gitops.py (LLMDEPLOY_CAPTURE_GITOPS=1).\n"
        + yaml.safe_dump(kept, sort_keys=False)
    )
