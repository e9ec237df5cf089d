"""The work queue: reconcile each object when something about it changed or when it
is due, from the watch-fed caches; a slow full resync only as a safety net.

Kopf's timers put a finalizer on every object they serve, so nothing could be deleted
once the operator is uninstalled (or its Role is gone with a namespace being deleted).
Instead, a queue of due times drives the reconcilers: a watch event of an object or of
one of its children puts the object at the front; after each pass, the object's
time-driven work (policies.due: schedules, TTLs, canary steps, drift polls) puts it
back at its due time; a failed pass comes back with exponential back-off. Every
`resync_seconds` (5 minutes by default), every cached object is queued once, spread
over the period, so a missed event is healed without a burst.

Level-based and idempotent: a key is reconciled by one worker at a time, always on the
latest state (reconcilers.locks), and losing the queue (SIGKILL) loses nothing: on
start every object is queued. With several replicas, only the peer Kopf keeps active
(the highest live priority in the peering object) reconciles; a peer that becomes
active queues every object, since it dropped the work of its passive time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlplane_operator import kube, labels
from mlplane_operator.cache import DueQueue, watched
from mlplane_operator.policies.due import seconds_until_due
from mlplane_operator.settings import OperatorSettings

__all__ = ["Controller", "Reconciler", "active_peer", "backoff_seconds", "owners", "watched"]

log = logging.getLogger(__name__)
Reconciler = Callable[[dict[str, Any], OperatorSettings], None]
Key = tuple[str, str, str]  # (kind, namespace, name)
PEERING_SECONDS = 5.0  # how long a look at the peering object is trusted
MAX_BACKOFF = 300.0
WORKERS = 8
CACHE_SYNC_SECONDS = 30


def active_peer(peering: dict[str, Any] | None, own_priority: int, now: datetime) -> bool:
    """Whether no live peer outranks us in a Kopf peering object's status (pure)."""
    for peer in ((peering or {}).get("status") or {}).values():
        if not isinstance(peer, dict) or int(peer.get("priority", 0)) <= own_priority:
            continue
        seen = datetime.fromisoformat(str(peer.get("lastseen")))
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if seen + timedelta(seconds=int(peer.get("lifetime", 60))) > now:
            return False
    return True


def backoff_seconds(failures: int) -> float:
    """1, 2, 4, … seconds after consecutive failed passes, at most MAX_BACKOFF (pure)."""
    return float(min(MAX_BACKOFF, 2 ** max(0, failures - 1)))


def owners(
    kind: str, obj: dict[str, Any], job_owner: Callable[[str, str], Key | None]
) -> list[Key]:
    """The mlplane objects whose pass reads `obj`, a child of kind `kind` (pure but for
    `job_owner`, which finds the owner of a Job by namespace and name)."""
    metadata = obj.get("metadata") or {}
    namespace = metadata.get("namespace", "")
    found: list[Key] = []
    if kind in ("TrainingJob", "ModelVersion", "InferenceService"):
        found.append((kind, namespace, metadata["name"]))
    if kind == "Job":
        for ref in metadata.get("ownerReferences") or []:
            if ref.get("kind") in ("TrainingJob", "ModelVersion") and ref.get("controller"):
                found.append((ref["kind"], namespace, ref["name"]))
    child_labels = metadata.get("labels") or {}
    if kind == "Pod" and "batch.kubernetes.io/job-name" in child_labels:
        owner = job_owner(namespace, child_labels["batch.kubernetes.io/job-name"])
        if owner is not None:
            found.append(owner)
    if kind != "InferenceService" and labels.INFERENCE_SERVICE in child_labels:
        found.append(("InferenceService", namespace, child_labels[labels.INFERENCE_SERVICE]))
    if kind == "ModelVersion":
        # A version's stage or verification decides what an InferenceService serves.
        model = (obj.get("spec") or {}).get("model")
        found += [
            ("InferenceService", namespace, name) for name in SERVERS.serving(namespace, model)
        ]
    return found


