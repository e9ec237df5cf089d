"""The batch/v1 Jobs of one TrainingJob run (pure): the training Job, and before it,
for a run with spec.search, the Indexed Job of the search trials."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import TrainingJob
from mlplane_operator.builders.workloads import (
    Manifest,
    child_metadata,
    claims_of,
    container_security_context,
    pod_security_context,
    s3_env,
    storage_volumes,
)
from mlplane_operator.settings import OperatorSettings

USER_ERROR_EXIT_CODE = 2  # mlplane-train: bad spec, data, estimator or parity; never retried
TRAINER_SPEC_FIELDS = ("model", "dataset", "estimator", "validation", "output", "search")
TRIALS_SUFFIX = "-trials"
TRIAL_COMPONENT = "trial"


@dataclass(frozen=True)
class Run:
    """One run of a TrainingJob: its number, why it started, and the spec generation."""

    number: int
    trigger: str
    generation: int

    def job_name(self, training_job: str) -> str:
        return f"{training_job}-{self.number}"


def trials_job_name(run_name: str) -> str:
    """The Indexed Job of a run's search trials (the run's own Job refits the best)."""
    return f"{run_name}{TRIALS_SUFFIX}"


def artifact_run_id(job_name: str, training_job_uid: str) -> str:
    """The run id the trainer publishes under (<storage>/<model>/<run id>/): the Job name
    plus the TrainingJob's uid, so that a TrainingJob deleted and applied again (a GitOps
    prune or replace), whose first Job has the same name, never writes where an earlier
    incarnation's versions point. The trainer refuses to replace published artifacts."""
    return f"{job_name}-{training_job_uid.replace('-', '')[:8]}"


def storage_uri(tj: TrainingJob, settings: OperatorSettings) -> str:
    configured = tj.spec.output.storage_uri if tj.spec.output else None
    return str(configured or settings.storage_uri).rstrip("/")


def trainer_spec(
    tj: TrainingJob, settings: OperatorSettings, feedback_log: str | None = None
) -> dict[str, Any]:
    """The part of the spec the trainer reads, with the effective output location;
    spec.dataset.feedback only with the log it reads (`feedback_log`)."""
    spec = tj.spec.to_json()
    trainer = {key: spec[key] for key in TRAINER_SPEC_FIELDS if key in spec}
    trainer["output"] = {"storageUri": storage_uri(tj, settings)}
    if feedback_log is None:
        trainer["dataset"].pop("feedback", None)
    return trainer


def build_training_job(
    tj: TrainingJob,
    body: Manifest,
    run: Run,
    settings: OperatorSettings,
    feedback_log: str | None = None,
) -> Manifest:
    """`feedback_log`: the log root of spec.dataset.feedback's InferenceService
    (builders.quality.log_root), mounted read-only; None trains without it."""
    spec = tj.spec
    output = storage_uri(tj, settings)
    job_name = run.job_name(tj.name)
    run_labels = {
        labels.MODEL: spec.model,
        labels.TRAINING_JOB: tj.name,
        labels.RUN: job_name,
        labels.COMPONENT: "trainer",
    }
    volumes, mounts = storage_volumes(
        claims_of(spec.dataset.uri, output),
        read_only=False,
        read_only_claims=claims_of(feedback_log),
    )
    uses_s3 = any(
        (uri or "").startswith("s3://") for uri in (spec.dataset.uri, output, feedback_log)
    )
    s3_vars, env_from = s3_env(
        settings.s3_endpoint if uses_s3 else None,
        (spec.s3_credentials_secret or settings.s3_secret_for(spec.image)) if uses_s3 else None,
    )
    env: list[Manifest] = [
        {
            "name": "MLPLANE_TRAINING_SPEC",
            "value": json.dumps(trainer_spec(tj, settings, feedback_log)),
        },
        {"name": "MLPLANE_MODEL", "value": spec.model},
        {"name": "MLPLANE_RUN", "value": artifact_run_id(job_name, tj.metadata["uid"])},
        {"name": "MLPLANE_OUTPUT_URI", "value": output},
        {"name": "HOME", "value": "/tmp"},
        *([{"name": "MLPLANE_FEEDBACK_LOG_URI", "value": feedback_log}] if feedback_log else []),
        *s3_vars,
        *[var.to_json() for var in spec.env or []],
    ]
    container: Manifest = {
        "name": "trainer",
        "image": spec.image or settings.runtime_image,
        "command": ["mlplane-train"],
        "env": env,
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    if spec.resources:
        container["resources"] = spec.resources.to_json()
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        "automountServiceAccountToken": False,
    }
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_json() for t in spec.tolerations]
    policy = spec.run_policy
    job_spec: Manifest = {
        "backoffLimit": policy.backoff_limit,
        "suspend": policy.suspend,
        # A user error (exit 2) fails the run at once: retrying cannot fix a bad spec.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": "trainer",
                        "operator": "In",
                        "values": [USER_ERROR_EXIT_CODE],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {"metadata": {"labels": run_labels}, "spec": pod_spec},
    }
    if policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = policy.active_deadline_seconds
    # No ttlSecondsAfterFinished: the TTL controller would delete the Job, and the pod
    # with the trainer's result, before the operator has read it. The operator deletes a
    # finished run's Job itself once the run is recorded (policies.runs.collectable).
    metadata = child_metadata(job_name, tj.namespace, body, run_labels)
    metadata["annotations"] = {
        labels.TRIGGER: run.trigger,
        labels.GENERATION: str(run.generation),
        labels.RUN_NUMBER: str(run.number),
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def build_trials_job(
    tj: TrainingJob,
    body: Manifest,
    run: Run,
    settings: OperatorSettings,
    feedback_log: str | None = None,
) -> Manifest:
    """The search trials of a run as one Indexed Job: completions = trials, at most
    `parallelism` pods at once, spread over nodes; each pod runs `mlplane-train trial`,
    whose trial is its completion index. Same image, data, storage and run id as the
    run's training Job, which refits the best trial once this Job has finished."""
    search = tj.spec.search
    assert search is not None, "build_trials_job needs spec.search"
    job = build_training_job(tj, body, run, settings, feedback_log)
    run_name = job["metadata"]["name"]
    job["metadata"]["name"] = trials_job_name(run_name)
    template = job["spec"]["template"]
    for meta in (job["metadata"], template["metadata"]):
        meta["labels"] = {**meta["labels"], labels.COMPONENT: TRIAL_COMPONENT}
    container = template["spec"]["containers"][0]
    container["command"] = ["mlplane-train", "trial"]
    template["spec"]["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {labels.RUN: run_name}},
        }
    ]
    trials = search.trial_count()
    spec = job["spec"]
    del spec["backoffLimit"]  # per index instead: one trial's retries are its own
    spec.update(
        completionMode="Indexed",
        completions=trials,
        parallelism=min(search.parallelism, trials),
        backoffLimitPerIndex=tj.spec.run_policy.backoff_limit,
    )
    # A trial records its own user errors and exits 0; an exit 2 (a spec it cannot
    # read) fails that index at once, and the refit counts it as a failed trial.
    spec["podFailurePolicy"]["rules"][0]["action"] = "FailIndex"
    return job
