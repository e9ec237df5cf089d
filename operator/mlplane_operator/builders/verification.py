"""The short Job that verifies a ModelVersion's artifact before anything may serve it
(pure): it exists, its sha256 matches, it loads in ONNX Runtime and matches the declared
signature (`mlplane-train verify`)."""

from __future__ import annotations

import json

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import ModelVersion
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


def verification_job_name(mv: ModelVersion) -> str:
    return f"{dns_label(mv.name, 50)}-verify-{mv.metadata['uid'][:5]}"


def build_verification_job(
    mv: ModelVersion, body: Manifest, settings: OperatorSettings
) -> Manifest:
    artifact = mv.spec.artifact
    job_labels = {
        labels.MODEL: mv.spec.model,
        labels.VERSION: str(mv.spec.version),
        labels.COMPONENT: "verifier",
        labels.VERIFIES: mv.metadata["uid"],
    }
    args = ["verify", "--artifact-uri", artifact.uri, "--sha256", artifact.sha256]
    if mv.spec.signature is not None:
        args += ["--signature", json.dumps(mv.spec.signature.to_json(), sort_keys=True)]
    volumes, mounts = storage_volumes(claims_of(artifact.uri), read_only=True)
    env, env_from = s3_env(
        settings.s3_endpoint if artifact.uri.startswith("s3://") else None,
        (mv.spec.s3_credentials_secret or settings.s3_secret)
        if artifact.uri.startswith("s3://")
        else None,
    )
    container: Manifest = {
        "name": "verifier",
        "image": settings.runtime_image,
        "command": ["mlplane-train"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, *env],
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    if env_from:
        container["envFrom"] = env_from
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(verification_job_name(mv), mv.namespace, body, job_labels),
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 3600,
            # exit 2 means the artifact failed verification: a verdict, not a flake.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "verifier",
                            "operator": "In",
                            "values": [2],
                        },
                    }
                ]
            },
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
