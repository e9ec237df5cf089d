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
    mine = str(candidate["metadata"].get("resourceVersion", ""))
    theirs = str(stored["metadata"].get("resourceVersion", ""))
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

    Thread-safe; readers get the stored dicts, which nobody mutates (a new version
    replaces the dict), and copy what they change."""

    def __init__(
        self,
        namespaces: list[str] | None = None,
        trim: Callable[[Manifest], Manifest] | None = None,
    ) -> None:
        """`trim`: what of an object to keep (the parts the reconcilers read from it)."""
        self.patterns = namespaces or []
        self.trim = trim
        self._lock = threading.Lock()
        self._objects: dict[Key, Manifest] = {}
        self._by_namespace: defaultdict[str, set[str]] = defaultdict(set)
        self._by_label: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.resource_version: str | None = None

    # --- writes ------------------------------------------------------------------------

    def replace(self, items: list[Manifest], resource_version: str | None) -> list[Manifest]:
        """A fresh list: the store becomes exactly `items`. Returns the objects that
        disappeared (their DELETED events were missed)."""
        with self._lock:
            gone = dict(self._objects)
            self._objects.clear()
            self._by_namespace.clear()
            self._by_label.clear()
            for item in items:
                if watched(item["metadata"].get("namespace", ""), self.patterns):
                    self._put(item)
                    gone.pop(_key(item), None)
            self.resource_version = resource_version
            return list(gone.values())

    def upsert(self, obj: Manifest) -> bool:
        """Store `obj` unless a newer version is stored; returns whether it stored."""
        if not watched(obj["metadata"].get("namespace", ""), self.patterns):
            return False
        with self._lock:
            stored = self._objects.get(_key(obj))
            if not newer(obj, stored):
                return False
            if stored is not None:
                self._drop(stored)
            self._put(obj)
            return True

    def remove(self, namespace: str, name: str) -> Manifest | None:
        with self._lock:
            stored = self._objects.get((namespace, name))
            if stored is not None:
                self._drop(stored)
            return stored

    def _put(self, obj: Manifest) -> None:
        if "managedFields" in obj["metadata"]:
            # Nobody reads them from the cache, and they are often half of an object.
            metadata = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
            obj = {**obj, "metadata": metadata}
        if self.trim is not None:
            obj = self.trim(obj)
        obj = interned(obj)
        namespace, name = key = _key(obj)
        self._objects[key] = obj
        self._by_namespace[namespace].add(name)
        for label, value in (obj["metadata"].get("labels") or {}).items():
            self._by_label[(namespace, label, str(value))].add(name)

    def _drop(self, obj: Manifest) -> None:
        namespace, name = key = _key(obj)
        self._objects.pop(key, None)
        self._by_namespace[namespace].discard(name)
        if not self._by_namespace[namespace]:
            del self._by_namespace[namespace]
        for label, value in (obj["metadata"].get("labels") or {}).items():
            bucket = self._by_label.get((namespace, label, str(value)))
            if bucket is not None:
                bucket.discard(name)
                if not bucket:
                    del self._by_label[(namespace, label, str(value))]

    # --- reads -------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Manifest | None:
        with self._lock:
            return self._objects.get((namespace, name))

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
            return [self._objects[(namespace, name)] for name in sorted(names)]

    def all(self) -> list[Manifest]:
        with self._lock:
            return list(self._objects.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


INTERNED_MAX = 64  # longer strings (messages, JSON in annotations) are rarely shared


def interned(value: Any) -> Any:
    """`value` with every map key and short string interned. Each decoded object has
    its own copy of "metadata", "status", "True", its namespace and labels; interned,
    thousands of cached objects share one (half the cache's memory at 5,000 runs)."""
    if isinstance(value, dict):
        return {sys.intern(key): interned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interned(item) for item in value]
    if isinstance(value, str) and len(value) <= INTERNED_MAX:
        return sys.intern(value)
    return value


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
