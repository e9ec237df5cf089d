"""Container processes: build the launch spec, start, signal and watch a process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localnode import launch
from localnode.config import Config
from localnode.envvars import ConfigError, command_line, container_env, expand
from localnode.images import LocalImage
from localnode.kube import Kube
from localnode.volumes import HostPaths, PodVolumes

Obj = dict[str, Any]
LAUNCHER = str(Path(launch.__file__).resolve())
TERMINATION_MESSAGE_MAX = 4096
FALLBACK_BYTES, FALLBACK_LINES = 2048, 80
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks (guards against pid reuse); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class Run:
    """One run of a container's process (the leader of its own process group)."""

    popen: subprocess.Popen[bytes]
    pid: int
    ticks: str
    started: float  # epoch seconds
    log_path: Path
    log_offset: int
    termination_log: Path
    start_error: Path

    def poll(self) -> int | None:
        """The exit code once the process has exited (128+n when killed by signal n)."""
        code = self.popen.poll()
        if code is None:
            return None
        kill_group(self.pid, signal.SIGKILL)  # whatever it left behind dies with it
        return 128 - code if code < 0 else code

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            kill_group(self.pid, sig)

    def termination_message(self, exit_code: int, policy: str) -> str:
        with contextlib.suppress(OSError):
            if self.start_error.exists():
                return self.start_error.read_text()[:TERMINATION_MESSAGE_MAX]
        message = ""
        with contextlib.suppress(OSError), open(self.termination_log, "rb") as handle:
            message = handle.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            message = self.log_tail()
        return message

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                start = max(self.log_offset, size - FALLBACK_BYTES)
                handle.seek(start)
                data = handle.read()
        except OSError:
            return ""
        lines = data.decode(errors="replace").splitlines()[-FALLBACK_LINES:]
        return "\n".join(lines)


@dataclass
class PodContext:
    """What containers of one pod share."""

    config: Config
    kube: Kube
    pod: Obj
    pod_dir: Path
    volumes: PodVolumes
    host_paths: HostPaths
    netns: str | None
    pod_ip: str
    allocatable: dict[str, str]

    @property
    def hostname(self) -> str:
        spec = self.pod["spec"]
        return str(spec.get("hostname") or self.pod["metadata"]["name"])[:63]

    def base_env(self, image: LocalImage) -> dict[str, str]:
        host, port = self.config.api_host, str(self.config.api_port)
        env = {
            "PATH": f"{self.config.venv / 'bin'}:{SYSTEM_PATH}",
            "HOSTNAME": self.hostname,
            "HOME": "/root",
            **image.env,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": port,
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }
        return env

    def write_hosts(self) -> Path:
        path = self.pod_dir / "etc-hosts"
        lines = [
            "# Kubernetes-managed hosts file (localnode).",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
        ]
        if self.pod_ip:
            lines.append(f"{self.pod_ip}\t{self.hostname}")
        path.write_text("\n".join(lines) + "\n")
        return path


def _identity(pod: Obj, container: Obj) -> tuple[int | None, int | None, list[int]]:
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = {
        **pod_sc,
        **{k: v for k, v in (container.get("securityContext") or {}).items() if v is not None},
    }
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    if sc.get("runAsNonRoot") and not uid:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.insert(0, int(pod_sc["fsGroup"]))
    if gid is not None:
        groups.insert(0, int(gid))
    return (None if uid is None else int(uid)), (None if gid is None else int(gid)), groups


