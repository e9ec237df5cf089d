"""When an object needs its next pass without any event (pure).

Most of what the operator does follows a change of the object or of one of its
children, and the watches deliver those. What time alone moves is scheduled per object
at its due time: a TrainingJob's next schedule slot and the end of a finished run's
ttlSecondsAfterFinished; an InferenceService's rollout in progress (canary steps,
analysis, deadlines), its drift polls and its next quality evaluation slot. None: only
an event (or the slow safety-net resync) needs to look at the object again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from mlplane_operator.api.v1alpha1 import InferenceService, TrainingJob
from mlplane_operator.policies.quality import seconds_until_next
from mlplane_operator.policies.runs import FAILED, SUCCEEDED, invalid_schedule

Manifest = dict[str, Any]


def seconds_until_due(
    kind: str, body: Manifest, now: datetime, poll_seconds: float
) -> float | None:
    if kind == "TrainingJob":
        return _training_job(TrainingJob.from_body(body), now, poll_seconds)
    if kind == "InferenceService":
        return _inference_service(InferenceService.from_body(body), now, poll_seconds)
    return None


def _training_job(tj: TrainingJob, now: datetime, poll_seconds: float) -> float | None:
    due: list[float] = []
    if tj.spec.schedule and not invalid_schedule(tj.spec.schedule, now):
        upcoming = tj.status.next_schedule_time
        due.append(
            max(0.0, (upcoming - now).total_seconds()) if upcoming is not None else poll_seconds
        )
    ttl = tj.spec.run_policy.ttl_seconds_after_finished
    if ttl is not None:
        for run in tj.status.runs:
            if run.outcome.value in (SUCCEEDED, FAILED) and run.completion_time is not None:
                collect = run.completion_time + timedelta(seconds=ttl)
                if collect > now:  # one already due was collected by the pass just run
                    due.append((collect - now).total_seconds())
    return min(due) if due else None


def _inference_service(isvc: InferenceService, now: datetime, poll_seconds: float) -> float | None:
    status = isvc.status
    rolling = status.canary_version is not None or (
        status.rollout_phase is not None and status.rollout_phase.value == "Progressing"
    )
    drift = isvc.spec.monitoring.drift if isvc.spec.monitoring else None
    polling_drift = drift is not None and drift.enabled and status.serving_version is not None
    due = [poll_seconds] if rolling or polling_drift else []
    quality = isvc.spec.monitoring.quality if isvc.spec.monitoring else None
    if quality is not None:  # the next evaluation slot (a finished Job is an event)
        due.append(seconds_until_next(quality.interval_seconds, now))
    return min(due) if due else None
