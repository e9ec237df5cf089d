"""Version numbers: never reused after a deletion, one number per run, and a damaged
ledger never lowers the next number below the versions that exist."""

from __future__ import annotations

from mlplane_operator.builders.registry import build_version_ledger, ledger_name
from mlplane_operator.policies.versions import (
    RECENT_RUNS,
    Ledger,
    allocate,
    raise_floor,
    run_key,
)

RUN = run_key("7c9e6679-7425-40de-944b-e07fc1f90ae7", "iris-1")


def test_the_first_run_of_a_model_gets_version_1() -> None:
    allocation = allocate(Ledger(), RUN, set())
    assert (allocation.version, allocation.changed) == (1, True)
    assert allocation.ledger == Ledger(1, {RUN: 1})


def test_a_number_is_never_given_again_after_its_version_is_deleted() -> None:
    # m-v1 and m-v2 were given; m-v2 was deleted: the next run gets 3, not 2.
    assert allocate(Ledger(2, {}), RUN, {1}).version == 3


def test_existing_versions_bound_the_number_from_below_without_a_ledger() -> None:
    # A cluster from before the ledger, or a version applied by hand.
    assert allocate(Ledger(), RUN, {1, 2, 5}).version == 6


def test_a_run_asking_again_gets_the_same_number_without_a_write() -> None:
    first = allocate(Ledger(3, {}), RUN, {3})
    again = allocate(first.ledger, RUN, {3})
    assert (again.version, again.changed) == (first.version, False) == (4, False)


def test_a_run_whose_number_was_taken_by_a_hand_applied_version_gets_a_new_one() -> None:
    first = allocate(Ledger(3, {}), RUN, set())
    again = allocate(first.ledger, RUN, {first.version})
    assert (again.version, again.changed) == (5, True)
    assert again.ledger.runs[RUN] == 5


def test_two_runs_never_get_one_number() -> None:
    first = allocate(Ledger(), run_key("uid-a", "a-1"), set())
    second = allocate(first.ledger, run_key("uid-b", "b-1"), set())
    assert {first.version, second.version} == {1, 2}


def test_the_ledger_remembers_a_bounded_number_of_runs() -> None:
    ledger = Ledger()
    for number in range(RECENT_RUNS + 10):
        ledger = allocate(ledger, run_key("uid", f"tj-{number}"), set()).ledger
    assert len(ledger.runs) == RECENT_RUNS
    assert ledger.highest == RECENT_RUNS + 10
    assert max(ledger.runs.values()) == ledger.highest


def test_a_damaged_ledger_reads_as_empty_and_round_trips_when_intact() -> None:
    damaged = {"data": {"highest": "many", "runs": "{not json"}}
    assert Ledger.from_config_map(damaged) == Ledger()
    assert Ledger.from_config_map(None) == Ledger()
    ledger = Ledger(4, {RUN: 4})
    config_map = build_version_ledger("iris", "ml", ledger.data(), "17")
    assert Ledger.from_config_map(config_map) == ledger
    assert config_map["metadata"]["name"] == ledger_name("iris") == "mlplane-versions-iris"
    assert config_map["metadata"]["resourceVersion"] == "17"  # written only over what was read
    assert "ownerReferences" not in config_map["metadata"]  # outlives every TrainingJob


def test_a_hand_applied_version_raises_the_floor_once() -> None:
    assert raise_floor(Ledger(2, {RUN: 2}), 7) == Ledger(7, {RUN: 2})
    assert raise_floor(Ledger(7, {}), 3) is None
