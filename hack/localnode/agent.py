"""The agent: node registration, the pod watch, one worker per pod, start-up and shutdown.

Restart semantics (simplest correct): a starting agent kills every process a previous
agent recorded in <state>/pods/<uid>/state.json (pid + start time, so a reused pid is
never hit), deletes all `mlp-*` network namespaces, and then treats pods still bound to
the node as new work: containers that were running are reported as terminated
(ContainerStatusUnknown) and restarted per restartPolicy with restartCount + 1; the pod
keeps its IP and its emptyDir contents. Terminal pods are left as they are.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from localnode import network, pods
from localnode.config import Config
from localnode.kube import Kube
from localnode.logs import Log
from localnode.node import Node
from localnode.pods import PodWorker
from localnode.volumes import HostPaths

Obj = dict[str, Any]
WATCH_TIMEOUT = 240
RELIST_EVERY = 300.0

log = Log("localnode.agent")


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.kube = Kube(config.kubeconfig)
        self.node = Node(config, self.kube)
        self.ipam = network.IPAM(config.pod_cidr, config.gateway)
        self.host_paths = HostPaths(config.created_paths_file)
        self.workers: dict[str, PodWorker] = {}
        self.finished: dict[str, float] = {}  # uids whose worker is done (ignore late events)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._first_list = True

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.config.pods_dir.mkdir(parents=True, exist_ok=True)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers()
        self.node.register()
        threading.Thread(
            target=self.node.heartbeat, args=(self.stop,), name="heartbeat", daemon=True
        ).start()
        threading.Thread(target=self._watch_loop, name="watch", daemon=True).start()
        log.info("agent started", node=self.config.node_name)

    def shutdown(self) -> None:
        """Stop every pod (SIGTERM, grace, SIGKILL), remove what they used, return."""
        self.stop.set()
        with self._lock:
            workers = list(self.workers.values())
        log.info("agent stopping", pods=len(workers))
        for worker in workers:
            worker.stop_requested.set()
            worker.wake.set()
        deadline = time.monotonic() + self.config.shutdown_grace + 5
        for worker in workers:
            worker.finished.wait(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if not worker.finished.is_set():
                log.warning("pod worker did not stop in time", pod=worker.key)
        for name in network.leftover_namespaces():
            network.delete_namespace(name)
        self.host_paths.remove_all()
        log.info("agent stopped")

    def _clean_leftovers(self) -> None:
        for pod_dir in sorted(self.config.pods_dir.iterdir()):
            if pod_dir.is_dir():
                pods.clean_leftovers(pod_dir, log)
        for name in network.leftover_namespaces():
            log.info("removing leftover network namespace", netns=name)
            network.delete_namespace(name)
        self.host_paths.remove_all()

    # --- watch --------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self.stop.is_set():
            try:
                listed = self.kube.list_pods(self.config.node_name)
                self._reconcile(listed.get("items") or [])
                version = listed["metadata"]["resourceVersion"]
                listed_at = time.monotonic()
                while not self.stop.is_set() and time.monotonic() - listed_at < RELIST_EVERY:
                    version = self._watch(version)
            except ApiException as error:
                if error.status != 410:
                    log.warning("pod list/watch failed", status=error.status, reason=error.reason)
                    self.stop.wait(1.0)
            except Exception as error:
                log.warning("pod watch interrupted", error=repr(error))
                self.stop.wait(1.0)

    def _watch(self, version: str) -> str:
        for event in self.kube.watch_pods(self.config.node_name, version, WATCH_TIMEOUT):
            if self.stop.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise ApiException(status=410, reason="Gone")
                log.warning("watch error event", object=obj)
                continue
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind == "BOOKMARK":
                continue
            if kind == "DELETED":
                self._removed(obj["metadata"]["uid"], obj)
            else:
                self._handle(obj)
        return version

    # --- dispatch -----------------------------------------------------------------------

    def _reap(self) -> None:
        now = time.time()
        for uid, worker in list(self.workers.items()):
            if worker.finished.is_set():
                del self.workers[uid]
                self.finished[uid] = now
        for uid, when in list(self.finished.items()):
            if now - when > 3600:
                del self.finished[uid]

    def _reconcile(self, items: list[Obj]) -> None:
        uids = {p["metadata"]["uid"] for p in items}
        if self._first_list:
            self._first_list = False
            for pod in items:  # pods keep their IPs across an agent restart
                ip = (pod.get("status") or {}).get("podIP")
                if ip and not _terminal(pod) and not pod["spec"].get("hostNetwork"):
                    self.ipam.reserve(ip, pod["metadata"]["uid"])
            known = {p["metadata"]["uid"] for p in items if not _terminal(p)}
            for pod_dir in self.config.pods_dir.iterdir():
                if pod_dir.name not in known:
                    shutil.rmtree(pod_dir, ignore_errors=True)
        for pod in items:
            self._handle(pod)
        with self._lock:
            for uid in list(self.workers):
                if uid not in uids:
                    self._removed(uid)

    def _removed(self, uid: str, last: Obj | None = None) -> None:
        """The object is gone (force-deleted, or deleted while we were not watching)."""
        worker = self.workers.get(uid)
        if worker is not None:
            if last is not None:
                worker.update(last)
            worker.removed.set()
            worker.wake.set()

    def _handle(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            self._reap()
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            if uid in self.finished:
                return
            if meta.get("deletionTimestamp"):
                # Nothing of it runs here (any leftovers were cleaned at start): finalize.
                shutil.rmtree(self.config.pods_dir / uid, ignore_errors=True)
                self.finished[uid] = time.time()
                self._finalize(pod)
                return
            if _terminal(pod):
                return
            adopted = bool((pod.get("status") or {}).get("containerStatuses"))
            worker = PodWorker(
                self.config,
                self.kube,
                pod,
                ipam=self.ipam,
                host_paths=self.host_paths,
                allocatable=self.node.capacity,
                adopted=adopted,
            )
            self.workers[uid] = worker
        log.info("pod bound to this node", pod=worker.key, uid=uid, adopted=adopted)
        worker.start()

    def _finalize(self, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            self.kube.finalize_pod(meta["namespace"], meta["name"], meta["uid"])
            log.info("pod finalized", pod=f"{meta['namespace']}/{meta['name']}")
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("finalizing pod failed", status=error.status)


def pods_dir_entries(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir()] if path.exists() else []
