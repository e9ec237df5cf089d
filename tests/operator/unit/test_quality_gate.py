"""The canary's quality gate (pure): a step is promoted only on an evaluation that ends
after it, once minLabeled labels arrived, and only if the canary's live quality meets
its bounds and is no worse than stable's by more than the tolerance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlplane_operator.api.v1alpha1.inferenceservice import (
    Analysis,
    InferenceServiceSpec,
    Quality,
    QualityReading,
)
from mlplane_operator.policies import quality as quality_policy
from mlplane_operator.policies.rollout import Verdict, analyse_quality, combine

STEP_DUE = datetime(2026, 3, 1, 12, 0, 17, tzinfo=UTC)  # off the slot grid
AFTER = STEP_DUE + timedelta(seconds=10)
CANARY, STABLE = 3, 2


def gate(**fields: Any) -> Analysis:
    return Analysis.model_validate(fields)


def quality(metric: str = "accuracy", min_labeled: int = 100) -> Quality:
    return Quality.model_validate({"metric": metric, "threshold": 0.5, "minLabeled": min_labeled})


def reading(
    version: int, value: float | None, labeled: int, end: datetime = AFTER
) -> QualityReading:
    return QualityReading.model_validate(
        {
            "version": version,
            "metric": "accuracy",
            "value": value,
            "labeled": labeled,
            "windowStart": (end - timedelta(hours=1)).isoformat(),
            "windowEnd": end.isoformat(),
        }
    )


def judge(
    analysis: Analysis,
    readings: list[QualityReading],
    overdue: bool = False,
    metric: str = "accuracy",
) -> Verdict:
    return analyse_quality(analysis, quality(metric), readings, (CANARY, STABLE), STEP_DUE, overdue)


def test_a_canary_as_good_as_stable_within_the_tolerance_passes() -> None:
    verdict = judge(
        gate(minQuality=0.8, qualityTolerance=0.02),
        [reading(STABLE, 0.95, 400), reading(CANARY, 0.94, 120)],
    )
    assert verdict.outcome == "pass"
    assert verdict.message == (
        "v3 live accuracy 0.94 over 120 labeled predictions (stable v2: 0.95)"
    )


def test_a_canary_worse_than_stable_by_more_than_the_tolerance_fails() -> None:
    verdict = judge(
        gate(qualityTolerance=0.02), [reading(STABLE, 0.95, 400), reading(CANARY, 0.4, 500)]
    )
    assert (verdict.outcome, verdict.reason) == ("fail", "QualityGateFailed")
    assert "0.55 worse than stable v2: 0.95 (qualityTolerance 0.02)" in verdict.message


def test_a_canary_below_min_quality_fails_even_when_stable_is_as_bad() -> None:
    verdict = judge(gate(minQuality=0.8), [reading(STABLE, 0.4, 400), reading(CANARY, 0.41, 500)])
    assert verdict.outcome == "fail"
    assert verdict.message == (
        "v3 live accuracy 0.41 over 500 labeled predictions is below minQuality 0.8"
    )


def test_error_metrics_are_bounded_by_max_error_and_compared_the_other_way() -> None:
    readings = [reading(STABLE, 3.0, 400), reading(CANARY, 3.4, 500)]
    assert judge(gate(maxError=3.5), readings, metric="rmse").outcome == "pass"
    assert judge(gate(maxError=3.2), readings, metric="rmse").outcome == "fail"
    assert judge(gate(qualityTolerance=0.5), readings, metric="rmse").outcome == "pass"
    worse = judge(gate(qualityTolerance=0.2), readings, metric="rmse")
    assert worse.outcome == "fail"
    assert "0.4 worse than stable v2: 3" in worse.message
    better = [reading(STABLE, 3.0, 400), reading(CANARY, 1.0, 500)]
    assert judge(gate(qualityTolerance=0), better, metric="rmse").outcome == "pass"


def test_only_an_evaluation_that_ends_after_the_step_counts() -> None:
    before = STEP_DUE - timedelta(seconds=1)
    stale = [reading(STABLE, 0.95, 400, before), reading(CANARY, 0.95, 400, before)]
    verdict = judge(gate(minQuality=0.8), stale)
    assert (verdict.outcome, verdict.reason) == ("wait", "WaitingForEvaluation")
    assert judge(gate(minQuality=0.8), []).outcome == "wait"
    overdue = judge(gate(minQuality=0.8), stale, overdue=True)
    assert (overdue.outcome, overdue.reason) == ("fail", "QualityNotEvaluated")


def test_the_step_waits_for_min_labeled_labels_of_the_canary() -> None:
    verdict = judge(gate(minQuality=0.8), [reading(STABLE, 0.95, 400), reading(CANARY, 1.0, 99)])
    assert (verdict.outcome, verdict.reason) == ("wait", "WaitingForLabels")
    assert verdict.message == "100 labeled predictions needed; v3 has 99"
    no_rows = judge(gate(minQuality=0.8), [reading(STABLE, 0.95, 400)])
    assert no_rows.message == "100 labeled predictions needed; v3 has 0"


def test_the_tolerance_waits_for_labels_of_stable_too() -> None:
    verdict = judge(
        gate(qualityTolerance=0.02), [reading(STABLE, None, 0), reading(CANARY, 0.9, 300)]
    )
    assert verdict.outcome == "wait"
    assert verdict.message == "100 labeled predictions needed; v2 has 0"
    # minQuality alone needs no comparison, so no labels of stable.
    alone = judge(gate(minQuality=0.8), [reading(CANARY, 0.9, 300)])
    assert alone.outcome == "pass"


def test_without_labels_by_the_deadline_it_fails_closed_unless_told_otherwise() -> None:
    few = [reading(STABLE, 0.95, 400), reading(CANARY, 0.2, 10)]
    closed = judge(gate(minQuality=0.8), few, overdue=True)
    assert (closed.outcome, closed.reason) == ("fail", "NoLabels")
    assert closed.message == (
        "no verdict on quality by the deadline: 100 labeled predictions needed; v3 has 10"
    )
    assert judge(gate(minQuality=0.8, failWithoutLabels=True), few, True).outcome == "fail"
    opened = judge(gate(minQuality=0.8, failWithoutLabels=False), few, overdue=True)
    assert (opened.outcome, opened.reason) == ("pass", "QualityNotJudged")
    # failWithoutLabels is about missing labels only: labeled and bad still fails.
    bad = [reading(STABLE, 0.95, 400), reading(CANARY, 0.2, 400)]
    assert judge(gate(minQuality=0.8, failWithoutLabels=False), bad, True).outcome == "fail"


def test_a_step_needs_both_its_traffic_and_its_quality() -> None:
    passed, waiting = Verdict("pass", "traffic ok"), Verdict("wait", "labels", "WaitingForLabels")
    failed = Verdict("fail", "bad quality", "QualityGateFailed")
    assert combine(passed, Verdict("pass", "quality ok")) == Verdict(
        "pass", "traffic ok; quality ok"
    )
    assert combine(passed, waiting) == waiting
    assert combine(Verdict("fail", "errors"), waiting).message == "errors"
    assert combine(Verdict("wait", "traffic"), failed) == failed


# when the canary's evaluation runs


def test_a_waiting_step_brings_its_evaluation_forward() -> None:
    now = STEP_DUE + timedelta(seconds=3)
    slot = quality_policy.window_end(300, now)
    assert slot < STEP_DUE.timestamp()
    assert quality_policy.evaluation_slot(300, now, None) == slot
    wait = quality_policy.CanaryWait(STEP_DUE, 60)
    assert quality_policy.evaluation_slot(300, now, wait) == int(STEP_DUE.timestamp())
    # While labels arrive: one every stepSeconds, aligned, so every pass names the same.
    later = STEP_DUE + timedelta(seconds=130)
    assert quality_policy.evaluation_slot(300, later, wait) == quality_policy.window_end(60, later)
    assert quality_policy.evaluation_slot(300, later + timedelta(seconds=1), wait) == (
        quality_policy.window_end(60, later)
    )


def test_a_step_not_yet_due_asks_for_no_evaluation_of_the_future() -> None:
    now = STEP_DUE - timedelta(seconds=5)
    wait = quality_policy.CanaryWait(STEP_DUE, 60)
    assert quality_policy.evaluation_slot(300, now, wait) <= now.timestamp()


# the spec


def spec(analysis: dict[str, Any], metric: str | None = "accuracy") -> InferenceServiceSpec:
    monitoring: dict[str, Any] = {"logging": {}}
    if metric is not None:
        monitoring["quality"] = {"metric": metric, "threshold": 0.5}
    return InferenceServiceSpec.model_validate(
        {
            "model": "iris",
            "rollout": {"strategy": "Canary", "canary": {"steps": [50]}, "analysis": analysis},
            "monitoring": monitoring,
        }
    )


@pytest.mark.parametrize(
    ("analysis", "metric", "named"),
    [
        ({"minQuality": 0.8}, "rmse", "spec.rollout.analysis.minQuality is for metrics where"),
        ({"maxError": 3.0}, "accuracy", "spec.rollout.analysis.maxError is for error metrics"),
        ({"qualityTolerance": 0.1}, None, "they require spec.monitoring.quality"),
        ({"failWithoutLabels": False}, "accuracy", "failWithoutLabels is only allowed"),
    ],
)
def test_a_gate_that_does_not_fit_the_metric_is_refused_naming_the_field(
    analysis: dict[str, Any], metric: str | None, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        spec(analysis, metric)


def test_gates_that_fit_their_metric_are_accepted() -> None:
    assert spec({"minQuality": 0.9, "qualityTolerance": 0.0}).rollout.analysis is not None
    assert spec({"maxError": 2.5, "failWithoutLabels": False}, "mae").rollout.analysis
    assert not spec({"maxErrorRate": 0.1}, None).rollout.analysis.gates_quality  # type: ignore[union-attr]
