"""Pod status like the kubelet's: container statuses, phase and conditions (pure functions)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


def now_rfc3339(epoch: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if epoch is None else epoch))


@dataclass
class ContainerStatus:
    """What a container status shows; `state` is {"waiting"|"running"|"terminated": {...}}."""

    name: str
    image: str
    image_id: str = ""
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> Obj | None:
        value = self.state.get("terminated")
        return value if isinstance(value, dict) else None

    def waiting(self, reason: str, message: str = "") -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = False
        self.started = False

    def to_api(self) -> Obj:
        result: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
        }
        if self.container_id:
            result["containerID"] = self.container_id
        return result


def pod_phase(
    restart_policy: str,
    init: list[ContainerStatus],
    init_failed: bool,
    initialized: bool,
    containers: list[ContainerStatus],
) -> str:
    """kubelet getPhase, for what this agent can know."""
    if init_failed:
        return "Failed"
    if not initialized:
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for status in containers:
        if status.running:
            running += 1
        elif status.terminated is not None:
            stopped += 1
            if status.terminated.get("exitCode") == 0:
                succeeded += 1
        elif status.last_state.get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"


def _condition(
    previous: dict[str, Obj], kind: str, ok: bool, reason: str = "", message: str = ""
) -> Obj:
    status = "True" if ok else "False"
    old = previous.get(kind)
    transition = old["lastTransitionTime"] if old and old.get("status") == status else None
    condition: Obj = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition or now_rfc3339(),
    }
    if not ok and reason:
        condition["reason"] = reason
        if message:
            condition["message"] = message
    return condition


def conditions(
    previous: list[Obj],
    *,
    sandbox_ready: bool,
    initialized: bool,
    pending_init: list[str],
    unready: list[str],
    phase: str,
) -> list[Obj]:
    """PodReadyToStartContainers, Initialized, ContainersReady, Ready; others carried over."""
    by_type = {c["type"]: c for c in previous}
    completed = phase in ("Succeeded", "Failed")
    ready_reason = "PodCompleted" if completed else "ContainersNotReady"
    unready_message = f"containers with unready status: [{' '.join(unready)}]"
    init_reason = "PodCompleted" if completed else "ContainersNotInitialized"
    ours = [
        _condition(by_type, "PodReadyToStartContainers", sandbox_ready),
        _condition(
            by_type,
            "Initialized",
            initialized,
            init_reason,
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition(by_type, "Ready", not unready and not completed, ready_reason, unready_message),
        _condition(
            by_type, "ContainersReady", not unready and not completed, ready_reason, unready_message
        ),
    ]
    if completed and initialized:
        ours[1] = _condition(by_type, "Initialized", True)
    mine = {c["type"] for c in ours}
    carried = [c for c in previous if c["type"] not in mine]
    return carried + ours
