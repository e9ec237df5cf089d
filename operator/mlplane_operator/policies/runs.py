"""When a TrainingJob starts a run, and what a finished run says (pure).

A run starts when nothing is running and one of these holds: the spec generation has no
run yet (a new spec), a retrain request is unanswered, or the schedule is due (at most
one catch-up for times missed while the operator was down). Runs never overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import CroniterError, croniter

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import TrainingRun

Manifest = dict[str, Any]
RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"


@dataclass(frozen=True)
class ObservedRun:
    """A run as its Job shows it."""

    name: str
    number: int
    trigger: str
    generation: int
    retrain_request: str | None
    outcome: str
    start_time: str | None
    completion_time: str | None
    suspended: bool
    failure: str | None  # the Job's reason and message when it failed
    job: str = ""  # the Job that shows the run: its own, or (searching) its trials Job


def observe_job(job: Manifest) -> ObservedRun:
    metadata, status = job["metadata"], job.get("status") or {}
    annotations = metadata.get("annotations") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        outcome, failure = SUCCEEDED, None
    elif "Failed" in conditions or "FailureTarget" in conditions:
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        outcome = FAILED
        failure = f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip(": ")
    else:
        outcome, failure = RUNNING, None
    return ObservedRun(
        name=metadata["name"],
        number=int(annotations.get(labels.RUN_NUMBER, "0")),
        trigger=annotations.get(labels.TRIGGER, "Spec"),
        generation=int(annotations.get(labels.GENERATION, "0")),
        retrain_request=annotations.get(labels.RETRAIN_REQUEST),
        outcome=outcome,
        start_time=status.get("startTime") or metadata.get("creationTimestamp"),
        # A Job that met its success criteria (or its failure target) has no
        # completionTime until its pods are gone: the condition's time stands in, so a
        # run recorded then still has the end its ttlSecondsAfterFinished counts from.
        completion_time=status.get("completionTime")
        or next(
            (
                conditions[kind].get("lastTransitionTime")
                for kind in ("SuccessCriteriaMet", "Failed", "FailureTarget")
                if kind in conditions
            ),
            None,
        ),
        suspended=bool(job.get("spec", {}).get("suspend")),
        failure=failure,
        job=metadata["name"],
    )


def searching(trials: ObservedRun, run_name: str) -> tuple[ObservedRun, bool]:
    """A run whose trials Job exists and whose own Job does not yet, as the trials Job
    shows it, and whether to create the run's Job now (to refit the best trial). Trials
    that failed are recorded by the refit, so a trials Job that ends with failed indexes
    refits too; one stopped by activeDeadlineSeconds fails the run."""
    run = replace(trials, name=run_name)
    if trials.outcome == SUCCEEDED:
        return replace(run, outcome=RUNNING, completion_time=None), True
    if trials.outcome == FAILED and "FailedIndexes" in (trials.failure or ""):
        return replace(run, outcome=RUNNING, completion_time=None, failure=None), True
    return run, False


@dataclass(frozen=True)
class RunDecision:
    trigger: str
    retrain_request: str | None = None
    schedule_time: datetime | None = None


def schedule_due(schedule: str, last: datetime, now: datetime) -> tuple[datetime | None, datetime]:
    """(the latest scheduled time in (last, now] if any, the next time after now).

    Only the latest missed time is returned, so an operator that was down for a day
    starts one catch-up run, not one per missed slot.
    """
    upcoming: datetime = croniter(schedule, now).get_next(datetime)
    latest: datetime = croniter(schedule, upcoming).get_prev(datetime)  # the latest slot <= now
    return (latest if latest > last else None), upcoming


CRON_FIELDS = "minute hour day-of-month month day-of-week"


def invalid_schedule(schedule: str | None, now: datetime | None = None) -> str | None:
    """Why `schedule` cannot drive runs, naming the field, or None when it can. Beyond
    what admission rejects (bad syntax, six fields, 30 February), this finds expressions
    admitted by an older CRD and those that never fire (e.g. "0 0 31 2,4 *")."""
    if not schedule:
        return None
    fields = schedule.split()
    if not schedule.startswith("@") and len(fields) != 5:
        seconds = "; per-second schedules are not supported" if len(fields) == 6 else ""
        return (
            f"spec.schedule {schedule!r} has {len(fields)} fields; a schedule has exactly "
            f"five ({CRON_FIELDS}){seconds}"
        )
    if not croniter.is_valid(schedule):
        return (
            f"spec.schedule {schedule!r} is not a valid cron expression "
            f"({CRON_FIELDS}, or @hourly, @daily, ...)"
        )
    try:
        croniter(schedule, now or datetime.now(UTC)).get_next(datetime)
    except CroniterError:
        return (
            f"spec.schedule {schedule!r} never fires: no date matches it "
            "(e.g. a day of the month that its months do not have)"
        )
    return None


def decide_run(
    *,
    generation: int,
    runs: list[ObservedRun],
    history_generations: set[int],
    retrain_request: str | None,
    schedule: str | None,
    last_schedule: datetime,
    now: datetime,
    suspended: bool,
) -> RunDecision | None:
    """Whether to start a run now, and why. `runs` are the Jobs that exist;
    `history_generations` comes from status, which outlives Jobs deleted by
    ttlSecondsAfterFinished. A retrain request is answered by a Job that carries it; the
    reconciler also removes the request annotation once it has started that Job."""
    if suspended or any(run.outcome == RUNNING for run in runs):
        return None
    generations = history_generations | {run.generation for run in runs}
    if generation not in generations:
        return RunDecision("Spec")
    answered = {run.retrain_request for run in runs if run.retrain_request}
    if retrain_request and retrain_request not in answered:
        return RunDecision("Retrain", retrain_request=retrain_request)
    if schedule and not invalid_schedule(schedule, now):
        due, _ = schedule_due(schedule, last_schedule, now)
        if due is not None:
            return RunDecision("Schedule", schedule_time=due)
    return None


def next_run_number(runs: list[ObservedRun], history_numbers: list[int]) -> int:
    return max([0, *history_numbers, *(run.number for run in runs)]) + 1


def trainer_message(pod: Manifest | None, container: str = "trainer") -> Manifest | None:
    """The JSON the trainer wrote to its termination message, if it wrote any."""
    if pod is None:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == container and terminated.get("message"):
            try:
                parsed = json.loads(terminated["message"])
            except ValueError:
                return {
                    "error": terminated["message"][-1024:],
                    "exitCode": terminated.get("exitCode"),
                }
            if isinstance(parsed, dict):
                return {**parsed, "exitCode": terminated.get("exitCode")}
    return None


def oom_killed_limit(pod: Manifest | None, container: str = "trainer") -> str | None:
    """The memory limit of `container` when the kernel killed it for exceeding it
    (reason OOMKilled); "none" if it had no limit; None if it was not OOMKilled."""
    if pod is None:
        return None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == container and terminated.get("reason") == "OOMKilled":
            for spec in (pod.get("spec") or {}).get("containers") or []:
                if spec.get("name") == container:
                    limits = (spec.get("resources") or {}).get("limits") or {}
                    return str(limits.get("memory", "none"))
            return "none"
    return None


def failure_message(
    job_failure: str | None, message: Manifest | None, oom_limit: str | None = None
) -> tuple[str, bool]:
    """(what a person should read, whether it is a user error that retrying cannot fix)."""
    if oom_limit is not None:
        return (
            f"trainer OOMKilled: it used more than its memory limit ({oom_limit}); "
            "raise spec.resources.limits.memory",
            False,
        )
    if message and message.get("error"):
        user_error = message.get("reason") == "UserError" or message.get("exitCode") == 2
        kind = "user error" if user_error else f"exit code {message.get('exitCode')}"
        return f"trainer failed ({kind}): {message['error']}", user_error
    return job_failure or "the training Job failed", False


def collectable(
    outcome: str, completion_time: datetime | None, ttl_seconds: int | None, now: datetime
) -> bool:
    """Whether a run's Job may be deleted now: the run is recorded as finished (so its
    result is in the status and, if it succeeded, its version exists) and the TrainingJob's
    ttlSecondsAfterFinished has passed since it ended."""
    if ttl_seconds is None or outcome not in (SUCCEEDED, FAILED) or completion_time is None:
        return False
    return completion_time + timedelta(seconds=ttl_seconds) <= now


def lost_runs(history: list[TrainingRun], job_names: set[str]) -> list[TrainingRun]:
    """Runs the status records as started but not finished whose Job no longer exists
    (deleted by a person, or by a TTL controller before the operator read the result):
    they are resumed under the same run id, whose trainer reports the result it
    published, or trains again if it never published."""
    return [run for run in history if run.outcome.value == RUNNING and run.job not in job_names]


def superseded(run: ObservedRun, generation: int, pod_phases: list[str]) -> bool:
    """Whether a new spec supersedes an active run: the run trains an older generation
    and has not started (no pod of it got further than Pending: unschedulable, waiting
    for a quota, an image that never pulls). A run that is training is left to finish:
    runs never overlap, and its version is registered; the new spec runs next. A
    suspended run is left alone (suspend holds every run)."""
    if run.outcome != RUNNING or run.suspended or not 0 < run.generation < generation:
        return False
    return all(phase == "Pending" for phase in pod_phases)
