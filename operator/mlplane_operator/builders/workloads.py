"""Pieces every pod the operator creates shares: a locked-down security context, scratch
space, and the volumes that make pvc:// URIs readable at the path the runtimes expect.

Pods meet the restricted Pod Security Standard: non-root with a fixed UID, read-only root
filesystem (an emptyDir at /tmp for scratch), no privilege escalation, all capabilities
dropped, the runtime's default seccomp profile.
"""

from __future__ import annotations

import re
from typing import Any

from mlplane_operator import labels
from mlplane_operator.settings import OperatorSettings

RUNTIME_UID = 65532
PVC_ROOT = "/mnt/pvc"  # the runtimes read pvc://<claim>/<path> at /mnt/pvc/<claim>/<path>
PVC_URI = re.compile(r"^pvc://(?P<claim>[a-z0-9]([-a-z0-9]*[a-z0-9])?)(/.*)?$")

Manifest = dict[str, Any]


def pod_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def claims_of(*uris: str | None) -> list[str]:
    """The PVC names referenced by pvc:// URIs, in order, without duplicates."""
    claims: list[str] = []
    for uri in uris:
        match = PVC_URI.match(uri or "")
        if match and match["claim"] not in claims:
            claims.append(match["claim"])
    return claims


def storage_volumes(
    claims: list[str], read_only: bool, read_only_claims: list[str] | None = None
) -> tuple[list[Manifest], list[Manifest]]:
    """Volumes and mounts: scratch at /tmp, and each claim at /mnt/pvc/<claim>;
    `read_only_claims` are mounted read-only as well, unless `claims` has them."""
    volumes: list[Manifest] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}]
    extra = [(c, True) for c in read_only_claims or [] if c not in claims]
    for index, (claim, ro) in enumerate([*((c, read_only) for c in claims), *extra]):
        name = f"pvc-{index}"
        volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}}
        )
        mounts.append({"name": name, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": ro})
    return volumes, mounts


def s3_env(endpoint: str | None, secret: str | None) -> tuple[list[Manifest], list[Manifest]]:
    """env and envFrom for s3:// access: the endpoint, and credentials from a Secret."""
    env = [{"name": "AWS_ENDPOINT_URL", "value": endpoint}] if endpoint else []
    env_from = [{"secretRef": {"name": secret}}] if secret else []
    return env, env_from


def child_metadata(
    name: str, namespace: str, owner: Manifest, child_labels: dict[str, str]
) -> Manifest:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**labels.MANAGED_BY, **child_labels},
        "ownerReferences": [labels.owner_reference(owner)],
    }


def dns_label(text: str, limit: int = 63) -> str:
    """`text` cut to a valid DNS-1123 label of at most `limit` characters."""
    return text[:limit].rstrip("-.")


def build_storage_claim(name: str, namespace: str, settings: OperatorSettings) -> Manifest:
    spec: Manifest = {
        "accessModes": [settings.storage_pvc_access_mode],
        "resources": {"requests": {"storage": settings.storage_pvc_size}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels.MANAGED_BY)},
        "spec": spec,
    }
