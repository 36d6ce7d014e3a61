"""A real Prometheus (Debian's package) scraping engine-compatible metrics endpoints that the
test drives. Each endpoint exposes one engine's metric names, types and path for one
LLMDeployment's engines (totals across its replicas), labelled as the rendered PodMonitor would
label them: vLLM's on /metrics, TensorRT-LLM's on /prometheus/metrics."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Protocol

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .e2e_support import free_port

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# vLLM's bucket bounds (vllm/v1/metrics/loggers.py): inter-token latency, and 1-2-5 token
# counts up to max_model_len (8192 here).
INTER_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                       2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class EngineSim(Protocol):
    """An engine's simulated metrics endpoint: 127.0.0.1:`port`, at `PATH` only."""

    PATH: ClassVar[str]
    port: int

    def close(self) -> None: ...


class MetricsServer:
    """Serves a registry on 127.0.0.1 at `path` only (404 elsewhere), in the classic text
    format as both engines do: names keep their colons (prometheus_client's OpenMetrics
    negotiation would rewrite them)."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != path:
                    self.send_error(404)
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.path = path
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class VllmMetricsSim:
    """`vllm:*` gauges and histograms whose values the test sets, on /metrics."""

    PATH = "/metrics"

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
        # Request-level metrics (measure/queries.py), all at zero until finish() records some.
        self.requests = Counter(
            "vllm:request_success",
            "Finished requests",
            ["model_name", "finished_reason"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens", ["model_name"], registry=self.registry
        )
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generated tokens", ["model_name"], registry=self.registry
        )
        self.inter_token = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency",
            ["model_name"],
            registry=self.registry,
            buckets=INTER_TOKEN_BUCKETS,
        )
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens",
            "Prompt tokens per request",
            ["model_name"],
            registry=self.registry,
            buckets=TOKEN_BUCKETS,
        )
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens",
            "Generated tokens per request",
            ["model_name"],
            registry=self.registry,
            buckets=TOKEN_BUCKETS,
        )
        self.finish(0, ttft_s=0, gap_s=0, input_tokens=0, output_tokens=0)
        self.endpoint = MetricsServer(self.registry, self.PATH)
        self.port = self.endpoint.port
        self.set_load(running=0, waiting=0)

    def set_load(self, running: float, waiting: float, kv_usage: float | None = None) -> None:
        self.running.labels(MODEL).set(running)
        self.waiting.labels(MODEL).set(waiting)
        self.kv_usage.labels(MODEL).set(kv_usage if kv_usage is not None else min(1, running / 32))

    def finish(
        self, count: int, *, ttft_s: float, gap_s: float, input_tokens: int, output_tokens: int
    ) -> None:
        """Record `count` finished requests alike, as vLLM does when each one ends (count 0
        creates the series at zero, so that a later increase is seen whole)."""
        self.requests.labels(MODEL, "stop").inc(count)
        self.prompt_tokens.labels(MODEL).inc(count * input_tokens)
        self.generation_tokens.labels(MODEL).inc(count * output_tokens)
        series = (
            self.ttft.labels(MODEL),
            self.inter_token.labels(MODEL),
            self.request_prompt_tokens.labels(MODEL),
            self.request_generation_tokens.labels(MODEL),
        )
        for _ in range(count):
            ttft, gaps, prompt, generation = series
            ttft.observe(ttft_s)
            for _ in range(output_tokens - 1):
                gaps.observe(gap_s)
            prompt.observe(input_tokens)
            generation.observe(output_tokens)

    def close(self) -> None:
        self.endpoint.close()


# TensorRT-LLM's MetricsCollector (tensorrt_llm/metrics/collector.py): every series carries
# model_name and engine_type; its default bucket bounds for TTFT and TPOT.
TRTLLM_LABELS = ["model_name", "engine_type"]
TRTLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                       2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip


class TrtllmMetricsSim:
    """What trtllm-serve serves on /prometheus/metrics (return_perf_metrics and
    enable_iter_perf_stats on): the `trtllm_*` iteration gauges whose values the test sets, and
    the per-request counters and histograms at zero."""

    PATH = "/prometheus/metrics"

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = (MODEL, "trtllm")

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, TRTLLM_LABELS, registry=self.registry)

        self.running = gauge("trtllm_num_requests_running", "Number of active requests")
        self.waiting = gauge("trtllm_num_requests_waiting", "Number of queued requests")
        self.kv_usage = gauge("trtllm_kv_cache_utilization", "KV cache utilization")
        Counter(
            "trtllm_request_success",
            "Count of successfully processed requests.",
            [*TRTLLM_LABELS, "finished_reason"],
            registry=self.registry,
        ).labels(*labels, "stop")
        for name in ("trtllm_prompt_tokens", "trtllm_generation_tokens"):
            Counter(name, "Tokens", TRTLLM_LABELS, registry=self.registry).labels(*labels)
        for name, buckets in (
            ("trtllm_time_to_first_token_seconds", TRTLLM_TTFT_BUCKETS),
            ("trtllm_time_per_output_token_seconds", INTER_TOKEN_BUCKETS),
        ):
            Histogram(name, "Latency", TRTLLM_LABELS, registry=self.registry, buckets=buckets)
        self.labels = labels
        self.endpoint = MetricsServer(self.registry, self.PATH)
        self.port = self.endpoint.port
        self.set_load(running=0, waiting=0)

    def set_load(self, running: float, waiting: float) -> None:
        self.running.labels(*self.labels).set(running)
        self.waiting.labels(*self.labels).set(waiting)
        self.kv_usage.labels(*self.labels).set(min(1, running / 32))

    def close(self) -> None:
        self.endpoint.close()


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    ca_file: Path  # the throwaway CA that signed cert_file


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def throwaway_pki(directory: Path) -> ServerTls:
    """A CA valid for an hour and a server certificate from it for 127.0.0.1 (an IP SAN: Go's
    TLS ignores the common name)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmdeploy test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = ServerTls(directory / "server.crt", directory / "server.key", directory / "ca.crt")
    tls.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key_file.write_bytes(_pem_key(key))
    return tls


