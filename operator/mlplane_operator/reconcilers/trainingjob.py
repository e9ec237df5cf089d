"""TrainingJob → Job per run → ModelVersion.

Level-based: every call reads the TrainingJob, its Jobs and their pods, registers the
versions of finished runs that have none, starts a run when one is due, and writes the
status once, only if it changed. Safe to run twice and after a crash at any point: Job
names are deterministic and a run's version is found again by its label.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from mlplane_operator import conditions, kube, labels, metrics
from mlplane_operator.api.v1alpha1 import InferenceService, MetricValue, TrainingJob, TrainingRun
from mlplane_operator.api.v1alpha1.trainingjob import MAX_STATUS_TRIALS, RunOutcome
from mlplane_operator.builders.quality import log_root
from mlplane_operator.builders.registry import build_model_version
from mlplane_operator.builders.training import (
    TRIAL_COMPONENT,
    Run,
    build_training_job,
    build_trials_job,
    storage_uri,
    trials_job_name,
)
from mlplane_operator.builders.workloads import build_storage_claim, claims_of
from mlplane_operator.policies import images, versions
from mlplane_operator.policies import runs as policy
from mlplane_operator.reconcilers import ledger
from mlplane_operator.reconcilers.locks import object_lock, reconcile_latest
from mlplane_operator.settings import OperatorSettings

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
SCHEDULE_TIME = f"{labels.PREFIX}/schedule-time"
RESUMED = f"{labels.PREFIX}/resumed"  # on a training Job created again for a lost run
MAX_REGISTRATION_ATTEMPTS = 20
CLAIM_SEEN_SECONDS = 60.0  # a claim deleted by a person is created again after this
_claims_seen: dict[tuple[str, str], float] = {}  # (namespace, claim) -> when it existed
RECORDED = (policy.SUCCEEDED, policy.FAILED, RunOutcome.CANCELLED.value)  # final outcomes


def reconcile(body: Manifest, settings: OperatorSettings) -> None:
    metadata = body["metadata"]
    lock = object_lock("TrainingJob", metadata["namespace"], metadata["name"])
    reconcile_latest("TrainingJob", body, lock, lambda latest: _reconcile(latest, settings))


def _reconcile(body: Manifest, settings: OperatorSettings) -> None:
    tj = TrainingJob.from_body(body)
    now = datetime.now(UTC)
    uid = tj.metadata["uid"]
    jobs = [
        job
        for job in kube.cached_list("Job", tj.namespace, {labels.TRAINING_JOB: tj.name})
        if any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or [])
        and not job["metadata"].get("deletionTimestamp")  # superseded or collected
    ]
    history: dict[str, TrainingRun] = {run.name: run for run in tj.status.runs}
    observed = _observe(tj, body, jobs, history, settings)
    _collect_recorded_jobs(tj, observed, now)

    search = tj.status.search.to_json() if tj.status.search else None
    for run in observed:
        previous = history.get(run.name)
        if previous is not None and previous.outcome.value in RECORDED:
            continue  # recorded already
        history[run.name], searched = _record(tj, body, run, previous, settings)
        search = searched or search
    cancelled = _supersede_pending_runs(tj, body, observed, history, now)
    observed = [run for run in observed if run.name not in cancelled]

    active = [run for run in observed if run.outcome == policy.RUNNING]
    active_run = active[0].name if active else None
    existing = {run.name for run in observed} | {run.job for run in observed}
    lost = [
        run
        for run in policy.lost_runs(list(history.values()), existing)
        # The cache may not have a Job created a moment ago (by another replica, say):
        # only a Job the API server does not have either is lost.
        if kube.get("Job", tj.namespace, run.job or run.name) is None
    ]
    for lost_run in lost:
        history[lost_run.name] = _resume(tj, body, lost_run, settings)
        active_run = active_run or lost_run.name
    suspend = tj.spec.run_policy.suspend
    for run in active:
        if run.suspended != suspend:
            kube.patch_merge("Job", tj.namespace, run.job, {"spec": {"suspend": suspend}})

    schedule_error = policy.invalid_schedule(tj.spec.schedule, now)
    spec_error = _spec_error(tj, schedule_error, settings)
    last_schedule = _last_schedule(tj, jobs)
    decision = (
        None
        if spec_error or lost
        else policy.decide_run(
            generation=tj.metadata.get("generation", 1),
            runs=observed,
            history_generations={r.generation for r in history.values() if r.generation},
            retrain_request=(tj.metadata.get("annotations") or {}).get(labels.RETRAIN_REQUESTED),
            schedule=tj.spec.schedule,
            last_schedule=last_schedule,
            now=now,
            suspended=suspend,
        )
    )
    if decision is not None:
        started = _start_run(tj, body, decision, observed, history, settings)
        history[started.name] = started
        if started.outcome == RunOutcome.RUNNING:
            active_run = started.name
        if decision.schedule_time is not None:
            last_schedule = decision.schedule_time

    _write_status(
        tj, body, list(history.values()), active_run, last_schedule, spec_error, now, settings,
        search,
    )  # fmt: skip


def _observe(
    tj: TrainingJob,
    body: Manifest,
    jobs: list[Manifest],
    history: dict[str, TrainingRun],
    settings: OperatorSettings,
) -> list[policy.ObservedRun]:
    """The runs as their Jobs show them. A searching run has a trials Job and, once its
    trials are done, its own Job (created here) that refits the best trial; until then
    the trials Job shows the run."""
    trial_jobs = [job for job in jobs if _component(job) == TRIAL_COMPONENT]
    observed = [policy.observe_job(job) for job in jobs if _component(job) != TRIAL_COMPONENT]
    names = {run.name for run in observed}
    for job in trial_jobs:
        run_name = job["metadata"]["labels"].get(labels.RUN, "")
        if run_name in names:
            continue
        trials = policy.observe_job(job)
        previous = history.get(run_name)
        if previous is not None and previous.outcome.value in RECORDED:
            observed.append(replace(trials, name=run_name))  # for its ttlSecondsAfterFinished
            continue
        run, refit = policy.searching(trials, run_name)
        if refit:
            created = _start_refit(tj, body, job, run, settings)
            run = policy.observe_job(created) if created is not None else run
        observed.append(run)
    return sorted(observed, key=lambda r: r.number)


def _component(job: Manifest) -> str | None:
    return (job["metadata"].get("labels") or {}).get(labels.COMPONENT)


def _start_refit(
    tj: TrainingJob,
    body: Manifest,
    trials: Manifest,
    run: policy.ObservedRun,
    settings: OperatorSettings,
) -> Manifest | None:
    """Create the run's own Job, which refits the best trial; it carries the trials
    Job's schedule and retrain annotations, so the run answers what started it."""
    job = build_training_job(tj, body, Run(run.number, run.trigger, run.generation), settings)
    carried = (labels.RETRAIN_REQUEST, SCHEDULE_TIME)
    annotations = trials["metadata"].get("annotations") or {}
    job["metadata"]["annotations"].update({k: annotations[k] for k in carried if k in annotations})
    created = kube.create(job)
    if created is None:  # created by an earlier pass
        return kube.get("Job", tj.namespace, run.name)
    text = f"run {run.name}: the search trials finished; refitting the best"
    kube.post_event(body, "Normal", "TrialsFinished", text)
    return created


