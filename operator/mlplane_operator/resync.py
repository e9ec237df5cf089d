"""Periodic, level-based resync without Kopf timers.

Kopf's timers put a finalizer on every object they serve, so nothing could be deleted
once the operator is uninstalled (or its Role is gone with a namespace being deleted).
Instead, one background thread lists each kind every few seconds and reconciles every
object: canary steps, drift polls and schedules are time-driven, and a missed watch
event is healed on the next pass. With several replicas, only the peer Kopf keeps
active (the highest live priority in the peering object) resyncs.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlplane_operator import kube
from mlplane_operator.settings import OperatorSettings

log = logging.getLogger(__name__)
Reconciler = Callable[[dict[str, Any], OperatorSettings], None]


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


def watched(namespace: str, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


class Resync(threading.Thread):
    def __init__(
        self, kinds: dict[str, Reconciler], settings: OperatorSettings, priority: int
    ) -> None:
        super().__init__(name="mlplane-resync", daemon=True)
        self.kinds, self.settings, self.priority = kinds, settings, priority
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.settings.resync_seconds):
            try:
                if self._active():
                    self.resync_once()
            except Exception:  # a pass that fails must not end the loop
                log.exception("resync pass failed")

    def stop(self) -> None:
        self.stopping.set()

    def _active(self) -> bool:
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

    def resync_once(self) -> None:
        for kind, reconcile in self.kinds.items():
            for body in self._objects(kind):
                if self.stopping.is_set():
                    return
                if body["metadata"].get("deletionTimestamp"):
                    continue
                try:
                    reconcile(body, self.settings)
                except Exception:
                    log.exception(
                        "resync of %s %s/%s failed",
                        kind,
                        body["metadata"]["namespace"],
                        body["metadata"]["name"],
                    )

    def _objects(self, kind: str) -> list[dict[str, Any]]:
        patterns = self.settings.watch_namespaces
        if patterns and not any(set(p) & set("*?[") for p in patterns):
            return [obj for namespace in patterns for obj in kube.list_(kind, namespace)]
        return [
            obj for obj in kube.list_all(kind) if watched(obj["metadata"]["namespace"], patterns)
        ]
