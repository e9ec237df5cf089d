"""The quality loop's pieces (pure): where an InferenceService's prediction log lives and
the evaluation Job that joins it with the feedback (`mlplane-train evaluate`)."""

from __future__ import annotations

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import InferenceService
from mlplane_operator.builders.workloads import (
    Manifest,
    child_metadata,
    claims_of,
    container_security_context,
    dns_label,
    pod_security_context,
    s3_env,
    storage_volumes,
)
from mlplane_operator.settings import OperatorSettings

WINDOW_END = f"{labels.PREFIX}/window-end"  # on an evaluation Job: epoch seconds
EVALUATION_TTL_SECONDS = 3600  # finished evaluation Jobs go after this (read long before)


def log_root(isvc: InferenceService, settings: OperatorSettings) -> str | None:
    """`<storage>/<namespace>/<name>`: predictions/ and feedback/ below it; None without
    spec.monitoring.logging."""
    logging = isvc.spec.monitoring.logging if isvc.spec.monitoring else None
    if logging is None:
        return None
    storage = (logging.storage_uri or settings.storage_uri).rstrip("/")
    return f"{storage}/{isvc.namespace}/{isvc.name}"


def evaluation_job_name(isvc: InferenceService, window_end: int) -> str:
    return f"{dns_label(isvc.name, 40)}-{isvc.metadata['uid'][:5]}-eval-{window_end}"


def build_evaluation_job(
    isvc: InferenceService, body: Manifest, window_end: int, settings: OperatorSettings
) -> Manifest:
    """The Job that scores the window ending at `window_end` (epoch seconds); its result
    is the container's termination message."""
    quality = isvc.spec.monitoring.quality if isvc.spec.monitoring else None
    root = log_root(isvc, settings)
    assert quality is not None
    assert root is not None
    job_labels = {
        labels.INFERENCE_SERVICE: isvc.name,
        labels.MODEL: isvc.spec.model,
        labels.COMPONENT: "evaluator",
    }
    volumes, mounts = storage_volumes(claims_of(root), read_only=True)
    uses_s3 = root.startswith("s3://")
    env, env_from = s3_env(
        settings.s3_endpoint if uses_s3 else None, settings.s3_secret if uses_s3 else None
    )
    container: Manifest = {
        "name": "evaluator",
        "image": settings.runtime_image,
        "command": ["mlplane-train"],
        "args": [
            "evaluate",
            f"--log-uri={root}",
            f"--metric={quality.metric.value}",
            f"--window-seconds={quality.window_seconds}",
            f"--window-end={window_end}",
        ],
        "env": [{"name": "HOME", "value": "/tmp"}, *env],
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    if env_from:
        container["envFrom"] = env_from
    metadata = child_metadata(
        evaluation_job_name(isvc, window_end), isvc.namespace, body, job_labels
    )
    metadata["annotations"] = {WINDOW_END: str(window_end)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": max(60, min(quality.interval_seconds, 3600)),
            "ttlSecondsAfterFinished": EVALUATION_TTL_SECONDS,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": pod_security_context(),
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
