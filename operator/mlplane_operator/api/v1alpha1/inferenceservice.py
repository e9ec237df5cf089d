"""InferenceService: serve a registered model, roll new versions out, watch for drift."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from mlplane_operator.api.base import (
    CustomResource,
    KindInfo,
    KubeModel,
    PrinterColumn,
    Rule,
    StatusModel,
    defaults_to_empty_object,
)
from mlplane_operator.api.v1alpha1.common import (
    Image,
    ModelName,
    ObjectName,
    ResourceRequirements,
    ShortText,
    Stage,
    StatusBase,
    StorageUri,
)

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 50


class ServingStage(StrEnum):
    """The registry stage to follow: Staging or Production."""

    STAGING = "Staging"
    PRODUCTION = "Production"


class Autoscaling(KubeModel):
    """Scale on CPU with a HorizontalPodAutoscaler."""

    rules = (
        Rule(
            cel="!has(self.minReplicas) || self.maxReplicas >= self.minReplicas",
            message="spec.autoscaling.maxReplicas must be at least spec.autoscaling.minReplicas",
            check=lambda a: a.max_replicas >= a.min_replicas,
            field_path=".maxReplicas",
        ),
    )

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """The fewest replicas."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """The most replicas; at least minReplicas."""
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100)] = Field(
        default=80, alias="targetCPUUtilizationPercentage"
    )
    """The average CPU utilization (percent of requests) to keep, 1 to 100."""


class RolloutStrategy(StrEnum):
    """RollingUpdate (replace in place) or Canary (shift traffic in steps, with analysis)."""

    ROLLING_UPDATE = "RollingUpdate"
    CANARY = "Canary"


class Canary(KubeModel):
    """The canary steps: traffic shares for the new version, held for stepSeconds each."""

    rules = (
        Rule(
            cel="self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))",
            message="spec.rollout.canary.steps must be strictly ascending (e.g. [10, 25, 50])",
            check=lambda c: all(a < b for a, b in zip(c.steps, c.steps[1:], strict=False)),
            field_path=".steps",
        ),
    )

    steps: Annotated[list[Annotated[int, Field(ge=1, le=99)]], Field(min_length=1, max_length=10)]
    """The canary's traffic share in percent at each step, each 1 to 99, strictly
    ascending; after the last step the new version takes all traffic. Without a service
    mesh the share is a replica ratio, so it is rounded to whole replicas."""
    step_seconds: Annotated[int, Field(ge=1, le=86400)] = 60
    """How long each step is held (and analysed) before the next."""


class Analysis(KubeModel):
    """Thresholds the canary must meet at every step; a breach aborts the rollout."""

    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """The largest acceptable share of inference requests the canary answers with an
    error (any non-2xx: a version that rejects requests the stable one accepts is broken
    too), 0 to 1."""
    max_latency_p99_ms: Annotated[float, Field(gt=0)] | None = None
    """The largest acceptable 99th-percentile latency, in milliseconds."""
    min_requests: Annotated[int, Field(ge=0)] = 10
    """Requests the canary must serve in a step before the thresholds are judged; with
    fewer, the step waits."""
    min_quality: Annotated[float, Field(le=1)] | None = None
    """The least live value of spec.monitoring.quality.metric the canary must reach, for
    the metrics where higher is better (accuracy, f1_macro, r2; at most 1). Judged, as
    every quality gate, on an evaluation that ends after the step's stepSeconds and
    once minLabeled of the canary's predictions have feedback. Requires
    spec.monitoring.quality; with rmse or mae use maxError."""
    max_error: Annotated[float, Field(ge=0)] | None = None
    """The largest live value of spec.monitoring.quality.metric the canary may have, for
    the error metrics (rmse, mae: lower is better). Requires spec.monitoring.quality; with
    accuracy, f1_macro or r2 use minQuality."""
    quality_tolerance: Annotated[float, Field(ge=0)] | None = None
    """How much worse than the stable version's live metric the canary's may be, in the
    metric's own units (0.02 with accuracy: two points below stable), both over at
    least minLabeled labeled predictions; 0 means no worse at all. Requires
    spec.monitoring.quality."""
    fail_without_labels: bool | None = None
    """What a step does when the canary (or, with qualityTolerance, the stable version)
    still has fewer than minLabeled labeled predictions at the step's deadline
    (stepSeconds + progressDeadlineSeconds): fail the analysis (true, the default:
    no promotion without evidence) or judge the step on its traffic alone (false). Only
    with minQuality, maxError or qualityTolerance."""

    @property
    def gates_quality(self) -> bool:
        """Whether the canary's live quality is judged (minQuality, maxError or
        qualityTolerance)."""
        bounds = (self.min_quality, self.max_error, self.quality_tolerance)
        return any(bound is not None for bound in bounds)


class Rollout(KubeModel):
    """How a new version replaces the current one."""

    rules = (
        Rule(
            cel="!has(self.strategy) || self.strategy != 'Canary' || has(self.canary)",
            message="spec.rollout.canary is required with strategy Canary",
            check=lambda r: r.strategy != RolloutStrategy.CANARY or r.canary is not None,
            field_path=".canary",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.canary) || (has(self.strategy) && self.strategy == 'Canary')",
            message="spec.rollout.canary is only allowed with strategy Canary",
            check=lambda r: r.canary is None or r.strategy == RolloutStrategy.CANARY,
            field_path=".canary",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.analysis) || (has(self.strategy) && self.strategy == 'Canary')",
            message="spec.rollout.analysis is only allowed with strategy Canary",
            check=lambda r: r.analysis is None or r.strategy == RolloutStrategy.CANARY,
            field_path=".analysis",
            reason="FieldValueForbidden",
        ),
    )

    strategy: RolloutStrategy = RolloutStrategy.ROLLING_UPDATE
    """RollingUpdate or Canary."""
    canary: Canary | None = None
    """The canary steps: traffic percentages, strictly ascending, each held stepSeconds.
    Required with strategy Canary, forbidden otherwise."""
    analysis: Analysis | None = None
    """The thresholds each canary step must meet: error rate, p99 latency, after
    minRequests requests. Only with strategy Canary."""
    auto_rollback: bool = True
    """Roll back to the previous version when the analysis fails or the rollout misses
    its progressDeadlineSeconds."""
    progress_deadline_seconds: Annotated[int, Field(ge=1)] = 600
    """A rollout that has not completed this many seconds after it started fails (and is
    rolled back with autoRollback): a canary whose metrics cannot be read, that never
    gets minRequests requests, or a new version whose pods never become ready."""


class DriftMethod(StrEnum):
    """psi (population stability index) or ks (Kolmogorov-Smirnov statistic)."""

    PSI = "psi"
    KS = "ks"


class Drift(KubeModel):
    """Compare live requests with the training-data profile, per feature."""

    rules = (
        Rule(
            cel="!has(self.method) || self.method != 'ks' || self.threshold <= 1.0",
            message="spec.monitoring.drift.threshold must be at most 1 with method ks "
            "(a Kolmogorov-Smirnov statistic is between 0 and 1)",
            check=lambda d: d.method != DriftMethod.KS or d.threshold <= 1,
            field_path=".threshold",
        ),
    )

    enabled: bool = True
    """Run the drift monitor sidecar."""
    method: DriftMethod = DriftMethod.PSI
    """psi or ks."""
    threshold: Annotated[float, Field(gt=0)] = 0.2
    """A feature drifts when its statistic exceeds this (0.2 is the usual PSI
    threshold; with ks, at most 1)."""
    min_samples: Annotated[int, Field(ge=1)] = 100
    """Requests needed before drift is judged."""
    sample_rate: Annotated[float, Field(gt=0, le=1)] = 1.0
    """The share of requests the server hands to the monitor (0 < x <= 1): a ceiling,
    lowered under load by maxSamplesPerSecond."""
    max_samples_per_second: Annotated[int, Field(ge=0)] = 200
    """About how many rows per second each replica samples at most, however busy it is
    (0: no limit). Keeps the monitor's cost near zero at saturation; the drift window
    then spans seconds of traffic instead of milliseconds."""


class PredictionLogging(KubeModel):
    """Log sampled requests (rows, outputs, request id, version, time) as Parquet under
    `<storageUri>/<namespace>/<name>/predictions/`, and take ground truth for them at
    `POST /v2/models/{model}/feedback` (stored beside them, under `feedback/`)."""

    rules = (
        Rule(
            cel="!has(self.storageUri) || self.storageUri.startsWith('pvc://') || "
            "self.storageUri.startsWith('s3://')",
            message="spec.monitoring.logging.storageUri must be a pvc:// or s3:// URI: the "
            "log is written there",
            check=lambda g: g.storage_uri is None or g.storage_uri.startswith(("pvc://", "s3://")),
            field_path=".storageUri",
        ),
    )

    sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    """The share of requests logged, 0 to 1 (0: feedback only, nothing to join it with)."""
    storage_uri: StorageUri | None = None
    """Where the log goes (pvc:// or s3://). Default: the operator's artifact storage."""
    roll_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """A log file is written at least this often while requests arrive."""
    roll_rows: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    """A log file is written as soon as this many rows are buffered."""


class QualityMetric(StrEnum):
    """accuracy or f1_macro (classifiers), rmse, mae or r2 (regressors)."""

    ACCURACY = "accuracy"
    F1_MACRO = "f1_macro"
    RMSE = "rmse"
    MAE = "mae"
    R2 = "r2"

    @property
    def lower_is_better(self) -> bool:
        return self in (QualityMetric.RMSE, QualityMetric.MAE)


class Quality(KubeModel):
    """Evaluate live quality: a Job joins the logged predictions with their feedback on
    request id, per version, every intervalSeconds over the last windowSeconds."""

    metric: QualityMetric
    """accuracy, f1_macro, rmse, mae or r2."""
    threshold: float
    """The serving version is degraded when its metric is below this (accuracy, f1_macro,
    r2) or above it (rmse, mae), judged once minLabeled rows have feedback."""
    min_labeled: Annotated[int, Field(ge=1)] = 100
    """Labeled rows (predictions with feedback) needed before quality is judged."""
    window_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = 3600
    """The predictions evaluated: those of the last windowSeconds."""
    interval_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    """How often an evaluation Job runs."""


class Retrain(KubeModel):
    """Close the loop: drift or degraded quality starts a run of this TrainingJob."""

    training_job: ObjectName
    """The TrainingJob (in this namespace) to run when drift is detected or the live
    quality is degraded."""
    cooldown_seconds: Annotated[int, Field(ge=0)] = 3600
    """The least time between two retrain requests."""


class Monitoring(KubeModel):
    """Drift detection, closed-loop retraining and Prometheus scraping."""

    rules = (
        Rule(
            cel="!has(self.retrain) || has(self.quality) || (has(self.drift) && "
            "(!has(self.drift.enabled) || self.drift.enabled))",
            message="spec.monitoring.retrain requires spec.monitoring.drift to be enabled "
            "or spec.monitoring.quality",
            check=lambda m: (
                m.retrain is None
                or m.quality is not None
                or (m.drift is not None and m.drift.enabled)
            ),
            field_path=".retrain",
        ),
        Rule(
            cel="!has(self.quality) || has(self.logging)",
            message="spec.monitoring.quality requires spec.monitoring.logging: it evaluates "
            "the logged predictions",
            check=lambda m: m.quality is None or m.logging is not None,
            field_path=".quality",
            reason="FieldValueRequired",
        ),
    )

    drift: Drift | None = None
    """Drift detection: compare live requests per feature with the training-data profile
    (psi or ks) and report drift above threshold."""
    logging: PredictionLogging | None = None
    """The prediction log and the feedback endpoint: the ground of live quality."""
    quality: Quality | None = None
    """Live quality: evaluate logged predictions against feedback on an interval and
    report status.quality and QualityDegraded. Requires logging."""
    retrain: Retrain | None = None
    """On drift or degraded quality, start a run of this TrainingJob (at most once per
    cooldownSeconds). Requires drift enabled or quality."""
    service_monitor: bool = False
    """Create a Prometheus Operator ServiceMonitor for the server and monitor metrics."""


_ANALYSIS = "has(self.rollout) && has(self.rollout.analysis)"
_QUALITY = "has(self.monitoring) && has(self.monitoring.quality)"
_GATES = (
    f"({_ANALYSIS} && (has(self.rollout.analysis.minQuality) || "
    "has(self.rollout.analysis.maxError) || has(self.rollout.analysis.qualityTolerance)))"
)


def _gates(spec: InferenceServiceSpec) -> bool:
    return spec.rollout.analysis is not None and spec.rollout.analysis.gates_quality


def _quality_metric(spec: InferenceServiceSpec) -> QualityMetric | None:
    quality = spec.monitoring.quality if spec.monitoring else None
    return quality.metric if quality else None


def _lower_is_better(spec: InferenceServiceSpec) -> bool:
    metric = _quality_metric(spec)
    return metric is not None and metric.lower_is_better


def _has_cpu(resources: ResourceRequirements | None) -> bool:
    """A CPU request, given or defaulted from the limit as Kubernetes does."""
    if resources is None:
        return False
    return "cpu" in (resources.requests or {}) or "cpu" in (resources.limits or {})


MAX_BATCH_SIZE = 10_000  # the server's --max-rows default: no batch is larger than a request
MAX_BATCH_LATENCY_MS = 1000  # the server's bound


class Batching(KubeModel):
    """Adaptive batching: concurrent V2 requests (REST and gRPC) for the model share one
    ONNX Runtime run, and each gets its own rows back."""

    max_batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] = 64
    """The most rows in one run (default 64). A larger request runs alone."""
    max_latency_ms: Annotated[float, Field(ge=0, le=MAX_BATCH_LATENCY_MS)] = 0
    """The longest a batch waits for more requests while the model is free (default 0:
    no wait, so a lone request is not delayed; under load, requests that arrive during a
    run form the next batch)."""


