"""The autoPromote policy: whether a verified version goes to Production, and why; and
which of two Production versions stays."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlplane_operator.api.v1alpha1.trainingjob import AutoPromote
from mlplane_operator.policies.promotion import Verdict, evaluate_auto_promote, promotion_rank


def policy(**fields: Any) -> dict[str, Any]:
    """The policy as the operator annotates it on a ModelVersion (the API's JSON)."""
    return AutoPromote.model_validate(fields).to_json()


def test_metric_at_the_minimum_is_promoted() -> None:
    verdict = evaluate_auto_promote(policy(metric="accuracy", minimum=0.9), {"accuracy": 0.9}, None)
    assert verdict == Verdict(True, "accuracy=0.9 meets the policy")


def test_metric_below_the_minimum_is_not_promoted() -> None:
    verdict = evaluate_auto_promote(
        policy(metric="accuracy", minimum=0.9), {"accuracy": 0.8421}, None
    )
    assert verdict == Verdict(False, "accuracy=0.8421 is below the minimum 0.9")


def test_metric_above_the_maximum_is_not_promoted() -> None:
    verdict = evaluate_auto_promote(policy(metric="rmse", maximum=0.5), {"rmse": 0.61}, None)
    assert verdict == Verdict(False, "rmse=0.61 is above the maximum 0.5")


def test_metric_within_minimum_and_maximum_is_promoted() -> None:
    verdict = evaluate_auto_promote(
        policy(metric="r2", minimum=0.5, maximum=0.99), {"r2": 0.8}, None
    )
    assert verdict.promote is True


def test_metric_the_run_did_not_compute_is_not_promoted() -> None:
    verdict = evaluate_auto_promote(policy(metric="roc_auc"), {"accuracy": 0.97}, None)
    assert verdict == Verdict(False, "metric roc_auc was not computed by the run")


def test_first_version_is_promoted_when_there_is_no_production() -> None:
    verdict = evaluate_auto_promote(policy(metric="accuracy"), {"accuracy": 0.7}, None)
    assert verdict.promote is True


def test_production_without_the_metric_does_not_block_promotion() -> None:
    verdict = evaluate_auto_promote(policy(metric="accuracy"), {"accuracy": 0.7}, {"r2": 0.1})
    assert verdict.promote is True


@pytest.mark.parametrize(
    ("metric", "new", "production", "promote"),
    [
        ("accuracy", 0.97, 0.95, True),
        ("accuracy", 0.93, 0.95, False),
        ("f1_macro", 0.95, 0.95, False),  # equal is not better
        ("r2", 0.82, 0.80, True),
        ("rmse", 0.41, 0.45, True),  # lower is better
        ("rmse", 0.47, 0.45, False),
        ("mae", 120.0, 100.0, False),
        ("mae", 90.0, 100.0, True),
    ],
)
def test_must_beat_production_compares_in_the_metric_direction(
    metric: str, new: float, production: float, promote: bool
) -> None:
    verdict = evaluate_auto_promote(policy(metric=metric), {metric: new}, {metric: production})
    assert verdict.promote is promote, verdict.reason
    if promote:
        assert "beats Production's" in verdict.reason
    else:
        assert "does not beat Production's" in verdict.reason


def test_must_beat_production_is_the_default() -> None:
    assert policy(metric="accuracy")["mustBeatProduction"] is True
    verdict = evaluate_auto_promote({"metric": "accuracy"}, {"accuracy": 0.9}, {"accuracy": 0.95})
    assert verdict.promote is False


def test_worse_version_is_promoted_when_it_need_not_beat_production() -> None:
    verdict = evaluate_auto_promote(
        policy(metric="accuracy", minimum=0.9, mustBeatProduction=False),
        {"accuracy": 0.93},
        {"accuracy": 0.95},
    )
    assert verdict == Verdict(True, "accuracy=0.93 meets the policy")


def test_bounds_are_checked_before_the_comparison_with_production() -> None:
    verdict = evaluate_auto_promote(
        policy(metric="accuracy", minimum=0.9), {"accuracy": 0.85}, {"accuracy": 0.5}
    )
    assert verdict == Verdict(False, "accuracy=0.85 is below the minimum 0.9")


def test_of_two_promotions_in_one_second_exactly_one_stays_production() -> None:
    now = datetime(2025, 1, 10, 12, 0, 1, tzinfo=UTC)
    same_second = [{"stage": "Production", "time": "2025-01-10T12:00:00Z"}]
    v2, v3 = promotion_rank(same_second, 2, now), promotion_rank(same_second, 3, now)
    assert v3 > v2  # both passes (v2's and v3's) agree: v3 stays, v2 is archived


def test_the_version_promoted_last_stays_production_whatever_its_number() -> None:
    now = datetime(2025, 1, 10, 12, 0, 1, tzinfo=UTC)
    older = promotion_rank([{"stage": "Production", "time": "2025-01-09T08:00:00Z"}], 9, now)
    being_promoted = promotion_rank([{"stage": "Staging", "time": "2025-01-09T07:00:00Z"}], 4, now)
    assert being_promoted > older
