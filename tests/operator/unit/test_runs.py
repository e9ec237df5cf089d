"""When a TrainingJob starts a run, and what a finished run says."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import TrainingRun
from mlplane_operator.builders.training import Run, build_training_job
from mlplane_operator.policies.runs import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    ObservedRun,
    RunDecision,
    collectable,
    decide_run,
    failure_message,
    invalid_schedule,
    lost_runs,
    next_run_number,
    observe_job,
    oom_killed_limit,
    schedule_due,
    superseded,
    trainer_message,
)
from tests.operator.unit.objects import Manifest, settings, trainingjob, trainingjob_body

NOW = datetime(2025, 1, 10, 12, 0, 30, tzinfo=UTC)


def job(
    number: int = 1,
    trigger: str = "Spec",
    generation: int = 1,
    conditions: list[Manifest] | None = None,
    **status: Any,
) -> Manifest:
    """A training Job as the API server returns it, built by the operator's own builder."""
    body = trainingjob_body(generation=generation)
    manifest = build_training_job(
        trainingjob(body), body, Run(number, trigger, generation), settings()
    )
    manifest["metadata"]["creationTimestamp"] = "2025-01-10T11:00:00Z"
    manifest["status"] = {"startTime": "2025-01-10T11:00:01Z", **status}
    if conditions is not None:
        manifest["status"]["conditions"] = conditions
    return manifest


def condition(type_: str, status: str = "True", **fields: str) -> Manifest:
    return {"type": type_, "status": status, "lastTransitionTime": "2025-01-10T11:05:00Z", **fields}


def observed(number: int = 1, outcome: str = SUCCEEDED, **fields: Any) -> ObservedRun:
    base = ObservedRun(
        name=f"iris-{number}",
        number=number,
        trigger="Spec",
        generation=1,
        retrain_request=None,
        outcome=outcome,
        start_time="2025-01-10T11:00:01Z",
        completion_time="2025-01-10T11:05:00Z" if outcome != RUNNING else None,
        suspended=False,
        failure=None,
    )
    return replace(base, **fields)


def decide(**overrides: Any) -> RunDecision | None:
    arguments: dict[str, Any] = {
        "generation": 1,
        "runs": [observed(1)],
        "history_generations": {1},
        "retrain_request": None,
        "schedule": None,
        "last_schedule": NOW - timedelta(minutes=10),
        "now": NOW,
        "suspended": False,
    }
    arguments.update(overrides)
    return decide_run(**arguments)


# observe_job


def test_job_without_a_final_condition_is_running() -> None:
    run = observe_job(job(number=3, trigger="Schedule", generation=2, conditions=[]))
    assert run.outcome == RUNNING
    assert (run.name, run.number, run.trigger, run.generation) == ("iris-3", 3, "Schedule", 2)
    assert run.start_time == "2025-01-10T11:00:01Z"
    assert run.completion_time is None
    assert run.failure is None


def test_complete_job_succeeded_at_its_completion_time() -> None:
    run = observe_job(
        job(conditions=[condition("Complete")], completionTime="2025-01-10T11:04:59Z")
    )
    assert run.outcome == SUCCEEDED
    assert run.completion_time == "2025-01-10T11:04:59Z"
    assert run.failure is None


def test_success_criteria_met_counts_as_succeeded_and_ends_at_the_condition() -> None:
    # The Job controller sets SuccessCriteriaMet before the pods are gone and long before
    # completionTime; a run recorded then must still know when it ended (its TTL).
    run = observe_job(job(conditions=[condition("SuccessCriteriaMet")]))
    assert run.outcome == SUCCEEDED
    assert run.completion_time == "2025-01-10T11:05:00Z"


def test_failed_job_reports_reason_and_message() -> None:
    failed = condition(
        "Failed",
        reason="PodFailurePolicy",
        message="Container trainer for pod ml-team/iris-1-abcde failed with exit code 2",
    )
    run = observe_job(job(conditions=[failed]))
    assert run.outcome == FAILED
    assert run.failure == (
        "PodFailurePolicy: Container trainer for pod ml-team/iris-1-abcde failed with exit code 2"
    )
    assert run.completion_time == "2025-01-10T11:05:00Z"


def test_failed_job_without_a_message_reports_its_reason_alone() -> None:
    run = observe_job(job(conditions=[condition("Failed", reason="DeadlineExceeded")]))
    assert run.failure == "DeadlineExceeded"


