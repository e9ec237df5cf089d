"""Operator settings, read once from the environment (prefix ``MLPLANE_``).

Invalid settings fail fast at start-up with a message naming the variable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlplane_operator import __version__

STORAGE_SCHEMES = ("pvc://", "s3://")  # what a ModelVersion artifact.uri can record


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLPLANE_", extra="ignore")

    watch_namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated; empty watches all namespaces.",
    )
    runtime_image: str = Field(
        default=f"mlplane/runtime:{__version__}",
        description="Image for training, verification and serving pods when a resource sets none.",
    )
    storage_uri: str = Field(
        default="pvc://mlplane-artifacts/models",
        description="Where artifacts go when a TrainingJob sets no spec.output.storageUri.",
    )
    storage_pvc_create: bool = Field(
        default=True,
        description="Create the default storage PVC in a namespace the first time it is needed.",
    )
    storage_pvc_size: str = Field(default="1Gi", description="Size of a PVC the operator creates.")
    storage_class: str | None = Field(
        default=None,
        description="StorageClass of a PVC the operator creates (default class if unset).",
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint URL (MinIO etc.).")
    s3_secret: str | None = Field(
        default=None, description="Secret holding AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(default=8080, ge=1, le=65535)
    health_port: int = Field(default=8081, ge=1, le=65535)
    peering: str | None = Field(
        default=None, description="Kopf peering name for several replicas; empty runs standalone."
    )
    service_monitors: bool = Field(
        default=False, description="Create ServiceMonitors when asked and the CRD exists."
    )
    run_history_limit: int = Field(default=10, ge=1, le=100)
    resync_seconds: float = Field(
        default=5.0, gt=0, description="How often every object is reconciled without an event."
    )
    serving_port: int = Field(default=8080, ge=1, le=65535)
    monitor_port: int = Field(
        default=8081, ge=1, le=65535, description="The monitor's /drift and /metrics."
    )
    monitor_samples_port: int = Field(
        default=8082,
        ge=1,
        le=65535,
        description="The monitor's POST /samples, on the pod's loopback only: never exposed.",
    )

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("storage_uri")
    @classmethod
    def _storage_scheme(cls, value: str) -> str:
        if not value.startswith(STORAGE_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(STORAGE_SCHEMES)}; got {value!r}")
        return value

    @field_validator("peering", "s3_endpoint", "s3_secret", "storage_class", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


@lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    return OperatorSettings()
