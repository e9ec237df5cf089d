"""In-memory stores of watched objects and the due-time queue (pure: no I/O).

kube.py fills a Store per kind from a list and then a watch (as controller-runtime's
informer cache does); reconcilers read children from it instead of listing them from
the API server on every pass. The operator's own writes go into the store at once
(write-through, newer resourceVersions only), so a pass that has just created a Job
finds it on the next pass even before the watch delivers it. Nothing here decides
anything from the cache alone that a write cannot check again: creates use
deterministic names (a second create gets 409), status writes carry the
resourceVersion they were computed from (a stale read gets a Conflict).
"""

from __future__ import annotations

import fnmatch
import heapq
import json
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

Manifest = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)


def watched(namespace: str, patterns: list[str]) -> bool:
    """Whether the operator watches `namespace` (empty patterns: every namespace)."""
    return not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


def newer(candidate: Manifest, stored: Manifest | None) -> bool:
    """Whether `candidate` is at least as new as `stored`. resourceVersions are opaque
    to clients, but etcd's are integers; when either is not, the candidate wins (the
    watch delivers in order, so the store converges either way)."""
    if stored is None:
        return True
    return _at_least(_version(candidate), _version(stored))


def _version(obj: Manifest) -> str:
    return str(obj["metadata"].get("resourceVersion", ""))


def _at_least(mine: str, theirs: str | None) -> bool:
    if theirs is None:
        return True
    if mine.isdigit() and theirs.isdigit():
        return int(mine) >= int(theirs)
    return True


def subset_equal(wanted: Any, live: Any) -> bool:
    """Whether every field of `wanted` has the same value in `live` (what the API server
    added, defaults and other managers' fields, is ignored). Lists must have the same
    length and match element by element; an empty map or list matches a missing one,
    as the API server keeps none. Used to skip a server-side apply that would
    change nothing; when in doubt it says False, and the apply is sent."""
    if wanted in ({}, []) and live is None:
        return True  # the API server stores no empty map or list: nothing to apply
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(
            subset_equal(value, live.get(key)) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(wanted) == len(live)
            and all(subset_equal(w, v) for w, v in zip(wanted, live, strict=True))
        )
    return bool(wanted == live) and type(wanted) is type(live)


class Store:
    """Objects of one kind by (namespace, name), indexed by namespace and by each label.

    Each object is kept as compact JSON text (a third of the memory of the decoded
    dicts, a fifth of it before interning) and decoded on every read, so a reader gets
    a fresh copy it may change. The indexes keep the names, labels and resourceVersion
    of each object. Thread-safe."""

    def __init__(
        self,
        namespaces: list[str] | None = None,
        trim: Callable[[Manifest], Manifest] | None = None,
    ) -> None:
        """`trim`: what of an object to keep (the parts the reconcilers read from it)."""
        self.patterns = namespaces or []
        self.trim = trim
        self._lock = threading.Lock()
        self._objects: dict[Key, str] = {}
        self._versions: dict[Key, str] = {}
        self._labels: dict[Key, dict[str, str]] = {}
        self._by_namespace: defaultdict[str, set[str]] = defaultdict(set)
        self._by_label: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.resource_version: str | None = None

    # --- writes ------------------------------------------------------------------------

    def replace(self, items: list[Manifest], resource_version: str | None) -> list[Manifest]:
        """A fresh list: the store becomes exactly `items`. Returns the objects that
        disappeared (their DELETED events were missed)."""
        with self._lock:
            gone = dict(self._objects)
            for key in list(self._objects):
                self._drop(key)
            for item in items:
                if watched(item["metadata"].get("namespace", ""), self.patterns):
                    self._put(item)
                    gone.pop(_key(item), None)
            self.resource_version = resource_version
            return [json.loads(text) for text in gone.values()]

    def upsert(self, obj: Manifest) -> bool:
        """Store `obj` unless a newer version is stored; returns whether it stored."""
        if not watched(obj["metadata"].get("namespace", ""), self.patterns):
            return False
        with self._lock:
            key = _key(obj)
            if not _at_least(_version(obj), self._versions.get(key)):
                return False
            if key in self._objects:
                self._drop(key)
            self._put(obj)
            return True

    def remove(self, namespace: str, name: str) -> Manifest | None:
        with self._lock:
            text = self._objects.get((namespace, name))
            if text is None:
                return None
            self._drop((namespace, name))
            return dict(json.loads(text))

    def _put(self, obj: Manifest) -> None:
        if "managedFields" in obj["metadata"]:
            # Nobody reads them from the cache, and they are often half of an object.
            metadata = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
            obj = {**obj, "metadata": metadata}
        if self.trim is not None:
            obj = self.trim(obj)
        namespace, name = key = _key(obj)
        labels = {
            sys.intern(label): sys.intern(str(value))
            for label, value in (obj["metadata"].get("labels") or {}).items()
        }
        self._objects[key] = json.dumps(obj, separators=(",", ":"))
        self._versions[key] = _version(obj)
        self._labels[key] = labels
        self._by_namespace[sys.intern(namespace)].add(name)
        for label, value in labels.items():
            self._by_label[(namespace, label, value)].add(name)

    def _drop(self, key: Key) -> None:
        namespace, name = key
        del self._objects[key]
        del self._versions[key]
        self._by_namespace[namespace].discard(name)
        if not self._by_namespace[namespace]:
            del self._by_namespace[namespace]
        for label, value in self._labels.pop(key).items():
            bucket = self._by_label.get((namespace, label, value))
            if bucket is not None:
                bucket.discard(name)
                if not bucket:
                    del self._by_label[(namespace, label, value)]

    # --- reads -------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Manifest | None:
        with self._lock:
            text = self._objects.get((namespace, name))
        return None if text is None else dict(json.loads(text))

    def select(self, namespace: str, labels: dict[str, str] | None = None) -> list[Manifest]:
        """The objects in `namespace` whose labels include all of `labels`, by name."""
        with self._lock:
            if labels:
                buckets = [
                    self._by_label.get((namespace, key, value), set())
                    for key, value in labels.items()
                ]
                names = set.intersection(*(set(b) for b in buckets))
            else:
                names = set(self._by_namespace.get(namespace, ()))
            texts = [self._objects[(namespace, name)] for name in sorted(names)]
        return [json.loads(text) for text in texts]

    def stored_keys(self) -> list[Key]:
        """(namespace, name) of every object, without decoding any."""
        with self._lock:
            return list(self._objects)

    def all(self) -> list[Manifest]:
        with self._lock:
            texts = list(self._objects.values())
        return [json.loads(text) for text in texts]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


