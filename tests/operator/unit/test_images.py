"""The operator is nobody's deputy: the platform's S3 credentials go only to the runtime
image, and MLPLANE_ALLOWED_IMAGES bounds which images a resource may run."""

from __future__ import annotations

from mlplane_operator.builders.training import Run, build_training_job
from mlplane_operator.policies.images import (
    credentials_refusal,
    image_refusal,
    serving_credentials_refusal,
)
from tests.operator.unit.objects import (
    IMAGE,
    S3_SECRET,
    Manifest,
    settings,
    trainingjob,
    trainingjob_body,
)

OTHER = "docker.io/someone/anything:latest"


def _env_from(job: Manifest) -> list[Manifest]:
    return job["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])


def test_only_the_runtime_image_gets_the_platform_s3_secret() -> None:
    s3 = {"output": {"storageUri": "s3://models/runs"}}
    for image, expected in ((None, [{"secretRef": {"name": S3_SECRET}}]), (OTHER, [])):
        body = trainingjob_body(**s3, **({"image": image} if image else {}))
        job = build_training_job(trainingjob(body), body, Run(1, "Spec", 1), settings())
        assert _env_from(job) == expected, image


def test_a_training_job_with_its_own_secret_keeps_it_whatever_its_image() -> None:
    body = trainingjob_body(
        image=OTHER, output={"storageUri": "s3://models/runs"}, s3CredentialsSecret="mine"
    )
    job = build_training_job(trainingjob(body), body, Run(1, "Spec", 1), settings())
    assert _env_from(job) == [{"secretRef": {"name": "mine"}}]


def test_a_custom_image_on_s3_storage_is_refused_naming_the_field_and_the_way_out() -> None:
    message = credentials_refusal(OTHER, True, None, settings())
    assert message is not None
    assert message.startswith(f"spec.image {OTHER!r} does not receive")
    assert IMAGE in message
    assert credentials_refusal(OTHER, True, "mine", settings()) is None
    assert credentials_refusal(OTHER, False, None, settings()) is None
    assert credentials_refusal(None, True, None, settings()) is None


def test_a_custom_serving_image_of_an_s3_version_with_its_own_secret_is_refused() -> None:
    message = serving_credentials_refusal(OTHER, True, "team-a-s3", settings(s3_secret=None))
    assert message is not None
    assert message.startswith(f"spec.image {OTHER!r} does not receive the ModelVersion's")
    assert "spec.s3CredentialsSecret" in message
    assert serving_credentials_refusal(None, True, "team-a-s3", settings()) is None
    assert serving_credentials_refusal(OTHER, True, None, settings(s3_secret=None)) is None


def test_allowed_images_bound_spec_image_and_always_allow_the_runtime_image() -> None:
    policy = settings(allowed_images=["registry.example.com/ml/*"])
    assert image_refusal("registry.example.com/ml/trainer:2", policy) is None
    assert image_refusal(None, policy) is None
    assert image_refusal(IMAGE, policy) is None
    message = image_refusal(OTHER, policy)
    assert message is not None
    assert message.startswith(f"spec.image {OTHER!r} is not allowed")
    assert "registry.example.com/ml/*" in message
    assert image_refusal(OTHER, settings()) is None  # no list: any image
