"""ModelVersion: an immutable record of one trained model in the registry."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints, field_validator

from mlplane_operator.api.base import (
    CustomResource,
    KindInfo,
    KubeModel,
    PrinterColumn,
    Rule,
    StatusModel,
    list_map,
)
from mlplane_operator.api.v1alpha1.common import (
    MetricValue,
    ModelName,
    ObjectName,
    Sha256,
    ShortText,
    Stage,
    StatusBase,
    StorageUri,
    check_unique_names,
)


class ArtifactFormat(StrEnum):
    """The serialized model format. Only onnx today."""

    ONNX = "onnx"


class Artifact(KubeModel):
    """The model file and its integrity record."""

    uri: StorageUri
    """Where the model file is: pvc://<claim>/<path>, s3://<bucket>/<key>, https://...
    or http://... ."""
    sha256: Sha256
    """The SHA-256 of the file (64 lowercase hex digits); verified before serving."""
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    """The file size in bytes."""
    format: ArtifactFormat = ArtifactFormat.ONNX
    """The file format: onnx."""


class Datatype(StrEnum):
    """A tensor datatype of the Open Inference Protocol."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


class TensorSpec(KubeModel):
    """One named input or output tensor."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """The tensor name, as in the ONNX graph."""
    datatype: Datatype
    """The element type (Open Inference Protocol): BOOL, UINT8..UINT64, INT8..INT64,
    FP16, FP32, FP64 or BYTES."""
    shape: Annotated[list[Annotated[int, Field(ge=-1)]], Field(max_length=8)]
    """The dimensions; -1 means any size (e.g. [-1, 4]: a batch of rows of 4 features)."""


TensorList = Annotated[
    list[TensorSpec], Field(min_length=1, max_length=256, json_schema_extra=list_map("name"))
]


class Signature(KubeModel):
    """The model's input and output tensors; checked against the ONNX graph."""

    inputs: TensorList
    """The input tensors."""
    outputs: TensorList
    """The output tensors."""

    @field_validator("inputs", "outputs")
    @classmethod
    def _unique(cls, tensors: list[TensorSpec]) -> list[TensorSpec]:
        check_unique_names(tensors, "spec.signature")
        return tensors


class DatasetLineage(KubeModel):
    """The data the model was trained on."""

    uri: Annotated[str, StringConstraints(max_length=2048)]
    """The dataset URI, or builtin://<name> for a scikit-learn dataset."""
    sha256: Sha256 | None = None
    """The SHA-256 of the data file."""


class FeedbackLineage(KubeModel):
    """The labeled production rows the model was also trained on."""

    inference_service: ObjectName
    """The InferenceService whose prediction log and feedback they came from."""
    uri: StorageUri
    """The snapshot of the rows used (feedback.parquet in the run's directory)."""
    sha256: Sha256
    """The SHA-256 of the snapshot."""
    rows: Annotated[int, Field(ge=0)]
    """How many labeled rows it holds."""


class EstimatorLineage(KubeModel):
    """The estimator that produced the model."""

    class_: Annotated[str, StringConstraints(max_length=256)] = Field(alias="class")
    """The estimator class."""
    params: dict[str, Any] | None = None
    """Its constructor parameters."""


class MetricSpread(KubeModel):
    """How the objective spread over the search's successful trials."""

    min: float
    """The lowest trial metric."""
    max: float
    """The highest trial metric."""
    mean: float
    """The mean trial metric."""


class SearchMetric(KubeModel):
    """A named validation metric and its value."""

    name: Annotated[str, StringConstraints(max_length=64)]
    """The metric, e.g. accuracy."""
    value: float
    """Its value on the validation folds."""


class SearchLineage(KubeModel):
    """The hyperparameter search whose best trial this version is."""

    strategy: Annotated[str, StringConstraints(max_length=16)]
    """grid or random."""
    seed: int | None = None
    """The random strategy's seed."""
    trials: int
    """How many trials ran."""
    succeeded: int | None = None
    """How many succeeded."""
    failed: int | None = None
    """How many failed."""
    cv_folds: int | None = None
    """The folds each trial was scored on (none: one validation split)."""
    best_trial: int | None = None
    """The index of the best trial."""
    best_params: dict[str, Any] | None = None
    """The best trial's parameters, refit into this version."""
    best_metric: SearchMetric | None = None
    """The best trial's objective."""
    metric_spread: MetricSpread | None = None
    """The objective's spread over the successful trials."""


class Lineage(KubeModel):
    """Where the model came from."""

    training_job: ObjectName | None = None
    """The TrainingJob that trained it."""
    run: Annotated[str, StringConstraints(max_length=253)] | None = None
    """The run of that TrainingJob."""
    dataset: DatasetLineage | None = None
    """The training data: its uri and SHA-256."""
    feedback: FeedbackLineage | None = None
    """The labeled production rows added to it (spec.dataset.feedback of the TrainingJob):
    the snapshot's uri, SHA-256 and row count."""
    estimator: EstimatorLineage | None = None
    """The estimator class and its parameters."""
    image: Annotated[str, StringConstraints(max_length=512)] | None = None
    """The trainer image."""
    search: SearchLineage | None = None
    """The hyperparameter search the version won, when its run searched."""


class Baseline(KubeModel):
    """The training-data profile (per-feature bins and quantiles) that drift detection
    compares live requests with."""

    uri: StorageUri
    """Where the profile (profile.json) is."""
    sha256: Sha256
    """The SHA-256 of the profile file."""