class ServersOfModel:
    """Which InferenceServices serve each model, by namespace: a ModelVersion's stage or
    verification decides what they serve, so its events queue them (thread-safe)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._model_of: dict[tuple[str, str], str] = {}  # (namespace, isvc) -> model
        self._servers: defaultdict[tuple[str, str], set[str]] = defaultdict(set)

    def remember(self, obj: dict[str, Any], event: str) -> None:
        metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        namespace, name = metadata.get("namespace", ""), metadata["name"]
        with self._guard:
            before = self._model_of.pop((namespace, name), None)
            if before is not None:
                self._servers[(namespace, before)].discard(name)
            if event != "DELETED":
                model = str(spec.get("model", ""))
                self._model_of[(namespace, name)] = model
                self._servers[(namespace, model)].add(name)

    def serving(self, namespace: str, model: str | None) -> list[str]:
        with self._guard:
            return sorted(self._servers.get((namespace, model or ""), ()))


SERVERS = ServersOfModel()


class Controller:
    def __init__(
        self, kinds: dict[str, Reconciler], settings: OperatorSettings, priority: int
    ) -> None:
        self.kinds, self.settings, self.priority = kinds, settings, priority
        self.queue = DueQueue()
        self.stopping = threading.Event()
        self.failures: dict[Key, int] = {}
        self._peering_seen = (-PEERING_SECONDS, True)
        self._was_active = True
        self._threads: list[threading.Thread] = []

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        kube.start_informers(self.settings.watch_namespaces, self.on_event)
        if not kube.wait_for_caches(timeout=CACHE_SYNC_SECONDS):
            # A cache that cannot list (no watch right on a kind, say) reads through to
            # the API server until it can: slower, never wrong.
            log.warning("not every cache listed within %d s; reading through meanwhile",
                        CACHE_SYNC_SECONDS)  # fmt: skip
        self.resync_all(spread=0.0)  # nothing is known to be done: everything, now
        for number in range(WORKERS):
            self._spawn(self._work, f"mlplane-worker-{number}")
        self._spawn(self._safety_net, "mlplane-resync")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        self.queue.close()
        kube.stop_informers()

    # --- queueing ----------------------------------------------------------------------

    def enqueue(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        if kind in self.kinds and watched(namespace, self.settings.watch_namespaces):
            self.queue.add((kind, namespace, name), time.monotonic() + delay)

    def on_event(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """A cache saw a change: queue every object whose pass reads it."""
        if kind == "InferenceService":
            SERVERS.remember(obj, event)
        if event == "LISTED":  # the start (or a relist) queues every object itself
            return
        for owner in owners(kind, obj, self._job_owner):
            self.enqueue(*owner)

    @staticmethod
    def _job_owner(namespace: str, name: str) -> Key | None:
        job = kube.cached_get("Job", namespace, name)
        for ref in ((job or {}).get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") in ("TrainingJob", "ModelVersion") and ref.get("controller"):
                return (ref["kind"], namespace, ref["name"])
        return None

    def resync_all(self, spread: float) -> int:
        """Queue every cached object once, due evenly over the next `spread` seconds."""
        keys = [
            (kind, namespace, name)
            for kind in self.kinds
            for namespace, name in kube.cached_keys(kind)
        ]
        random.shuffle(keys)
        now = time.monotonic()
        for index, key in enumerate(keys):
            self.queue.add(key, now + spread * index / max(1, len(keys)))
        return len(keys)

    def _safety_net(self) -> None:
        period = self.settings.resync_seconds
        while not self.stopping.wait(period):
            try:
                log.info("safety-net resync of %d objects", self.resync_all(spread=period))
            except Exception:  # a pass that fails must not end the loop
                log.exception("safety-net resync failed")

    # --- work --------------------------------------------------------------------------

    def _work(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.wait(time.monotonic(), time.monotonic)
            if key is None:
                return
            try:
                self._process(key)
            finally:
                self.queue.done(key)

    def _process(self, key: Key) -> None:
        kind, namespace, name = key
        if not self._active():
            return  # the active peer does it; we queue everything if we become it
        body = kube.cached_get(kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.failures.pop(key, None)
            return
        try:
            self.kinds[kind](body, self.settings)
        except Exception as error:
            failures = self.failures[key] = self.failures.get(key, 0) + 1
            delay = backoff_seconds(failures)
            if isinstance(error, kube.TransientError):
                log.info("%s %s/%s: %s; again in %.0f s", kind, namespace, name, error, delay)
            else:
                log.exception("reconcile of %s %s/%s failed; again in %.0f s",
                              kind, namespace, name, delay)  # fmt: skip
            self.enqueue(kind, namespace, name, delay)
            return
        self.failures.pop(key, None)
        latest = kube.cached_get(kind, namespace, name) or body
        due = seconds_until_due(kind, latest, datetime.now(UTC), self.settings.poll_seconds)
        if due is not None:
            self.enqueue(kind, namespace, name, due)

    def _active(self) -> bool:
        """Whether this peer should reconcile (looked up at most every few seconds)."""
        seen_at, active = self._peering_seen
        if time.monotonic() - seen_at < PEERING_SECONDS:
            return active
        active = self._look_up_peering()
        self._peering_seen = (time.monotonic(), active)
        if active and not self._was_active:
            self.resync_all(spread=0.0)
        self._was_active = active
        return active

    def _look_up_peering(self) -> bool:
        if not self.settings.peering:
            return True
        namespaces = self.settings.watch_namespaces
        path = (
            f"/apis/kopf.dev/v1/namespaces/{namespaces[0]}/kopfpeerings/{self.settings.peering}"
            if namespaces
            else f"/apis/kopf.dev/v1/clusterkopfpeerings/{self.settings.peering}"
        )
        try:
            peering = kube.get_path(path)
        except ApiException:
            return True  # cannot tell: reconciling twice is safe, missing time is not
        return active_peer(peering, self.priority, datetime.now(UTC))
