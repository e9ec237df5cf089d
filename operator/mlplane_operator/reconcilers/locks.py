"""One reconcile at a time per object, always of its latest state.

Kopf's event handlers, the events of children and the periodic resync may fire together,
and registration must never run twice at once; a body delivered with an event may also
be older than a status this operator just wrote, so each pass re-reads the object: from
the cache first (which has this process's own writes), from the API server after a
Conflict (someone else wrote meanwhile, and the cache may not have it yet).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mlplane_operator import kube, metrics

log = logging.getLogger(__name__)
_guard = threading.Lock()
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def object_lock(kind: str, namespace: str, name: str) -> threading.Lock:
    with _guard:
        return _locks[(kind, namespace, name)]


CONFLICT_ATTEMPTS = 3


def reconcile_latest(
    kind: str, body: dict[str, Any], lock: threading.Lock, run: Callable[[dict[str, Any]], None]
) -> None:
    """Under `lock`, read the object afresh and `run` the pass on it (unless it is gone).

    The lock orders the passes of this process only; another replica may write the
    object at the same time. Writes that must not be lost carry the resourceVersion
    the pass read, so the later writer gets a Conflict and the pass runs again on what
    the other one wrote (every pass is idempotent)."""
    metadata = body["metadata"]
    with lock, metrics.reconcile_timer(kind):
        for attempt in range(CONFLICT_ATTEMPTS):
            read = kube.cached_get if attempt == 0 else kube.get
            latest = read(kind, metadata["namespace"], metadata["name"])
            if latest is None:
                return
            try:
                run(latest)
            except kube.Conflict as conflict:
                name = f"{metadata['namespace']}/{metadata['name']}"
                log.info("%s %s changed during the pass (%s), attempt %d", kind, name,
                         conflict, attempt + 1)  # fmt: skip
                continue
            return
        raise kube.TransientError(
            f"{kind} {metadata['namespace']}/{metadata['name']} kept changing during the pass"
        )