def _spec_error(
    tj: TrainingJob, schedule_error: str | None, settings: OperatorSettings
) -> tuple[str, str] | None:
    """(reason, message) when the spec can start no run until a person changes it."""
    if schedule_error:
        return "InvalidSchedule", schedule_error
    refused = images.image_refusal(tj.spec.image, settings)
    if refused:
        return "ImageNotAllowed", refused
    output = storage_uri(tj, settings)
    uses_s3 = any((uri or "").startswith("s3://") for uri in (tj.spec.dataset.uri, output))
    refused = images.credentials_refusal(
        tj.spec.image, uses_s3, tj.spec.s3_credentials_secret, settings
    )
    if refused:
        return "NoCredentials", f"{refused}, or set spec.s3CredentialsSecret"
    return None


def _announce_stall(tj: TrainingJob, body: Manifest, reason: str, message: str) -> None:
    """One Warning Event when the TrainingJob becomes Stalled for `reason`, not one per
    pass: the stored Stalled condition says whether it was announced."""
    stored = conditions.find([c.to_json() for c in tj.status.conditions], "Stalled") or {}
    if (stored.get("status"), stored.get("reason"), stored.get("message")) != (
        "True",
        reason,
        message,
    ):
        kube.post_event(body, "Warning", reason, message)


