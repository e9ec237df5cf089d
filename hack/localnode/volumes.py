"""Pod volumes, materialized under <state>/pods/<uid>/volumes and bind-mounted per container.

configMap, secret, downwardAPI and projected volumes are written the way the kubelet's
atomic writer does (a timestamped directory, a `..data` symlink swapped atomically, and
one top-level symlink per entry), so updates and token refreshes reach running
containers through their bind mounts. Tokens come from the TokenRequest API, bound to
the pod, and are refreshed at 80% of their lifetime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from localnode.envvars import ConfigError, field_value, resource_value
from localnode.logs import Log

Obj = dict[str, Any]
REFRESH_SECONDS = 60.0
DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume cannot be set up yet (missing object, unbound claim...): retried."""


class VolumeAPI(Protocol):
    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def pvc(self, namespace: str, name: str) -> Obj | None: ...
    def pv(self, name: str) -> Obj: ...
    def token(
        self, pod: Obj, service_account: str, audiences: list[str], expiration: int
    ) -> tuple[str, float]: ...


@dataclass
class Token:
    value: str
    issued: float
    expires: float

    def due(self, now: float) -> bool:
        lifetime = self.expires - self.issued
        return now >= self.issued + 0.8 * lifetime or now >= self.issued + 24 * 3600


Files = dict[str, tuple[bytes, int]]


def write_atomic(directory: Path, files: Files, group: int | None) -> None:
    """Replace the directory's payload atomically (kubelet AtomicWriter layout)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{os.urandom(4).hex()}"
    payload = directory / stamp
    payload.mkdir(mode=0o755)
    for rel, (content, mode) in files.items():
        target = payload / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, mode)
        if group is not None:
            os.chown(target, -1, group)
    link_tmp = directory / "..data_tmp"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(stamp)
    os.replace(link_tmp, directory / "..data")
    tops = {rel.split("/", 1)[0] for rel in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith("..") and name not in ("..data", stamp):
            shutil.rmtree(entry, ignore_errors=True)
        elif not name.startswith("..") and name not in tops:
            entry.unlink(missing_ok=True)


def _digest(files: Files) -> str:
    hasher = hashlib.sha256()
    for rel in sorted(files):
        content, mode = files[rel]
        hasher.update(f"{rel}\0{mode}\0".encode() + content + b"\0")
    return hasher.hexdigest()


class PodVolumes:
    """Sets up and refreshes one pod's volumes; `source(name)` is the host directory."""

    def __init__(
        self,
        api: VolumeAPI,
        pod: Obj,
        pod_dir: Path,
        allocatable: Mapping[str, str],
        log: Log,
    ) -> None:
        self.api = api
        self.pod = pod
        self.dir = pod_dir / "volumes"
        self.allocatable = allocatable
        self.log = log
        self._sources: dict[str, tuple[Path, bool]] = {}
        self._digests: dict[str, str] = {}
        self._tokens: dict[tuple[str, str], Token] = {}
        self._refreshed = 0.0
        self._lock = threading.Lock()

    @property
    def fs_group(self) -> int | None:
        group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        return None if group is None else int(group)

    def source(self, name: str) -> tuple[Path, bool]:
        """(host path, volume-level readOnly) of a set-up volume."""
        return self._sources[name]

    def setup(self) -> None:
        """Create every volume; raise VolumeError while something is not available yet."""
        with self._lock:
            for volume in self.pod["spec"].get("volumes") or []:
                self._setup_one(volume)
            self._refreshed = time.monotonic()

    def refresh(self) -> None:
        """Rewrite API-backed volumes whose content changed; renew tokens when due."""
        now = time.monotonic()
        tokens_due = any(t.due(time.time()) for t in self._tokens.values())
        if now - self._refreshed < REFRESH_SECONDS and not tokens_due:
            return
        try:
            self.setup()
        except (VolumeError, ConfigError, OSError) as error:
            self.log.warning("volume refresh failed", error=str(error))

    # --- per type ---------------------------------------------------------------------

    def _setup_one(self, volume: Obj) -> None:
        name = volume["name"]
        if "emptyDir" in volume:
            path = self.dir / "empty-dir" / name
            if not path.exists():
                path.mkdir(parents=True)
                os.chmod(path, 0o777)
            self._sources[name] = (path, False)
        elif "hostPath" in volume:
            self._sources[name] = (self._host_path(volume["hostPath"]), False)
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            self._sources[name] = (self._claim(claim["claimName"]), bool(claim.get("readOnly")))
        elif "configMap" in volume:
            self._atomic(name, "configmap", self._object_files("configmap", volume["configMap"]))
        elif "secret" in volume:
            source = dict(volume["secret"])
            source["name"] = source.get("secretName", "")
            self._atomic(name, "secret", self._object_files("secret", source))
        elif "downwardAPI" in volume:
            spec = volume["downwardAPI"]
            mode = spec.get("defaultMode", DEFAULT_MODE)
            self._atomic(name, "downward-api", self._downward_files(spec.get("items"), mode))
        elif "projected" in volume:
            self._atomic(name, "projected", self._projected_files(volume["projected"]))
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(f"volume {name}: unsupported volume type {kinds} on the local node")

    def _atomic(self, name: str, kind: str, files: Files) -> None:
        path = self.dir / kind / name
        digest = _digest(files)
        if self._digests.get(name) != digest or not path.exists():
            write_atomic(path, files, self.fs_group)
            self._digests[name] = digest
        self._sources[name] = (path, True)

    def _host_path(self, spec: Obj) -> Path:
        path = Path(spec["path"])
        kind = spec.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind == "Directory" and not path.is_dir():
            raise VolumeError(f"hostPath {path} is not a directory")
        elif kind == "File" and not path.is_file():
            raise VolumeError(f"hostPath {path} is not a file")
        elif kind == "" and not path.exists():
            path.mkdir(parents=True, exist_ok=True)  # a runtime creates a missing source
        return path

    def _claim(self, claim_name: str) -> Path:
        namespace = self.pod["metadata"]["namespace"]
        claim = self.api.pvc(namespace, claim_name)
        if claim is None:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if (claim.get("status") or {}).get("phase") != "Bound" or not volume_name:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound yet')
        pv_spec = self.api.pv(volume_name).get("spec") or {}
        raw = (pv_spec.get("hostPath") or {}).get("path") or (pv_spec.get("local") or {}).get(
            "path"
        )
        if not raw:
            raise VolumeError(f"persistentvolume {volume_name} is neither hostPath nor local")
        path = Path(raw)
        if not path.exists():
            path.mkdir(parents=True)
            os.chmod(path, 0o777)
        group = self.fs_group
        if group is not None:
            # Like the kubelet for a PVC: the volume belongs to the pod's fsGroup
            # (group-writable, setgid so new files inherit the group).
            os.chown(path, -1, group)
            os.chmod(path, path.stat().st_mode | 0o2070)
        return path

    def _object_files(self, kind: str, source: Obj) -> Files:
        namespace = self.pod["metadata"]["namespace"]
        name = source.get("name", "")
        data = (
            self.api.config_map(namespace, name)
            if kind == "configmap"
            else self.api.secret(namespace, name)
        )
        optional = bool(source.get("optional"))
        default_mode = int(source.get("defaultMode", DEFAULT_MODE))
        if data is None:
            if optional:
                return {}
            raise VolumeError(f'{kind} "{name}" not found')
        items = source.get("items")
        if not items:
            return {key: (value, default_mode) for key, value in data.items()}
        files: Files = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise VolumeError(f'{kind} "{name}": key "{item["key"]}" not found')
            files[item["path"]] = (data[item["key"]], int(item.get("mode", default_mode)))
        return files

    def _downward_files(self, items: list[Obj] | None, default_mode: int) -> Files:
        files: Files = {}
        containers = self.pod["spec"].get("containers") or []
        for item in items or []:
            mode = int(item.get("mode", default_mode))
            if "fieldRef" in item:
                value = field_value(item["fieldRef"]["fieldPath"], self.pod)
            else:
                ref = item["resourceFieldRef"]
                container = next(
                    (c for c in containers if c["name"] == ref.get("containerName")),
                    containers[0] if containers else {},
                )
                value = resource_value(
                    ref["resource"], container, ref.get("divisor"), self.allocatable
                )
            files[item["path"]] = (value.encode(), mode)
        return files

    def _projected_files(self, spec: Obj) -> Files:
        default_mode = int(spec.get("defaultMode", DEFAULT_MODE))
        files: Files = {}
        for source in spec.get("sources") or []:
            if "serviceAccountToken" in source:
                token_spec = source["serviceAccountToken"]
                token = self._token(token_spec)
                files[token_spec["path"]] = (token.encode(), default_mode)
            elif "configMap" in source:
                sub = {"defaultMode": default_mode, **source["configMap"]}
                files.update(self._object_files("configmap", sub))
            elif "secret" in source:
                sub = {"defaultMode": default_mode, **source["secret"]}
                files.update(self._object_files("secret", sub))
            elif "downwardAPI" in source:
                files.update(self._downward_files(source["downwardAPI"].get("items"), default_mode))
            else:
                self.log.warning("unsupported projected source ignored", source=sorted(source))
        return files

    def _token(self, spec: Obj) -> str:
        audience = spec.get("audience") or ""
        key = (spec["path"], audience)
        token = self._tokens.get(key)
        now = time.time()
        if token is None or token.due(now):
            account = self.pod["spec"].get("serviceAccountName") or "default"
            expiration = int(spec.get("expirationSeconds") or 3607)
            value, expires = self.api.token(
                self.pod, account, [audience] if audience else [], expiration
            )
            token = Token(value, now, expires)
            self._tokens[key] = token
            self.log.info("service account token issued", account=account, expires=expires)
        return token.value


