"""Container environment like the kubelet: envFrom, env (value/valueFrom), $(VAR) expansion."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

Obj = dict[str, Any]


class ConfigError(Exception):
    """The container cannot be configured yet (CreateContainerConfigError)."""


class Objects(Protocol):
    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...
    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: `$$` escapes, undefined references stay as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(replace, text)


_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity(text: str | int | float) -> Decimal:
    """Parse a Kubernetes resource quantity ("500m", "1Gi", "2", "1e3")."""
    value = str(text).strip()
    if value[-2:] in _BINARY:
        return Decimal(value[:-2]) * Decimal(1024) ** _BINARY[value[-2:]]
    if value[-1:] in _DECIMAL:
        return Decimal(value[:-1]) * Decimal(10) ** _DECIMAL[value[-1:]]
    return Decimal(value)


def resource_value(
    resource: str, container: Obj, divisor: str | None, allocatable: Mapping[str, str]
) -> str:
    """resourceFieldRef: limits default to the node's allocatable; round up like the kubelet."""
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0") if kind == "limits" else "0"
    div = quantity(divisor or "1")
    if div == 0:
        div = Decimal(1)
    return str(max(math.ceil(quantity(raw) / div), 0 if kind == "requests" else 1))


def field_value(path: str, pod: Obj) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def _lookup(
    objects: Objects, kind: str, namespace: str, ref: Obj, key: str | None
) -> dict[str, bytes] | None:
    name = ref.get("name", "")
    data = (
        objects.config_map(namespace, name)
        if kind == "configmap"
        else objects.secret(namespace, name)
    )
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    if key is not None and key not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind.capitalize()} {namespace}/{name}")
    return data


def container_env(
    pod: Obj,
    container: Obj,
    objects: Objects,
    base: Mapping[str, str],
    allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The env a container sees: `base` (image + service env), then envFrom, then env."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = _lookup(objects, "configmap", namespace, source["configMapRef"], None)
        else:
            data = _lookup(objects, "secret", namespace, source.get("secretRef") or {}, None)
        for key, raw in (data or {}).items():
            env[prefix + key] = raw.decode(errors="replace")
    defined: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        source = var.get("valueFrom")
        if source is None:
            value: str | None = expand(var.get("value", ""), {**env, **defined})
        elif "fieldRef" in source:
            value = field_value(source["fieldRef"]["fieldPath"], pod)
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                every = (pod["spec"].get("containers") or []) + (
                    pod["spec"].get("initContainers") or []
                )
                target = next((c for c in every if c["name"] == ref["containerName"]), container)
            value = resource_value(ref["resource"], target, ref.get("divisor"), allocatable)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            data = _lookup(objects, "configmap", namespace, ref, ref["key"])
            value = None if data is None else data[ref["key"]].decode(errors="replace")
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = _lookup(objects, "secret", namespace, ref, ref["key"])
            value = None if data is None else data[ref["key"]].decode(errors="replace")
        else:
            raise ConfigError(f"unsupported valueFrom for env {name}")
        if value is not None:
            defined[name] = value
            env[name] = value
    return env


def command_line(
    container: Obj, entrypoint: list[str], cmd: list[str], env: Mapping[str, str]
) -> list[str]:
    """The argv as a container runtime builds it from the spec and the image."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [expand(c, env) for c in command] + [expand(a, env) for a in args or []]
    elif args:
        argv = list(entrypoint) + [expand(a, env) for a in args]
    else:
        argv = list(entrypoint) + list(cmd)
    if not argv:
        raise ConfigError("no command specified")
    return argv