def _last_schedule(tj: TrainingJob, jobs: list[Manifest]) -> datetime:
    """The latest schedule slot already served: from status, or from the Jobs themselves
    (a crash between creating a Job and writing the status must not run a slot twice)."""
    times: list[datetime] = [tj.status.last_schedule_time] if tj.status.last_schedule_time else []
    for job in jobs:
        stamp = (job["metadata"].get("annotations") or {}).get(SCHEDULE_TIME)
        if stamp:
            times.append(datetime.fromisoformat(stamp))
    created = datetime.fromisoformat(tj.metadata["creationTimestamp"].replace("Z", "+00:00"))
    return max([created, *times])


def _start_run(
    tj: TrainingJob,
    body: Manifest,
    decision: policy.RunDecision,
    observed: list[policy.ObservedRun],
    history: dict[str, TrainingRun],
    settings: OperatorSettings,
) -> TrainingRun:
    number = policy.next_run_number(
        observed,
        [int(name.rsplit("-", 1)[-1]) for name in history if name.rsplit("-", 1)[-1].isdigit()],
    )
    run = Run(number=number, trigger=decision.trigger, generation=tj.metadata.get("generation", 1))
    build = build_trials_job if tj.spec.search else build_training_job
    job = build(tj, body, run, settings, _feedback_log(tj, body, run, settings))
    _ensure_default_storage(tj, settings)
    annotations = job["metadata"]["annotations"]
    if decision.retrain_request:
        annotations[labels.RETRAIN_REQUEST] = decision.retrain_request
    if decision.schedule_time is not None:
        annotations[SCHEDULE_TIME] = decision.schedule_time.isoformat()
    record = TrainingRun(
        name=run.job_name(tj.name),
        job=job["metadata"]["name"],
        trigger=decision.trigger,
        generation=run.generation,
        start_time=datetime.now(UTC),
        outcome="Running",
    )
    try:
        created = kube.create(job)
    except kube.Rejected as error:
        # Admitted as a TrainingJob, refused as a Job (a node selector or resource the
        # Job validation rejects, say): the run fails once, and the generation with it.
        created = None
        record = _failed(body, record, "JobRejected", f"the API server rejected its Job: {error}")
        record.completion_time = record.start_time
    if created is not None:
        metrics.RUNS.labels(event="started").inc()
        kube.post_event(body, "Normal", "RunStarted",
                        f"run {record.name} started ({decision.trigger})")  # fmt: skip
    if decision.retrain_request:
        # The request is answered: consume it, so it cannot start a second run.
        consumed = kube.patch_merge(
            "TrainingJob", tj.namespace, tj.name,
            {"metadata": {"annotations": {labels.RETRAIN_REQUESTED: None}}},
        )  # fmt: skip
        body["metadata"]["resourceVersion"] = consumed["metadata"]["resourceVersion"]
    return record


def _supersede_pending_runs(
    tj: TrainingJob,
    body: Manifest,
    observed: list[policy.ObservedRun],
    history: dict[str, TrainingRun],
    now: datetime,
) -> set[str]:
    """Cancel active runs of an older generation that never started (policies.runs.
    superseded), so that a fixed spec is not stuck behind a run that can never start."""
    generation = tj.metadata.get("generation", 1)
    cancelled: set[str] = set()
    for run in observed:
        if run.outcome != policy.RUNNING or not 0 < run.generation < generation:
            continue
        pods = kube.cached_list("Pod", tj.namespace, {"batch.kubernetes.io/job-name": run.job})
        phases = [(pod.get("status") or {}).get("phase", "Pending") for pod in pods]
        if not policy.superseded(run, generation, phases):
            continue
        for name in {run.job, run.name, trials_job_name(run.name)}:  # a search has two
            kube.delete("Job", tj.namespace, name)
        record = history[run.name]
        record.outcome, record.completion_time = RunOutcome.CANCELLED, now
        record.message = f"superseded by generation {generation} before it started"
        kube.post_event(body, "Normal", "RunSuperseded", f"run {run.name}: {record.message}")
        cancelled.add(run.name)
    return cancelled


