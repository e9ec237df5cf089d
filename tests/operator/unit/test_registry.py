"""The ModelVersion a successful run registers: named, staged and recorded so that the
API server accepts it (validated here with the API models that generate the CRD)."""

from __future__ import annotations

import json

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import ModelVersion
from mlplane_operator.builders.registry import build_model_version
from tests.operator.unit.objects import (
    DATA_SHA,
    IMAGE,
    MODEL_SHA,
    NAMESPACE,
    PROFILE_SHA,
    Manifest,
    trainer_result,
    trainingjob,
    trainingjob_body,
)


def build(
    body: Manifest | None = None, result: Manifest | None = None, version: int = 4
) -> Manifest:
    tj = trainingjob(body or trainingjob_body())
    return build_model_version(tj, "iris-7", result or trainer_result("iris-7"), version, IMAGE)


def test_version_is_named_model_v_n_in_the_trainingjob_namespace() -> None:
    mv = build(version=4)
    assert mv["kind"] == "ModelVersion"
    assert mv["metadata"]["name"] == "iris-v4"
    assert mv["metadata"]["namespace"] == NAMESPACE
    assert mv["spec"]["model"] == "iris"
    assert mv["spec"]["version"] == 4


def test_registered_version_validates_against_the_api_schema() -> None:
    parsed = ModelVersion.model_validate(build())
    assert parsed.name == "iris-v4"
    assert parsed.spec.artifact.sha256 == MODEL_SHA


def test_new_version_starts_in_stage_none_with_the_requested_stage_annotated() -> None:
    mv = build()
    assert mv["spec"]["stage"] == "None"
    annotations = mv["metadata"]["annotations"]
    assert annotations[labels.REQUESTED_STAGE] == "Staging"
    assert json.loads(annotations[labels.AUTO_PROMOTE]) == {
        "metric": "accuracy",
        "minimum": 0.9,
        "mustBeatProduction": True,
    }


def test_no_stage_annotations_without_a_requested_stage_or_policy() -> None:
    mv = build(trainingjob_body(registration={}))
    assert mv["metadata"]["annotations"] == {}
    assert mv["spec"]["stage"] == "None"


def test_production_requested_without_a_policy_is_annotated() -> None:
    mv = build(trainingjob_body(registration={"stage": "Production"}))
    assert mv["metadata"]["annotations"] == {labels.REQUESTED_STAGE: "Production"}


def test_artifact_is_recorded_with_its_digest_size_and_format() -> None:
    assert build()["spec"]["artifact"] == {
        "uri": "pvc://mlplane-artifacts/models/iris/iris-7/model.onnx",
        "sha256": MODEL_SHA,
        "sizeBytes": 48213,
        "format": "onnx",
    }


def test_lineage_names_trainingjob_run_estimator_and_image() -> None:
    lineage = build()["spec"]["lineage"]
    assert lineage["trainingJob"] == "iris"
    assert lineage["run"] == "iris-7"
    assert lineage["image"] == IMAGE
    assert lineage["estimator"] == {
        "class": "RandomForestClassifier",
        "params": {"n_estimators": 50, "max_depth": 4},
    }


def test_builtin_dataset_lineage_omits_its_empty_sha256() -> None:
    mv = build(result=trainer_result("iris-7", dataset={"uri": "builtin:iris", "sha256": ""}))
    assert mv["spec"]["lineage"]["dataset"] == {"uri": "builtin:iris"}
    ModelVersion.model_validate(mv)


def test_file_dataset_lineage_keeps_uri_and_sha256() -> None:
    dataset = {"uri": "s3://data/iris.csv", "sha256": DATA_SHA}
    mv = build(result=trainer_result("iris-7", dataset=dataset))
    assert mv["spec"]["lineage"]["dataset"] == dataset
    ModelVersion.model_validate(mv)


def test_a_run_with_credentials_of_its_own_records_them_on_its_s3_version() -> None:
    body = trainingjob_body(
        output={"storageUri": "s3://team-a/iris"}, s3CredentialsSecret="team-a-s3"
    )
    result = trainer_result("iris-7")
    result["artifact"]["uri"] = "s3://team-a/iris/iris-7/model.onnx"
    mv = build(body, result)
    assert mv["spec"]["s3CredentialsSecret"] == "team-a-s3"
    ModelVersion.model_validate(mv)
    # A pvc:// artifact needs no S3 Secret, so none is recorded.
    assert "s3CredentialsSecret" not in build(body)["spec"]


