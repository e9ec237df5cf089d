"""Live quality of an InferenceService: an evaluation Job per interval slot, its result
read from the Job's termination message, QualityDegraded for the serving version.

Level-based: each pass reads the evaluator Jobs, takes the newest finished one not yet
read, deletes the finished ones before it (the status holds what they said; the newest
stays for `kubectl logs`), and, while a version is served, starts the Job of the current
slot if there is none (a canary step waiting for its quality verdict brings its slot
forward: policies.quality.evaluation_slot). Job names carry the slot, so two passes (or
two replicas) never start one slot twice; a Job collected before it was read only means
the next slot answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlplane_operator import conditions, kube, labels, metrics
from mlplane_operator.api.v1alpha1 import InferenceService
from mlplane_operator.builders.quality import WINDOW_END, build_evaluation_job
from mlplane_operator.policies import quality as policy
from mlplane_operator.policies import runs
from mlplane_operator.settings import OperatorSettings

Manifest = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What a pass learnt: the status fields and the condition to report."""

    readings: list[Manifest]
    last_evaluation: datetime | None
    observed: list[conditions.Observed] = field(default_factory=list)
    degraded: str | None = None  # the message, when the serving version is degraded


def evaluate(
    isvc: InferenceService,
    body: Manifest,
    serving: int | None,
    settings: OperatorSettings,
    now: datetime,
    canary: policy.CanaryWait | None = None,
) -> Evaluation | None:
    """`canary`: a canary step waiting for its quality verdict, which wants an evaluation
    sooner than the next interval slot."""
    quality = isvc.spec.monitoring.quality if isvc.spec.monitoring else None
    if quality is None:
        return None
    status = isvc.status
    current = Evaluation([r.to_json() for r in status.quality], status.last_evaluation_time)
    read_until = int(status.last_evaluation_time.timestamp()) if status.last_evaluation_time else 0
    jobs = sorted(_evaluator_jobs(isvc), key=_window_end)
    finished = [j for j in jobs if runs.observe_job(j).outcome != runs.RUNNING]
    newest = next((j for j in reversed(finished) if _window_end(j) > read_until), None)
    if newest is not None:
        _read(isvc, body, newest, current)
    kept = _window_end(newest) if newest is not None else read_until
    for job in finished:
        if _window_end(job) < kept:
            kube.delete("Job", isvc.namespace, job["metadata"]["name"])
    slot = policy.evaluation_slot(quality.interval_seconds, now, canary)
    active = len(jobs) > len(finished)
    fresh = slot > read_until and all(_window_end(j) != slot for j in jobs)
    if serving is not None and not active and fresh:
        kube.create(build_evaluation_job(isvc, body, slot, settings))
    if serving is not None:
        reading = next((r for r in current.readings if r["version"] == serving), None)
        verdict = policy.judge(quality, reading, serving)
        current.observed.append(
            conditions.Observed("QualityDegraded", verdict.status, verdict.reason, verdict.message)
        )
        if verdict.status == "True":
            current.degraded = verdict.message
    for reading in current.readings:
        if reading.get("value") is not None:
            metrics.QUALITY.labels(
                isvc.namespace, isvc.name, str(reading["version"]), reading["metric"]
            ).set(reading["value"])
    return current


def _evaluator_jobs(isvc: InferenceService) -> list[Manifest]:
    uid = isvc.metadata["uid"]
    selector = {labels.INFERENCE_SERVICE: isvc.name, labels.COMPONENT: "evaluator"}
    return [
        job
        for job in kube.cached_list("Job", isvc.namespace, selector)
        if any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])
        and not job["metadata"].get("deletionTimestamp")
    ]


def _window_end(job: Manifest) -> int:
    value = (job["metadata"].get("annotations") or {}).get(WINDOW_END, "")
    return int(value) if value.isdigit() else 0


def _read(isvc: InferenceService, body: Manifest, job: Manifest, into: Evaluation) -> None:
    """Take a finished evaluation's result (its termination message) into `into`."""
    name = job["metadata"]["name"]
    # From the API server: the pod's cache may lag the Job's completion.
    pods = kube.list_("Pod", isvc.namespace, {"batch.kubernetes.io/job-name": name})
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    message = runs.trainer_message(pods[-1] if pods else None, container="evaluator")
    into.last_evaluation = datetime.fromtimestamp(_window_end(job), UTC)
    if runs.observe_job(job).outcome == runs.SUCCEEDED and message and "versions" in message:
        into.readings = policy.readings(message)
        text = f"evaluation {name}: {len(into.readings)} version(s) scored"
        into.observed.append(conditions.Observed("QualityEvaluated", "True", "Evaluated", text))
        return
    text = str((message or {}).get("error") or runs.observe_job(job).failure or "it failed")
    kube.post_event(body, "Warning", "EvaluationFailed", f"evaluation {name}: {text}"[:1024])
    into.observed.append(
        conditions.Observed("QualityEvaluated", "False", "EvaluationFailed", text[:1024])
    )