def _collect_recorded_jobs(
    tj: TrainingJob, observed: list[policy.ObservedRun], now: datetime
) -> None:
    """runPolicy.ttlSecondsAfterFinished, applied by the operator: a finished run's Job
    (and its pods, by garbage collection) goes only once the stored status records the
    run, so the result is never lost with it."""
    ttl = tj.spec.run_policy.ttl_seconds_after_finished
    recorded = {run.name: run for run in tj.status.runs}
    for run in observed:
        stored = recorded.get(run.name)
        if stored and policy.collectable(stored.outcome.value, stored.completion_time, ttl, now):
            for name in {run.job, run.name, trials_job_name(run.name)}:  # a search has two
                kube.delete("Job", tj.namespace, name)


def _resume(
    tj: TrainingJob, body: Manifest, run: TrainingRun, settings: OperatorSettings
) -> TrainingRun:
    """Create the Job of a run again, under its run id, after it was deleted before its
    result was read: the trainer reports the result it published, or trains again if
    it had not got that far. The run keeps its place in the history."""
    number = run.name.rsplit("-", 1)[-1]
    if not number.isdigit() or Run(int(number), "Spec", 1).job_name(tj.name) != run.name:
        run.outcome, run.message = RunOutcome.FAILED, "its Job was deleted before it finished"
        return run
    trigger = run.trigger.value if run.trigger else "Spec"
    resumed = Run(int(number), trigger, run.generation or tj.metadata.get("generation", 1))
    # A search starts again at its trials: those that published report it at once.
    build = build_trials_job if tj.spec.search else build_training_job
    job = build(tj, body, resumed, settings, _feedback_log(tj, body, resumed, settings))
    job["metadata"]["annotations"][RESUMED] = "true"
    if kube.create(job) is not None:
        text = (
            f"run {run.name}: its Job was deleted before its result was read; started it "
            "again under the same run id (it reports what it published, or trains again)"
        )
        kube.post_event(body, "Normal", "RunResumed", text)
    run.message = "resumed: its Job was deleted before its result was read"
    return run


def _feedback_log(
    tj: TrainingJob, body: Manifest, run: Run, settings: OperatorSettings
) -> str | None:
    """The log root spec.dataset.feedback reads; None, said in a Warning Event, while its
    InferenceService does not exist or logs nothing (the run trains without its rows)."""
    feedback = tj.spec.dataset.feedback
    if feedback is None:
        return None
    name = feedback.inference_service
    found = kube.cached_get("InferenceService", tj.namespace, name)
    root = log_root(InferenceService.from_body(found), settings) if found else None
    if root is None:
        why = "does not exist" if found is None else "has no spec.monitoring.logging"
        text = (
            f"run {run.job_name(tj.name)}: spec.dataset.feedback: InferenceService {name} "
            f"{why}; the run trains on the dataset alone"
        )
        kube.post_event(body, "Warning", "FeedbackUnavailable", text)
    return root


def _ensure_default_storage(tj: TrainingJob, settings: OperatorSettings) -> None:
    """Create the operator's default artifacts PVC in this namespace on first use. It is
    user data: nothing owns it, so it outlives TrainingJobs and the operator itself."""
    default_claims = claims_of(settings.storage_uri)
    if not settings.storage_pvc_create or not default_claims:
        return
    if default_claims[0] not in claims_of(storage_uri(tj, settings)):
        return
    key = (tj.namespace, default_claims[0])
    if time.monotonic() - _claims_seen.get(key, -CLAIM_SEEN_SECONDS) < CLAIM_SEEN_SECONDS:
        return  # seen a moment ago: not one GET per run when a thousand runs start
    if kube.get("PersistentVolumeClaim", tj.namespace, default_claims[0]) is None:
        kube.create(build_storage_claim(default_claims[0], tj.namespace, settings))
    _claims_seen[key] = time.monotonic()


