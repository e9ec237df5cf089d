"""Stage decisions of the registry (pure): the autoPromote policy and Production's
uniqueness."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LOWER_IS_BETTER = frozenset({"rmse", "mae"})
Rank = tuple[str, int]  # (when it entered Production, version)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str


def evaluate_auto_promote(
    policy: dict[str, Any], metrics: dict[str, float], production_metrics: dict[str, float] | None
) -> Verdict:
    """Whether a verified version passes `autoPromote` {metric, minimum, maximum,
    mustBeatProduction}, with the reason a person reads in the Event."""
    name = policy["metric"]
    value = metrics.get(name)
    if value is None:
        return Verdict(False, f"metric {name} was not computed by the run")
    lower_better = name in LOWER_IS_BETTER
    minimum, maximum = policy.get("minimum"), policy.get("maximum")
    if minimum is not None and value < minimum:
        return Verdict(False, f"{name}={value:.4g} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        return Verdict(False, f"{name}={value:.4g} is above the maximum {maximum}")
    current = (production_metrics or {}).get(name)
    if policy.get("mustBeatProduction", True) and current is not None:
        better = value < current if lower_better else value > current
        if not better:
            return Verdict(False, f"{name}={value:.4g} does not beat Production's {current:.4g}")
        return Verdict(True, f"{name}={value:.4g} beats Production's {current:.4g}")
    return Verdict(True, f"{name}={value:.4g} meets the policy")


def promotion_rank(history: list[dict[str, Any]] | None, version: int, now: datetime) -> Rank:
    """Which of two Production versions of a model stays Production: the greater rank.
    When it last entered Production ('now' when its history does not show that yet: it
    is being promoted by this pass), then the version number, so that two promotions
    within one second (history times have whole seconds) still leave exactly one."""
    if history and history[-1].get("stage") == "Production":
        entered = str(history[-1].get("time"))
    else:
        entered = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return entered, version