class Prometheus:
    """`prometheus` on a free loopback port with a generated config; start/stop at will.
    With `tls`, it serves https only (--web.config.file, tls_server_config)."""

    def __init__(
        self,
        target_port: int,
        labels: dict[str, str],
        tls: ServerTls | None = None,
        metrics_path: str = "/metrics",
        *,
        operator_port: int | None = None,
        rule_files: tuple[Path, ...] = (),
    ) -> None:
        """`operator_port`: also scrape an operator's metrics, with honor_labels as the
        PodMonitor of manifests/monitoring does; `rule_files`: rules to evaluate."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (make e2e installs Debian's package)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="llmdeploy-prometheus-"))
        self.port = free_port()
        self.targets_file = self.dir / "targets.json"
        self.targets_file.write_text("[]")
        scrapes: list[dict[str, object]] = [
            {
                "job_name": "engine",
                "metrics_path": metrics_path,
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"], "labels": labels}],
            },
            {
                # More engines while it runs (add_target): a pilot's second generation.
                "job_name": "engines",
                "metrics_path": metrics_path,
                "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
            },
        ]
        if operator_port is not None:
            scrapes.append(
                {
                    "job_name": "llmdeploy",
                    "honor_labels": True,
                    # The target labels the Prometheus Operator gives the operator's pod.
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{operator_port}"],
                            "labels": {"namespace": "llmdeploy-system", "pod": "llmdeploy-0"},
                        }
                    ],
                }
            )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrapes,
            "rule_files": [str(path) for path in rule_files],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.tls = tls
        if tls is not None:
            web = {
                "tls_server_config": {
                    "cert_file": str(tls.cert_file),
                    "key_file": str(tls.key_file),
                }
            }
            (self.dir / "web.yml").write_text(yaml.safe_dump(web))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.dir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *([f"--web.config.file={self.dir / 'web.yml'}"] if self.tls else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        context = ssl.create_default_context(cafile=self.tls.ca_file) if self.tls else None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"{self.url}/-/ready", timeout=2, context=context
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"prometheus did not become ready; see {self.dir / 'prometheus.log'}")

    def add_target(self, port: int, labels: dict[str, str]) -> None:
        """Scrape one more engine, with these target labels, from now on."""
        targets = json.loads(self.targets_file.read_text())
        targets.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
        staged = self.targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps(targets))
        staged.replace(self.targets_file)  # whole: discovery never reads half a file

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The `data.result` of an instant query through the HTTP API (plain http)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]


class LoopbackServer:
    """A stand-in HTTP server on 127.0.0.1 that counts requests and answers each with
    `answer(handler)`, which should wait on `closed` (set by `close`) rather than sleep."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                with contextlib.suppress(OSError):  # the client gave up
                    outer.answer(self)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


class SlowDripServer(LoopbackServer):
    """A stand-in for a Prometheus that answers 200 and then one byte of body every `gap_s`,
    never finishing: each socket read succeeds in time, so only a deadline on the whole request
    ends it. The bytes spell DRIP..., which must never reach a status, event or log."""

    BODY_BYTE = b"D"

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        super().__init__()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        while not self.closed.wait(self.gap_s):
            handler.wfile.write(self.BODY_BYTE)
            handler.wfile.flush()


class SlowAnswerServer(LoopbackServer):
    """A stand-in for a Prometheus that answers every query with no series, `after_s` late."""

    EMPTY = b'{"status":"success","data":{"resultType":"vector","result":[]}}'

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        super().__init__()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        self.closed.wait(self.after_s)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(self.EMPTY)))
        handler.end_headers()
        handler.wfile.write(self.EMPTY)