# --- mount targets that do not exist on the host ----------------------------------------


class HostPaths:
    """Mount targets the agent had to create on the host (e.g. /var/run/secrets/...).

    They are recorded in a file and removed (if still empty) when no pod runs any more:
    at agent shutdown and at agent start, never while another pod may mount them.
    """

    def __init__(self, record: Path) -> None:
        self.record = record
        self._lock = threading.Lock()

    def _load(self) -> list[str]:
        try:
            data = json.loads(self.record.read_text())
            return [str(p) for p in data]
        except (OSError, ValueError):
            return []

    def ensure(self, target: str, is_dir: bool) -> None:
        with self._lock:
            created: list[str] = []
            path = Path(target)
            missing = []
            probe = path if is_dir else path.parent
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            for directory in reversed(missing):
                directory.mkdir(exist_ok=True)
                created.append(str(directory))
            if not is_dir and not path.exists():
                path.touch()
                created.append(str(path))
            if created:
                self.record.parent.mkdir(parents=True, exist_ok=True)
                self.record.write_text(json.dumps(self._load() + created))

    def remove_all(self) -> None:
        with self._lock:
            for raw in reversed(self._load()):
                path = Path(raw)
                try:
                    if path.is_dir() and not path.is_symlink():
                        path.rmdir()
                    elif path.is_file() and path.stat().st_size == 0:
                        path.unlink()
                except OSError:
                    pass
            self.record.unlink(missing_ok=True)
