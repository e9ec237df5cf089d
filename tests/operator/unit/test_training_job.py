"""The batch/v1 Job of a TrainingJob run: what the trainer receives and how the run is
retried, isolated and owned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlplane_operator import labels
from mlplane_operator.builders.training import Run, build_training_job
from mlplane_runtime.trainer.spec import load_spec_text
from tests.operator.unit.objects import (
    IMAGE,
    NAMESPACE,
    S3_ENDPOINT,
    S3_SECRET,
    Manifest,
    claim_volumes,
    env_of,
    mounts_of,
    settings,
    trainingjob,
    trainingjob_body,
)

RUN = Run(number=3, trigger="Schedule", generation=2)


def build(body: Manifest | None = None, run: Run = RUN, **setting: Any) -> Manifest:
    body = body or trainingjob_body(generation=2)
    return build_training_job(trainingjob(body), body, run, settings(**setting))


def trainer(job: Manifest) -> Manifest:
    containers: list[Manifest] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert container["name"] == "trainer"
    return container


def training_spec(job: Manifest) -> Manifest:
    spec: Manifest = json.loads(env_of(trainer(job))["MLPLANE_TRAINING_SPEC"])
    return spec


def test_job_runs_mlplane_train_named_after_the_run() -> None:
    job = build()
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "iris-3"
    assert job["metadata"]["namespace"] == NAMESPACE
    assert trainer(job)["command"] == ["mlplane-train"]
    assert trainer(job)["image"] == IMAGE
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_trainer_receives_the_spec_and_its_identity_through_the_environment() -> None:
    env = env_of(trainer(build()))
    spec = json.loads(env["MLPLANE_TRAINING_SPEC"])
    assert spec["model"] == "iris"
    assert spec["dataset"] == {"builtin": "iris"}
    assert spec["estimator"] == {
        "class": "RandomForestClassifier",
        "params": {"n_estimators": 50, "max_depth": 4},
        "preprocessing": ["StandardScaler"],
    }
    assert spec["validation"] == {"testSize": 0.25, "seed": 42, "metrics": ["accuracy", "f1_macro"]}
    assert env["MLPLANE_MODEL"] == "iris"
    assert env["MLPLANE_RUN"] == "iris-3-" + trainingjob_body()["metadata"]["uid"][:8]
    assert env["HOME"] == "/tmp"


def test_a_training_job_applied_again_under_its_name_publishes_under_another_run_id() -> None:
    first, again = trainingjob_body(), trainingjob_body()
    again["metadata"]["uid"] = "0b5e7c1a-0000-4000-8000-000000000001"
    ids = {env_of(trainer(build(body)))["MLPLANE_RUN"] for body in (first, again)}
    assert len(ids) == 2  # the same Job name, iris-3, never the same artifact directory


def test_trainer_spec_leaves_out_what_only_the_operator_reads() -> None:
    body = trainingjob_body(schedule="0 3 * * *", runPolicy={"backoffLimit": 4})
    spec = training_spec(build(body))
    assert set(spec) == {"model", "dataset", "estimator", "validation", "output"}


def test_output_defaults_to_the_operator_storage_when_the_spec_sets_none() -> None:
    env = env_of(trainer(build(storage_uri="pvc://shared-models/team-a/")))
    assert json.loads(env["MLPLANE_TRAINING_SPEC"])["output"] == {
        "storageUri": "pvc://shared-models/team-a"
    }
    assert env["MLPLANE_OUTPUT_URI"] == "pvc://shared-models/team-a"


def test_output_set_in_the_spec_wins_over_the_operator_default() -> None:
    body = trainingjob_body(output={"storageUri": "pvc://iris-models/runs"})
    env = env_of(trainer(build(body)))
    assert json.loads(env["MLPLANE_TRAINING_SPEC"])["output"] == {
        "storageUri": "pvc://iris-models/runs"
    }
    assert env["MLPLANE_OUTPUT_URI"] == "pvc://iris-models/runs"


def test_the_runtime_parses_the_spec_the_operator_passes() -> None:
    body = trainingjob_body(
        model="housing",
        dataset={"uri": "s3://data/housing.csv", "target": "price", "features": ["rooms", "age"]},
        estimator={"class": "RandomForestRegressor", "params": {"n_estimators": 10}},
        validation={"testSize": 0.3, "seed": 3, "metrics": ["r2", "rmse"]},
        registration={},
    )
    parsed = load_spec_text(env_of(trainer(build(body)))["MLPLANE_TRAINING_SPEC"], "test")
    assert parsed.model == "housing"
    assert parsed.dataset.uri == "s3://data/housing.csv"
    assert parsed.dataset.target == "price"
    assert parsed.dataset.features == ("rooms", "age")
    assert parsed.estimator.class_name == "RandomForestRegressor"
    assert parsed.validation.metrics == ("r2", "rmse")
    assert parsed.storage_uri == "pvc://mlplane-artifacts/models"


def test_run_policy_defaults_retry_once_and_never_suspend() -> None:
    spec = build()["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["suspend"] is False
    assert "activeDeadlineSeconds" not in spec
    assert "ttlSecondsAfterFinished" not in spec


def test_run_policy_maps_to_the_job_fields() -> None:
    body = trainingjob_body(
        runPolicy={
            "backoffLimit": 4,
            "activeDeadlineSeconds": 1800,
            "ttlSecondsAfterFinished": 86400,
            "suspend": True,
        }
    )
    spec = build(body)["spec"]
    assert spec["backoffLimit"] == 4
    assert spec["activeDeadlineSeconds"] == 1800
    assert "ttlSecondsAfterFinished" not in spec  # the operator collects it once recorded
    assert spec["suspend"] is True


def test_user_error_exit_code_fails_the_job_at_once() -> None:
    rules = build()["spec"]["podFailurePolicy"]["rules"]
    fail_job = [rule for rule in rules if rule["action"] == "FailJob"]
    assert fail_job == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
        }
    ]


def test_pod_disruptions_do_not_count_against_the_retries() -> None:
    rules = build()["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


def test_pvc_dataset_and_output_mount_their_claims_under_mnt_pvc() -> None:
    body = trainingjob_body(
        dataset={"uri": "pvc://datasets/iris/iris.csv", "target": "species"},
        output={"storageUri": "pvc://iris-models"},
    )
    job = build(body)
    pod = job["spec"]["template"]["spec"]
    claims = claim_volumes(pod)
    mounts = mounts_of(trainer(job))
    assert sorted(c["claimName"] for c in claims.values()) == ["datasets", "iris-models"]
    assert claims[mounts["/mnt/pvc/datasets"]]["claimName"] == "datasets"
    assert claims[mounts["/mnt/pvc/iris-models"]]["claimName"] == "iris-models"
    assert all(c["readOnly"] is False for c in claims.values()), "the trainer writes its output"


def test_one_claim_used_for_data_and_output_is_mounted_once() -> None:
    body = trainingjob_body(
        dataset={"uri": "pvc://ml/data/iris.csv", "target": "species"},
        output={"storageUri": "pvc://ml/models"},
    )
    job = build(body)
    assert [c["claimName"] for c in claim_volumes(job["spec"]["template"]["spec"]).values()] == [
        "ml"
    ]
    assert list(mounts_of(trainer(job))) == ["/tmp", "/mnt/pvc/ml"]


def test_default_output_claim_is_mounted_for_a_builtin_dataset() -> None:
    job = build()
    claims = claim_volumes(job["spec"]["template"]["spec"])
    assert [c["claimName"] for c in claims.values()] == ["mlplane-artifacts"]
    assert "/mnt/pvc/mlplane-artifacts" in mounts_of(trainer(job))


def test_s3_dataset_adds_the_endpoint_and_the_credentials_secret() -> None:
    body = trainingjob_body(dataset={"uri": "s3://data/iris.csv", "target": "species"})
    container = trainer(build(body))
    assert env_of(container)["AWS_ENDPOINT_URL"] == S3_ENDPOINT
    assert container["envFrom"] == [{"secretRef": {"name": S3_SECRET}}]


def test_s3_output_adds_the_credentials_of_the_spec_secret() -> None:
    body = trainingjob_body(
        output={"storageUri": "s3://models/iris"}, s3CredentialsSecret="team-a-s3"
    )
    container = trainer(build(body))
    assert env_of(container)["AWS_ENDPOINT_URL"] == S3_ENDPOINT
    assert container["envFrom"] == [{"secretRef": {"name": "team-a-s3"}}]
    assert claim_volumes(build(body)["spec"]["template"]["spec"]) == {}


def test_no_s3_settings_reach_a_pod_that_uses_no_s3() -> None:
    body = trainingjob_body(s3CredentialsSecret="team-a-s3")
    container = trainer(build(body))
    assert "AWS_ENDPOINT_URL" not in env_of(container)
    assert "envFrom" not in container


@pytest.mark.parametrize(
    "body",
    [
        trainingjob_body(),
        trainingjob_body(dataset={"uri": "s3://data/iris.csv", "target": "species"}),
    ],
    ids=["pvc", "s3"],
)
def test_trainer_runs_under_the_restricted_pod_security_standard(body: Manifest) -> None:
    job = build(body)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = trainer(job)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False


def test_read_only_root_filesystem_leaves_tmp_writable() -> None:
    job = build()
    pod = job["spec"]["template"]["spec"]
    tmp = mounts_of(trainer(job))["/tmp"]
    assert {"name": tmp, "emptyDir": {}} in pod["volumes"]


def test_job_is_owned_by_its_trainingjob() -> None:
    body = trainingjob_body(generation=2)
    job = build(body)
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "mlplane.io/v1alpha1",
            "kind": "TrainingJob",
            "name": "iris",
            "uid": body["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_job_and_pods_carry_model_trainingjob_and_run_labels() -> None:
    job = build()
    expected = {
        labels.MODEL: "iris",
        labels.TRAINING_JOB: "iris",
        labels.RUN: "iris-3",
        labels.COMPONENT: "trainer",
    }
    assert job["metadata"]["labels"] == {**expected, "app.kubernetes.io/managed-by": "mlplane"}
    assert job["spec"]["template"]["metadata"]["labels"] == expected


def test_job_annotations_record_trigger_generation_and_run_number() -> None:
    annotations = build(run=Run(number=12, trigger="Retrain", generation=7))["metadata"][
        "annotations"
    ]
    assert annotations == {
        labels.TRIGGER: "Retrain",
        labels.GENERATION: "7",
        labels.RUN_NUMBER: "12",
    }


def test_pod_settings_of_the_spec_pass_through() -> None:
    body = trainingjob_body(
        image="registry.example.com/team/trainer:2.0",
        env=[
            {"name": "OMP_NUM_THREADS", "value": "2"},
            {"name": "TOKEN", "valueFrom": {"configMapKeyRef": {"name": "tok", "key": "t"}}},
        ],
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        nodeSelector={"node.kubernetes.io/instance-type": "c6i.xlarge"},
        tolerations=[{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}],
        serviceAccountName="trainer",
    )
    job = build(body)
    pod = job["spec"]["template"]["spec"]
    container = trainer(job)
    assert container["image"] == "registry.example.com/team/trainer:2.0"
    env = env_of(container)
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["TOKEN"] == {"configMapKeyRef": {"name": "tok", "key": "t"}}
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "c6i.xlarge"}
    assert pod["tolerations"] == [{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "trainer"


def test_optional_pod_settings_are_omitted_when_unset() -> None:
    job = build()
    pod = job["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations", "serviceAccountName"):
        assert key not in pod
    assert "resources" not in trainer(job)


def test_trainer_failure_shows_its_logs_when_it_wrote_no_message() -> None:
    assert trainer(build())["terminationMessagePolicy"] == "FallbackToLogsOnError"