def _record(
    tj: TrainingJob,
    body: Manifest,
    run: policy.ObservedRun,
    previous: TrainingRun | None,
    settings: OperatorSettings,
) -> tuple[TrainingRun, Manifest | None]:
    """The history entry of a run, and status.search when it registered a search; registers
    the version of a run that just succeeded."""
    record = TrainingRun(
        name=run.name,
        job=run.job or run.name,
        trigger=run.trigger,
        generation=run.generation or None,
        start_time=run.start_time,
        completion_time=run.completion_time,
        outcome=run.outcome,
    )
    if run.outcome == policy.RUNNING:
        return record, None
    pod = _run_pod(tj.namespace, record.job or run.name, succeeded=run.outcome == policy.SUCCEEDED)
    message = policy.trainer_message(pod)
    if run.outcome == policy.SUCCEEDED and pod is None:
        # The pod with the result is gone (pod garbage collection, a node lost): delete
        # the Job too, so that the run is resumed and its trainer reports the result
        # from result.json next to the artifacts.
        kube.delete("Job", tj.namespace, run.name)
        record.outcome = RunOutcome.RUNNING
        record.message = "the trainer's pod is gone; reading the run's result again"
        return record, None
    if run.outcome == policy.SUCCEEDED:
        if not message or "artifact" not in message:
            record.outcome = RunOutcome.FAILED
            record.message = "the trainer succeeded but wrote no result to its termination message"
        else:
            try:
                version = _register(tj, run.name, message, settings)
            except kube.Rejected as error:
                text = f"the API server rejected its ModelVersion: {error}"
                return _failed(body, record, "RegistrationRejected", text), None
            record.version = version
            record.metric = _headline(tj, message.get("metrics") or {})
            record.message = f"registered {tj.spec.model}-v{version}"
            metrics.RUNS.labels(event="succeeded").inc()
            kube.post_event(
                body, "Normal", "VersionRegistered", f"run {run.name}: {record.message}"
            )
            return record, search_status(run.name, message.get("search"))
    oom_limit = policy.oom_killed_limit(pod)
    text, user_error = policy.failure_message(run.failure, message, oom_limit)
    reason = "OOMKilled" if oom_limit else "UserError" if user_error else "RunFailed"
    return _failed(body, record, reason, text), None


def search_status(run: str, summary: Any) -> Manifest | None:
    """status.search from the search summary in a registered run's result."""
    if not isinstance(summary, dict) or "bestParams" not in summary:
        return None
    trials = summary.get("trialResults")
    status: Manifest = {
        "run": run,
        "strategy": summary.get("strategy"),
        "totalTrials": summary.get("trials"),
        "succeeded": summary.get("succeeded"),
        "failed": summary.get("failed"),
        "trials": [
            {**t, "message": str(t["message"])[:256]} if "message" in t else t
            for t in (trials if isinstance(trials, list) else [])[:MAX_STATUS_TRIALS]
        ],
        "bestTrial": summary.get("bestTrial"),
        "bestParams": summary["bestParams"],
        "bestMetric": summary.get("bestMetric"),
    }
    return {key: value for key, value in status.items() if value is not None}


def _failed(body: Manifest, record: TrainingRun, reason: str, text: str) -> TrainingRun:
    """Record a run as failed, once: a failed run is never recorded again (nor retried
    for the same generation), so a spec that can never work stalls with one Event."""
    record.outcome = RunOutcome.FAILED
    record.message = text[:1024]
    metrics.RUNS.labels(event="failed").inc()
    kube.post_event(body, "Warning", reason, f"run {record.name}: {text}")
    return record


def _run_pod(namespace: str, job: str, succeeded: bool) -> Manifest | None:
    """The pod with a finished run's result, read from the API server: the pod's cache
    may not yet have the termination message the Job's completion was decided on."""
    pods = kube.list_("Pod", namespace, {"batch.kubernetes.io/job-name": job})
    wanted = "Succeeded" if succeeded else "Failed"
    matching = [p for p in pods if (p.get("status") or {}).get("phase") == wanted] or pods
    matching.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    return matching[-1] if matching else None


def _register(tj: TrainingJob, run: str, result: Manifest, settings: OperatorSettings) -> int:
    """Create `<model>-v<N>` for this run exactly once, with a number never given before.

    The number comes from the model's version ledger (policies.versions), written with a
    resourceVersion precondition, so that two replicas, two TrainingJobs of one model or
    a crash at any point never give one number twice nor one run two numbers. The
    version's labels (the TrainingJob's uid and the run) find a registration done before
    a crash; a TrainingJob applied again under the same name is another incarnation
    (another uid) and registers its own version.
    """
    uid = tj.metadata["uid"]
    key = versions.run_key(uid, run)
    image = tj.spec.image or settings.runtime_image
    for _ in range(MAX_REGISTRATION_ATTEMPTS):
        model_versions = [
            mv
            for mv in kube.list_("ModelVersion", tj.namespace)  # hand-applied ones have no labels
            if mv["spec"].get("model") == tj.spec.model
        ]
        mine = [mv for mv in model_versions if _registered_by(mv, tj.name, uid, run, result)]
        if mine:
            return int(mine[0]["spec"]["version"])
        stored, current = ledger.read(tj.spec.model, tj.namespace)
        allocation = versions.allocate(
            current, key, {int(mv["spec"]["version"]) for mv in model_versions}
        )
        if allocation.changed and not ledger.write(
            tj.spec.model, tj.namespace, stored, allocation.ledger
        ):
            continue  # another allocation won: read again
        manifest = build_model_version(tj, run, result, allocation.version, image)
        if kube.create(manifest) is not None:
            metrics.VERSIONS.inc()
            return allocation.version
        # The name exists: ours (a concurrent pass of this run) or one applied by hand;
        # the next attempt finds the former by its labels and steps over the latter.
    raise kube.TransientError(f"could not allocate a version number for {tj.spec.model}")


