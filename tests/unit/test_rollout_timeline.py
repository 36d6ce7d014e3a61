"""The e2e rollout tests' autoscaler timeline (tests/e2e/test_rollout.py), run here without a
control plane: what it shows when reading status.autoscaler fails."""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client import ApiException
from urllib3.exceptions import ProtocolError

from tests.e2e.test_rollout import autoscaler_reading, polled


def test_the_autoscaler_timeline_records_a_failed_read_and_keeps_polling() -> None:
    """A dropped connection, a missing object and a server error each leave a line, and the
    readings after them still come: the polling thread does not end at the first error that
    is not an ApiException."""
    answers: list[Any] = [
        ProtocolError("Connection aborted."),
        ApiException(status=404, reason="Not Found"),
        ApiException(status=500, reason="Internal Server Error"),
    ]

    def read_status() -> dict[str, Any]:
        answer = answers.pop(0) if answers else {"autoscaler": {"desiredReplicas": 3}}
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    with polled(lambda: autoscaler_reading(read_status), 0.01) as seen:
        deadline = time.monotonic() + 10
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [line for _, line in seen]
    assert len(lines) >= 5, lines
    assert lines[0] == "read failed: ProtocolError: Connection aborted."
    assert lines[1].startswith("desired None metrics None")  # not created yet
    assert lines[2] == "read failed: ApiException 500 Internal Server Error"
    assert lines[3].startswith("desired 3 ") and lines[4] == lines[3]
