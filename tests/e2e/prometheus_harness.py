"""A real Prometheus (Debian's package) scraping a vLLM-compatible metrics endpoint that the
test drives. The endpoint exposes vLLM's metric names and types for one LLMDeployment's
engines (totals across its replicas), labelled as the rendered PodMonitor would label them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmMetricsSim:
    """`vllm:*` gauges and histograms whose values the test sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.running = Gauge(
            "vllm:num_requests_running",
            "Requests in the running batch",
            ["model_name"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting", ["model_name"], registry=self.registry
        )
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage, 1 = full",
            ["model_name"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token",
            ["model_name"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            # Always the classic text format, as vLLM's /metrics serves it: names keep their
            # colons (prometheus_client's OpenMetrics negotiation would rewrite them).
            def do_GET(self) -> None:
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.set_load(running=0, waiting=0)

    def set_load(self, running: float, waiting: float, kv_usage: float | None = None) -> None:
        model = "meta-llama/Llama-3.1-8B-Instruct"
        self.running.labels(model).set(running)
        self.waiting.labels(model).set(waiting)
        self.kv_usage.labels(model).set(kv_usage if kv_usage is not None else min(1, running / 32))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """`prometheus` on a free loopback port with a generated config; start/stop at will."""

    def __init__(self, target_port: int, labels: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (make e2e installs Debian's package)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="llmdeploy-prometheus-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "vllm",
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"], "labels": labels}],
                }
            ],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.dir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"prometheus did not become ready; see {self.dir / 'prometheus.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