def test_failure_target_counts_as_failed_before_the_pods_are_gone() -> None:
    run = observe_job(job(conditions=[condition("FailureTarget", reason="BackoffLimitExceeded")]))
    assert run.outcome == FAILED
    assert run.failure == "BackoffLimitExceeded"
    assert run.completion_time == "2025-01-10T11:05:00Z"


def test_false_conditions_do_not_end_a_run() -> None:
    run = observe_job(job(conditions=[condition("Failed", "False"), condition("Suspended")]))
    assert run.outcome == RUNNING


def test_suspended_job_is_observed_as_suspended() -> None:
    manifest = job()
    manifest["spec"]["suspend"] = True
    assert observe_job(manifest).suspended is True
    assert observe_job(job()).suspended is False


def test_retrain_request_answered_by_a_job_is_read_from_its_annotation() -> None:
    manifest = job(trigger="Retrain")
    manifest["metadata"]["annotations"][labels.RETRAIN_REQUEST] = "2025-01-10T10:59:00Z"
    assert observe_job(manifest).retrain_request == "2025-01-10T10:59:00Z"


def test_job_without_status_falls_back_to_its_creation_time() -> None:
    manifest = job()
    del manifest["status"]
    run = observe_job(manifest)
    assert run.outcome == RUNNING
    assert run.start_time == "2025-01-10T11:00:00Z"


# decide_run


def test_new_generation_starts_a_spec_run() -> None:
    assert decide(generation=2) == RunDecision("Spec")


def test_first_reconcile_of_a_trainingjob_starts_a_spec_run() -> None:
    assert decide(runs=[], history_generations=set()) == RunDecision("Spec")


def test_a_trained_generation_starts_nothing() -> None:
    assert decide() is None


def test_generation_trained_by_a_job_deleted_after_its_ttl_starts_nothing() -> None:
    assert decide(runs=[], history_generations={1}) is None


def test_generation_of_an_existing_job_not_yet_in_history_starts_nothing() -> None:
    assert decide(runs=[observed(1)], history_generations=set()) is None


def test_runs_never_overlap() -> None:
    running = [observed(1), observed(2, RUNNING, generation=2)]
    assert decide(generation=3, runs=running, retrain_request="r-1", schedule="* * * * *") is None


def test_suspended_trainingjob_starts_nothing() -> None:
    assert decide(generation=2, suspended=True) is None
    assert decide(retrain_request="r-1", suspended=True) is None
    assert decide(schedule="* * * * *", suspended=True) is None


def test_unanswered_retrain_request_starts_a_retrain_run() -> None:
    decision = decide(retrain_request="2025-01-10T11:59:00Z")
    assert decision == RunDecision("Retrain", retrain_request="2025-01-10T11:59:00Z")


def test_retrain_request_answered_by_an_existing_run_starts_nothing() -> None:
    answered = observed(2, trigger="Retrain", retrain_request="2025-01-10T11:59:00Z")
    assert decide(runs=[observed(1), answered], retrain_request="2025-01-10T11:59:00Z") is None


def test_a_newer_retrain_request_starts_another_run() -> None:
    answered = observed(2, trigger="Retrain", retrain_request="2025-01-09T08:00:00Z")
    decision = decide(runs=[observed(1), answered], retrain_request="2025-01-10T11:59:00Z")
    assert decision == RunDecision("Retrain", retrain_request="2025-01-10T11:59:00Z")


def test_due_schedule_starts_a_schedule_run_for_the_slot() -> None:
    decision = decide(schedule="0 * * * *", last_schedule=NOW - timedelta(minutes=45))
    assert decision == RunDecision(
        "Schedule", schedule_time=datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    )


def test_schedule_not_yet_due_starts_nothing() -> None:
    assert decide(schedule="0 3 * * *", last_schedule=NOW - timedelta(hours=5)) is None


def test_many_missed_slots_start_one_catch_up_run_for_the_latest() -> None:
    decision = decide(schedule="*/5 * * * *", last_schedule=NOW - timedelta(days=2))
    assert decision == RunDecision(
        "Schedule", schedule_time=datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    )


def test_invalid_schedule_starts_nothing() -> None:
    assert decide(schedule="61 * * * *", last_schedule=NOW - timedelta(days=2)) is None


def test_new_spec_comes_before_a_retrain_request_and_the_schedule() -> None:
    decision = decide(generation=2, retrain_request="r-1", schedule="* * * * *")
    assert decision == RunDecision("Spec")


# schedule


def test_schedule_due_returns_the_latest_missed_slot_and_the_next_one() -> None:
    due, upcoming = schedule_due("@hourly", NOW - timedelta(hours=5), NOW)
    assert due == datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    assert upcoming == datetime(2025, 1, 10, 13, 0, tzinfo=UTC)


