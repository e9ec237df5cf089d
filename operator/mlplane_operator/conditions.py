"""Status conditions in the standard Kubernetes shape, following kstatus conventions.

Pure functions over lists of condition dicts (the JSON the API server stores):
``Ready`` is the aggregate, ``Reconciling`` is True while work is in progress and
``Stalled`` is True when the resource failed and will not recover without a change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]
Condition = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Observed:
    """One condition as a reconciler sees it now (without the bookkeeping fields)."""

    type: str
    status: Status
    reason: str
    message: str = ""


def merge_conditions(
    current: Iterable[Condition] | None,
    observed: Iterable[Observed],
    generation: int,
    now: str | None = None,
) -> list[Condition]:
    """Fold what a reconciler observed into the stored conditions.

    ``lastTransitionTime`` changes only when a condition's status changes; conditions the
    reconciler did not mention are kept as they are. The result is sorted by type so
    that writing it twice produces the same object (and no spurious status update).
    """
    stamp = now or now_iso()
    merged: dict[str, Condition] = {c["type"]: dict(c) for c in current or [] if "type" in c}
    for condition in observed:
        previous = merged.get(condition.type)
        transitioned = previous is None or previous.get("status") != condition.status
        merged[condition.type] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "observedGeneration": generation,
            "lastTransitionTime": stamp
            if transitioned
            else previous.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
        }
    return [merged[key] for key in sorted(merged)]


def find(conditions: Iterable[Condition] | None, type_: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def is_true(conditions: Iterable[Condition] | None, type_: str) -> bool:
    condition = find(conditions, type_)
    return condition is not None and condition.get("status") == "True"


def progressing(reason: str, message: str) -> list[Observed]:
    """Work is under way: Reconciling, not yet Ready, not Stalled."""
    return [
        Observed("Ready", "False", reason, message),
        Observed("Reconciling", "True", reason, message),
        Observed("Stalled", "False", reason, ""),
    ]


def ready(reason: str, message: str) -> list[Observed]:
    return [
        Observed("Ready", "True", reason, message),
        Observed("Reconciling", "False", reason, ""),
        Observed("Stalled", "False", reason, ""),
    ]


def stalled(reason: str, message: str) -> list[Observed]:
    """Failed in a way that needs a change from a person (kstatus Stalled)."""
    return [
        Observed("Ready", "False", reason, message),
        Observed("Reconciling", "False", reason, ""),
        Observed("Stalled", "True", reason, message),
    ]
