"""Startup, liveness and readiness probes: one thread per probe of a running container."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from localnode.logs import Log

Obj = dict[str, Any]
ExecFn = Callable[[list[str], float], tuple[int, str]]


def resolve_port(port: int | str, container: Obj) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"named port {port!r} not found in container {container['name']}")


def run_probe(probe: Obj, container: Obj, pod_ip: str, exec_fn: ExecFn) -> tuple[bool, str]:
    """One probe attempt: (success, message)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            host = spec.get("host") or pod_ip
            port = resolve_port(spec["port"], container)
            connection: http.client.HTTPConnection
            if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
                context = ssl._create_unverified_context()
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            headers = {"User-Agent": "kube-probe/1.37", "Accept": "*/*"}
            for header in spec.get("httpHeaders") or []:
                headers[header["name"]] = header["value"]
            try:
                connection.request("GET", spec.get("path") or "/", headers=headers)
                response = connection.getresponse()
                response.read(10 * 1024)
            finally:
                connection.close()
            if 200 <= response.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {response.status}"
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            host = spec.get("host") or pod_ip
            with socket.create_connection((host, resolve_port(spec["port"], container)), timeout):
                return True, ""
        if "exec" in probe:
            code, output = exec_fn(list(probe["exec"].get("command") or []), timeout)
            if code == 0:
                return True, ""
            return False, f"command failed with exit code {code}: {output[-512:]}"
        return False, "unsupported probe type (grpc probes are not supported on the local node)"
    except (OSError, ValueError, http.client.HTTPException) as error:
        return False, f"probe failed: {error}"


class ProbeWorker(threading.Thread):
    """Runs one probe on its schedule and keeps the kubelet's result semantics.

    readiness: `ready` flips after successThreshold successes / failureThreshold failures.
    liveness and startup: `failed` is set after failureThreshold consecutive failures.
    startup: `succeeded` is set on the first success, then the worker stops.
    """

    def __init__(
        self,
        kind: str,
        probe: Obj,
        container: Obj,
        *,
        pod_ip: str,
        exec_fn: ExecFn,
        gate: Callable[[], bool],
        notify: Callable[[], None],
        log: Log,
    ) -> None:
        super().__init__(name=f"probe-{kind}-{container['name']}", daemon=True)
        self.kind = kind
        self.probe = probe
        self.container = container
        self.pod_ip = pod_ip
        self.exec_fn = exec_fn
        self.gate = gate
        self.notify = notify
        self.log = log.bind(probe=kind, container=container["name"])
        self.stopped = threading.Event()
        self.ready = False
        self.failed = False
        self.succeeded = False
        self.message = ""
        self.started_at = time.monotonic()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        period = float(self.probe.get("periodSeconds") or 10)
        failure_threshold = int(self.probe.get("failureThreshold") or 3)
        success_threshold = int(self.probe.get("successThreshold") or 1)
        delay = float(self.probe.get("initialDelaySeconds") or 0)
        successes = failures = 0
        next_run = self.started_at + delay
        while not self.stopped.wait(max(0.0, next_run - time.monotonic())):
            next_run += period
            if not self.gate():
                continue
            ok, message = run_probe(self.probe, self.container, self.pod_ip, self.exec_fn)
            if self.stopped.is_set():
                return
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self.message = message
                self.log.info("probe failed", failures=failures, message=message)
            changed = False
            if self.kind == "readiness":
                if ok and successes >= success_threshold and not self.ready:
                    self.ready = changed = True
                elif not ok and failures >= failure_threshold and self.ready:
                    self.ready, changed = False, True
            elif self.kind == "startup" and ok:
                self.succeeded = changed = True
            elif not ok and failures >= failure_threshold:
                self.failed = changed = True
            if changed:
                self.notify()
            if self.succeeded or self.failed:
                return
