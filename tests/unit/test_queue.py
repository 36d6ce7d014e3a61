"""The work queue: coalescing, one worker per key, dirty re-queue, backoff, delays."""

from __future__ import annotations

import threading
import time

from llmdeploy.controller.queue import WorkQueue


def take(queue: WorkQueue[str]) -> str:
    item = queue.get(timeout_s=2)
    assert item is not None
    return item[0]


def test_adds_of_a_waiting_key_coalesce() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a"):
        queue.add(key)
    assert queue.depth() == 2
    assert [take(queue), take(queue)] == ["a", "b"]
    assert queue.get(timeout_s=0.05) is None


def test_a_key_added_while_processing_waits_for_the_worker_then_runs_once_more() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert take(queue) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(timeout_s=0.05) is None  # never two workers on one key
    queue.done("a")
    assert take(queue) == "a"
    queue.done("a")
    assert queue.get(timeout_s=0.05) is None


def test_failures_back_off_exponentially_and_a_success_resets() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay_s=0.01, max_delay_s=0.04)
    queue.add("a")
    delays = []
    for _ in range(4):
        take(queue)
        delays.append(queue.done("a", failed=True))
    assert delays == [0.01, 0.02, 0.04, 0.04]
    take(queue)
    assert queue.done("a") is None
    queue.add("a")
    take(queue)
    assert queue.done("a", failed=True) == 0.01


def test_a_periodic_pass_leaves_a_failing_key_to_its_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay_s=60)
    queue.add("a")
    take(queue)
    assert queue.done("a", failed=True) == 60
    queue.resync("a")
    queue.resync("b")
    assert take(queue) == "b"
    assert queue.get(timeout_s=0.05) is None  # "a" waits for its retry, not for the pass
    queue.add("a")  # an event (a spec change) is seen at once
    assert take(queue) == "a"
    queue.done("a")
    queue.resync("a")  # succeeded: back in the passes
    assert take(queue) == "a"


def test_a_delayed_key_comes_when_due() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("later", 0.2)
    queue.add("now")
    assert take(queue) == "now"
    assert queue.get(timeout_s=0.01) is None
    assert take(queue) == "later"


def test_workers_never_hold_one_key_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue()
    holding: set[int] = set()
    overlaps = []
    guard = threading.Lock()

    def work() -> None:
        while (item := queue.get(timeout_s=0.3)) is not None:
            key = item[0]
            with guard:
                overlaps.append(key in holding)
                holding.add(key)
            time.sleep(0.001)
            with guard:
                holding.discard(key)
            queue.done(key)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for n in range(400):
        queue.add(n % 5)
    for worker in workers:
        worker.join()
    assert overlaps and not any(overlaps)
    assert not queue.busy()


def test_close_wakes_the_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.close()
    worker.join(timeout=2)
    assert got == [None]
