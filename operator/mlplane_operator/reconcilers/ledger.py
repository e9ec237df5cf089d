"""Reads and writes of a model's version ledger (policies.versions), with preconditions."""

from __future__ import annotations

from typing import Any

from mlplane_operator import kube
from mlplane_operator.builders.registry import build_version_ledger, ledger_name
from mlplane_operator.policies import versions

Manifest = dict[str, Any]
ATTEMPTS = 10


def read(model: str, namespace: str) -> tuple[Manifest | None, versions.Ledger]:
    stored = kube.get("ConfigMap", namespace, ledger_name(model))
    return stored, versions.Ledger.from_config_map(stored)


def write(model: str, namespace: str, stored: Manifest | None, ledger: versions.Ledger) -> bool:
    """Write the ledger over exactly the object read (create it when there was none);
    False when someone wrote first."""
    if stored is None:
        created = kube.create(build_version_ledger(model, namespace, ledger.data(), None))
        return created is not None
    resource_version = stored["metadata"]["resourceVersion"]
    try:
        kube.replace(build_version_ledger(model, namespace, ledger.data(), resource_version))
    except kube.Conflict:
        return False
    return True


def record_used(model: str, namespace: str, version: int) -> None:
    """Make sure the ledger knows `version` is used (a ModelVersion applied by hand), so
    that no run is ever given it after that version is deleted."""
    for _ in range(ATTEMPTS):
        stored, ledger = read(model, namespace)
        raised = versions.raise_floor(ledger, version)
        if raised is None or write(model, namespace, stored, raised):
            return
    raise kube.TransientError(f"could not record version {version} of {model} in its ledger")
