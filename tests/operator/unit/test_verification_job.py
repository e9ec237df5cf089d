"""The Job that verifies a ModelVersion's artifact before anything may serve it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1.common import DNS1123_LABEL
from mlplane_operator.builders.verification import build_verification_job
from tests.operator.unit.objects import (
    IMAGE,
    MODEL_SHA,
    S3_ENDPOINT,
    S3_SECRET,
    Manifest,
    claim_volumes,
    env_of,
    modelversion,
    modelversion_body,
    mounts_of,
    settings,
)


def build(body: Manifest | None = None, **setting: Any) -> Manifest:
    body = body or modelversion_body()
    return build_verification_job(modelversion(body), body, settings(**setting))


def verifier(job: Manifest) -> Manifest:
    containers: list[Manifest] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container = containers[0]
    return container


def test_runs_mlplane_train_verify_with_the_artifact_and_its_digest() -> None:
    body = modelversion_body()
    container = verifier(build(body))
    assert container["command"] == ["mlplane-train"]
    args = container["args"]
    assert args[:5] == [
        "verify",
        "--artifact-uri",
        "pvc://mlplane-artifacts/models/iris/iris-3/model.onnx",
        "--sha256",
        MODEL_SHA,
    ]
    assert args[5] == "--signature"
    assert json.loads(args[6]) == body["spec"]["signature"]
    assert container["image"] == IMAGE


def test_signature_is_checked_only_when_declared() -> None:
    body = modelversion_body()
    del body["spec"]["signature"]
    assert "--signature" not in verifier(build(body))["args"]


def test_artifact_claim_is_mounted_read_only() -> None:
    job = build()
    claims = claim_volumes(job["spec"]["template"]["spec"])
    mount = next(m for m in verifier(job)["volumeMounts"] if m["mountPath"].startswith("/mnt"))
    assert mount["mountPath"] == "/mnt/pvc/mlplane-artifacts"
    assert mount["readOnly"] is True
    assert claims[mount["name"]] == {"claimName": "mlplane-artifacts", "readOnly": True}


def test_s3_artifact_gets_endpoint_and_credentials_and_no_claim() -> None:
    job = build(modelversion_body(uri="s3://ml-artifacts/churn/model.onnx"))
    container = verifier(job)
    assert env_of(container)["AWS_ENDPOINT_URL"] == S3_ENDPOINT
    assert container["envFrom"] == [{"secretRef": {"name": S3_SECRET}}]
    assert claim_volumes(job["spec"]["template"]["spec"]) == {}


def test_a_version_with_credentials_of_its_own_is_verified_with_them() -> None:
    body = modelversion_body(uri="s3://team-a/churn/model.onnx")
    body["spec"]["s3CredentialsSecret"] = "team-a-s3"
    container = verifier(build(body))
    assert container["envFrom"] == [{"secretRef": {"name": "team-a-s3"}}]


def test_pvc_artifact_gets_no_s3_settings() -> None:
    container = verifier(build())
    assert "AWS_ENDPOINT_URL" not in env_of(container)
    assert "envFrom" not in container


@pytest.mark.parametrize(
    "model",
    [
        "m" * 62 + "x",  # a 63-character model name, the most the API allows
        "a" * 49 + "-" + "b" * 13,  # cut right after a hyphen
    ],
)
def test_job_name_stays_a_dns_label_for_the_longest_model_names(model: str) -> None:
    job = build(modelversion_body(model=model, version=123456))
    name = job["metadata"]["name"]
    assert len(name) <= 63, name
    assert re.fullmatch(DNS1123_LABEL, name), name


def test_job_names_differ_between_two_objects_of_the_same_name() -> None:
    first = modelversion_body()
    second = modelversion_body()
    second["metadata"]["uid"] = "0b6e1d2c-8f0a-4c39-9d34-1f1a2b3c4d5e"
    assert build(first)["metadata"]["name"] != build(second)["metadata"]["name"]


def test_a_failed_verification_fails_the_job_without_retrying() -> None:
    rules = build()["spec"]["podFailurePolicy"]["rules"]
    assert {
        "action": "FailJob",
        "onExitCodes": {"containerName": "verifier", "operator": "In", "values": [2]},
    } in rules
    assert build()["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_verifier_is_locked_down_and_bounded() -> None:
    job = build()
    pod = job["spec"]["template"]["spec"]
    container = verifier(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "/tmp" in mounts_of(container)
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert container["resources"]["limits"]["memory"]


def test_job_is_owned_by_and_labelled_for_its_modelversion() -> None:
    body = modelversion_body()
    job = build(body)
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "ModelVersion"
    assert owner["name"] == "iris-v3"
    assert owner["uid"] == body["metadata"]["uid"]
    assert owner["controller"] is True
    assert job["metadata"]["labels"][labels.VERIFIES] == body["metadata"]["uid"]
    assert job["metadata"]["labels"][labels.MODEL] == "iris"
    assert job["metadata"]["labels"][labels.VERSION] == "3"
