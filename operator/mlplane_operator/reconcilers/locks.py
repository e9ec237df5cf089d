"""One reconcile at a time per object, always of its latest state.

Kopf's event handlers, the events of children and the periodic resync may fire together,
and registration must never run twice at once; a body delivered with an event may also
be older than a status this operator just wrote, so each pass re-reads the object.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mlplane_operator import kube, metrics

_guard = threading.Lock()
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def object_lock(kind: str, namespace: str, name: str) -> threading.Lock:
    with _guard:
        return _locks[(kind, namespace, name)]


def reconcile_latest(
    kind: str, body: dict[str, Any], lock: threading.Lock, run: Callable[[dict[str, Any]], None]
) -> None:
    """Under `lock`, read the object afresh and `run` the pass on it (unless it is gone)."""
    metadata = body["metadata"]
    with lock, metrics.reconcile_timer(kind):
        latest = kube.get(kind, metadata["namespace"], metadata["name"])
        if latest is not None:
            run(latest)
