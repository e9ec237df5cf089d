"""The ModelVersion a successful run registers (pure)."""

from __future__ import annotations

import json
import math
from typing import Any

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import API_VERSION, TrainingJob, version_name

Manifest = dict[str, Any]
TRUNCATED = {"truncated": True}  # what the trainer puts for a part shed to fit in 4 KiB


def ledger_name(model: str) -> str:
    """The ConfigMap of a model's version ledger."""
    return f"mlplane-versions-{model}"


def build_model_version(
    tj: TrainingJob, run: str, result: Manifest, version: int, image: str
) -> Manifest:
    """A ModelVersion from the trainer's result. Its stage starts at None: the requested
    stage and the promotion policy are applied only once the artifact is verified."""
    spec = tj.spec
    artifact = result["artifact"]
    estimator = result.get("estimator") or {}
    annotations = {}
    registration = spec.registration
    if registration.stage.value != "None":
        annotations[labels.REQUESTED_STAGE] = registration.stage.value
    if registration.auto_promote is not None:
        annotations[labels.AUTO_PROMOTE] = json.dumps(
            registration.auto_promote.to_json(), sort_keys=True
        )
    lineage: Manifest = {
        "trainingJob": tj.name,
        "run": run,
        "estimator": {"class": estimator.get("class", spec.estimator.class_)},
        "image": image,
    }
    if estimator.get("params") and estimator["params"] != TRUNCATED:
        lineage["estimator"]["params"] = estimator["params"]
    search = search_lineage(result.get("search"))
    if search:
        lineage["search"] = search
    dataset = result.get("dataset") or {}
    if dataset.get("uri"):
        lineage["dataset"] = {key: dataset[key] for key in ("uri", "sha256") if dataset.get(key)}
    feedback = result.get("feedback") or {}
    if all(feedback.get(key) for key in ("inferenceService", "uri", "sha256")):
        lineage["feedback"] = {
            **{key: feedback[key] for key in ("inferenceService", "uri", "sha256")},
            "rows": int(feedback.get("rows") or 0),
        }
    model_spec: Manifest = {
        "model": spec.model,
        "version": version,
        "artifact": {
            "uri": artifact["uri"],
            "sha256": artifact["sha256"],
            "format": artifact.get("format", "onnx"),
        },
        "lineage": lineage,
        "stage": "None",
    }
    if artifact.get("sizeBytes") is not None:
        model_spec["artifact"]["sizeBytes"] = artifact["sizeBytes"]
    if spec.s3_credentials_secret and str(artifact["uri"]).startswith("s3://"):
        # What wrote the artifact reads it: verification and serving use the same Secret.
        model_spec["s3CredentialsSecret"] = spec.s3_credentials_secret
    signature = result.get("signature")
    if isinstance(signature, dict) and "inputs" in signature and "outputs" in signature:
        model_spec["signature"] = signature  # not the placeholder of a shortened result
    metrics = {
        name: float(value)
        for name, value in (result.get("metrics") or {}).items()
        # Numbers only: not NaN (not JSON), not the {"truncated": true} of a shortened result.
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    if metrics:
        model_spec["metrics"] = metrics
    baseline = result.get("baseline") or {}
    if baseline.get("uri") and baseline.get("sha256"):
        model_spec["baseline"] = {"uri": baseline["uri"], "sha256": baseline["sha256"]}
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": {
            "name": version_name(spec.model, version),
            "namespace": tj.namespace,
            "labels": {
                **labels.MANAGED_BY,
                labels.MODEL: spec.model,
                labels.VERSION: str(version),
                labels.TRAINING_JOB: tj.name,
                labels.TRAINING_JOB_UID: tj.metadata["uid"],
                labels.RUN: run,
            },
            "annotations": annotations,
        },
        "spec": model_spec,
    }


SEARCH_LINEAGE_FIELDS = (
    "strategy", "seed", "trials", "succeeded", "failed", "cvFolds", "bestTrial", "bestParams",
    "bestMetric", "metricSpread",
)  # fmt: skip


def search_lineage(summary: Any) -> Manifest | None:
    """The lineage of a search from the trainer's summary: what was searched and how
    the trials spread (the trial list stays in the run's result.json)."""
    if not isinstance(summary, dict) or "strategy" not in summary:
        return None
    return {
        key: summary[key]
        for key in SEARCH_LINEAGE_FIELDS
        if summary.get(key) is not None and summary[key] != TRUNCATED
    }


def build_version_ledger(
    model: str, namespace: str, data: dict[str, str], resource_version: str | None
) -> Manifest:
    """The ConfigMap that keeps a model's version numbers (policies.versions). No owner:
    it outlives every ModelVersion and TrainingJob of the model, which is its point."""
    metadata: Manifest = {
        "name": ledger_name(model),
        "namespace": namespace,
        "labels": {**labels.MANAGED_BY, labels.MODEL: model},
        "annotations": {
            f"{labels.PREFIX}/description": "version numbers given to this model; the "
            "operator never gives a number twice. Written by mlplane, do not edit."
        },
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