def without_pod_spec(pod: Manifest) -> Manifest:
    """A Pod as the cached reads use it: metadata and status (phase, conditions, pod IP,
    container states). What needs its spec (the OOM-killed container's memory limit)
    reads the pod from the API server."""
    return {key: value for key, value in pod.items() if key != "spec"}


def without_job_template(job: Manifest) -> Manifest:
    """A Job as the cached reads use it: all but its pod template (the largest part)."""
    spec = {key: value for key, value in (job.get("spec") or {}).items() if key != "template"}
    return {**job, "spec": spec}


def _key(obj: Manifest) -> Key:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class DueQueue:
    """Keys to reconcile, each at its due time (the earliest asked for wins); a key is
    handed to one worker at a time, and a key asked for while it runs runs again after.

    Times are plain floats (time.monotonic() in the operator, anything in tests)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._due: dict[Any, float] = {}
        self._running: set[Any] = set()
        self._again: dict[Any, float] = {}  # asked for while running: when
        self._counter = 0
        self.closed = False

    def add(self, key: Any, due: float) -> None:
        with self._cond:
            if key in self._running:
                self._again[key] = min(due, self._again.get(key, due))
                return
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            self._counter += 1
            heapq.heappush(self._heap, (due, self._counter, key))
            self._cond.notify()

    def next_due(self) -> float | None:
        with self._cond:
            self._discard_stale()
            return self._heap[0][0] if self._heap else None

    def _discard_stale(self) -> None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # superseded by an earlier due time, or taken

    def pop_due(self, now: float) -> Any | None:
        """A key due at `now`, marked running; None when none is due."""
        with self._cond:
            self._discard_stale()
            if not self._heap or self._heap[0][0] > now:
                return None
            _, _, key = heapq.heappop(self._heap)
            del self._due[key]
            self._running.add(key)
            return key

    def wait(self, now: float, clock: Any) -> Any | None:
        """Block until a key is due (or closed); `clock()` gives the time."""
        with self._cond:
            while not self.closed:
                key = self.pop_due(now)
                if key is not None:
                    return key
                due = self.next_due()
                self._cond.wait(None if due is None else max(0.0, due - now))
                now = clock()
            return None

    def done(self, key: Any) -> None:
        """The worker finished `key`; a request that came meanwhile is queued now."""
        with self._cond:
            self._running.discard(key)
            again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)
