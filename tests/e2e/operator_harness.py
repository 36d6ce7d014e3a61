"""Runs the real operator (`llmdeploy run`) against the test cluster under the ServiceAccount and
RBAC from manifests/, the way it runs in a cluster, and lets tests kill and restart it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from .e2e_support import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "llmdeploy-system"
SERVICE_ACCOUNT = "llmdeploy"
# The Prometheus endpoint the shared test operator allows for objects in mode keda.
KEDA_ENDPOINT, KEDA_PROMETHEUS = "cluster", "http://prometheus.monitoring.svc:9090"


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", "--request-timeout=30s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def apply_server_side(kubeconfig: Path, documents: list[dict[str, Any]]) -> None:
    applied = kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(documents),
    )
    assert applied.returncode == 0, applied.stderr


def install(kubeconfig: Path) -> None:
    """CRDs, namespace, ServiceAccount and RBAC from manifests/ (not the operator Deployment:
    there is no container runtime here, so the operator runs as a local process instead)."""
    rendered = kubectl(kubeconfig, "kustomize", str(REPO_ROOT / "manifests"))
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    apply_server_side(kubeconfig, [d for d in documents if d["kind"] != "Deployment"])
    create_kopf_peering_crds(kubeconfig)
    for crd in ("llmdeployments.llmdeploy.io", "clusterkopfpeerings.kopf.dev"):
        waited = kubectl(
            kubeconfig, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"
        )
        assert waited.returncode == 0, waited.stderr


def create_kopf_peering_crds(kubeconfig: Path) -> None:
    """kopf's shared CRDs as the README installs them: created where absent, an existing copy
    (another operator's, or an earlier test's) left untouched."""
    created = kubectl(kubeconfig, "create", "-k", str(REPO_ROOT / "manifests/kopf-peering-crds"))
    refused = [line for line in created.stderr.splitlines() if line.strip()]
    assert all("AlreadyExists" in line for line in refused), created.stderr


def service_account_kubeconfig(
    api: client.ApiClient, admin: Path, out: Path, account: str = SERVICE_ACCOUNT
) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount of the operator's namespace (the
    operator's own unless `account` is given) with a bound token."""
    core = client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(
        account,
        OPERATOR_NAMESPACE,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
        ),
    ).status.token
    config: dict[str, Any] = yaml.safe_load(admin.read_text())
    cluster = config["clusters"][0]
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"] = [
        {"name": account, "context": {"cluster": cluster["name"], "user": account}}
    ]
    config["current-context"] = account
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


class Operator:
    """One `llmdeploy run` process; start/kill/stop like a pod would live and die."""

    def __init__(self, kubeconfig: Path, log_dir: Path, **settings: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = 0

    def start(self) -> None:
        self.starts += 1
        # A port the settings name is kept across restarts (a Prometheus scrapes it).
        self.metrics_port = int(self.settings.get("LLMDEPLOY_METRICS_PORT") or free_port())
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LLMDEPLOY_STATUS_INTERVAL_SECONDS": "2",
            "LLMDEPLOY_HEALTH_PORT": "0",
            "LLMDEPLOY_METRICS_PORT": str(self.metrics_port),
            **self.settings,
        }
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmdeploy.cli", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the running process's /metrics (0 when absent or not up yet)."""
        return next(iter(self.samples(name, **labels)), 0.0)

    def samples(self, name: str, **labels: str) -> list[float]:
        """The samples of `name` whose labels include `labels` (none when not up yet)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as answer:
                text = answer.read().decode()
        except OSError:
            return []
        return [
            float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]

    def reconciles(self) -> float:
        return self.metric("llmdeploy_reconcile_total", result="success")

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))
