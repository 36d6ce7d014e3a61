"""The one reconcile path: sources enqueue keys; workers observe -> decide -> act.

Sources (kopf's watch events of LLMDeployments and of every child kind, the periodic resync,
deadlines and retries) only update the index and enqueue the object's key. A worker that takes
a key observes an immutable snapshot (the index, the inventory, and what decide asks for),
calls the pure `decide`, and acts on its outcome with preconditions: children by server-side
apply, prunes by uid, /scale and status by resourceVersion. It is the only writer of status.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmdeploy.api.status import LLMDeploymentStatus
from llmdeploy.autoscale.prometheus import Backoff, PrometheusConfig, read_queries
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.cluster.kube import Cluster, ClusterError, not_ours
from llmdeploy.cluster.objects import Owner, live_child, owner_name
from llmdeploy.controller import metrics
from llmdeploy.controller.decide import decide, reconcile_error
from llmdeploy.controller.index import Index, Key, Names, Record
from llmdeploy.controller.peering import Peering
from llmdeploy.controller.queue import WorkQueue
from llmdeploy.controller.routing import endpoint_picker_of
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.controller.state import Config, Event, Needs, Outcome, Snapshot, owner_of
from llmdeploy.measure.prometheus import collect
from llmdeploy.measure.results import readings

log = logging.getLogger("llmdeploy.reconcile")
STATUS_FIELDS = frozenset(f.alias or n for n, f in LLMDeploymentStatus.model_fields.items())
PACKAGE = Path(__file__).resolve().parents[1]  # llmdeploy/, whose frames locate a bug
# Pending pods, a measurement, the autoscaler's Prometheus readings, GPUs in use: each asked
# for at most once.
MAX_OBSERVE_ROUNDS = 4


class ConflictError(Exception):
    """The object changed since it was read: decide again from the newer one."""


class OverdueError(ClusterError):
    """The reconcile ran past its bound; what is left of it waits for the retry."""


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        catalog: Catalog,
        lock: ImageLock,
        cluster: Cluster,
        read_peers: Callable[[], list[Mapping[str, Any]]] | None = None,
        identity: str = "",
        priority: int = 0,
    ) -> None:
        """`read_peers`: the status of kopf's peering objects; None when standalone."""
        self.settings = settings
        self.cluster = cluster
        self.index = Index()
        self.names = Names()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.peering = Peering(read_peers, identity, priority, self.peering_changed)
        self.prometheus = {
            name: PrometheusConfig(
                e.url,
                settings.prometheus_timeout_seconds,
                e.bearer_token_file,
                e.ca_file,
                e.insecure_skip_verify,
                settings.prometheus_reading_timeout_seconds,
            )
            for name, e in settings.prometheus().items()
        }
        self.backoff = Backoff(settings.prometheus_backoff_seconds)
        self.config = Config(
            catalog,
            lock,
            settings.provisionable(),
            settings.prometheus_targets(),
            settings.host_access(),
            settings.excluded_gpu_ttl_seconds,
            settings.measure_interval_seconds,
            settings.measure_window_seconds(),
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._relist = threading.Event()
        self._guard = threading.Lock()
        self._running: dict[int, float] = {}  # worker thread -> when its reconcile started
        self._unanswered_since: float | None = None  # first of a run of unanswered reconciles

    # Sources: they only update the index and enqueue.

    def object_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key = (str(metadata.get("namespace") or "default"), str(metadata["name"]))
        if event_type == "DELETED":
            self.index.object_gone(key)
            self.queue.forget(key)
            metrics.DEPLOYMENTS.forget(*key)
        else:
            self.queue.add(self.index.object_seen(body))

    def child_event(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Any object of a child kind: its name is noted; an LLMDeployment's child is indexed
        under its owner, which is queued."""
        metadata = body["metadata"]
        namespace, child = str(metadata["namespace"]), (kind, str(metadata["name"]))
        live = live_child(kind, body)
        if event_type == "DELETED":
            self.names.gone((namespace, *child))
        else:
            self.names.seen((namespace, *child), live.owner_uid)
        if kind == "Service":  # an endpoint picker came or went: Routable may change
            for user in self.index.picker_users(namespace, child[1]):
                self.queue.add(user)
        owner = owner_name(body)
        if owner is None:
            return
        key = (namespace, owner)
        if event_type == "DELETED":
            self.index.child_gone(key, child)
        else:
            self.index.child_seen(key, child, live)
        self.queue.add(key)

    def peering_changed(self, acting: bool) -> None:
        if acting:  # kopf lists everything again as it resumes; a relist makes sure
            self.names.clear()  # what the paused watches missed: asked for until then
            self._relist.set()
        else:
            self.index.clear()
            self.names.clear()
            metrics.DEPLOYMENTS.clear()

    # Workers and the periodic resync.

    def start(self) -> None:
        for n in range(self.settings.workers):
            self._spawn(self._work, f"worker-{n}")
        self._spawn(self._resync, "resync")

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _resync(self) -> None:
        # The first relist comes at once: until one has, a new child's name is asked for.
        last_relist = -math.inf
        while True:
            metrics.QUEUE_DEPTH.set(self.queue.depth())
            metrics.OBJECTS_TRACKED.set(len(self.index))
            metrics.DEPLOYMENTS.retain(self.index.keys)
            if self.peering.acting():
                due = time.monotonic() - last_relist >= self.settings.relist_seconds
                if due or self._relist.is_set():
                    self._relist.clear()
                    last_relist = time.monotonic()
                    try:
                        self.relist()
                    except ClusterError as exc:
                        log.warning("relist failed: %s", exc)
                for key in self.index.keys():  # noqa: SIM118 (a method, not a dict's)
                    self.queue.resync(key)
            if self._stop.wait(self.settings.status_interval_seconds):
                return

    def relist(self) -> None:
        """Rebuild the index from lists: what a watch gap hid is found, what went is dropped."""
        since, names_since = self.index.mark(), self.names.mark()
        namespaces = self.settings.namespaces
        objects = self.cluster.llmdeployment_keys(namespaces)
        children = self.cluster.children(namespaces)
        self.names.relisted(self.cluster.names(namespaces), names_since)
        for key in self.index.relisted(objects, children, since):
            self.queue.forget(key)
            metrics.DEPLOYMENTS.forget(*key)
        for key in objects:
            self.queue.add(key)

    def _work(self) -> None:
        ident = threading.get_ident()
        while not self._stop.is_set():
            item = self.queue.get(timeout_s=1.0)
            if item is None:
                continue
            key, waited = item
            metrics.QUEUE_WAIT_SECONDS.observe(waited)
            if not self.peering.acting():
                self.queue.done(key)  # a resume re-lists and enqueues everything
                continue
            started = time.monotonic()
            with self._guard:
                self._running[ident] = started
            result, requeue = self._reconcile_one(key)
            with self._guard:
                del self._running[ident]
                if result == "unreachable":
                    self._unanswered_since = self._unanswered_since or started
                else:
                    self._unanswered_since = None
            metrics.RECONCILES.labels(result).inc()
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            failed = result in ("error", "unreachable", "overdue", "exception")
            delay = self.queue.done(key, failed=failed)
            if failed:
                log.warning("reconcile of %s/%s failed; retry in %.1fs", *key, delay or 0)
            elif requeue is not None:
                self.queue.add_after(key, requeue)

    def _reconcile_one(self, key: Key) -> tuple[str, float | None]:
        try:
            return self.reconcile(key)
        except ConflictError:
            return "conflict", 0.0
        except OverdueError as exc:  # said in status and an event, retried with backoff
            self._report(key, f"{exc}; what is left of it is retried with backoff")
            return "overdue", None
        except ClusterError as exc:
            return ("unreachable" if exc.status is None else "error"), None
        except Exception as exc:  # a bug: said in status and an event, retried with backoff
            log.exception("reconcile of %s/%s failed", *key)
            self._report(key, unexpected(exc))
            return "exception", None

    def stalled(self) -> str | None:
        """Why the queue is stalled, for liveness: a reconcile running far past its bound, or
        work pending while no reconcile has had an answer from the API server for a while."""
        now = time.monotonic()
        limit = self.settings.stall_seconds
        with self._guard:
            oldest = min(self._running.values(), default=None)
            unanswered = self._unanswered_since
        if oldest is not None and now - oldest > limit + self.settings.reconcile_timeout_seconds:
            return f"a reconcile has run for {now - oldest:.0f}s"
        if unanswered is not None and now - unanswered > limit and self.queue.busy():
            return f"no reconcile has reached the API server for {now - unanswered:.0f}s"
        return None

    # One reconcile.

    def reconcile(self, key: Key) -> tuple[str, float | None]:
        """observe -> decide -> act. Returns the result and when to come back, if ever."""
        begun = self.index.begin(key)
        if begun is None:
            return "success", None  # deleted
        body, children, record = begun
        inventory = self.cluster.inventory()
        picker = self._endpoint_picker(body)
        # decide is pure: inputs equal to those of a reconcile that changed nothing and asked
        # for no time-dependent observation give the same no-op until its next deadline (a
        # settled resync costs this).
        seen = (
            body["metadata"].get("resourceVersion"),
            children,
            dict(record.applied),
            inventory,
            picker,
        )
        if record.settled is not None:
            inputs, until = record.settled
            if inputs == seen and time.monotonic() < until:
                return "success", None
        record.settled = None
        deadline = time.monotonic() + self.settings.reconcile_timeout_seconds
        snap = Snapshot(
            body,
            children,
            dict(record.applied),
            inventory,
            datetime.now(UTC),
            record.rendered,
            record.autoscaler,
            endpoint_picker=picker,
        )
        outcome = decide(snap, self.config)
        rounds = 0
        while outcome.needs:
            rounds += 1
            if rounds > MAX_OBSERVE_ROUNDS:
                raise RuntimeError(f"decide kept asking for more: {outcome.needs}")
            snap = self._observe(snap, outcome.needs, deadline)
            outcome = decide(snap, self.config)
        try:
            wrote = self._act(key, snap, record, outcome, deadline)
        except ClusterError as exc:
            if exc.status is not None and not isinstance(exc, OverdueError):
                self._report_failure(snap, str(exc))
            raise
        if rounds == 0 and outcome.autoscaler is None and not wrote:
            # Until its deadline, if any: the requeue below comes back no earlier than that.
            wait = outcome.requeue_after_s
            record.settled = (seen, math.inf if wait is None else time.monotonic() + wait)
        invalid = outcome.status is not None and outcome.status.phase == "Failed"
        return ("invalid" if invalid else "success"), outcome.requeue_after_s

    def _observe(self, snap: Snapshot, needs: Needs, deadline: float) -> Snapshot:
        """What decide asked for beyond the index."""
        _check(deadline)
        owner = owner_of(snap.body)
        if needs.pending_pods:
            pending = self.cluster.unschedulable_pods(owner, needs.spec_hash)
            snap = replace(snap, pending=tuple(pending))
        if needs.queries:
            endpoint = self.prometheus[needs.prometheus]
            reading = read_queries(
                endpoint,
                dict(needs.queries),
                snap.now.timestamp(),
                until=deadline,
                backoff=self.backoff,
            )
            snap = replace(snap, metrics=reading)
        if needs.measure is not None:
            endpoint = self.prometheus[needs.prometheus]
            instant, _ = collect(
                endpoint,
                needs.measure,
                snap.now.timestamp(),
                until=deadline,
                backoff=self.backoff,
            )
            snap = replace(snap, measured=readings(instant, needs.measure.missing))
        if needs.gpus_in_use is not None:
            in_use = self.cluster.gpus_in_use(owner, self.settings.namespaces, needs.gpus_in_use)
            snap = replace(snap, gpus_in_use=in_use)
        if needs.crashes_of is not None:
            snap = replace(snap, crash=self.cluster.crashed_pod(owner, needs.crashes_of))
        if needs.serving is not None:
            exists = self.cluster.workload_exists(owner.namespace, needs.serving)
            snap = replace(snap, serving_exists=exists)
        if needs.generations:
            endpoint = self.prometheus[needs.prometheus]
            measured = {}
            for generation, queries in needs.generations:
                _check(deadline)
                instant, _ = collect(
                    endpoint, queries, snap.now.timestamp(), until=deadline, backoff=self.backoff
                )
                measured[generation] = readings(instant, queries.missing)
            snap = replace(snap, generations_measured=measured)
        return snap

    def _act(
        self, key: Key, snap: Snapshot, record: Record, outcome: Outcome, deadline: float
    ) -> bool:
        """Whether it wrote anything."""
        body = snap.body
        owner = owner_of(body)
        metadata = body["metadata"]
        changed = []
        for obj in outcome.apply:
            _check(deadline)
            name = (obj["kind"], obj["metadata"]["name"])
            # A same-named object someone else made is refused, not adopted: an apply without
            # force would adopt one whose fields happen not to conflict.
            holder = self._holder(snap, owner, obj)
            if holder is not None and holder != owner.uid:
                raise not_ours(*name)
            live = self.cluster.apply(obj, owner, take_over=holder == owner.uid)
            record.applied[name] = (live.applied_hash or "", live.revision)
            self.index.child_seen(key, name, live)
            self.names.seen((owner.namespace, *name), live.owner_uid)
            before = snap.children.get(name)
            if before is None or (before.applied_hash, before.revision) != (
                live.applied_hash,
                live.revision,
            ):
                changed.append(f"{name[0]}/{name[1]}")
        if outcome.scale_workload is not None:
            _check(deadline)
            kind, workload, count = outcome.scale_workload
            self.cluster.scale_workload(kind, workload, owner.namespace, count)
            changed.append(f"{kind}/{workload} (replicas {count})")
        if outcome.rendered is not None:
            record.rendered = outcome.rendered
        # Logged and counted as soon as done: a conflict on the status write below retries the
        # reconcile, which finds these children applied and does not apply them again.
        applied = ", ".join(changed)
        if changed:
            metrics.APPLIES.inc(len(changed))
            log.info("%s/%s: applied %s", *key, applied)
        version = str(metadata.get("resourceVersion") or "")
        if outcome.scale_to is not None:
            _check(deadline)
            scaled = self.cluster.scale(owner, outcome.scale_to, version)
            if scaled is None:
                raise ConflictError
            version = scaled
            metrics.SCALINGS.inc()
        patch = status_patch(body.get("status") or {}, outcome.status) if outcome.status else {}
        if patch:
            _check(deadline)
            if self.cluster.patch_status(owner.namespace, owner.name, patch, version) is None:
                raise ConflictError
        # Pruned only once the status that says why is written: a prune can destroy the
        # evidence of the decision (a rolled-back candidate's crash-looping pod), so a conflict
        # above must leave it for the retry to decide again, not prune and lose the reason.
        pruned = []
        for (kind, child_name), uid in outcome.prune:
            _check(deadline)
            self.cluster.delete_child(kind, child_name, owner.namespace, uid)
            record.applied.pop((kind, child_name), None)
            self.index.child_gone(key, (kind, child_name))
            self.names.gone((owner.namespace, kind, child_name))
            pruned.append(f"{kind}/{child_name}")
        if pruned:
            metrics.PRUNES.inc(len(pruned))
            log.info("%s/%s: pruned %s", *key, ", ".join(pruned))
        if outcome.status is not None:
            metrics.DEPLOYMENTS.update(*key, body, outcome.status)
        # Remembered only once its status is written: a fail-over finds the same history.
        record.autoscaler = outcome.autoscaler
        notes = [(e.reason, e.message, e.warning) for e in outcome.events]
        if changed:
            # A new plan and the applies it made are one event, not two.
            planned = [n for n, note in enumerate(notes) if note[0] == "Planned"]
            if planned:
                reason, message, warning = notes[planned[0]]
                notes[planned[0]] = (reason, f"{message}; applied {applied}", warning)
            else:
                notes.append(("Applied", applied, False))
        if pruned:
            notes.append(("Pruned", ", ".join(pruned), False))
        if outcome.scale_to is not None:
            notes.append(("Scaled", outcome.scale_reason, False))
        if any(e.reason == "Planned" for e in outcome.events):
            metrics.PLANS.inc()
        for reason, message, warning in notes:
            try:
                self.cluster.post_event(body, reason, message, warning=warning)
            except ClusterError as exc:  # an event is not worth failing the reconcile
                log.warning("event %s not posted: %s", reason, exc)
        if outcome.remove_finalizer:
            self.cluster.remove_finalizer(
                owner.namespace, owner.name, list(metadata.get("finalizers") or [])
            )
        return bool(outcome.apply or outcome.prune or notes or patch or outcome.remove_finalizer)

    def _endpoint_picker(self, body: Mapping[str, Any]) -> bool | None:
        """Whether the Service spec.routing names as the endpoint picker exists (None: none
        named). The names map knows, once a relist has filled it; before that, the API
        server is asked."""
        service = endpoint_picker_of(body)
        if service is None:
            return None
        namespace = str(body["metadata"].get("namespace") or "default")
        known, holder = self.names.holder((namespace, "Service", service))
        if known:
            return holder is not None
        probe = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service}}
        return self.cluster.controller_of(probe, namespace) is not None

    def _holder(self, snap: Snapshot, owner: Owner, obj: Mapping[str, Any]) -> str | None:
        """Who holds the name of a child about to be applied: the uid of its controlling
        LLMDeployment, "" for an object no LLMDeployment controls, None for no object. The
        index knows this object's own children; the names map the rest, once a relist has
        filled it; before that, the API server is asked."""
        name = (obj["kind"], obj["metadata"]["name"])
        child = snap.children.get(name)
        if child is not None and child.owner_uid == owner.uid:
            return owner.uid
        known, holder = self.names.holder((owner.namespace, *name))
        return holder if known else self.cluster.controller_of(obj, owner.namespace)

    def _report_failure(self, snap: Snapshot, error: str) -> None:
        """The API server refused part of the act: say so in status (Degraded) and an event."""
        outcome = decide(replace(snap, error=error), self.config)
        if outcome.needs or outcome.status is None:
            return
        patch = status_patch(snap.body.get("status") or {}, outcome.status)
        events = [e for e in outcome.events if e.reason == "ApplyFailed"]
        self._write_failure(snap.body, patch, events)

    def _report(self, key: Key, message: str) -> None:
        """A bug or an overdue reconcile: Degraded=True with reason ReconcileError, on the
        object as the index has it. The report's own failure must not end the worker."""
        try:
            begun = self.index.begin(key)
            if begun is None:
                return
            body = begun[0]
            generation = int(body["metadata"].get("generation") or 0)
            status = body.get("status") or {}
            patch, events = reconcile_error(status, generation, message, datetime.now(UTC))
            self._write_failure(body, patch, events)
        except Exception:
            log.exception("the failure of %s/%s was not reported", *key)

    def _write_failure(
        self, body: Mapping[str, Any], patch: dict[str, Any], events: Sequence[Event]
    ) -> None:
        """Status and events of a failed reconcile, under the act's precondition (the
        resourceVersion read), so they never overwrite a newer write. Events only once the
        status says the same: a retry that finds it written posts none again. A failure to
        write is logged; the retry's backoff holds either way."""
        metadata = body["metadata"]
        try:
            if patch:
                version = str(metadata.get("resourceVersion") or "")
                written = self.cluster.patch_status(
                    metadata["namespace"], metadata["name"], patch, version
                )
                if written is None:
                    return  # changed meanwhile: the retry decides from the newer object
            for event in events:
                self.cluster.post_event(body, event.reason, event.message, warning=event.warning)
        except ClusterError as exc:
            log.warning("status of the failure not written: %s", exc)


def unexpected(exc: BaseException) -> str:
    """What a bug was, in the operator's words: the exception's class and the place in the
    operator's code it came from. Never the exception's text, which may quote a server's
    answer or an input."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).is_relative_to(PACKAGE)
    ]
    where = ""
    if frames:
        last = frames[-1]
        module = Path(last.filename).relative_to(PACKAGE.parent).with_suffix("")
        where = f" in {'.'.join(module.parts)}.{last.name} (line {last.lineno})"
    return (
        f"unexpected {type(exc).__name__}{where}: a bug in the operator, whose log has the "
        "details; retried with backoff"
    )


def status_patch(current: Mapping[str, Any], status: LLMDeploymentStatus) -> dict[str, Any]:
    """A merge patch from the status as read to the one decided: changed fields, and nulls
    for fields the operator owns that are no longer set. Empty when nothing changed."""
    wanted = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch = _merge_patch(current, wanted)
    patch.update({k: None for k in current if k in STATUS_FIELDS and k not in wanted})
    return patch


def _merge_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) of `wanted`'s keys: a merge patch merges objects, so a
    key an object field (status.observed, say) no longer has must be sent as null."""
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = _merge_patch(old, value)
            nested.update({k: None for k in old if k not in value})
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    return patch


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise OverdueError("the reconcile ran past its bound (LLMDEPLOY_RECONCILE_TIMEOUT_SECONDS)")