def _immutable(field: str, required: bool) -> Rule:
    cel = (
        f"self.{field} == oldSelf.{field}"
        if required
        else f"has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field})"
    )
    return Rule(
        cel=cel,
        message=f"spec.{field} is immutable; register a new ModelVersion instead "
        "(only spec.stage may change)",
        check=None,
        field_path=f".{field}",
    )


class ModelVersionSpec(KubeModel):
    """One version of a model. Everything but `stage` is immutable after creation."""

    rules = (
        _immutable("model", required=True),
        _immutable("version", required=True),
        _immutable("artifact", required=True),
        _immutable("signature", required=False),
        _immutable("metrics", required=False),
        _immutable("lineage", required=False),
        _immutable("baseline", required=False),
        _immutable("s3CredentialsSecret", required=False),
    )

    model: ModelName
    """The model this is a version of (a DNS-1123 label)."""
    version: Annotated[int, Field(ge=1)]
    """The version number, from 1. The object must be named <model>-v<version>."""
    artifact: Artifact
    """The model file: its uri, SHA-256 (verified before serving), size and format
    (onnx). Immutable."""
    signature: Signature | None = None
    """The input and output tensors (name, Open Inference Protocol datatype, shape);
    checked against the ONNX graph."""
    metrics: Annotated[dict[str, float], Field(max_length=64)] | None = None
    """Hold-out metrics by name (e.g. accuracy: 0.97)."""
    lineage: Lineage | None = None
    """Where the model came from: TrainingJob and run, dataset, estimator and image."""
    baseline: Baseline | None = None
    """The training-data profile (uri and SHA-256) that drift detection compares live
    requests with."""
    s3_credentials_secret: ObjectName | None = None
    """A Secret in this namespace (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally
    AWS_ENDPOINT_URL, AWS_REGION) that reads the s3:// artifact and baseline: the
    TrainingJob's spec.s3CredentialsSecret, recorded at registration. Verification and
    the runtime image's serving pods use it; without it, the platform's credentials.
    Immutable."""
    stage: Stage = Stage.NONE
    """The registry stage: None, Staging, Production or Archived. The only mutable field:
    promoting a version to Production archives the previous Production version."""


class ModelVersionPhase(StrEnum):
    """Pending, Verifying, Ready (verified and servable) or Failed."""

    PENDING = "Pending"
    VERIFYING = "Verifying"
    READY = "Ready"
    FAILED = "Failed"


class StageChange(StatusModel):
    """One stage transition."""

    stage: Stage
    """The stage entered."""
    time: datetime
    """When."""
    reason: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """Why (e.g. AutoPromoted, Superseded, Manual)."""


class ModelVersionStatus(StatusBase):
    """The observed state of the ModelVersion."""

    phase: ModelVersionPhase | None = None
    """A one-word summary: Pending, Verifying, Ready or Failed."""
    verified: bool | None = None
    """The artifact exists, its SHA-256 matches, it loads in ONNX Runtime and matches the
    signature."""
    verified_time: datetime | None = None
    """When the artifact was verified."""
    headline_metric: MetricValue | None = None
    """The metric shown in `kubectl get` (the promotion metric, else the first one)."""
    stage_history: list[StageChange] = Field(default_factory=list, max_length=50)
    """Stage transitions, oldest first (a bounded history)."""
    served_by: list[str] = Field(default_factory=list, max_length=100)
    """The InferenceServices in this namespace serving this version."""
    message: ShortText | None = None
    """The latest verification problem, for a person."""


class ModelVersion(CustomResource):
    """A ModelVersion is an immutable registry record of one trained model: its ONNX
    artifact (with SHA-256), signature, metrics, lineage and drift baseline, plus a
    mutable stage. The operator creates one per successful training run; apply one by
    hand to register an externally trained model."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="ModelVersion",
        plural="modelversions",
        short_names=("mv",),
        printer_columns=(
            PrinterColumn("Model", ".spec.model", "string", "The model."),
            PrinterColumn("Version", ".spec.version", "integer", "The version number."),
            PrinterColumn("Stage", ".spec.stage", "string", "The registry stage."),
            PrinterColumn("Verified", ".status.verified", "boolean", "Artifact verified."),
            PrinterColumn("Metric", ".status.headlineMetric.name", "string", "Headline metric."),
            PrinterColumn("Score", ".status.headlineMetric.value", "number", "Its value."),
            PrinterColumn("Phase", ".status.phase", "string", "A one-word summary.", 1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation."),
        ),
        selectable_fields=(".spec.model", ".spec.stage"),
    )
    rules = (
        # `string(int)` has no size bound in the CEL cost estimator, so the suffix is
        # parsed as an int instead of formatting the version as a string.
        Rule(
            cel="self.metadata.name.startsWith(self.spec.model + '-v') && "
            "self.metadata.name.substring(size(self.spec.model) + 2).matches('^[1-9][0-9]{0,17}$')"
            " && int(self.metadata.name.substring(size(self.spec.model) + 2)) == self.spec.version",
            message="metadata.name must be <spec.model>-v<spec.version> (e.g. iris-v3), so that "
            "each version of a model exists once",
            check=lambda mv: not mv.name or mv.name == version_name(mv.spec.model, mv.spec.version),
            field_path=".metadata",
        ),
    )

    kind: Literal["ModelVersion"] = "ModelVersion"
    """Kind is the REST resource this object represents."""
    spec: ModelVersionSpec
    """The version record: immutable except stage."""
    status: ModelVersionStatus = Field(default_factory=ModelVersionStatus)
    """The observed state, written by the operator."""


def version_name(model: str, version: int) -> str:
    """The object name of a ModelVersion: `<model>-v<version>`."""
    return f"{model}-v{version}"
