"""What production does to a control plane, done to the local one of hack/testenv: restart a
component, freeze one, and read the API server's audit log of the operator's requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def state_dir() -> Path:
    """The running testenv's state dir (same resolution as hack/testenv/lib.sh)."""
    if os.environ.get("LLMDEPLOY_E2E_KUBECONFIG"):
        pytest.skip("fault injection needs the local control plane of hack/testenv")
    cache = Path(
        os.environ.get("LLMDEPLOY_TESTENV_CACHE", Path.home() / ".cache" / "llmdeploy-testenv")
    )
    return Path(os.environ.get("LLMDEPLOY_TESTENV_DIR", cache / "run"))


def _pid(name: str) -> tuple[int, str]:
    pid, exe = (state_dir() / f"{name}.pid").read_text().split()
    return int(pid), exe


def _exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def restart(name: str, *, down_seconds: float = 2.0, grace_seconds: float = 10.0) -> None:
    """Stop a component, keep it down a moment, and start it again
    with the same command line, environment and log; the pid file follows so that
    hack/testenv/down.sh still stops it."""
    pid, exe = _pid(name)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    env_items = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(item.decode().split("=", 1) for item in env_items if b"=" in item)
    # As a kubelet does: TERM, and KILL after a grace period (the API server drains its
    # watches on TERM, which can take a minute).
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while not _exited(pid):
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
        time.sleep(0.1)
    time.sleep(down_seconds)
    log = (state_dir() / "logs" / f"{name}.log").open("ab")
    started = subprocess.Popen(
        [a.decode() for a in argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (state_dir() / f"{name}.pid").write_text(f"{started.pid} {exe}\n")


@contextmanager
def frozen(name: str) -> Iterator[None]:
    """SIGSTOP a component for the duration (a stalled disk or a long GC pause), then resume it."""
    pid, _ = _pid(name)
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class AuditLog:
    """The operator's requests as the API server logged them (hack/testenv/up.sh audits the
    operator's ServiceAccount only)."""

    def __init__(self) -> None:
        self.path = state_dir() / "logs" / "audit.log"
        self.offset = 0

    def mark(self) -> None:
        """Count only what comes after now."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def requests(self) -> list[Request]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            lines = log.read().splitlines()
        found = []
        for line in lines:
            entry = json.loads(line)
            ref = entry.get("objectRef") or {}
            found.append(
                Request(
                    verb=entry["verb"],
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int((entry.get("responseStatus") or {}).get("code") or 0),
                )
            )
        return found
