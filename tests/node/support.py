"""Helpers for the local node tests: pod manifests and waiting on pod state."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.kube import REPO, eventually

Obj = dict[str, Any]
IMAGE = "mlplane/runtime:dev"
STATE = REPO / ".cluster"
NODE_STATE = STATE / "node"
POD_LOGS = STATE / "logs" / "pods"


def marker() -> str:
    """A unique token to find a test's processes with /proc/*/cmdline."""
    return f"mlplane-test-{uuid.uuid4().hex[:10]}"


def container(name: str, script: str, **extra: Any) -> Obj:
    return {"name": name, "image": IMAGE, "command": ["python", "-c", script], **extra}


def pod(name: str, containers: list[Obj], **spec: Any) -> Obj:
    labels = spec.pop("labels", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec},
    }


def http_server(name: str = "web", port: int = 8080, **extra: Any) -> Obj:
    return {
        "name": name,
        "image": IMAGE,
        "command": ["python", "-m", "http.server", str(port)],
        "ports": [{"containerPort": port, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        **extra,
    }


def read(core: client.CoreV1Api, namespace: str, name: str) -> Obj:
    response = core.read_namespaced_pod(name, namespace, _preload_content=False)
    data: Obj = json.loads(response.data)
    return data


def wait_phase(
    core: client.CoreV1Api, namespace: str, name: str, phases: set[str], timeout: float = 60
) -> Obj:
    def probe() -> Obj | None:
        current = read(core, namespace, name)
        return current if current.get("status", {}).get("phase") in phases else None

    return eventually(probe, timeout=timeout, what=f"pod {name} in {sorted(phases)}")


def wait_ready(core: client.CoreV1Api, namespace: str, name: str, timeout: float = 60) -> Obj:
    def probe() -> Obj | None:
        current = read(core, namespace, name)
        conditions = current.get("status", {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return current if ready else None

    return eventually(probe, timeout=timeout, what=f"pod {name} Ready")


def container_status(pod_obj: Obj, name: str) -> Obj:
    statuses = (pod_obj["status"].get("containerStatuses") or []) + (
        pod_obj["status"].get("initContainerStatuses") or []
    )
    empty: Obj = {"name": name, "state": {}, "restartCount": 0, "ready": False}
    return next((s for s in statuses if s["name"] == name), empty)


def termination_message(pod_obj: Obj, name: str) -> str:
    return str(container_status(pod_obj, name)["state"]["terminated"].get("message", ""))


def pids_with(token: str) -> list[int]:
    """Processes whose command line contains `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            found.append(int(entry.name))
    return found