def _registered_by(mv: Manifest, tj_name: str, uid: str, run: str, result: Manifest) -> bool:
    found = mv["metadata"].get("labels") or {}
    if found.get(labels.TRAINING_JOB) != tj_name or found.get(labels.RUN) != run:
        return False
    if labels.TRAINING_JOB_UID in found:
        return bool(found[labels.TRAINING_JOB_UID] == uid)
    # Registered before versions carried the uid: the same run only if the same artifact.
    artifact = mv["spec"].get("artifact") or {}
    return bool(
        artifact.get("uri") == result["artifact"].get("uri")
        and artifact.get("sha256") == result["artifact"].get("sha256")
    )


def _headline(tj: TrainingJob, values: Manifest) -> MetricValue | None:
    policy_metric = tj.spec.registration.auto_promote
    names = [policy_metric.metric.value] if policy_metric else []
    names += [m.value for m in tj.spec.validation.metrics or []] + sorted(values)
    for name in names:
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return MetricValue(name=name, value=float(value))
    return None


def _write_status(
    tj: TrainingJob,
    body: Manifest,
    runs: list[TrainingRun],
    active_run: str | None,
    last_schedule: datetime,
    spec_error: tuple[str, str] | None,
    now: datetime,
    settings: OperatorSettings,
    search: Manifest | None,
) -> None:
    runs = sorted(runs, key=lambda r: (r.start_time or now, r.name))[-settings.run_history_limit :]
    finished = [r for r in runs if r.outcome.value in (policy.SUCCEEDED, policy.FAILED)]
    last = finished[-1] if finished else None
    registered = [r for r in runs if r.version is not None]
    generation = tj.metadata.get("generation", 1)
    if spec_error:
        phase, observed = "Failed", conditions.stalled(*spec_error)
        _announce_stall(tj, body, *spec_error)
    elif tj.spec.run_policy.suspend:
        phase, observed = "Suspended", conditions.ready("Suspended", "the TrainingJob is suspended")
    elif active_run:
        phase = "Running"
        observed = conditions.progressing("RunActive", f"run {active_run} is running")
    elif last is None:
        phase, observed = "Pending", conditions.progressing("Pending", "waiting for the first run")
    elif last.outcome.value == policy.FAILED:
        phase = "Failed"
        observed = conditions.stalled("RunFailed", last.message or "the last run failed")
    else:
        phase = "Scheduled" if tj.spec.schedule else "Succeeded"
        observed = conditions.ready("RunSucceeded", last.message or "the last run succeeded")
    status: Manifest = {
        "observedGeneration": generation,
        "phase": phase,
        "runs": [r.to_json() for r in runs],
        "activeRun": active_run,
        "lastVersion": registered[-1].version if registered else tj.status.last_version,
        "lastMetric": registered[-1].metric.to_json()
        if registered and registered[-1].metric
        else (tj.status.last_metric.to_json() if tj.status.last_metric else None),
        "conditions": conditions.merge_conditions(
            [c.to_json() for c in tj.status.conditions], observed, generation
        ),
    }
    if search is not None:
        status["search"] = search
    status["nextScheduleTime"] = None
    if tj.spec.schedule and not policy.invalid_schedule(tj.spec.schedule, now):
        _, upcoming = policy.schedule_due(tj.spec.schedule, last_schedule, now)
        status["nextScheduleTime"] = upcoming.strftime("%Y-%m-%dT%H:%M:%SZ")
        if last_schedule > datetime.fromisoformat(
            tj.metadata["creationTimestamp"].replace("Z", "+00:00")
        ):
            status["lastScheduleTime"] = last_schedule.strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.write_status_if_changed(body, status)