def _mounts(ctx: PodContext, container: Obj, env: dict[str, str], cdir: Path) -> list[Obj]:
    mounts: list[Obj] = []
    for mount in container.get("volumeMounts") or []:
        source, volume_ro = ctx.volumes.source(mount["name"])
        sub = mount.get("subPath") or expand(mount.get("subPathExpr") or "", env)
        if sub:
            if sub.startswith("/") or ".." in Path(sub).parts:
                raise ConfigError(f"invalid subPath {sub!r}")
            source = source / sub
            if not source.exists() and not volume_ro:
                source.mkdir(parents=True)
            source = Path(os.path.realpath(source))
            if not source.exists():
                raise ConfigError(f"subPath {sub!r} does not exist in volume {mount['name']}")
        mounts.append(
            {
                "source": str(source),
                "target": mount["mountPath"],
                "readOnly": bool(mount.get("readOnly")) or volume_ro,
            }
        )
    targets = {m["target"] for m in mounts}
    message_path = container.get("terminationMessagePath") or "/dev/termination-log"
    if message_path not in targets:
        mounts.append({"source": str(cdir / "termination-log"), "target": message_path})
    if ctx.netns and "/etc/hosts" not in targets:
        mounts.append({"source": str(ctx.write_hosts()), "target": "/etc/hosts"})
    mounts.sort(key=lambda m: len(Path(m["target"]).parts))
    # Mount points must exist: inside an earlier mount they are made in its source,
    # elsewhere on the host (recorded, removed once no pod runs).
    for index, mount in enumerate(mounts):
        target = Path(mount["target"])
        is_dir = Path(mount["source"]).is_dir()
        parent = next(
            (
                m
                for m in reversed(mounts[:index])
                if target.is_relative_to(m["target"]) and Path(m["source"]).is_dir()
            ),
            None,
        )
        if parent is not None:
            inner = Path(parent["source"]) / target.relative_to(parent["target"])
            if not inner.exists() and not parent.get("readOnly"):
                if is_dir:
                    inner.mkdir(parents=True)
                else:
                    inner.parent.mkdir(parents=True, exist_ok=True)
                    inner.touch()
        elif not target.exists():
            ctx.host_paths.ensure(str(target), is_dir)
    return mounts


def prepare(ctx: PodContext, container: Obj, image: LocalImage) -> Obj:
    """The launch spec of a container (raises ConfigError when it cannot run yet)."""
    # fieldRefs to status.* see the sandbox's addresses before the status is published
    addresses = {
        "podIP": ctx.pod_ip,
        "podIPs": [{"ip": ctx.pod_ip}] if ctx.pod_ip else [],
        "hostIP": ctx.config.gateway,
        "hostIPs": [{"ip": ctx.config.gateway}],
    }
    pod = {**ctx.pod, "status": {**(ctx.pod.get("status") or {}), **addresses}}
    env = container_env(pod, container, ctx.kube, ctx.base_env(image), ctx.allocatable)
    argv = command_line(container, image.entrypoint, image.cmd, env)
    uid, gid, groups = _identity(ctx.pod, container)
    if uid not in (None, 0):
        env["HOME"] = "/"
    cdir = ctx.pod_dir / "containers" / container["name"]
    cdir.mkdir(parents=True, exist_ok=True)
    return {
        "expose": [] if uid in (None, 0) else [os.path.realpath(sys.base_prefix)],
        "stage": str(cdir / "stage"),
        "netns": ctx.netns,
        "hostname": ctx.hostname,
        "mounts": _mounts(ctx, container, env, cdir),
        "uid": uid,
        "gid": gid,
        "groups": groups,
        "workingDir": container.get("workingDir") or image.working_dir,
        "argv": argv,
        "env": env,
        "startErrorFile": str(cdir / "start-error"),
    }


def start(spec: Obj, cdir: Path, log_path: Path, owner: int | None) -> Run:
    """Start a container from its launch spec; stdout and stderr append to its log."""
    cdir.mkdir(parents=True, exist_ok=True)
    termination_log = cdir / "termination-log"
    termination_log.write_bytes(b"")
    if owner is not None:
        os.chown(termination_log, owner, -1)
    start_error = cdir / "start-error"
    start_error.unlink(missing_ok=True)
    spec_path = cdir / "launch.json"
    spec_path.write_text(json.dumps(spec))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        offset = log_file.tell()
        popen = subprocess.Popen(
            [sys.executable, "-E", "-s", LAUNCHER, str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={},
        )
    ticks = start_ticks(popen.pid) or ""
    return Run(popen, popen.pid, ticks, time.time(), log_path, offset, termination_log, start_error)


def exec_in(spec: Obj, cdir: Path, argv: list[str], timeout: float) -> tuple[int, str]:
    """Run a command in a container's namespaces and mounts (exec probes)."""
    probe_spec = {**spec, "argv": argv, "startErrorFile": None}
    path = cdir / f"exec-{os.getpid()}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(probe_spec))
    try:
        process = subprocess.Popen(
            [sys.executable, "-E", "-s", LAUNCHER, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={},
        )
        try:
            output, _ = process.communicate(timeout=timeout + 1.0)  # + interpreter start
        except subprocess.TimeoutExpired:
            kill_group(process.pid, signal.SIGKILL)
            process.communicate()
            return -1, f"command timed out after {timeout}s"
        return process.returncode, output.decode(errors="replace")
    finally:
        path.unlink(missing_ok=True)
