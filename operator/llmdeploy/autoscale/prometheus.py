"""The Prometheus edge: read the engines' metrics for one LLMDeployment.

Anything missing, stale, non-finite or unreachable becomes None, which the decision core
treats as "hold": a dead Prometheus must never scale a fleet down.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests import RequestException
from urllib3.util.retry import Retry

from llmdeploy.autoscale.decision import MetricsReading

# A sample older than this is not a current reading.
MAX_SAMPLE_AGE_S = 120.0


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    url: str
    timeout_s: float = 5.0
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False


# Bytes of one answer at most: a vector of one series is a few hundred.
MAX_ANSWER_BYTES = 1 << 20
READ_CHUNK = 65536


class DeadlineSession(requests.Session):
    """A session whose every request, retries included, ends within `deadline_s`: requests'
    own timeout bounds each socket read, so a server that sends a byte every few seconds
    would hold a reconcile for ever. The body is read one socket read at a time against the
    deadline, and no more than MAX_ANSWER_BYTES of it."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__()
        self.deadline_s = deadline_s

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        deadline = time.monotonic() + self.deadline_s
        kwargs.update(stream=True, timeout=(self.deadline_s, self.deadline_s))
        response = super().request(method, url, *args, **kwargs)
        body = bytearray()
        try:
            while chunk := response.raw.read1(READ_CHUNK, decode_content=True):
                body += chunk
                if time.monotonic() > deadline:
                    raise requests.Timeout(f"no whole answer within {self.deadline_s:g}s")
                if len(body) > MAX_ANSWER_BYTES:
                    raise ValueError(f"an answer larger than {MAX_ANSWER_BYTES} bytes")
        finally:
            response.close()
        response._content = bytes(body)
        return response


class TokenFileError(ValueError):
    """The bearer token file is empty or holds more than one word (never quoted: a token
    with a newline in it is still a secret)."""


def client_for(config: PrometheusConfig) -> PrometheusConnect:
    headers = {}
    if config.bearer_token_file is not None:
        token = config.bearer_token_file.read_text(encoding="utf-8").strip()
        if not token or any(c.isspace() for c in token):
            raise TokenFileError("the bearer token file holds no single token")
        headers["Authorization"] = f"Bearer {token}"
    session = DeadlineSession(config.timeout_s)
    session.verify = not config.insecure_skip_verify
    if session.verify and config.ca_file is not None:
        session.verify = str(config.ca_file)
    return PrometheusConnect(
        url=config.url,
        headers=headers or None,
        session=session,
        # One retry of a refused connection or a 5xx, within the same deadline.
        retry=Retry(total=1, read=0, backoff_factor=0.1, status_forcelist=(502, 503, 504)),
    )


# Everything a query can raise short of a bug: transport and TLS errors, non-200 answers,
# malformed bodies, an unreadable token or CA file.
QUERY_ERRORS = (RequestException, PrometheusApiClientException, ValueError, KeyError, OSError)
# Of those, the ones that say Prometheus is not answering at all (not one query's problem).
UNREACHABLE = (requests.ConnectionError, requests.Timeout)


def read_queries(
    config: PrometheusConfig, queries: dict[str, str], now: float | None = None
) -> MetricsReading:
    """{key: value of its PromQL, or None}; a query must give one series. The first error
    is kept as the problem, so a status can say why there is no data."""
    now = time.time() if now is None else now
    try:
        client = client_for(config)
    except (OSError, ValueError) as exc:
        return MetricsReading(dict.fromkeys(queries), describe_error(exc))
    values: dict[str, float | None] = {}
    problem = None
    for key, promql in queries.items():
        try:
            result = client.custom_query(promql)
        except QUERY_ERRORS as exc:
            values[key] = None
            problem = problem or describe_error(exc)
            continue
        values[key] = _single_value(result, now)
    return MetricsReading(values, problem)


def describe_error(exc: Exception) -> str:
    """What failed, in words of our own: nothing the server sent (a body, a header) and no
    exception text, which can quote them, reaches status, events or logs."""
    if isinstance(exc, TokenFileError):
        return str(exc)
    if isinstance(exc, PrometheusApiClientException):
        status = re.match(r"HTTP Status Code (\d{3})", str(exc))
        return f"HTTP {status.group(1)}" if status else "an unexpected answer"
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return "TLS: certificate verification failed (CERTIFICATE_VERIFY_FAILED)"
        return "TLS handshake failed"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    if isinstance(exc, OSError) and not isinstance(exc, RequestException):
        return "the token or CA file could not be read"
    return f"a malformed answer ({type(exc).__name__})"


def _single_value(result: object, now: float) -> float | None:
    if not isinstance(result, list) or len(result) != 1:
        return None  # no series: the engines are not scraped (or not there)
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    if not isinstance(sample, list) or len(sample) != 2:
        return None
    timestamp, raw = sample
    try:
        value = float(raw)
        age = now - float(timestamp)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or age > MAX_SAMPLE_AGE_S:
        return None
    return value
