"""One worker thread per pod: sandbox, volumes, init containers, containers, status, teardown.

The worker owns everything local about its pod. It ticks every 0.25 s (or when woken by
a watch event or a probe result), advances each container's state machine, and patches
the pod's status subresource when what it would report changed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from localnode import containers, images, network, status
from localnode.config import Config
from localnode.containers import PodContext, Run
from localnode.envvars import ConfigError
from localnode.kube import Kube
from localnode.logs import Log
from localnode.probes import ProbeWorker
from localnode.volumes import HostPaths, PodVolumes, VolumeError

Obj = dict[str, Any]
TICK = 0.25
CONFIG_RETRY = 2.0
BACKOFF_RESET = 600.0  # a container that ran this long starts its back-off afresh


@dataclass
class Container:
    spec: Obj
    init: bool
    status: status.ContainerStatus
    run: Run | None = None
    launch: Obj | None = None
    probes: dict[str, ProbeWorker] = field(default_factory=dict)
    has_run: bool = False
    done: bool = False  # init container succeeded / container will not run again
    retry_at: float = 0.0  # monotonic: next start attempt (back-off, image, config)
    retry_reason: str = ""  # "backoff" | "image" | "config"
    last_exit: Obj | None = None  # the last terminated state
    backoff: float = 0.0  # the delay before the next restart after a failure
    delay: float = 0.0  # the current restart delay (shown in CrashLoopBackOff)
    image_attempts: int = 0
    kill_deadline: float | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"


class PodWorker(threading.Thread):
    def __init__(
        self,
        config: Config,
        kube: Kube,
        pod: Obj,
        *,
        ipam: network.IPAM,
        host_paths: HostPaths,
        allocatable: dict[str, str],
        adopted: bool = False,
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.config = config
        self.kube = kube
        self.pod = pod
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.ipam = ipam
        self.host_paths = host_paths
        self.allocatable = allocatable
        self.log = Log("localnode.pod", pod=self.key, uid=self.uid)
        self.dir = config.pods_dir / self.uid
        self.wake = threading.Event()
        self.stop_requested = threading.Event()  # agent shutdown
        self.removed = threading.Event()  # object gone from the API
        self.finished = threading.Event()
        self._lock = threading.Lock()
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.init = [self._container(c, True) for c in spec.get("initContainers") or []]
        self.main = [self._container(c, False) for c in spec.get("containers") or []]
        self.pod_ip = ""
        self.netns: str | None = None
        self.sandbox_ready = False
        self.initialized = not self.init
        self.init_failed = False
        self.terminal = False
        self.deadline_exceeded = False
        self.start_time = (pod.get("status") or {}).get("startTime") or status.now_rfc3339()
        self.volumes = PodVolumes(kube, pod, self.dir, allocatable, self.log)
        self.ctx: PodContext | None = None
        self.published = ""
        self.started_monotonic = time.monotonic()
        if adopted:
            self._adopt(pod.get("status") or {})

    # --- construction -------------------------------------------------------------------

    def _container(self, spec: Obj, init: bool) -> Container:
        image = spec.get("image", "")
        st = status.ContainerStatus(
            name=spec["name"], image=image, image_id=images.image_id(image, str(self.config.venv))
        )
        return Container(spec=spec, init=init, status=st)

    def _adopt(self, previous: Obj) -> None:
        """Take over a pod whose processes a previous agent ran (they are gone now)."""
        by_name = {
            s["name"]: s
            for s in (previous.get("containerStatuses") or [])
            + (previous.get("initContainerStatuses") or [])
        }
        initialized = any(
            c.get("type") == "Initialized" and c.get("status") == "True"
            for c in previous.get("conditions") or []
        )
        for container in self.init + self.main:
            old = by_name.get(container.name)
            if old is None:
                continue
            container.status.restart_count = int(old.get("restartCount") or 0)
            state = old.get("state") or {}
            if container.init and initialized and not container.sidecar:
                container.done = True
                container.has_run = True
                container.status.state = state
                continue
            last = (old.get("lastState") or {}).get("terminated")
            if "waiting" in state and last:
                container.has_run = True
                container.last_exit = last
                container.status.last_state = {"terminated": last}
            elif "running" in state or "terminated" in state:
                container.has_run = True
                terminated = state.get("terminated") or {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the agent restarted",
                    "startedAt": state["running"].get("startedAt"),
                    "finishedAt": status.now_rfc3339(),
                }
                container.status.state = {"terminated": terminated}
                container.last_exit = terminated
        if self.init and initialized:
            self.initialized = True

    # --- public -------------------------------------------------------------------------

    def update(self, pod: Obj) -> None:
        with self._lock:
            self.pod = pod
            self.volumes.pod = pod
            if self.ctx is not None:
                self.ctx.pod = pod
        self.wake.set()

    def deleting(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp")) or self.removed.is_set()

    # --- main loop ----------------------------------------------------------------------

    def run(self) -> None:
        self.log.info("pod worker started")
        try:
            while not self.stop_requested.is_set() and not self.deleting():
                self._sync()
                self._publish()
                self.wake.wait(5.0 if self.terminal else TICK)
                self.wake.clear()
            if self.stop_requested.is_set() and not self.deleting():
                self._terminate(self.config.shutdown_grace, "agent stopping")
                self._release(remove_dir=False)
            else:
                self._delete()
        except Exception:
            self.log.error("pod worker failed", exc_info=True)
            self._kill_all(0)
            self._release(remove_dir=False)
        finally:
            self.finished.set()
            self.log.info("pod worker finished")

    def _sync(self) -> None:
        if self.terminal:
            return
        if not self.sandbox_ready and not self._setup_sandbox():
            return
        if not self._volumes_ready():
            return
        self._check_deadline()
        if self.terminal:
            return
        if not self.initialized:
            self._sync_init()
        if self.initialized and not self.init_failed:
            for container in self.init:
                if container.sidecar:
                    self._step(container)
            for container in self.main:
                self._step(container)
        if self.init_failed or self._all_done():
            self._finish()

    def _all_done(self) -> bool:
        return self.initialized and all(c.done for c in self.main)

    def _check_deadline(self) -> None:
        limit = self.pod["spec"].get("activeDeadlineSeconds")
        if limit and time.monotonic() - self.started_monotonic > float(limit):
            self.log.info("active deadline exceeded")
            self.deadline_exceeded = True
            self._terminate(float(self.grace()), "deadline")
            self._finish()

    # --- sandbox and volumes ------------------------------------------------------------

    def _setup_sandbox(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.pod["spec"].get("hostNetwork"):
            self.pod_ip = self.config.gateway
            self.netns = None
        else:
            previous = (self.pod.get("status") or {}).get("podIP") or ""
            reuse = previous and self.ipam.reserve(previous, self.uid)
            ip = previous if reuse else self.ipam.allocate(self.uid)
            self.pod_ip = ip
            self._save_state()
            try:
                self.netns = network.setup(
                    self.uid, ip, self.config.pod_cidr.prefixlen, self.config.gateway,
                    self.config.bridge,
                )  # fmt: skip
            except network.NetworkError as error:
                self.log.error("pod network setup failed", error=str(error))
                self.ipam.release(ip, self.uid)
                self.pod_ip = ""
                return False
        self.ctx = PodContext(
            self.config, self.kube, self.pod, self.dir, self.volumes, self.host_paths,
            self.netns, self.pod_ip, self.allocatable,
        )  # fmt: skip
        self.sandbox_ready = True
        self._save_state()
        return True

    def _volumes_ready(self) -> bool:
        if getattr(self, "_volumes_done", False):
            self.volumes.refresh()
            return True
        if time.monotonic() < getattr(self, "_volumes_retry", 0.0):
            return False
        try:
            self.volumes.setup()
        except (VolumeError, ConfigError, ApiException, OSError) as error:
            message = str(error) if not isinstance(error, ApiException) else error.reason
            self.log.warning("volumes not ready", error=message)
            self._volumes_retry = time.monotonic() + CONFIG_RETRY
            for container in self.init + self.main:
                container.status.waiting("ContainerCreating", f"MountVolume.SetUp: {message}")
            return False
        self._volumes_done = True
        return True

    # --- containers ---------------------------------------------------------------------

    def _sync_init(self) -> None:
        for container in self.init:
            if container.sidecar:
                self._step(container)
                if not (container.status.running and container.status.started):
                    return
                continue
            if container.done:
                continue
            self._step(container)
            if container.done:
                continue
            terminated = container.status.terminated
            if terminated and terminated.get("exitCode") != 0 and self.restart_policy == "Never":
                self.init_failed = True
            return
        self.initialized = True
        self.log.info("init containers done")

    def _policy(self, container: Container) -> str:
        if container.sidecar:
            return "Always"
        if container.init:
            return "Never" if self.restart_policy == "Never" else "OnFailure"
        return self.restart_policy

    def _step(self, container: Container) -> None:
        now = time.monotonic()
        if container.run is not None:
            code = container.run.poll()
            if code is None:
                self._watch_running(container, now)
                return
            self._exited(container, code)
        if container.done:
            return
        last = container.last_exit
        if last is not None:
            policy = self._policy(container)
            if policy == "Never" or (policy == "OnFailure" and last.get("exitCode") == 0):
                container.done = True
                return
        if now < container.retry_at:
            if container.retry_reason == "backoff" and last is not None:
                self._set_backoff_waiting(container, last)
            return
        self._start(container)

    def _set_backoff_waiting(self, container: Container, last: Obj) -> None:
        meta = self.pod["metadata"]
        container.status.last_state = {"terminated": last}
        container.status.waiting(
            "CrashLoopBackOff",
            f"back-off {int(container.delay)}s restarting failed container={container.name} "
            f"pod={meta['name']}_{meta['namespace']}({self.uid})",
        )

    def _start(self, container: Container) -> None:
        assert self.ctx is not None
        now = time.monotonic()
        try:
            image = images.resolve(container.spec.get("image", ""))
        except images.ImageRefused as error:
            container.image_attempts += 1
            delay = min(10.0 * 2 ** (container.image_attempts - 1), 300.0)
            container.retry_at, container.retry_reason = now + delay, "image"
            reason = "ErrImagePull" if container.image_attempts == 1 else "ImagePullBackOff"
            if container.status.state.get("waiting", {}).get("reason") != reason:
                self.log.warning("image refused", container=container.name, image=error.args[0])
            message = (
                str(error)
                if reason == "ErrImagePull"
                else (f'Back-off pulling image "{container.spec.get("image")}": {error}')
            )
            container.status.waiting(reason, message)
            return
        try:
            spec = containers.prepare(self.ctx, container.spec, image)
        except (ConfigError, VolumeError, ApiException, OSError) as error:
            message = str(error) if not isinstance(error, ApiException) else str(error.reason)
            container.retry_at, container.retry_reason = now + CONFIG_RETRY, "config"
            container.status.waiting("CreateContainerConfigError", message)
            self.log.warning("container config error", container=container.name, error=message)
            return
        previous = container.last_exit
        if container.has_run:
            container.status.restart_count += 1
            container.status.last_state = {"terminated": previous} if previous else {}
        cdir = self.dir / "containers" / container.name
        meta = self.pod["metadata"]
        log_path = self.config.log_dir / f"{meta['namespace']}_{meta['name']}_{container.name}.log"
        run = containers.start(spec, cdir, log_path, spec.get("uid"))
        container.run, container.launch, container.has_run = run, spec, True
        container.kill_deadline = None
        container.status.state = {"running": {"startedAt": status.now_rfc3339(run.started)}}
        container.status.container_id = f"local://{run.pid}"
        container.status.ready = False
        container.status.started = "startupProbe" not in container.spec
        self._save_state()
        self._start_probes(container)
        self.log.info(
            "container started", container=container.name, pid=run.pid, argv=spec["argv"][:6]
        )

    def _start_probes(self, container: Container) -> None:
        assert container.launch is not None
        launch_spec = container.launch
        cdir = self.dir / "containers" / container.name

        def exec_fn(argv: list[str], timeout: float) -> tuple[int, str]:
            return containers.exec_in(launch_spec, cdir, argv, timeout)

        startup_worker: ProbeWorker | None = None

        def after_startup() -> bool:
            return startup_worker is None or startup_worker.succeeded

        for kind in ("startup", "liveness", "readiness"):
            probe = container.spec.get(f"{kind}Probe")
            if not probe:
                continue
            gate = (lambda: True) if kind == "startup" else after_startup
            worker = ProbeWorker(
                kind,
                probe,
                container.spec,
                pod_ip=self.pod_ip,
                exec_fn=exec_fn,
                gate=gate,
                notify=self.wake.set,
                log=self.log,
            )
            if kind == "startup":
                startup_worker = worker
            container.probes[kind] = worker
            worker.start()

    def _stop_probes(self, container: Container) -> None:
        for worker in container.probes.values():
            worker.stop()
        container.probes = {}

    def _watch_running(self, container: Container, now: float) -> None:
        assert container.run is not None
        if container.kill_deadline is not None:
            if now >= container.kill_deadline:
                container.run.signal(signal.SIGKILL)
            return
        probes = container.probes
        startup = probes.get("startup")
        if startup is not None and startup.succeeded:
            container.status.started = True
        failed = next((p for p in probes.values() if p.failed), None)
        if failed is not None:
            self.log.info(
                "probe failed, killing container", container=container.name, probe=failed.kind
            )
            grace = failed.probe.get("terminationGracePeriodSeconds")
            self._kill(container, float(grace if grace is not None else self.grace()))
            return
        readiness = probes.get("readiness")
        if container.sidecar or not container.init:
            ready = container.status.started and (readiness is None or readiness.ready)
            container.status.ready = bool(ready)

    def _kill(self, container: Container, grace: float) -> None:
        if container.run is None or container.kill_deadline is not None:
            return
        self._stop_probes(container)
        container.status.ready = False
        container.run.signal(signal.SIGTERM)
        container.kill_deadline = time.monotonic() + max(grace, 0.0)

    def _exited(self, container: Container, code: int) -> None:
        run = container.run
        assert run is not None
        self._stop_probes(container)
        finished = time.time()
        policy = container.spec.get("terminationMessagePolicy") or "File"
        message = run.termination_message(code, policy)
        started_error = run.start_error.exists()
        reason = "StartError" if started_error else ("Completed" if code == 0 else "Error")
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": status.now_rfc3339(run.started),
            "finishedAt": status.now_rfc3339(finished),
            "containerID": f"local://{run.pid}",
        }
        if message:
            terminated["message"] = message
        container.status.state = {"terminated": terminated}
        container.last_exit = terminated
        container.status.ready = False
        container.status.started = False
        container.run = None
        self.log.info("container exited", container=container.name, exit_code=code, reason=reason)
        if container.init and not container.sidecar and code == 0:
            container.status.ready = True
            container.done = True
            return
        ran_for = finished - run.started
        if ran_for > BACKOFF_RESET:
            container.backoff = 0.0
        # First restart is immediate, then 10 s doubling to 5 min (kubelet).
        delay = container.delay = container.backoff
        container.backoff = (
            self.config.backoff_initial
            if container.backoff == 0
            else min(container.backoff * 2, self.config.backoff_max)
        )
        container.retry_at, container.retry_reason = time.monotonic() + delay, "backoff"
        self._save_state()

    # --- termination --------------------------------------------------------------------

    def grace(self) -> int:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        value = meta.get("deletionGracePeriodSeconds")
        if value is None and self.removed.is_set():
            value = 1  # the object is gone without a grace period: stop right away
        if value is None:
            value = spec.get("terminationGracePeriodSeconds")
        return int(30 if value is None else value)

    def _running(self) -> list[Container]:
        return [c for c in self.init + self.main if c.run is not None]

    def _terminate(self, grace: float, why: str) -> None:
        """SIGTERM every container, wait up to `grace` (re-read on updates), SIGKILL."""
        running = self._running()
        if running:
            self.log.info("stopping containers", why=why, grace=grace)
        began = time.monotonic()
        for container in running:
            self._stop_probes(container)
            container.run.signal(signal.SIGTERM)  # type: ignore[union-attr]
        while self._running():
            if why == "deleted":
                grace = min(grace, float(self.grace()))
            if time.monotonic() - began >= grace:
                self._kill_all(signal.SIGKILL)
            for container in self._running():
                code = container.run.poll()  # type: ignore[union-attr]
                if code is not None:
                    self._exited(container, code)
                    container.done = True
            self.wake.wait(0.1)
            self.wake.clear()

    def _kill_all(self, sig: int) -> None:
        for container in self._running():
            self._stop_probes(container)
            if sig:
                container.run.signal(sig)  # type: ignore[union-attr]
            else:
                container.run.signal(signal.SIGKILL)  # type: ignore[union-attr]
                container.run.popen.wait()  # type: ignore[union-attr]
                container.run = None

    def _finish(self) -> None:
        """The pod reached a terminal phase: stop sidecars, release the sandbox."""
        self._terminate(float(self.grace()), "pod completed")
        for container in self.init + self.main:
            container.done = True
        self.terminal = True
        self._publish()
        self._release(remove_dir=False, keep_ip_record=True)
        self.log.info("pod finished", phase=self._phase())

    def _release(self, *, remove_dir: bool, keep_ip_record: bool = False) -> None:
        network.teardown(self.uid)
        if self.pod_ip and self.netns:
            self.ipam.release(self.pod_ip, self.uid)
        self.sandbox_ready = False
        if remove_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif not keep_ip_record:
            self._save_state()

    def _delete(self) -> None:
        """The pod is being deleted: stop, publish the final status, clean up, finalize."""
        self._terminate(float(self.grace()), "deleted")
        if not self.removed.is_set():
            for container in self.init + self.main:
                container.done = True
            self._publish()
        self._release(remove_dir=True)
        if self.removed.is_set():
            return
        meta = self.pod["metadata"]
        try:
            self.kube.finalize_pod(meta["namespace"], meta["name"], self.uid)
            self.log.info("pod finalized")
        except ApiException as error:
            if error.status not in (404, 409):
                self.log.error("finalizing the pod failed", status=error.status)

    # --- status ---------------------------------------------------------------------------

    def _phase(self) -> str:
        if self.deadline_exceeded:
            return "Failed"
        ending = self.terminal or self.deleting()
        return status.pod_phase(
            "Never" if ending and self.restart_policy == "Always" else self.restart_policy,
            [c.status for c in self.init],
            self.init_failed,
            self.initialized,
            [c.status for c in self.main],
        )

    def build_status(self) -> Obj:
        current = self.pod.get("status") or {}
        phase = self._phase()
        if self.terminal and phase not in ("Succeeded", "Failed"):
            phase = "Failed"
        pending_init = [c.name for c in self.init if not c.done and not c.sidecar]
        unready = [
            c.name for c in self.main + [s for s in self.init if s.sidecar] if not c.status.ready
        ]
        result: Obj = {
            "phase": phase,
            "hostIP": self.config.gateway,
            "hostIPs": [{"ip": self.config.gateway}],
            "startTime": self.start_time,
            "conditions": status.conditions(
                current.get("conditions") or [],
                sandbox_ready=self.sandbox_ready,
                initialized=self.initialized,
                pending_init=pending_init,
                unready=unready,
                phase=phase,
            ),
            "containerStatuses": [c.status.to_api() for c in self.main],
            "observedGeneration": self.pod["metadata"].get("generation", 1),
        }
        if self.init:
            result["initContainerStatuses"] = [c.status.to_api() for c in self.init]
        if self.pod_ip:
            result["podIP"] = self.pod_ip
            result["podIPs"] = [{"ip": self.pod_ip}]
        if self.deadline_exceeded:
            result["reason"] = "DeadlineExceeded"
            result["message"] = "Pod was active on the node longer than the specified deadline"
        return result

    def _publish(self) -> None:
        if self.removed.is_set():
            return
        body = self.build_status()
        comparable = json.dumps(
            {**body, "conditions": [{**c, "lastTransitionTime": None} for c in body["conditions"]]},
            sort_keys=True,
        )
        if comparable == self.published:
            return
        meta = self.pod["metadata"]
        try:
            updated = self.kube.patch_pod_status(meta["namespace"], meta["name"], {"status": body})
        except ApiException as error:
            if error.status == 404:
                self.removed.set()
                return
            self.log.warning("status update failed", status=error.status, reason=error.reason)
            return
        if updated["metadata"].get("uid") != self.uid:
            self.removed.set()
            return
        with self._lock:
            self.pod = {**self.pod, "status": updated.get("status") or {}}
        self.published = comparable
        self.log.debug("status updated", phase=body["phase"])

    # --- local state --------------------------------------------------------------------

    def _save_state(self) -> None:
        """<state>/pods/<uid>/state.json: what a restarted agent needs to clean up."""
        meta = self.pod["metadata"]
        state = {
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": self.uid,
            "ip": self.pod_ip if self.netns else "",
            "processes": [
                {"container": c.name, "pid": c.run.pid, "ticks": c.run.ticks}
                for c in self.init + self.main
                if c.run is not None
            ],
        }
        with contextlib.suppress(OSError):
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / "state.json.tmp"
            tmp.write_text(json.dumps(state))
            tmp.replace(self.dir / "state.json")


def clean_leftovers(pod_dir: Path, log: Log) -> None:
    """Kill what a previous agent started for a pod and remove its network namespace."""
    try:
        state = json.loads((pod_dir / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    for process in state.get("processes") or []:
        pid, ticks = int(process["pid"]), str(process["ticks"])
        if containers.start_ticks(pid) == ticks:
            log.info("killing leftover container process", pid=pid, container=process["container"])
            containers.kill_group(pid, signal.SIGKILL)
    network.teardown(pod_dir.name)
