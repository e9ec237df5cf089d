"""The Node object and its heartbeat (a Lease in kube-node-lease, plus status updates)."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from localnode.config import Config
from localnode.kube import Kube
from localnode.logs import Log

Obj = dict[str, Any]
LEASE_SECONDS = 40
LEASE_RENEW = 10.0
STATUS_EVERY = 30.0
VERSION = "v1.37.2-localnode"

log = Log("localnode.node")


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def capacity(config: Config) -> dict[str, str]:
    memory_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    config.state_dir.mkdir(parents=True, exist_ok=True)
    disk = os.statvfs(config.state_dir)
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{memory_kib}Ki",
        "pods": str(config.max_pods),
        "ephemeral-storage": f"{disk.f_blocks * disk.f_frsize // 1024}Ki",
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _raw_node(kube: Kube, name: str) -> Obj:
    response: Any = kube.core.read_node(name, _preload_content=False)
    return dict(json.loads(response.data))


class Node:
    def __init__(self, config: Config, kube: Kube) -> None:
        self.config = config
        self.kube = kube
        self.capacity = capacity(config)
        self.uid = ""
        self._ready_since = _now()

    def _status(self) -> Obj:
        now = _now()

        def condition(kind: str, status: str, reason: str, message: str) -> Obj:
            since = self._ready_since
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": since,
            }

        machine_id = _read("/etc/machine-id") or "localnode"
        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition("Ready", "True", "KubeletReady", "localnode is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.config.gateway},
                {"type": "Hostname", "address": self.config.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": machine_id,
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": "localnode (processes on the host)",
                "containerRuntimeVersion": "local://0.1",
                "kubeletVersion": VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                    platform.machine(), platform.machine()
                ),
            },
        }

    def register(self) -> None:
        """Create the Node (or take over the existing one) and report Ready."""
        name = self.config.node_name
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": self._status()["nodeInfo"]["architecture"],
                    "mlplane.io/localnode": "true",
                },
            },
            "spec": {"podCIDR": str(self.config.pod_cidr), "podCIDRs": [str(self.config.pod_cidr)]},
        }
        try:
            self.kube.create(self.kube.core.create_node, body)
            log.info("node registered", node=name)
        except ApiException as error:
            if error.status != 409:
                raise
            log.info("node exists; taking it over", node=name)
        self.uid = str(_raw_node(self.kube, name)["metadata"]["uid"])
        self.post_status()
        self.renew_lease()

    def post_status(self) -> None:
        self.kube.core.patch_node_status(
            self.config.node_name,
            {"status": self._status()},
            _content_type="application/merge-patch+json",
        )

    def renew_lease(self) -> None:
        name = self.config.node_name
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": _micro_now(),
        }
        try:
            self.kube.coordination.patch_namespaced_lease(
                name,
                "kube-node-lease",
                {"spec": spec},
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.uid}
                    ],
                },
                "spec": spec,
            }
            self.kube.create(
                self.kube.coordination.create_namespaced_lease, "kube-node-lease", body
            )

    def heartbeat(self, stop: threading.Event) -> None:
        last_status = time.monotonic()
        while not stop.wait(LEASE_RENEW):
            try:
                self.renew_lease()
                if time.monotonic() - last_status >= STATUS_EVERY:
                    self.post_status()
                    last_status = time.monotonic()
            except Exception as error:
                log.warning("heartbeat failed", error=str(error))
