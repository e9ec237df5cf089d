"""One reconcile at a time per object: Kopf's change handlers, timers and the handlers of
children's events may fire together, and registration must never run twice at once."""

from __future__ import annotations

import threading
from collections import defaultdict

_guard = threading.Lock()
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def object_lock(kind: str, namespace: str, name: str) -> threading.Lock:
    with _guard:
        return _locks[(kind, namespace, name)]
