"""The agent's settings, from the command line (see __main__)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    kubeconfig: str
    node_name: str
    state_dir: Path
    log_dir: Path
    pod_cidr: ipaddress.IPv4Network
    bridge: str
    gateway: str
    api_host: str
    api_port: int
    venv: Path
    max_pods: int = 110
    # Container restart back-off, as the kubelet: 10 s doubling to 5 min.
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    # Grace cap when the agent itself stops (cluster.py waits 30 s before SIGKILL).
    shutdown_grace: float = 20.0

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def created_paths_file(self) -> Path:
        return self.state_dir / "created-paths.json"
