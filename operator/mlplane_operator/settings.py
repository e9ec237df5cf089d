"""Operator settings, read once from the environment (prefix ``MLPLANE_``).

Invalid settings fail fast at start-up with a message naming the variable.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlplane_operator import __version__
from mlplane_operator.api.v1alpha1.trainingjob import MAX_RUN_HISTORY

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
    allowed_images: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Images a TrainingJob or InferenceService may set in spec.image, as "
        "comma-separated shell patterns (registry.example.com/ml/*); empty allows any. The "
        "runtime image is always allowed.",
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
    storage_pvc_access_mode: Literal["ReadWriteOnce", "ReadWriteMany"] = Field(
        default="ReadWriteOnce",
        description="Access mode of a PVC the operator creates. Trainer, verifier and server "
        "pods all mount it: ReadWriteOnce holds them to the node the volume is attached to, "
        "so a multi-node cluster wants ReadWriteMany (NFS, EFS, Filestore, CephFS) or S3.",
    )
    storage_class: str | None = Field(
        default=None,
        description="StorageClass of a PVC the operator creates (default class if unset).",
    )
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint URL (MinIO etc.).")
    s3_secret: str | None = Field(
        default=None,
        description="Secret holding AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; given only to "
        "pods that run the runtime image, never to an image a resource names.",
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
    run_history_limit: int = Field(
        default=10,
        ge=1,
        le=MAX_RUN_HISTORY,
        description="Runs kept in a TrainingJob's status.runs (the CRD allows at most "
        f"{MAX_RUN_HISTORY}: a longer history could never be written).",
    )
    resync_seconds: float = Field(
        default=300.0,
        gt=0,
        description="The safety net: how often every object is reconciled without an event "
        "(spread over the period). Changes and due work do not wait for it.",
    )
    poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often an object with time-driven work in progress (a rollout, drift "
        "detection) is reconciled.",
    )
    serving_port: int = Field(default=8080, ge=1, le=65535)
    serving_grpc_port: int = Field(
        default=8001, ge=1, le=65535, description="The server's Open Inference Protocol gRPC."
    )
    monitor_port: int = Field(
        default=8081, ge=1, le=65535, description="The monitor's /drift and /metrics."
    )
    monitor_samples_port: int = Field(
        default=8082,
        ge=1,
        le=65535,
        description="The monitor's POST /samples, on the pod's loopback only: never exposed.",
    )

    @field_validator("watch_namespaces", "allowed_images", mode="before")
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

    def s3_secret_for(self, image: str | None) -> str | None:
        """The platform's S3 Secret for a pod of `image` (None: the runtime image): only
        the runtime image gets it, never an image a resource names."""
        return self.s3_secret if (image or self.runtime_image) == self.runtime_image else None


@lru_cache(maxsize=1)
def get_settings() -> OperatorSettings:
    return OperatorSettings()
