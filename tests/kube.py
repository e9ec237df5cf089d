"""Helpers shared by the tests that talk to the local control plane."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(
    os.environ.get(
        "MLPLANE_CACHE_DIR",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlplane",
    )
)
BIN = Path(os.environ.get("MLPLANE_BIN_DIR", CACHE / "bin"))
CLUSTER_DIR = Path(os.environ.get("MLPLANE_CLUSTER_DIR", REPO / ".cluster"))
KUBECONFIG = CLUSTER_DIR / "kubeconfig"
IMAGES_ENV = Path(os.environ.get("MLPLANE_IMAGES_ENV", CLUSTER_DIR / "images.env"))

T = TypeVar("T")


def _pinned_kube_version() -> str:
    match = re.search(r"KUBE_VERSION:=(v[0-9.]+)", (REPO / "hack" / "versions.sh").read_text())
    assert match, "KUBE_VERSION not found in hack/versions.sh"
    return match.group(1)


KUBE_VERSION = os.environ.get("KUBE_VERSION") or _pinned_kube_version()


def image(name: str) -> str:
    """The reference (registry/repository@digest) of an image hack/build-images.sh pushed
    to the local cluster's registry: OPERATOR, RUNTIME, PAUSE, COREDNS, METRICS_SERVER."""
    for line in IMAGES_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == f"IMAGE_{name}":
            return value
    raise AssertionError(f"no IMAGE_{name} in {IMAGES_ENV}: is the cluster up?")


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, kubeconfig: Path = KUBECONFIG
) -> subprocess.CompletedProcess[str]:
    """Run the pinned kubectl against the local cluster; stdout and stderr are captured."""
    result = subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result


def eventually(
    probe: Callable[[], T | None], *, timeout: float = 60, interval: float = 0.2, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail with what was awaited otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe} (last: {last!r})")
