"""Retraining on production data (pure): the trainer of a TrainingJob with
spec.dataset.feedback reads its InferenceService's log read-only, and the version it
registers records the snapshot of the rows it used."""

from __future__ import annotations

import json
from typing import Any

from mlplane_operator.api.v1alpha1 import ModelVersion
from mlplane_operator.builders.quality import build_evaluation_job, log_root
from mlplane_operator.builders.registry import build_model_version
from mlplane_operator.builders.training import Run, build_training_job
from mlplane_runtime.trainer.spec import load_spec_text
from tests.operator.unit.objects import (
    DATA_SHA,
    IMAGE,
    NAMESPACE,
    Manifest,
    claim_volumes,
    env_of,
    inferenceservice,
    inferenceservice_body,
    mounts_of,
    settings,
    trainer_result,
    trainingjob,
    trainingjob_body,
)

FEEDBACK = {"builtin": "iris", "feedback": {"inferenceService": "iris", "windowSeconds": 3600}}
RUN = Run(number=2, trigger="Retrain", generation=1)


def log_of(storage_uri: str | None = None) -> str:
    logging: dict[str, Any] = {"storageUri": storage_uri} if storage_uri else {}
    root = log_root(
        inferenceservice(inferenceservice_body(monitoring={"logging": logging})), settings()
    )
    assert root is not None
    return root


def trainer_of(feedback_log: str | None, **spec: Any) -> tuple[Manifest, Manifest]:
    body = trainingjob_body(dataset=FEEDBACK, **spec)
    job = build_training_job(trainingjob(body), body, RUN, settings(), feedback_log)
    pod: Manifest = job["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_the_trainer_is_told_where_the_log_is_and_what_window_to_read() -> None:
    _, container = trainer_of(log_of())
    env = env_of(container)
    assert env["MLPLANE_FEEDBACK_LOG_URI"] == f"pvc://mlplane-artifacts/models/{NAMESPACE}/iris"
    spec = load_spec_text(env["MLPLANE_TRAINING_SPEC"], "env")
    assert spec.dataset.feedback is not None
    assert (spec.dataset.feedback.inference_service, spec.dataset.feedback.window_seconds) == (
        "iris",
        3600,
    )


def test_a_log_on_its_own_claim_is_mounted_read_only_as_for_the_evaluation() -> None:
    root = log_of("pvc://prediction-logs/ml")
    pod, container = trainer_of(root)
    claims = {c["claimName"]: c["readOnly"] for c in claim_volumes(pod).values()}
    assert claims == {"mlplane-artifacts": False, "prediction-logs": True}
    read_only = {m["mountPath"]: m.get("readOnly") for m in container["volumeMounts"]}
    assert read_only["/mnt/pvc/prediction-logs"] is True
    # The evaluation Job of that InferenceService mounts the same claim the same way.
    isvc_body = inferenceservice_body(
        monitoring={
            "logging": {"storageUri": "pvc://prediction-logs/ml"},
            "quality": {"metric": "accuracy", "threshold": 0.8},
        }
    )
    evaluation = build_evaluation_job(inferenceservice(isvc_body), isvc_body, 60, settings())
    evaluation_pod = evaluation["spec"]["template"]["spec"]
    assert list(claim_volumes(evaluation_pod).values()) == [
        {"claimName": "prediction-logs", "readOnly": True}
    ]


def test_a_log_on_the_output_claim_shares_its_one_mount() -> None:
    pod, container = trainer_of(log_of())
    assert [c["claimName"] for c in claim_volumes(pod).values()] == ["mlplane-artifacts"]
    assert list(mounts_of(container)) == ["/tmp", "/mnt/pvc/mlplane-artifacts"]


def test_an_s3_log_brings_the_s3_endpoint_and_credentials() -> None:
    _, container = trainer_of(log_of("s3://logs/"))
    assert env_of(container)["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert container["envFrom"] == [{"secretRef": {"name": "mlplane-s3"}}]


def test_without_a_log_to_read_the_trainer_trains_on_the_dataset_alone() -> None:
    _, container = trainer_of(None)
    env = env_of(container)
    assert "MLPLANE_FEEDBACK_LOG_URI" not in env
    assert "feedback" not in json.loads(env["MLPLANE_TRAINING_SPEC"])["dataset"]
    assert load_spec_text(env["MLPLANE_TRAINING_SPEC"], "env").dataset.feedback is None


def test_the_version_records_the_snapshot_of_the_production_rows() -> None:
    body = trainingjob_body(dataset=FEEDBACK)
    snapshot = {
        "inferenceService": "iris",
        "uri": "pvc://mlplane-artifacts/models/iris/iris-2-1a2b3c4d/feedback.parquet",
        "sha256": DATA_SHA,
        "rows": 500,
        "unusable": 3,
        "windowStart": 1_700_000_000.0,
        "windowEnd": 1_700_003_600.0,
    }
    result = trainer_result("iris-2-1a2b3c4d", feedback=snapshot)
    manifest = build_model_version(trainingjob(body), "iris-2-1a2b3c4d", result, 2, IMAGE)
    assert manifest["spec"]["lineage"]["feedback"] == {
        "inferenceService": "iris",
        "uri": snapshot["uri"],
        "sha256": DATA_SHA,
        "rows": 500,
    }
    lineage = ModelVersion.model_validate(manifest).spec.lineage
    assert lineage is not None
    assert lineage.feedback is not None
    assert lineage.feedback.rows == 500


def test_a_run_without_production_rows_records_no_feedback_lineage() -> None:
    manifest = build_model_version(
        trainingjob(trainingjob_body()), "iris-1", trainer_result("iris-1"), 1, IMAGE
    )
    assert "feedback" not in manifest["spec"]["lineage"]