def test_lineage_has_no_dataset_when_the_trainer_reported_none() -> None:
    result = trainer_result("iris-7")
    del result["dataset"]
    mv = build(result=result)
    assert "dataset" not in mv["spec"]["lineage"]
    ModelVersion.model_validate(mv)


def test_estimator_falls_back_to_the_spec_class_without_params() -> None:
    mv = build(result=trainer_result("iris-7", estimator={}))
    assert mv["spec"]["lineage"]["estimator"] == {"class": "RandomForestClassifier"}
    ModelVersion.model_validate(mv)


def test_metrics_are_recorded_as_floats_and_non_numbers_dropped() -> None:
    result = trainer_result("iris-7", metrics={"accuracy": 0.973684, "f1_macro": 1, "note": "x"})
    metrics = build(result=result)["spec"]["metrics"]
    assert metrics == {"accuracy": 0.973684, "f1_macro": 1.0}
    assert all(isinstance(value, float) for value in metrics.values())


def test_signature_and_baseline_are_recorded_for_serving_and_drift() -> None:
    spec = build()["spec"]
    assert spec["signature"]["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert spec["baseline"] == {
        "uri": "pvc://mlplane-artifacts/models/iris/iris-7/profile.json",
        "sha256": PROFILE_SHA,
    }


def test_baseline_without_a_digest_is_not_recorded() -> None:
    result = trainer_result("iris-7", baseline={"uri": "pvc://m/iris/profile.json"})
    mv = build(result=result)
    assert "baseline" not in mv["spec"]
    ModelVersion.model_validate(mv)


def test_version_is_labelled_for_lookup_by_model_run_and_trainingjob_incarnation() -> None:
    assert build()["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "mlplane",
        labels.MODEL: "iris",
        labels.VERSION: "4",
        labels.TRAINING_JOB: "iris",
        labels.TRAINING_JOB_UID: trainingjob_body()["metadata"]["uid"],
        labels.RUN: "iris-7",
    }


def test_regression_run_registers_a_valid_version() -> None:
    body = trainingjob_body(
        model="housing",
        dataset={"uri": "pvc://datasets/housing.csv", "target": "price"},
        estimator={"class": "sklearn.ensemble.RandomForestRegressor"},
        validation={"metrics": ["r2", "rmse"]},
        registration={"autoPromote": {"metric": "rmse", "maximum": 40000.0}},
    )
    result = trainer_result(
        "housing-1",
        metrics={"r2": 0.81, "rmse": 31250.5},
        dataset={"uri": "pvc://datasets/housing.csv", "sha256": DATA_SHA},
        estimator={"class": "sklearn.ensemble.RandomForestRegressor", "params": {}},
        signature={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}],
            "outputs": [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}],
        },
    )
    tj = trainingjob(body)
    mv = build_model_version(tj, "housing-1", result, 1, IMAGE)
    parsed = ModelVersion.model_validate(mv)
    assert parsed.name == "housing-v1"
    assert parsed.spec.metrics == {"r2": 0.81, "rmse": 31250.5}
    assert "params" not in mv["spec"]["lineage"]["estimator"]
    assert labels.REQUESTED_STAGE not in mv["metadata"]["annotations"]


def test_a_result_shortened_to_fit_the_termination_message_registers_a_valid_version() -> None:
    result = trainer_result("iris-7", signature={"truncated": True})
    result["estimator"]["params"] = {"truncated": True}
    result["metrics"] = {"truncated": True}
    mv = build(result=result)
    assert "metrics" not in mv["spec"]
    assert "signature" not in mv["spec"]  # the server reads the model's own signature
    assert "params" not in mv["spec"]["lineage"]["estimator"]
    ModelVersion.model_validate(mv)


def test_metrics_that_are_not_finite_are_not_recorded() -> None:
    result = trainer_result("iris-7", metrics={"r2": float("nan"), "rmse": float("inf"), "mae": 1})
    mv = build(result=result)
    assert mv["spec"]["metrics"] == {"mae": 1.0}
    json.dumps(mv, allow_nan=False)  # what the API server would be sent is valid JSON