def test_schedule_due_does_not_repeat_the_slot_already_served() -> None:
    served = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    assert schedule_due("@hourly", served, NOW) == (None, served + timedelta(hours=1))


def test_schedule_after_a_long_outage_is_not_found_by_walking_every_missed_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = 0

    class CountingCroniter(croniter):  # type: ignore[misc]
        def get_next(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal steps
            steps += 1
            return super().get_next(*args, **kwargs)

        def get_prev(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal steps
            steps += 1
            return super().get_prev(*args, **kwargs)

    monkeypatch.setattr("mlplane_operator.policies.runs.croniter", CountingCroniter)
    due, _ = schedule_due("* * * * *", NOW - timedelta(days=7), NOW)
    assert due == datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    assert steps <= 10, (
        f"BUG: schedule_due took {steps} cron steps for a week of a minutely schedule; it "
        "walks every missed slot, and the reconciler calls it on every reconcile (for "
        "status.nextScheduleTime) while lastScheduleTime does not advance, e.g. while "
        "suspended: a year of '* * * * *' costs about 45 s of CPU per reconcile"
    )


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 * * * 1-5", "@daily", "@hourly"])
def test_valid_schedules_are_accepted(schedule: str) -> None:
    assert invalid_schedule(schedule) is None


@pytest.mark.parametrize("schedule", ["61 * * * *", "0 3 * * 8", "every day"])
def test_invalid_schedule_is_reported_naming_the_field_and_value(schedule: str) -> None:
    message = invalid_schedule(schedule)
    assert message is not None
    assert "spec.schedule" in message
    assert repr(schedule) in message


@pytest.mark.parametrize(
    ("schedule", "says"),
    [
        ("0 0 30 2 *", "never fires"),  # admitted by a CRD from before the rule
        ("0 0 31 2,4 *", "never fires"),  # beyond what the admission rule can see
        ("* * * * * *", "per-second schedules are not supported"),
    ],
)
def test_a_schedule_that_never_fires_or_fires_every_second_is_refused(
    schedule: str, says: str
) -> None:
    message = invalid_schedule(schedule, NOW)
    assert message is not None
    assert message.startswith(f"spec.schedule {schedule!r}")
    assert says in message


def test_february_30_with_a_day_of_week_fires_on_that_weekday() -> None:
    assert invalid_schedule("0 0 30 2 1", NOW) is None  # cron ORs the two day fields


def test_no_schedule_is_not_an_error() -> None:
    assert invalid_schedule(None) is None


# run numbers


def test_next_run_number_follows_the_highest_existing_run() -> None:
    assert next_run_number([observed(2), observed(5)], [1, 2]) == 6


def test_next_run_number_never_reuses_a_number_of_a_deleted_job() -> None:
    assert next_run_number([], [1, 2, 7]) == 8


def test_first_run_is_number_one() -> None:
    assert next_run_number([], []) == 1


# the trainer's termination message


def pod(message: str | None, exit_code: int = 0, container: str = "trainer") -> Manifest:
    terminated: Manifest = {
        "exitCode": exit_code,
        "reason": "Completed" if not exit_code else "Error",
    }
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": "iris-1-abcde"},
        "status": {
            "phase": "Succeeded" if not exit_code else "Failed",
            "containerStatuses": [
                {"name": container, "state": {"terminated": terminated}, "restartCount": 0}
            ],
        },
    }


def test_trainer_message_returns_the_json_result_with_the_exit_code() -> None:
    result = {"model": "iris", "artifact": {"uri": "pvc://m/model.onnx"}}
    assert trainer_message(pod(json.dumps(result))) == {**result, "exitCode": 0}


def test_trainer_message_that_is_not_json_becomes_the_error() -> None:
    logs = "Traceback (most recent call last):\n  ...\nMemoryError\n"
    assert trainer_message(pod(logs, exit_code=137)) == {"error": logs, "exitCode": 137}


def test_trainer_message_error_keeps_the_end_of_long_logs() -> None:
    logs = "x" * 5000 + "the real cause"
    message = trainer_message(pod(logs, exit_code=1))
    assert message is not None
    assert message["error"].endswith("the real cause")
    assert len(message["error"]) <= 1024


def test_no_trainer_message_without_a_terminated_trainer() -> None:
    assert trainer_message(None) is None
    assert trainer_message(pod(None)) is None
    assert trainer_message({"metadata": {"name": "p"}, "status": {"phase": "Pending"}}) is None


def test_trainer_message_reads_the_named_container_only() -> None:
    verifier = pod(json.dumps({"verified": True}), container="verifier")
    assert trainer_message(verifier) is None
    assert trainer_message(verifier, container="verifier") == {"verified": True, "exitCode": 0}


# failure messages


def test_user_error_is_reported_as_such_and_not_retryable() -> None:
    message = {"error": "spec.dataset.target 'kind' is not a column", "reason": "UserError"}
    text, user_error = failure_message("PodFailurePolicy: exit code 2", {**message, "exitCode": 2})
    assert user_error is True
    assert text == "trainer failed (user error): spec.dataset.target 'kind' is not a column"


def test_exit_code_two_is_a_user_error_even_without_a_reason() -> None:
    _, user_error = failure_message(None, {"error": "bad estimator", "exitCode": 2})
    assert user_error is True


def test_other_trainer_errors_name_their_exit_code() -> None:
    text, user_error = failure_message(
        "BackoffLimitExceeded", {"error": "storage unreachable", "exitCode": 3}
    )
    assert user_error is False
    assert text == "trainer failed (exit code 3): storage unreachable"


def test_without_a_trainer_error_the_job_failure_is_reported() -> None:
    assert failure_message("DeadlineExceeded: Job was active longer than specified", None) == (
        "DeadlineExceeded: Job was active longer than specified",
        False,
    )
    assert failure_message(None, None) == ("the training Job failed", False)


def oom_killed_pod(limits: Manifest | None) -> Manifest:
    killed = pod("Traceback (most recent call last): ...", exit_code=137)
    killed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "OOMKilled"
    resources = {"limits": limits} if limits is not None else {}
    killed["spec"] = {"containers": [{"name": "trainer", "resources": resources}]}
    return killed


def test_an_oom_killed_trainer_is_reported_with_its_memory_limit() -> None:
    killed = oom_killed_pod({"memory": "64Mi", "cpu": "1"})
    assert oom_killed_limit(killed) == "64Mi"
    text, user_error = failure_message(
        "BackoffLimitExceeded", trainer_message(killed), oom_killed_limit(killed)
    )
    assert text == (
        "trainer OOMKilled: it used more than its memory limit (64Mi); "
        "raise spec.resources.limits.memory"
    )
    assert user_error is False


def test_oom_killed_without_a_limit_says_none_and_other_exits_are_not_oom() -> None:
    assert oom_killed_limit(oom_killed_pod(None)) == "none"
    assert oom_killed_limit(pod("boom", exit_code=1)) is None
    assert oom_killed_limit(None) is None


# the lifetime of a run's Job


def test_a_finished_run_is_collected_only_once_recorded_and_its_ttl_has_passed() -> None:
    ended = NOW - timedelta(seconds=30)
    assert collectable(SUCCEEDED, ended, 30, NOW)
    assert collectable(FAILED, ended, 0, NOW)
    assert not collectable(SUCCEEDED, ended, 60, NOW)  # not yet
    assert not collectable(RUNNING, ended, 0, NOW)  # not recorded as finished
    assert not collectable(SUCCEEDED, ended, None, NOW)  # no TTL: kept
    assert not collectable(SUCCEEDED, None, 0, NOW)


def test_a_started_run_whose_job_is_gone_is_lost_and_a_finished_one_is_not() -> None:
    history = [
        TrainingRun(name="iris-1", job="iris-1", outcome="Succeeded"),
        TrainingRun(name="iris-2", job="iris-2", outcome="Running"),
        TrainingRun(name="iris-3", job="iris-3", outcome="Running"),
    ]
    assert [run.name for run in lost_runs(history, {"iris-3"})] == ["iris-2"]


# a new spec and a run that never started


def test_a_new_spec_supersedes_an_older_run_that_never_left_pending() -> None:
    stuck = observed(outcome=RUNNING, generation=1)
    assert superseded(stuck, 2, ["Pending"])
    assert superseded(stuck, 2, [])  # no pod yet (a quota, say)


def test_a_run_that_is_training_or_of_the_current_spec_or_suspended_is_not_superseded() -> None:
    assert not superseded(observed(outcome=RUNNING, generation=1), 2, ["Pending", "Running"])
    assert not superseded(observed(outcome=RUNNING, generation=2), 2, ["Pending"])
    assert not superseded(observed(outcome=RUNNING, generation=1, suspended=True), 2, [])
    assert not superseded(observed(outcome=SUCCEEDED, generation=1), 2, [])
