"""Status conditions: kstatus semantics, stable timestamps and a deterministic order."""

from __future__ import annotations

from mlplane_operator.api.v1alpha1 import Condition as ConditionModel
from mlplane_operator.conditions import (
    Observed,
    find,
    is_true,
    merge_conditions,
    progressing,
    ready,
    stalled,
)

T0 = "2025-01-10T11:00:00Z"
T1 = "2025-01-10T12:00:00Z"


def test_first_observation_stamps_every_condition() -> None:
    merged = merge_conditions(None, progressing("Training", "run iris-1 is running"), 1, now=T0)
    assert [c["type"] for c in merged] == ["Ready", "Reconciling", "Stalled"]
    assert all(c["lastTransitionTime"] == T0 for c in merged)
    assert find(merged, "Ready") == {
        "type": "Ready",
        "status": "False",
        "reason": "Training",
        "message": "run iris-1 is running",
        "observedGeneration": 1,
        "lastTransitionTime": T0,
    }


def test_transition_time_changes_only_when_the_status_changes() -> None:
    before = merge_conditions(None, progressing("Training", "run iris-1 is running"), 1, now=T0)
    after = merge_conditions(before, ready("Succeeded", "iris-v1 registered"), 1, now=T1)
    assert find(after, "Ready")["lastTransitionTime"] == T1  # type: ignore[index]
    assert find(after, "Reconciling")["lastTransitionTime"] == T1  # type: ignore[index]
    assert find(after, "Stalled")["lastTransitionTime"] == T0  # type: ignore[index]


def test_new_reason_and_message_keep_the_transition_time() -> None:
    before = merge_conditions(None, progressing("Training", "run iris-1 is running"), 1, now=T0)
    after = merge_conditions(before, progressing("Registering", "registering iris-v1"), 1, now=T1)
    condition = find(after, "Ready")
    assert condition is not None
    assert (condition["reason"], condition["message"]) == ("Registering", "registering iris-v1")
    assert condition["lastTransitionTime"] == T0


def test_conditions_not_observed_are_kept_as_they_are() -> None:
    verified = {
        "type": "Verified",
        "status": "True",
        "reason": "Verified",
        "message": "sha256 and signature match",
        "observedGeneration": 1,
        "lastTransitionTime": T0,
    }
    merged = merge_conditions([verified], ready("Ready", "servable"), 2, now=T1)
    assert find(merged, "Verified") == verified


def test_order_is_by_type_whatever_the_order_of_observation() -> None:
    observed = [
        Observed("Stalled", "False", "Ok"),
        Observed("Ready", "True", "Ok"),
        Observed("Available", "True", "Ok"),
    ]
    one = merge_conditions(None, observed, 1, now=T0)
    other = merge_conditions(None, list(reversed(observed)), 1, now=T0)
    assert one == other
    assert [c["type"] for c in one] == ["Available", "Ready", "Stalled"]


def test_merging_the_same_observation_twice_changes_nothing() -> None:
    first = merge_conditions(None, ready("Ready", "serving iris-v3"), 4, now=T0)
    second = merge_conditions(first, ready("Ready", "serving iris-v3"), 4, now=T1)
    assert second == first


def test_observed_generation_is_the_generation_reconciled() -> None:
    before = merge_conditions(None, ready("Ready", "serving iris-v3"), 4, now=T0)
    after = merge_conditions(before, ready("Ready", "serving iris-v3"), 5, now=T1)
    assert {c["observedGeneration"] for c in after} == {5}


def test_stored_conditions_are_not_modified_in_place() -> None:
    stored = merge_conditions(None, ready("Ready", "ok"), 1, now=T0)
    snapshot = [dict(c) for c in stored]
    merge_conditions(stored, stalled("InvalidSchedule", "bad cron"), 2, now=T1)
    assert stored == snapshot


def test_kstatus_helpers_set_ready_reconciling_and_stalled_consistently() -> None:
    for observed, expected in [
        (
            progressing("Rolling", "m"),
            {"Ready": "False", "Reconciling": "True", "Stalled": "False"},
        ),
        (ready("Ready", "m"), {"Ready": "True", "Reconciling": "False", "Stalled": "False"}),
        (stalled("Failed", "m"), {"Ready": "False", "Reconciling": "False", "Stalled": "True"}),
    ]:
        merged = merge_conditions(None, observed, 1, now=T0)
        assert {c["type"]: c["status"] for c in merged} == expected
        assert is_true(merged, "Ready") is (expected["Ready"] == "True")


def test_merged_conditions_validate_against_the_api_condition_schema() -> None:
    merged = merge_conditions(None, stalled("InvalidSchedule", "bad cron"), 3, now=T0)
    for condition in merged:
        ConditionModel.model_validate(condition)


def test_find_and_is_true_handle_missing_conditions() -> None:
    assert find(None, "Ready") is None
    assert is_true([], "Ready") is False
