"""Offline = operator: for every example, `llmdeploy render --inventory <these nodes>` gives the
children the operator applies on the local control plane, object for object, and `llmdeploy
plan` the plan in its status."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from llmdeploy.cli import main
from llmdeploy.cluster.objects import APPLIED_HASH, Owner, prepared
from llmdeploy.render.kinds import CHILD_KINDS

from .e2e_support import wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl
from .test_operator import example, get

EXAMPLES = sorted(p.stem for p in (REPO_ROOT / "examples").glob("*.yaml"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`llmdeploy ARGS`, in this process: ten interpreter starts would double the test's time."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["llmdeploy", *args], code, out.getvalue(), err.getvalue())


def without_none(value: Any) -> Any:
    """The CLI's JSON prints unset plan fields as null; status stores them absent."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def differences(rendered: Any, live: Any, path: str = "") -> list[str]:
    """Where the live object does not hold what was rendered. The API server only adds to an
    applied object (defaults, server-set metadata), so everything rendered must be there as
    rendered; list items are matched in order."""
    if isinstance(rendered, dict) and isinstance(live, dict):
        found = []
        for key, value in rendered.items():
            if key not in live:
                found.append(f"{path}.{key}: rendered, not in the live object")
            else:
                found += differences(value, live[key], f"{path}.{key}")
        return found
    if isinstance(rendered, list) and isinstance(live, list):
        if len(rendered) != len(live):
            return [f"{path}: {len(rendered)} items rendered, {len(live)} live"]
        return [
            d
            for i, (r, v) in enumerate(zip(rendered, live, strict=True))
            for d in differences(r, v, f"{path}[{i}]")
        ]
    return [] if rendered == live else [f"{path}: rendered {rendered!r}, live {live!r}"]


def owned_children(dynamic: DynamicClient, namespace: str) -> dict[tuple[str, str, str], Any]:
    """Every object in the namespace an LLMDeployment owns: (owner, kind, name) -> object."""
    found = {}
    for child in CHILD_KINDS:
        try:
            resource = dynamic.resources.get(api_version=child.api_version, kind=child.kind)
        except ResourceNotFoundError:
            continue
        for item in resource.get(namespace=namespace).to_dict()["items"]:
            for ref in item["metadata"].get("ownerReferences") or []:
                if ref["kind"] == "LLMDeployment":
                    found[(ref["name"], child.kind, item["metadata"]["name"])] = item
    return found


def settled(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The object once the operator has decided on its current generation: a reconcile writes
    status after it applied the children."""
    obj = get(api, namespace, name)
    status = obj.get("status") or {}
    planned = any(c["type"] == "Planned" for c in status.get("conditions") or [])
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return obj if planned and current else None


@pytest.mark.usefixtures("third_party_crds")
def test_every_example_renders_offline_as_the_operator_applies_it(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session's operator may have started before the LeaderWorkerSet and PodMonitor CRDs
    # were installed, and then looks for them again only after a minute.
    operator.stop()
    operator.start()
    nodes = kubectl(kubeconfig_path, "get", "nodes", "-o", "yaml")
    assert nodes.returncode == 0, nodes.stderr
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(nodes.stdout)
    bodies = {name: example(name) for name in EXAMPLES}
    names = {name: body["metadata"]["name"] for name, body in bodies.items()}
    assert len(set(names.values())) == len(names), "examples share a name"
    # All at once, as a user applies a directory.
    applied = kubectl(
        kubeconfig_path, "-n", namespace, "apply", "-f", "-",
        stdin=yaml.safe_dump_all(bodies.values()),
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr

    offline: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for name, body in bodies.items():
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump(body))
        planned = cli("plan", "-f", str(manifest), "--inventory", str(inventory), "-o", "json")
        assert planned.returncode in (0, 1), planned.stderr
        assert "planned for the cluster" in planned.stderr
        rendered = cli("render", "-f", str(manifest), "--inventory", str(inventory))
        plan = json.loads(planned.stdout)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig_path))
        direct = cli("plan", "-f", str(manifest), "--from-cluster", "-o", "json")
        assert direct.stdout == planned.stdout, f"{name}: --from-cluster: {direct.stderr}"
        assert rendered.returncode == (0 if plan["feasible"] else 1), rendered.stderr
        offline[name] = (plan, [d for d in yaml.safe_load_all(rendered.stdout) if d])
    # Not vacuous: the examples bring every kind a plan without autoscaling renders.
    kinds = {o["kind"] for _, objects in offline.values() for o in objects}
    assert kinds >= {
        "Deployment",
        "LeaderWorkerSet",
        "Service",
        "PodDisruptionBudget",
        "PodMonitor",
    }

    live = {
        name: wait_until(partial(settled, kube_api, namespace, n), what=f"{n} planned", timeout=120)
        for name, n in names.items()
    }
    children = owned_children(DynamicClient(kube_api), namespace)  # type: ignore[no-untyped-call]
    problems: list[str] = []
    for name, (plan, objects) in offline.items():
        obj = live[name]
        owner_name = names[name]
        if obj["status"].get("plan") != without_none(plan):
            problems.append(f"{name}: the operator's plan differs from `llmdeploy plan`")
        owner = Owner(owner_name, namespace, obj["metadata"]["uid"])
        mine = {(k, n): c for (o, k, n), c in children.items() if o == owner_name}
        wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
        if set(mine) != wanted:
            problems.append(f"{name}: the operator applied {sorted(mine)}, render {sorted(wanted)}")
            continue
        for made in objects:
            key = (made["kind"], made["metadata"]["name"])
            desired, digest = prepared(made, owner)
            child = mine[key]
            # The operator annotates what it applied with the digest of its whole desired
            # object: equal digests, equal objects.
            if child["metadata"]["annotations"].get(APPLIED_HASH) != digest:
                problems.append(f"{name} {key}: the operator applied another object")
            problems += [f"{name} {key}{d}" for d in differences(desired, child)]
    assert not problems, "\n".join(problems)
