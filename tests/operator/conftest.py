"""The operator as a real process on the host, against the local cluster and node.

It watches only namespaces named `<OP_PREFIX>-*`, which the `op_namespace` fixture
creates, so it never competes with an operator installed by the chart tests. The prefix
is this checkout's: two checkouts sharing a cluster never act on each other's namespaces.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.kube import REPO, image, kubectl

LOG_DIR = REPO / ".cluster" / "logs"
OP_PREFIX = "op" + hashlib.sha256(str(REPO).encode()).hexdigest()[:4]
GROUP, VERSION = "mlplane.io", "v1alpha1"
PR_SET_PDEATHSIG = 1


class OperatorProcess:
    """`python -m mlplane_operator`, started, stopped and killed like a pod would be."""

    def __init__(
        self, kubeconfig: str, log_name: str = "operator-tests.log", **settings: str
    ) -> None:
        """`settings`: MLPLANE_* variables over the test defaults (another watch list,
        an operator policy)."""
        self.kubeconfig = kubeconfig
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path = LOG_DIR / log_name
        self.settings = settings

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.health_port = _free_port()
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "MLPLANE_WATCH_NAMESPACES": f"{OP_PREFIX}-*",
            "MLPLANE_RUNTIME_IMAGE": image("RUNTIME"),
            "MLPLANE_METRICS_PORT": str(_free_port()),
            "MLPLANE_HEALTH_PORT": str(self.health_port),
            **self.settings,
        }
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlplane_operator"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509  (prctl only, before exec)
            )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60) -> None:
        """Fail at once, with the log, when the operator does not come up."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"the operator did not become healthy:\n{tail}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as when a node dies."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """The operator ends with the test session, even one that is killed."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@pytest.fixture(scope="session")
def operator(kubeconfig: str, crds_installed: None) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def op_namespace(
    kube_api: client.ApiClient, operator: OperatorProcess, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace the test operator watches, deleted afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{OP_PREFIX}-{slug}-{uuid.uuid4().hex[:5]}"[:63]
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def crds_installed(kubeconfig: str) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("trainingjobs", "modelversions", "inferenceservices"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.mlplane.io", "--timeout=60s")


def custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


def get(kube_api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return found
