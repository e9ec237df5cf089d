"""Realistic inputs for the pure functions, built with the real API models: objects as
the API server returns them (metadata with namespace, uid, generation, creationTimestamp)
and the trainer's result as `mlplane-train` writes it."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from mlplane_operator.api.v1alpha1 import (
    API_VERSION,
    InferenceService,
    ModelVersion,
    TrainingJob,
)
from mlplane_operator.settings import OperatorSettings

Manifest = dict[str, Any]

NAMESPACE = "ml-team"
CREATED = "2025-01-06T09:00:00Z"
MODEL_SHA = "3f1c9a0d5e7b2468ace13579bdf02468ace13579bdf02468ace13579bdf02468"
PROFILE_SHA = "9b2e" * 16
DATA_SHA = "c0ffee00" * 8
IMAGE = "registry.example.com/mlplane/runtime:1.4.0"
S3_ENDPOINT = "http://minio.storage:9000"
S3_SECRET = "mlplane-s3"


def metadata(name: str, generation: int = 1, **extra: Any) -> Manifest:
    return {
        "name": name,
        "namespace": NAMESPACE,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{NAMESPACE}/{name}")),
        "generation": generation,
        "creationTimestamp": CREATED,
        "resourceVersion": "4711",
        **extra,
    }


def settings(**overrides: Any) -> OperatorSettings:
    """Operator settings with S3 configured, so tests can prove it is used only for s3://."""
    values: dict[str, Any] = {
        "runtime_image": IMAGE,
        "storage_uri": "pvc://mlplane-artifacts/models",
        "s3_endpoint": S3_ENDPOINT,
        "s3_secret": S3_SECRET,
    }
    values.update(overrides)
    return OperatorSettings(**values)


def trainingjob_body(name: str = "iris", generation: int = 1, **spec: Any) -> Manifest:
    """examples/iris/trainingjob.yaml as the API server returns it; `spec` overrides."""
    base: Manifest = {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {
            "class": "RandomForestClassifier",
            "params": {"n_estimators": 50, "max_depth": 4},
            "preprocessing": ["StandardScaler"],
        },
        "validation": {"testSize": 0.25, "seed": 42, "metrics": ["accuracy", "f1_macro"]},
        "registration": {
            "stage": "Staging",
            "autoPromote": {"metric": "accuracy", "minimum": 0.9, "mustBeatProduction": True},
        },
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": metadata(name, generation),
        "spec": base,
    }


def trainingjob(body: Manifest) -> TrainingJob:
    return TrainingJob.from_body(body)


def modelversion_body(
    model: str = "iris", version: int = 3, uri: str | None = None, **spec: Any
) -> Manifest:
    base: Manifest = {
        "model": model,
        "version": version,
        "artifact": {
            "uri": uri or f"pvc://mlplane-artifacts/models/{model}/{model}-{version}/model.onnx",
            "sha256": MODEL_SHA,
            "sizeBytes": 48213,
            "format": "onnx",
        },
        "signature": {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            ],
        },
        "metrics": {"accuracy": 0.973684},
        "baseline": {
            "uri": f"pvc://mlplane-artifacts/models/{model}/{model}-{version}/profile.json",
            "sha256": PROFILE_SHA,
        },
        "stage": "Production",
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelVersion",
        "metadata": metadata(f"{model}-v{version}"),
        "spec": base,
    }


def modelversion(body: Manifest) -> ModelVersion:
    return ModelVersion.from_body(body)


def inferenceservice_body(name: str = "iris", **spec: Any) -> Manifest:
    base: Manifest = {"model": "iris", "stage": "Production"}
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata(name),
        "spec": base,
    }


def inferenceservice(body: Manifest) -> InferenceService:
    return InferenceService.from_body(body)


def trainer_result(
    run: str = "iris-1", dataset: Manifest | None = None, **overrides: Any
) -> Manifest:
    """What `trainer_message` returns for a successful `mlplane-train` run."""
    run_uri = f"pvc://mlplane-artifacts/models/iris/{run}"
    result: Manifest = {
        "model": "iris",
        "run": run,
        "artifact": {
            "uri": f"{run_uri}/model.onnx",
            "format": "onnx",
            "sha256": MODEL_SHA,
            "sizeBytes": 48213,
        },
        "signature": {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            ],
        },
        "metrics": {"accuracy": 0.973684, "f1_macro": 1},
        "baseline": {"uri": f"{run_uri}/profile.json", "sha256": PROFILE_SHA, "sizeBytes": 2211},
        "manifest": {"uri": f"{run_uri}/manifest.json", "sha256": DATA_SHA, "sizeBytes": 900},
        "dataset": dataset if dataset is not None else {"uri": "builtin:iris", "sha256": ""},
        "estimator": {
            "class": "RandomForestClassifier",
            "params": {"n_estimators": 50, "max_depth": 4},
            "preprocessing": ["StandardScaler"],
        },
        "libraries": {"scikit-learn": "1.5.2", "skl2onnx": "1.17.0"},
        "durationSeconds": 2.481,
        "exitCode": 0,
    }
    result.update(copy.deepcopy(overrides))
    return result


def env_of(container: Manifest) -> dict[str, Any]:
    """A container's env as {name: value or valueFrom}."""
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container["env"]}


def mounts_of(container: Manifest) -> dict[str, str]:
    return {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}


def claim_volumes(pod_spec: Manifest) -> dict[str, Manifest]:
    """{volume name: persistentVolumeClaim} of a pod spec."""
    return {
        volume["name"]: volume["persistentVolumeClaim"]
        for volume in pod_spec["volumes"]
        if "persistentVolumeClaim" in volume
    }
