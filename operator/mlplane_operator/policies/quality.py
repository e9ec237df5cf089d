"""Live quality (pure): when an evaluation is due, what its result says per version, and
whether the serving version is degraded."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlplane_operator.api.v1alpha1.inferenceservice import Quality, QualityMetric
from mlplane_operator.conditions import Status

Manifest = dict[str, Any]


def window_end(interval_seconds: int, now: datetime) -> int:
    """The end (epoch seconds) of the latest evaluation slot: slots are aligned to the
    interval, so every pass and every replica names the same one."""
    return int(now.timestamp()) // interval_seconds * interval_seconds


def seconds_until_next(interval_seconds: int, now: datetime) -> float:
    return window_end(interval_seconds, now) + interval_seconds - now.timestamp()


@dataclass(frozen=True)
class CanaryWait:
    """A canary step that waits for a verdict on its quality."""

    step_due: datetime  # when its stepSeconds ended: the evaluation must end after it
    step_seconds: int


def evaluation_slot(interval_seconds: int, now: datetime, canary: CanaryWait | None) -> int:
    """The window end of the evaluation to run now. Without a canary waiting, the latest
    interval slot. A waiting canary step needs one ending after its stepSeconds at once,
    and then, while its labels arrive, one at least every stepSeconds: slots stay aligned
    (to the step's due time, then to the shorter period), so every pass names the same."""
    slot = window_end(interval_seconds, now)
    if canary is None:
        return slot
    faster = window_end(min(interval_seconds, canary.step_seconds), now)
    due = int(canary.step_due.timestamp())
    return max(slot, faster, due if due <= now.timestamp() else 0)


def readings(result: Manifest) -> list[Manifest]:
    """status.quality entries from an evaluation result (`mlplane-train evaluate`);
    versions that are not mlplane version numbers are left out."""
    found = []
    for entry in result.get("versions") or []:
        version, value = str(entry.get("version", "")), entry.get("value")
        if not version.isdigit():
            continue
        found.append(
            {
                "version": int(version),
                "metric": result["metric"],
                "value": float(value)
                if isinstance(value, int | float) and math.isfinite(value)
                else None,
                "labeled": int(entry.get("labeled") or 0),
                "logged": int(entry.get("logged") or 0),
                "windowStart": _iso(float(result["windowStart"])),
                "windowEnd": _iso(float(result["windowEnd"])),
            }
        )
    return sorted(found, key=lambda r: r["version"])[-20:]


def worse(metric: QualityMetric, value: float, bound: float) -> bool:
    """Whether `value` is on the bad side of `bound` for this metric."""
    return value > bound if metric.lower_is_better else value < bound


@dataclass(frozen=True)
class Verdict:
    status: Status  # of the QualityDegraded condition
    reason: str
    message: str


def judge(quality: Quality, reading: Manifest | None, version: int) -> Verdict:
    """QualityDegraded for the serving `version`: judged only with minLabeled labels."""
    metric = quality.metric
    if reading is None or reading.get("value") is None:
        labeled = int((reading or {}).get("labeled") or 0)
        return Verdict(
            "Unknown",
            "InsufficientLabels",
            f"v{version}: {labeled} labeled predictions; {quality.min_labeled} needed",
        )
    labeled, value = int(reading["labeled"]), float(reading["value"])
    if labeled < quality.min_labeled:
        return Verdict(
            "Unknown",
            "InsufficientLabels",
            f"v{version}: {labeled} labeled predictions; {quality.min_labeled} needed",
        )
    side = "above the maximum" if metric.lower_is_better else "below the minimum"
    if worse(metric, value, quality.threshold):
        return Verdict(
            "True",
            "QualityDegraded",
            f"v{version}: live {metric.value} {value:.4g} over {labeled} labeled predictions "
            f"is {side} {quality.threshold:g}",
        )
    return Verdict(
        "False",
        "QualityMet",
        f"v{version}: live {metric.value} {value:.4g} over {labeled} labeled predictions",
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
