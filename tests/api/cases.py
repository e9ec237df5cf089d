"""Manifests shared by the pure and the cluster API tests: minimal and full objects of each
kind, the examples, and one invalid manifest per validation rule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlplane_operator.api.base import CustomResource
from mlplane_operator.api.v1alpha1 import KINDS

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
KIND_BY_NAME: dict[str, type[CustomResource]] = {k.kind_info.kind: k for k in KINDS}
SHA = "0123456789abcdef" * 4

Manifest = dict[str, Any]


def minimal_trainingjob(name: str = "iris") -> Manifest:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": "iris",
            "dataset": {"builtin": "iris"},
            "estimator": {"class": "RandomForestClassifier"},
        },
    }


def minimal_modelversion(version: int = 1) -> Manifest:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": f"iris-v{version}"},
        "spec": {
            "model": "iris",
            "version": version,
            "artifact": {"uri": f"pvc://models/iris/v{version}/model.onnx", "sha256": SHA},
        },
    }


def minimal_inferenceservice(name: str = "iris") -> Manifest:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"model": "iris"},
    }


def full_trainingjob() -> Manifest:
    """Every spec field set (defaults included, so it equals what the server stores)."""
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "housing"},
        "spec": {
            "model": "housing",
            "dataset": {
                "uri": "s3://data/housing.parquet",
                "format": "parquet",
                "target": "price",
                "features": ["rooms", "age"],
                "feedback": {"inferenceService": "housing", "windowSeconds": 86400},
            },
            "estimator": {
                "class": "sklearn.ensemble.RandomForestRegressor",
                "params": {"n_estimators": 10, "criterion": "squared_error", "nested": {"a": [1]}},
                "preprocessing": ["StandardScaler", "MinMaxScaler"],
                "categorical": {"encoder": "OrdinalEncoder", "columns": ["district"]},
            },
            "validation": {"testSize": 0.3, "seed": 3, "metrics": ["r2", "rmse"]},
            "search": {
                "parameters": {
                    "max_depth": {"values": [3, 5, None]},
                    "min_samples_leaf": {"min": 1, "max": 20, "scale": "log", "type": "int"},
                    "criterion": {"values": ["squared_error", "absolute_error"]},
                },
                "strategy": "random",
                "seed": 11,
                "maxTrials": 16,
                "parallelism": 2,
                "cvFolds": 3,
                "objective": {"metric": "rmse", "goal": "minimize"},
            },
            "output": {"storageUri": "s3://models/"},
            "registration": {
                "stage": "Staging",
                "autoPromote": {
                    "metric": "rmse",
                    "minimum": 0.5,
                    "maximum": 12.5,
                    "mustBeatProduction": False,
                },
            },
            "schedule": "*/30 * * * *",
            "runPolicy": {
                "backoffLimit": 3,
                "activeDeadlineSeconds": 600,
                "ttlSecondsAfterFinished": 60,
                "suspend": True,
            },
            "image": "registry.example.com/mlplane/runtime:1.2.3",
            "resources": {"limits": {"cpu": 2, "memory": "1Gi"}, "requests": {"cpu": "500m"}},
            "serviceAccountName": "trainer",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"},
                {
                    "key": "spot",
                    "operator": "Equal",
                    "value": "true",
                    "effect": "NoExecute",
                    "tolerationSeconds": 30,
                },
            ],
            "env": [
                {"name": "OMP_NUM_THREADS", "value": "1"},
                {"name": "TOKEN", "valueFrom": {"configMapKeyRef": {"name": "s", "key": "k"}}},
            ],
            "s3CredentialsSecret": "s3-credentials",
        },
    }


def full_modelversion() -> Manifest:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "housing-v12"},
        "spec": {
            "model": "housing",
            "version": 12,
            "artifact": {
                "uri": "s3://models/housing/run-7/model.onnx",
                "sha256": SHA,
                "sizeBytes": 123456,
                "format": "onnx",
            },
            "signature": {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}],
                "outputs": [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}],
            },
            "metrics": {"r2": 0.81, "rmse": 3.2},
            "lineage": {
                "trainingJob": "housing",
                "run": "housing-7",
                "dataset": {"uri": "s3://data/housing.parquet", "sha256": SHA},
                "feedback": {
                    "inferenceService": "housing",
                    "uri": "s3://models/housing/run-7/feedback.parquet",
                    "sha256": SHA,
                    "rows": 1200,
                },
                "estimator": {
                    "class": "sklearn.ensemble.RandomForestRegressor",
                    "params": {"n_estimators": 10},
                },
                "image": "registry.example.com/mlplane/runtime:1.2.3",
            },
            "baseline": {"uri": "s3://models/housing/run-7/profile.json", "sha256": SHA},
            "stage": "Staging",
        },
    }


def full_inferenceservice() -> Manifest:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "housing"},
        "spec": {
            "model": "housing",
            "stage": "Staging",
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 5,
                "targetCPUUtilizationPercentage": 60,
            },
            "rollout": {
                "strategy": "Canary",
                "canary": {"steps": [5, 20, 60], "stepSeconds": 30},
                "analysis": {
                    "maxErrorRate": 0.05,
                    "maxLatencyP99Ms": 25.5,
                    "minRequests": 0,
                    "maxError": 4.5,
                    "qualityTolerance": 0.25,
                    "failWithoutLabels": False,
                },
                "autoRollback": False,
                "progressDeadlineSeconds": 900,
            },
            "monitoring": {
                "drift": {
                    "enabled": True,
                    "method": "ks",
                    "threshold": 0.3,
                    "minSamples": 10,
                    "sampleRate": 0.5,
                    "maxSamplesPerSecond": 50,
                },
                "logging": {
                    "sampleRate": 0.25,
                    "storageUri": "s3://logs/",
                    "rollSeconds": 30,
                    "rollRows": 5000,
                },
                "quality": {
                    "metric": "rmse",
                    "threshold": 5.0,
                    "minLabeled": 200,
                    "windowSeconds": 7200,
                    "intervalSeconds": 120,
                },
                "retrain": {"trainingJob": "housing", "cooldownSeconds": 0},
                "serviceMonitor": True,
            },
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
            "image": "registry.example.com/mlplane/runtime:1.2.3",
            "threads": 4,
            "server": {"batching": {"maxBatchSize": 128, "maxLatencyMs": 2.5}},
            "serviceAccountName": "server",
        },
    }


FULL = {"TrainingJob": full_trainingjob, "ModelVersion": full_modelversion}
FULL["InferenceService"] = full_inferenceservice
MINIMAL: dict[str, Callable[[], Manifest]] = {
    "TrainingJob": minimal_trainingjob,
    "ModelVersion": minimal_modelversion,
    "InferenceService": minimal_inferenceservice,
}

# What the API server stores for each minimal manifest: the schema defaults applied.
MINIMAL_DEFAULTED_SPEC: dict[str, Manifest] = {
    "TrainingJob": {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {"class": "RandomForestClassifier"},
        "validation": {"testSize": 0.2, "seed": 0},
        "registration": {"stage": "None"},
        "runPolicy": {"backoffLimit": 1, "suspend": False},
    },
    "ModelVersion": {
        "model": "iris",
        "version": 1,
        "artifact": {"uri": "pvc://models/iris/v1/model.onnx", "sha256": SHA, "format": "onnx"},
        "stage": "None",
    },
    "InferenceService": {
        "model": "iris",
        "rollout": {
            "strategy": "RollingUpdate",
            "autoRollback": True,
            "progressDeadlineSeconds": 600,
        },
    },
}


def example_documents() -> list[tuple[str, Manifest]]:
    """(file:index, manifest) for every mlplane.io document in examples/ (other examples,
    such as Argo CD Applications, belong to other tests)."""
    documents = []
    for path in sorted(EXAMPLES.glob("*/*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc and str(doc.get("apiVersion", "")).startswith("mlplane.io/"):
                documents.append((f"{path.relative_to(EXAMPLES)}:{index}", doc))
    return documents


def example_directories() -> list[str]:
    """The example directories holding mlplane.io manifests."""
    return sorted({where.split("/")[0] for where, _ in example_documents()})


@dataclass(frozen=True)
class Invalid:
    """A manifest that breaks exactly one rule, and the field the error must name."""

    id: str
    manifest: Manifest
    field: str


def _set(manifest: Manifest, path: str, value: Any) -> Manifest:
    """A copy of `manifest` with the dotted `path` set (value DELETE removes it)."""
    out = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


DELETE = object()


def _tj(field: str, *changes: tuple[str, Any]) -> tuple[Manifest, str]:
    manifest = minimal_trainingjob()
    for path, value in changes:
        manifest = _set(manifest, path, value)
    return manifest, field


def _mv(field: str, *changes: tuple[str, Any]) -> tuple[Manifest, str]:
    manifest = full_modelversion()
    for path, value in changes:
        manifest = _set(manifest, path, value)
    return manifest, field


def _isvc(field: str, *changes: tuple[str, Any]) -> tuple[Manifest, str]:
    manifest = minimal_inferenceservice()
    for path, value in changes:
        manifest = _set(manifest, path, value)
    return manifest, field


URI_DATASET = {"uri": "pvc://data/train.csv", "target": "y"}
OBJECTIVE = {"metric": "accuracy"}


def _search(**fields: Any) -> tuple[str, Any]:
    return ("spec.search", {"parameters": {"max_depth": {"values": [2, 4]}}, "objective": OBJECTIVE,
                            **fields})  # fmt: skip


def _range(**fields: Any) -> tuple[str, Any]:
    return _search(parameters={"learning_rate": fields})


CANARY = {"strategy": "Canary", "canary": {"steps": [10, 50]}}
DRIFT = {"drift": {"enabled": True}}

_INVALID: dict[str, tuple[Manifest, str]] = {
    # TrainingJob
    "tj-model-not-a-dns-label": _tj("spec.model", ("spec.model", "Iris_Model")),
    "tj-model-missing": _tj("spec.model", ("spec.model", DELETE)),
    "tj-dataset-neither-builtin-nor-uri": _tj("spec.dataset", ("spec.dataset", {})),
    "tj-dataset-both-builtin-and-uri": _tj(
        "spec.dataset", ("spec.dataset", {"builtin": "iris", **URI_DATASET})
    ),
    "tj-dataset-unknown-builtin": _tj("spec.dataset.builtin", ("spec.dataset.builtin", "mnist")),
    "tj-dataset-uri-scheme": _tj(
        "spec.dataset.uri", ("spec.dataset", {**URI_DATASET, "uri": "ftp://host/x.csv"})
    ),
    "tj-dataset-uri-without-target": _tj(
        "spec.dataset.target", ("spec.dataset", {"uri": "s3://bucket/x.csv"})
    ),
    "tj-dataset-builtin-with-target": _tj("spec.dataset.target", ("spec.dataset.target", "y")),
    "tj-dataset-builtin-with-format": _tj("spec.dataset.format", ("spec.dataset.format", "csv")),
    "tj-dataset-unknown-format": _tj(
        "spec.dataset.format", ("spec.dataset", {**URI_DATASET, "format": "json"})
    ),
    "tj-estimator-class-missing": _tj("spec.estimator.class", ("spec.estimator", {})),
    "tj-estimator-class-not-a-name": _tj(
        "spec.estimator.class", ("spec.estimator.class", "os.system('x')")
    ),
    "tj-estimator-unknown-preprocessing": _tj(
        "spec.estimator.preprocessing", ("spec.estimator.preprocessing", ["PCA"])
    ),
    "tj-categorical-no-columns": _tj(
        "spec.estimator.categorical.columns", ("spec.estimator.categorical", {"columns": []})
    ),
    "tj-categorical-column-twice": _tj(
        "spec.estimator.categorical.columns",
        ("spec.estimator.categorical", {"columns": ["color", "color"]}),
    ),
    "tj-categorical-unknown-encoder": _tj(
        "spec.estimator.categorical.encoder",
        ("spec.estimator.categorical", {"encoder": "TargetEncoder", "columns": ["color"]}),
    ),
    "tj-search-max-trials-zero": _tj("spec.search.maxTrials", _search(maxTrials=0)),
    "tj-search-max-trials-above-100": _tj("spec.search.maxTrials", _search(maxTrials=101)),
    "tj-search-parallelism-zero": _tj("spec.search.parallelism", _search(parallelism=0)),
    "tj-search-cv-folds-one": _tj("spec.search.cvFolds", _search(cvFolds=1)),
    "tj-search-unknown-strategy": _tj("spec.search.strategy", _search(strategy="bayes")),
    "tj-search-no-objective": _tj(
        "spec.search.objective", ("spec.search", {"parameters": {"a": {"values": [1]}}})
    ),
    "tj-search-unknown-objective-metric": _tj(
        "spec.search.objective.metric", _search(objective={"metric": "auc"})
    ),
    "tj-search-no-parameters": _tj("spec.search.parameters", _search(parameters={})),
    "tj-search-parameter-not-a-name": _tj(
        "spec.search.parameters", _search(parameters={"max-depth": {"values": [1]}})
    ),
    "tj-search-min-not-below-max": _tj(
        "spec.search.parameters[learning_rate].min", _range(min=0.5, max=0.1)
    ),
    "tj-search-log-scale-min-zero": _tj(
        "spec.search.parameters[learning_rate].min", _range(min=0, max=1, scale="log")
    ),
    "tj-search-range-without-max": _tj(
        "spec.search.parameters[learning_rate].max", _range(min=0.1)
    ),
    "tj-search-empty-values": _tj("spec.search.parameters.learning_rate.values", _range(values=[])),
    "tj-search-scale-with-values": _tj(
        "spec.search.parameters[learning_rate]", _range(values=[0.1], scale="log")
    ),
    "tj-search-grid-with-range": _tj(
        "spec.search.parameters",
        _search(strategy="grid", parameters={"learning_rate": {"min": 0.1, "max": 1}}),
    ),
    "tj-test-size-zero": _tj("spec.validation.testSize", ("spec.validation.testSize", 0)),
    "tj-test-size-one": _tj("spec.validation.testSize", ("spec.validation.testSize", 1)),
    "tj-seed-negative": _tj("spec.validation.seed", ("spec.validation.seed", -1)),
    "tj-unknown-metric": _tj("spec.validation.metrics", ("spec.validation.metrics", ["auc"])),
    "tj-auto-promote-metric-not-computed": _tj(
        "spec.registration.autoPromote.metric",
        ("spec.validation.metrics", ["accuracy"]),
        ("spec.registration.autoPromote", {"metric": "f1_macro"}),
    ),
    "tj-auto-promote-minimum-above-maximum": _tj(
        "spec.registration.autoPromote.minimum",
        ("spec.registration.autoPromote", {"metric": "rmse", "minimum": 5, "maximum": 1}),
    ),
    "tj-auto-promote-with-stage-production": _tj(
        "spec.registration.autoPromote",
        ("spec.registration", {"stage": "Production", "autoPromote": {"metric": "accuracy"}}),
    ),
    "tj-registration-stage-archived": _tj(
        "spec.registration.stage", ("spec.registration.stage", "Archived")
    ),
    "tj-schedule-not-cron": _tj("spec.schedule", ("spec.schedule", "every night")),
    "tj-schedule-six-fields": _tj("spec.schedule", ("spec.schedule", "*/5 * * * * *")),
    "tj-schedule-february-30": _tj("spec.schedule", ("spec.schedule", "0 0 30 2 *")),
    "tj-schedule-april-31": _tj("spec.schedule", ("spec.schedule", "0 12 31 apr *")),
    "tj-backoff-limit-negative": _tj(
        "spec.runPolicy.backoffLimit", ("spec.runPolicy.backoffLimit", -1)
    ),
    "tj-active-deadline-zero": _tj(
        "spec.runPolicy.activeDeadlineSeconds", ("spec.runPolicy.activeDeadlineSeconds", 0)
    ),
    "tj-ttl-negative": _tj(
        "spec.runPolicy.ttlSecondsAfterFinished", ("spec.runPolicy.ttlSecondsAfterFinished", -5)
    ),
    "tj-resource-quantity": _tj(
        "spec.resources.limits.cpu", ("spec.resources", {"limits": {"cpu": "lots"}})
    ),
    "tj-env-value-and-value-from": _tj(
        "spec.env[0].valueFrom",
        ("spec.env", [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]),
    ),
    "tj-env-secret-key-ref": _tj(
        "spec.env[0].valueFrom",
        ("spec.env", [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
    ),
    "tj-dataset-uri-leaves-its-claim": _tj(
        "spec.dataset.uri", ("spec.dataset", {**URI_DATASET, "uri": "pvc://data/../other/x.csv"})
    ),
    "tj-dataset-uri-claim-is-dot-dot": _tj(
        "spec.dataset.uri", ("spec.dataset", {**URI_DATASET, "uri": "pvc://../x.csv"})
    ),
    "tj-env-duplicate-name": _tj(
        "spec.env[1]", ("spec.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])
    ),
    "tj-toleration-exists-with-value": _tj(
        "spec.tolerations[0].value",
        ("spec.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
    ),
    "tj-feedback-window-below-a-minute": _tj(
        "spec.dataset.feedback.windowSeconds",
        ("spec.dataset.feedback", {"inferenceService": "iris", "windowSeconds": 10}),
    ),
    "tj-feedback-without-inference-service": _tj(
        "spec.dataset.feedback.inferenceService", ("spec.dataset.feedback", {"windowSeconds": 600})
    ),
    "tj-unknown-field": _tj("spec.epochs", ("spec.epochs", 3)),
    "tj-name-too-long": _tj("metadata.name", ("metadata.name", "t" * 53)),
    # ModelVersion
    "mv-version-zero": _mv("spec.version", ("spec.version", 0), ("metadata.name", "housing-v0")),
    "mv-sha256-uppercase": _mv("spec.artifact.sha256", ("spec.artifact.sha256", SHA.upper())),
    "mv-sha256-short": _mv("spec.artifact.sha256", ("spec.artifact.sha256", "abc123")),
    "mv-artifact-uri-missing": _mv("spec.artifact.uri", ("spec.artifact.uri", DELETE)),
    "mv-artifact-format-pickle": _mv("spec.artifact.format", ("spec.artifact.format", "pickle")),
    "mv-signature-datatype": _mv(
        "spec.signature.inputs[0].datatype", ("spec.signature.inputs.0.datatype", "FLOAT")
    ),
    "mv-signature-shape-below-minus-one": _mv(
        "spec.signature.inputs[0].shape[1]", ("spec.signature.inputs.0.shape", [-1, -2])
    ),
    "mv-signature-duplicate-input": _mv(
        "spec.signature.inputs[1]",
        (
            "spec.signature.inputs",
            [
                {"name": "x", "datatype": "FP32", "shape": [-1]},
                {"name": "x", "datatype": "FP64", "shape": [-1]},
            ],
        ),
    ),
    "mv-feedback-rows-negative": _mv(
        "spec.lineage.feedback.rows", ("spec.lineage.feedback.rows", -1)
    ),
    "mv-stage-unknown": _mv("spec.stage", ("spec.stage", "Prod")),
    "mv-baseline-without-sha256": _mv("spec.baseline.sha256", ("spec.baseline.sha256", DELETE)),
    "mv-name-does-not-match-version": _mv("metadata.name", ("metadata.name", "housing-v13")),
    # InferenceService
    "isvc-version-and-stage": _isvc("spec.stage", ("spec.version", 2), ("spec.stage", "Staging")),
    "isvc-stage-archived": _isvc("spec.stage", ("spec.stage", "Archived")),
    "isvc-version-zero": _isvc("spec.version", ("spec.version", 0)),
    "isvc-replicas-and-autoscaling": _isvc(
        "spec.autoscaling", ("spec.replicas", 2), ("spec.autoscaling", {"maxReplicas": 3})
    ),
    "isvc-replicas-negative": _isvc("spec.replicas", ("spec.replicas", -1)),
    "isvc-batch-size-zero": _isvc(
        "spec.server.batching.maxBatchSize",
        ("spec.server", {"batching": {"maxBatchSize": 0}}),
    ),
    "isvc-batch-latency-above-1000": _isvc(
        "spec.server.batching.maxLatencyMs",
        ("spec.server", {"batching": {"maxLatencyMs": 1001}}),
    ),
    "isvc-autoscaling-without-cpu-request": _isvc(
        "spec.resources",
        ("spec.autoscaling", {"maxReplicas": 3}),
        ("spec.resources", {"requests": {"memory": "256Mi"}}),
    ),
    "isvc-progress-deadline-zero": _isvc(
        "spec.rollout.progressDeadlineSeconds", ("spec.rollout.progressDeadlineSeconds", 0)
    ),
    "isvc-max-replicas-below-min": _isvc(
        "spec.autoscaling.maxReplicas", ("spec.autoscaling", {"minReplicas": 4, "maxReplicas": 2})
    ),
    "isvc-cpu-target-above-100": _isvc(
        "spec.autoscaling.targetCPUUtilizationPercentage",
        ("spec.autoscaling", {"maxReplicas": 2, "targetCPUUtilizationPercentage": 101}),
    ),
    "isvc-canary-strategy-without-canary": _isvc(
        "spec.rollout.canary", ("spec.rollout", {"strategy": "Canary"})
    ),
    "isvc-canary-with-rolling-update": _isvc(
        "spec.rollout.canary", ("spec.rollout", {**CANARY, "strategy": "RollingUpdate"})
    ),
    "isvc-canary-step-100": _isvc(
        "spec.rollout.canary.steps[1]", ("spec.rollout", {**CANARY, "canary": {"steps": [50, 100]}})
    ),
    "isvc-canary-steps-descending": _isvc(
        "spec.rollout.canary.steps", ("spec.rollout", {**CANARY, "canary": {"steps": [50, 10]}})
    ),
    "isvc-canary-steps-repeated": _isvc(
        "spec.rollout.canary.steps", ("spec.rollout", {**CANARY, "canary": {"steps": [10, 10]}})
    ),
    "isvc-canary-steps-empty": _isvc(
        "spec.rollout.canary.steps", ("spec.rollout", {**CANARY, "canary": {"steps": []}})
    ),
    "isvc-canary-step-seconds-zero": _isvc(
        "spec.rollout.canary.stepSeconds",
        ("spec.rollout", {**CANARY, "canary": {"steps": [10], "stepSeconds": 0}}),
    ),
    "isvc-analysis-error-rate-above-1": _isvc(
        "spec.rollout.analysis.maxErrorRate",
        ("spec.rollout", {**CANARY, "analysis": {"maxErrorRate": 1.5}}),
    ),
    "isvc-analysis-latency-zero": _isvc(
        "spec.rollout.analysis.maxLatencyP99Ms",
        ("spec.rollout", {**CANARY, "analysis": {"maxLatencyP99Ms": 0}}),
    ),
    "isvc-analysis-with-rolling-update": _isvc(
        "spec.rollout.analysis", ("spec.rollout", {"analysis": {"maxErrorRate": 0.1}})
    ),
    "isvc-drift-unknown-method": _isvc(
        "spec.monitoring.drift.method", ("spec.monitoring", {"drift": {"method": "kl"}})
    ),
    "isvc-drift-threshold-zero": _isvc(
        "spec.monitoring.drift.threshold", ("spec.monitoring", {"drift": {"threshold": 0}})
    ),
    "isvc-drift-ks-threshold-above-1": _isvc(
        "spec.monitoring.drift.threshold",
        ("spec.monitoring", {"drift": {"method": "ks", "threshold": 1.5}}),
    ),
    "isvc-drift-min-samples-zero": _isvc(
        "spec.monitoring.drift.minSamples", ("spec.monitoring", {"drift": {"minSamples": 0}})
    ),
    "isvc-drift-sample-rate-zero": _isvc(
        "spec.monitoring.drift.sampleRate", ("spec.monitoring", {"drift": {"sampleRate": 0}})
    ),
    "isvc-drift-sample-rate-above-1": _isvc(
        "spec.monitoring.drift.sampleRate", ("spec.monitoring", {"drift": {"sampleRate": 1.5}})
    ),
    "isvc-drift-max-samples-negative": _isvc(
        "spec.monitoring.drift.maxSamplesPerSecond",
        ("spec.monitoring", {"drift": {"maxSamplesPerSecond": -1}}),
    ),
    "isvc-retrain-without-drift": _isvc(
        "spec.monitoring.retrain", ("spec.monitoring", {"retrain": {"trainingJob": "iris"}})
    ),
    "isvc-retrain-with-drift-disabled": _isvc(
        "spec.monitoring.retrain",
        ("spec.monitoring", {"drift": {"enabled": False}, "retrain": {"trainingJob": "iris"}}),
    ),
    "isvc-retrain-cooldown-negative": _isvc(
        "spec.monitoring.retrain.cooldownSeconds",
        ("spec.monitoring", {**DRIFT, "retrain": {"trainingJob": "iris", "cooldownSeconds": -1}}),
    ),
    "isvc-quality-without-logging": _isvc(
        "spec.monitoring.quality",
        ("spec.monitoring", {"quality": {"metric": "accuracy", "threshold": 0.8}}),
    ),
    "isvc-quality-unknown-metric": _isvc(
        "spec.monitoring.quality.metric",
        ("spec.monitoring", {"logging": {}, "quality": {"metric": "auc", "threshold": 0.8}}),
    ),
    "isvc-quality-gate-without-quality": _isvc(
        "spec.rollout.analysis",
        ("spec.rollout", {**CANARY, "analysis": {"qualityTolerance": 0.02}}),
    ),
    "isvc-min-quality-of-an-error-metric": _isvc(
        "spec.rollout.analysis.minQuality",
        ("spec.rollout", {**CANARY, "analysis": {"minQuality": 0.9}}),
        ("spec.monitoring", {"logging": {}, "quality": {"metric": "rmse", "threshold": 3}}),
    ),
    "isvc-max-error-of-accuracy": _isvc(
        "spec.rollout.analysis.maxError",
        ("spec.rollout", {**CANARY, "analysis": {"maxError": 0.1}}),
        ("spec.monitoring", {"logging": {}, "quality": {"metric": "accuracy", "threshold": 0.8}}),
    ),
    "isvc-min-quality-above-1": _isvc(
        "spec.rollout.analysis.minQuality",
        ("spec.rollout", {**CANARY, "analysis": {"minQuality": 1.5}}),
        ("spec.monitoring", {"logging": {}, "quality": {"metric": "accuracy", "threshold": 0.8}}),
    ),
    "isvc-quality-tolerance-negative": _isvc(
        "spec.rollout.analysis.qualityTolerance",
        ("spec.rollout", {**CANARY, "analysis": {"qualityTolerance": -0.1}}),
        ("spec.monitoring", {"logging": {}, "quality": {"metric": "accuracy", "threshold": 0.8}}),
    ),
    "isvc-fail-without-labels-without-a-gate": _isvc(
        "spec.rollout.analysis.failWithoutLabels",
        ("spec.rollout", {**CANARY, "analysis": {"failWithoutLabels": True}}),
    ),
    "isvc-logging-sample-rate-above-1": _isvc(
        "spec.monitoring.logging.sampleRate",
        ("spec.monitoring", {"logging": {"sampleRate": 1.5}}),
    ),
    "isvc-logging-to-https": _isvc(
        "spec.monitoring.logging.storageUri",
        ("spec.monitoring", {"logging": {"storageUri": "https://example.com/log"}}),
    ),
    "isvc-threads-zero": _isvc("spec.threads", ("spec.threads", 0)),
    "isvc-name-not-dns-1035": _isvc("metadata.name", ("metadata.name", "1iris")),
}

INVALID = [Invalid(id_, manifest, field) for id_, (manifest, field) in _INVALID.items()]