class Server(KubeModel):
    """Options of the model server."""

    batching: Batching | None = None
    """Coalesce concurrent requests into one run (off when absent)."""


class InferenceServiceSpec(KubeModel):
    """What to serve and how: a model version (pinned, or following a stage), its
    capacity, how new versions roll out, and monitoring."""

    rules = (
        Rule(
            cel="!(has(self.version) && has(self.stage))",
            message="spec.version and spec.stage are mutually exclusive: pin a version or "
            "follow a stage",
            check=lambda s: s.version is None or s.stage is None,
            field_path=".stage",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!(has(self.replicas) && has(self.autoscaling))",
            message="spec.replicas and spec.autoscaling are mutually exclusive",
            check=lambda s: s.replicas is None or s.autoscaling is None,
            field_path=".autoscaling",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.autoscaling) || (has(self.resources) && ("
            "(has(self.resources.requests) && 'cpu' in self.resources.requests) || "
            "(has(self.resources.limits) && 'cpu' in self.resources.limits)))",
            message="spec.autoscaling needs spec.resources.requests.cpu: the "
            "HorizontalPodAutoscaler scales on CPU utilization, a percentage of the request",
            check=lambda s: s.autoscaling is None or _has_cpu(s.resources),
            field_path=".resources",
            reason="FieldValueRequired",
        ),
        Rule(
            cel=f"!{_GATES} || (has(self.monitoring) && has(self.monitoring.quality))",
            message="spec.rollout.analysis.minQuality, maxError and qualityTolerance judge the "
            "canary's live spec.monitoring.quality.metric: they require spec.monitoring.quality",
            check=lambda s: not _gates(s) or _quality_metric(s) is not None,
            field_path=".rollout.analysis",
            reason="FieldValueRequired",
        ),
        Rule(
            cel=f"!({_ANALYSIS} && has(self.rollout.analysis.minQuality) && {_QUALITY} && "
            "self.monitoring.quality.metric in ['rmse', 'mae'])",
            message="spec.rollout.analysis.minQuality is for metrics where higher is better "
            "(accuracy, f1_macro, r2); spec.monitoring.quality.metric is an error (rmse, "
            "mae): bound it with spec.rollout.analysis.maxError",
            check=lambda s: (
                s.rollout.analysis is None
                or s.rollout.analysis.min_quality is None
                or not _lower_is_better(s)
            ),
            field_path=".rollout.analysis.minQuality",
        ),
        Rule(
            cel=f"!({_ANALYSIS} && has(self.rollout.analysis.maxError) && {_QUALITY} && "
            "!(self.monitoring.quality.metric in ['rmse', 'mae']))",
            message="spec.rollout.analysis.maxError is for error metrics (rmse, mae); "
            "spec.monitoring.quality.metric is one where higher is better (accuracy, "
            "f1_macro, r2): bound it with spec.rollout.analysis.minQuality",
            check=lambda s: (
                s.rollout.analysis is None
                or s.rollout.analysis.max_error is None
                or _quality_metric(s) is None
                or _lower_is_better(s)
            ),
            field_path=".rollout.analysis.maxError",
        ),
        Rule(
            cel=f"!({_ANALYSIS} && has(self.rollout.analysis.failWithoutLabels)) || {_GATES}",
            message="spec.rollout.analysis.failWithoutLabels is only allowed with a quality "
            "gate (minQuality, maxError or qualityTolerance)",
            check=lambda s: (
                s.rollout.analysis is None
                or s.rollout.analysis.fail_without_labels is None
                or _gates(s)
            ),
            field_path=".rollout.analysis.failWithoutLabels",
            reason="FieldValueForbidden",
        ),
    )

    model: ModelName
    """The model to serve."""
    version: Annotated[int, Field(ge=1)] | None = None
    """Pin this version. Mutually exclusive with stage."""
    stage: ServingStage | None = None
    """Follow the version in this stage (Staging or Production): a newly promoted version
    rolls out by itself. With neither version nor stage: Production."""
    replicas: Annotated[int, Field(ge=0, le=1000)] | None = None
    """A fixed number of replicas (default 1). Mutually exclusive with autoscaling."""
    autoscaling: Autoscaling | None = None
    """Scale with a HorizontalPodAutoscaler between minReplicas and maxReplicas on CPU
    utilization, instead of a fixed replica count. Mutually exclusive with replicas."""
    rollout: Rollout = Field(default_factory=Rollout, json_schema_extra=defaults_to_empty_object())
    """How a new version replaces the current one: strategy RollingUpdate (default) or
    Canary with canary steps, analysis thresholds and automatic rollback."""
    monitoring: Monitoring | None = None
    """Drift detection against the training-data baseline, closed-loop retraining through a
    TrainingJob, and a Prometheus ServiceMonitor."""
    resources: ResourceRequirements | None = None
    """Compute resources per server replica: limits and requests per resource (cpu,
    memory), as in a Pod."""
    image: Image | None = None
    """The server image. Default: the operator's configured runtime image."""
    threads: Annotated[int, Field(ge=1, le=64)] | None = None
    """ONNX Runtime intra-op threads per replica. Default: 1."""
    server: Server | None = None
    """Model server options: adaptive batching."""
    service_account_name: ObjectName | None = None
    """The ServiceAccount the server pods run as."""

    @property
    def effective_stage(self) -> Stage | None:
        """The stage followed, or None when a version is pinned."""
        if self.version is not None:
            return None
        return Stage((self.stage or ServingStage.PRODUCTION).value)

    @property
    def effective_replicas(self) -> int:
        """The replica count without autoscaling."""
        return 1 if self.replicas is None else self.replicas


class InferenceServicePhase(StrEnum):
    """Pending (nothing servable yet), Progressing (a rollout is under way), Ready,
    Degraded (serving, but with fewer ready replicas than wanted) or Failed."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class RolloutPhase(StrEnum):
    """Progressing, Succeeded, RolledBack or Failed."""

    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class RolloutRecord(StatusModel):
    """One rollout of a version."""

    version: int
    """The version rolled out."""
    previous_version: int | None = None
    """The version it replaced."""
    strategy: RolloutStrategy | None = None
    """The strategy used."""
    start_time: datetime | None = None
    """When the rollout started."""
    completion_time: datetime | None = None
    """When it ended."""
    outcome: RolloutPhase
    """How it went."""
    message: ShortText | None = None
    """Why, for a person (e.g. the analysis threshold that failed)."""


class QualityReading(StatusModel):
    """The live quality of one version over one evaluation window."""

    version: int
    """The version evaluated."""
    metric: QualityMetric
    """The metric."""
    value: float | None = None
    """Its value over the labeled rows; none while no row is labeled."""
    labeled: int
    """Predictions in the window with feedback."""
    logged: int | None = None
    """Predictions logged in the window."""
    window_start: datetime
    """The window's start."""
    window_end: datetime
    """The window's end."""


class InferenceServiceStatus(StatusBase):
    """The observed state of the InferenceService."""

    phase: InferenceServicePhase | None = None
    """A one-word summary: Pending, Progressing, Ready, Degraded or Failed."""
    url: str | None = None
    """The in-cluster URL of the Open Inference Protocol endpoint."""
    serving_version: int | None = None
    """The version taking (stable) traffic."""
    canary_version: int | None = None
    """The version being rolled out as a canary, if any."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """The canary's current traffic share, in percent."""
    replicas: int | None = None
    """The replicas wanted, all versions together."""
    ready_replicas: int | None = None
    """The ready replicas, all versions together."""
    rollout_phase: RolloutPhase | None = None
    """The state of the current or latest rollout."""
    rollout_history: list[RolloutRecord] = Field(default_factory=list, max_length=50)
    """Recent rollouts, oldest first (a bounded history)."""
    last_retrain_time: datetime | None = None
    """When drift or degraded quality last triggered a retrain."""
    quality: list[QualityReading] = Field(default_factory=list, max_length=20)
    """The live quality per version from the latest evaluation (spec.monitoring.quality)."""
    last_evaluation_time: datetime | None = None
    """The end of the window of the latest evaluation read."""


class InferenceService(CustomResource):
    """An InferenceService serves a ModelVersion over the Open Inference Protocol (KServe
    V2) and KServe V1, rolls new versions out (in place or as a canary with analysis and
    automatic rollback) and can watch for data drift and trigger retraining."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="InferenceService",
        plural="inferenceservices",
        short_names=("mlisvc",),
        printer_columns=(
            PrinterColumn("Model", ".spec.model", "string", "The model served."),
            PrinterColumn("Serving", ".status.servingVersion", "integer", "Stable version."),
            PrinterColumn("Canary", ".status.canaryVersion", "integer", "Canary version."),
            PrinterColumn("Weight", ".status.canaryWeight", "integer", "Canary share, %."),
            PrinterColumn("Ready", ".status.readyReplicas", "integer", "Ready replicas."),
            PrinterColumn("URL", ".status.url", "string", "Inference endpoint."),
            PrinterColumn("Phase", ".status.phase", "string", "A one-word summary.", 1),
            PrinterColumn("Rollout", ".status.rolloutPhase", "string", "Rollout state.", 1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation."),
        ),
        selectable_fields=(".spec.model",),
    )
    rules = (
        Rule(
            cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && "
            f"self.metadata.name.matches('{DNS1035_LABEL}')",
            message=f"metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', "
            f"starting with a letter) of at most {MAX_NAME_LENGTH} characters: it names a "
            "Service and its Deployments",
            check=lambda isvc: (
                not isvc.name or (len(isvc.name) <= MAX_NAME_LENGTH and _is_dns1035(isvc.name))
            ),
            field_path=".metadata",
        ),
    )

    kind: Literal["InferenceService"] = "InferenceService"
    """Kind is the REST resource this object represents."""
    spec: InferenceServiceSpec
    """What to serve and how: model and version or stage, capacity, rollout, monitoring."""
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus)
    """The observed state, written by the operator."""


def _is_dns1035(name: str) -> bool:
    return re.fullmatch(DNS1035_LABEL, name) is not None
