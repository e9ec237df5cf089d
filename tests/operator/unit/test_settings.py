"""Operator settings read from MLPLANE_* environment variables, rejected at start-up when
invalid."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlplane_operator.settings import OperatorSettings


def test_defaults_watch_every_namespace_and_store_on_the_default_claim() -> None:
    settings = OperatorSettings()
    assert settings.watch_namespaces == []
    assert settings.storage_uri == "pvc://mlplane-artifacts/models"
    assert settings.s3_endpoint is None
    assert settings.s3_secret is None
    assert settings.peering is None


def test_watch_namespaces_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLANE_WATCH_NAMESPACES", "team-a, team-b,,op-* ")
    assert OperatorSettings().watch_namespaces == ["team-a", "team-b", "op-*"]


def test_empty_watch_namespaces_watch_every_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLANE_WATCH_NAMESPACES", "")
    assert OperatorSettings().watch_namespaces == []


@pytest.mark.parametrize("name", ["PEERING", "S3_ENDPOINT", "S3_SECRET", "STORAGE_CLASS"])
def test_empty_optional_strings_mean_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # a Helm chart renders an unset value as an empty string
    monkeypatch.setenv(f"MLPLANE_{name}", "")
    assert getattr(OperatorSettings(), name.lower()) is None


def test_values_are_read_and_typed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "STORAGE_URI": "s3://ml-artifacts/models",
        "S3_ENDPOINT": "http://minio.storage:9000",
        "S3_SECRET": "mlplane-s3",
        "STORAGE_PVC_CREATE": "false",
        "SERVICE_MONITORS": "true",
        "RUN_HISTORY_LIMIT": "25",
        "LOG_LEVEL": "DEBUG",
    }.items():
        monkeypatch.setenv(f"MLPLANE_{name}", value)
    settings = OperatorSettings()
    assert settings.storage_uri == "s3://ml-artifacts/models"
    assert settings.s3_endpoint == "http://minio.storage:9000"
    assert settings.s3_secret == "mlplane-s3"
    assert settings.storage_pvc_create is False
    assert settings.service_monitors is True
    assert settings.run_history_limit == 25
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize("uri", ["https://example.com/models", "models/", "gs://bucket/models"])
def test_invalid_storage_uri_is_rejected_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    monkeypatch.setenv("MLPLANE_STORAGE_URI", uri)
    with pytest.raises(ValidationError) as error:
        OperatorSettings()
    text = str(error.value)
    assert "storage_uri" in text
    assert "pvc://" in text
    assert "s3://" in text
    assert repr(uri) in text


def test_storage_uri_the_registry_cannot_record_is_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A ModelVersion's artifact.uri must match ^(pvc|s3|https?)://; and in a pod file://
    # is the container's own (read-only or emptyDir) file system, lost with the pod.
    monkeypatch.setenv("MLPLANE_STORAGE_URI", "file:///var/lib/mlplane/models")
    problem = None
    try:
        OperatorSettings()
    except ValidationError as error:
        problem = str(error)
    assert problem is not None, (
        "BUG: MLPLANE_STORAGE_URI=file://... is accepted at start-up, but every run then "
        "fails late: the trainer writes into its own pod and the ModelVersion it registers "
        "is rejected by the API server (artifact.uri allows pvc, s3, http(s) only)"
    )
    assert "storage_uri" in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [("METRICS_PORT", "0"), ("RUN_HISTORY_LIMIT", "0"), ("LOG_LEVEL", "TRACE")],
)
def test_out_of_range_values_are_rejected_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"MLPLANE_{name}", value)
    with pytest.raises(ValidationError, match=name.lower()):
        OperatorSettings()


def test_a_run_history_longer_than_the_crd_allows_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # status.runs has maxItems 50: a longer history could never be written.
    monkeypatch.setenv("MLPLANE_RUN_HISTORY_LIMIT", "51")
    with pytest.raises(ValidationError, match="run_history_limit"):
        OperatorSettings()
    monkeypatch.setenv("MLPLANE_RUN_HISTORY_LIMIT", "50")
    assert OperatorSettings().run_history_limit == 50


def test_allowed_images_are_comma_separated_patterns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPLANE_ALLOWED_IMAGES", "registry.example.com/ml/*, mlplane/runtime:*")
    assert OperatorSettings().allowed_images == ["registry.example.com/ml/*", "mlplane/runtime:*"]
    monkeypatch.setenv("MLPLANE_ALLOWED_IMAGES", "")
    assert OperatorSettings().allowed_images == []
