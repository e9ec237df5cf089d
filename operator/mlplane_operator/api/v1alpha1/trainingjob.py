"""TrainingJob: train a model on a dataset, evaluate it, and register a ModelVersion."""

from __future__ import annotations

import math
import re
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
    defaults_to_empty_object,
    list_map,
)
from mlplane_operator.api.v1alpha1.common import (
    EnvVar,
    Image,
    MetricValue,
    ModelName,
    ObjectName,
    ResourceRequirements,
    ShortText,
    Stage,
    StatusBase,
    StorageUri,
    Toleration,
    check_unique_names,
)

CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
# Five fields whose day of month never occurs in their month (and no day of week that
# would fire instead): 30 or 31 February, 31 April, June, September or November. The
# operator also refuses any other expression that never fires (lists, ranges).
NEVER_FIRES = (
    r"(?i)^\S+\s+\S+\s+(0?(30|31)|30,31|31,30)\s+(0?2|feb)\s+[*?]$"
    r"|^\S+\s+\S+\s+31\s+(0?4|0?6|0?9|11|apr|jun|sep|nov)\s+[*?]$"
)
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
MAX_RUN_HISTORY = 50  # status.runs maxItems; the operator's run history limit stays below
MAX_TRIALS = 100  # spec.search.maxTrials; the trainer has the same bound
DEFAULT_RANDOM_TRIALS = 10
MAX_STATUS_TRIALS = 20  # status.search.trials: the trainer reports at most this many
PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class BuiltinDataset(StrEnum):
    """A dataset bundled with scikit-learn."""

    IRIS = "iris"
    WINE = "wine"
    BREAST_CANCER = "breast_cancer"
    DIABETES = "diabetes"
    DIGITS = "digits"


class DataFormat(StrEnum):
    """The file format of a dataset at a URI."""

    CSV = "csv"
    PARQUET = "parquet"


class Metric(StrEnum):
    """A hold-out metric. Classification: accuracy, f1_macro, precision, recall, roc_auc.
    Regression: r2, rmse, mae (rmse and mae: lower is better)."""

    ACCURACY = "accuracy"
    F1_MACRO = "f1_macro"
    PRECISION = "precision"
    RECALL = "recall"
    ROC_AUC = "roc_auc"
    R2 = "r2"
    RMSE = "rmse"
    MAE = "mae"


class Preprocessor(StrEnum):
    """A preprocessing step applied before the estimator."""

    STANDARD_SCALER = "StandardScaler"
    MIN_MAX_SCALER = "MinMaxScaler"


ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class FeedbackData(KubeModel):
    """Labeled production rows: the requests an InferenceService logged
    (spec.monitoring.logging), each input row with the truth its feedback gave."""

    inference_service: ObjectName
    """The InferenceService in this namespace whose prediction log and feedback are read.
    A run starts without its rows (and says so in an Event) while it does not exist or
    logs nothing."""
    window_seconds: Annotated[int, Field(ge=60, le=90 * 86400)] = 7 * 86400
    """The rows of the last windowSeconds before the run starts (predictions logged and
    feedback received in it); default 7 days, at most 90."""


class CategoricalEncoder(StrEnum):
    """How categorical columns are encoded: OneHotEncoder (one 0/1 column per category;
    unseen categories encode as all zeros) or OrdinalEncoder (one integer per category;
    unseen: -1)."""

    ONE_HOT = "OneHotEncoder"
    ORDINAL = "OrdinalEncoder"


class Categorical(KubeModel):
    """String columns of a csv/parquet dataset, encoded before the estimator. The model
    then takes every feature column as its own named input ([-1, 1]; BYTES for these
    columns, FP32 for the others), so clients send rows as they are in the data."""

    rules = (
        Rule(
            cel="self.columns.all(c, self.columns.exists_one(d, d == c))",
            message="spec.estimator.categorical.columns must not name a column twice",
            check=lambda c: len(set(c.columns)) == len(c.columns),
            field_path=".columns",
            reason="FieldValueDuplicate",
        ),
    )

    encoder: CategoricalEncoder = CategoricalEncoder.ONE_HOT
    """OneHotEncoder (default) or OrdinalEncoder."""
    columns: Annotated[list[ColumnName], Field(min_length=1, max_length=256)]
    """The feature columns that hold categories (strings)."""


class Dataset(KubeModel):
    """The training data: exactly one of `builtin` (a scikit-learn dataset) or `uri`."""

    rules = (
        Rule(
            cel="has(self.builtin) != has(self.uri)",
            message="spec.dataset must set exactly one of builtin or uri",
            check=lambda d: (d.builtin is None) != (d.uri is None),
        ),
        Rule(
            cel="!has(self.uri) || has(self.target)",
            message="spec.dataset.target is required with spec.dataset.uri: "
            "name the column to predict",
            check=lambda d: d.uri is None or d.target is not None,
            field_path=".target",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.builtin) || !has(self.target)",
            message="spec.dataset.target is only allowed with spec.dataset.uri "
            "(a builtin dataset has its own target)",
            check=lambda d: d.builtin is None or d.target is None,
            field_path=".target",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.builtin) || !has(self.format)",
            message="spec.dataset.format is only allowed with spec.dataset.uri",
            check=lambda d: d.builtin is None or d.format is None,
            field_path=".format",
            reason="FieldValueForbidden",
        ),
    )

    builtin: BuiltinDataset | None = None
    """A scikit-learn bundled dataset: iris, wine, breast_cancer, diabetes or digits."""
    uri: StorageUri | None = None
    """Where the data file is: pvc://<claim>/<path>, s3://<bucket>/<key>, https://... or
    http://... ."""
    format: DataFormat | None = None
    """The file format at `uri`: csv or parquet. Default csv."""
    target: ColumnName | None = None
    """The column to predict. Required with `uri`."""
    features: Annotated[list[ColumnName], Field(min_length=1, max_length=1024)] | None = None
    """The feature columns to train on, in order. Default: every column but the target."""
    feedback: FeedbackData | None = None
    """Also train on an InferenceService's labeled production rows: its logged inputs
    joined with their feedback, added to the data before the train/test split. The run
    writes the rows it used as feedback.parquet next to the model, and the ModelVersion's
    spec.lineage.feedback records it (uri, sha256, rows)."""

    @property
    def effective_format(self) -> DataFormat:
        return self.format or DataFormat.CSV


class Estimator(KubeModel):
    """The scikit-learn estimator to fit (one that skl2onnx converts to ONNX)."""

    class_: Annotated[
        str,
        StringConstraints(
            pattern=r"^([A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*$", max_length=256
        ),
    ] = Field(alias="class")
    """The estimator class: a bare name (RandomForestClassifier) or its import path
    (sklearn.ensemble.RandomForestClassifier). The trainer accepts an allowlist of
    estimators that convert to ONNX and reports any other in the run's message."""
    params: dict[str, Any] | None = None
    """Constructor parameters for the estimator, passed as given (e.g. n_estimators: 100)."""
    preprocessing: Annotated[list[Preprocessor], Field(max_length=8)] | None = None
    """Preprocessing steps applied in order before the estimator: StandardScaler,
    MinMaxScaler. With `categorical`, they apply to the other (numeric) columns."""
    categorical: Categorical | None = None
    """Columns that hold categories (strings), encoded with OneHotEncoder or
    OrdinalEncoder; needs a csv/parquet dataset (spec.dataset.uri)."""


class SearchStrategy(StrEnum):
    """grid: every combination of the value lists, in order; random: each parameter
    drawn independently per trial from a generator seeded by (seed, trial index)."""

    GRID = "grid"
    RANDOM = "random"


class Scale(StrEnum):
    """How a range is sampled: linear (uniform) or log (uniform in the logarithm)."""

    LINEAR = "linear"
    LOG = "log"


class ParameterType(StrEnum):
    """The type of the values drawn from a range: float or int."""

    FLOAT = "float"
    INT = "int"


class ParameterSpace(KubeModel):
    """The values one estimator parameter takes: a list (`values`), or a range (`min`,
    `max`, with `scale` and `type`). (`values` holds any JSON values, which CEL cannot
    type, so "exactly one of values or min/max" is checked by the trainer, which fails
    the run naming the parameter.)"""

    rules = (
        Rule(
            cel="has(self.min) == has(self.max)",
            message="spec.search.parameters: a range needs both min and max",
            check=lambda p: (p.min is None) == (p.max is None),
            field_path=".max",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min < self.max",
            message="spec.search.parameters: a range's min must be less than its max",
            check=lambda p: p.min is None or p.max is None or p.min < p.max,
            field_path=".min",
        ),
        Rule(
            cel="!has(self.scale) || self.scale != 'log' || !has(self.min) || self.min > 0.0",
            message="spec.search.parameters: a log scale needs min > 0",
            check=lambda p: p.scale != Scale.LOG or p.min is None or p.min > 0,
            field_path=".min",
        ),
        Rule(
            cel="has(self.min) || (!has(self.scale) && !has(self.type))",
            message="spec.search.parameters: scale and type apply to a range (min/max), "
            "not to values",
            check=lambda p: p.min is not None or (p.scale is None and p.type is None),
            reason="FieldValueForbidden",
        ),
    )

    values: (
        Annotated[
            list[Any],
            Field(
                min_length=1,
                max_length=64,
                json_schema_extra={"items": {"x-kubernetes-preserve-unknown-fields": True}},
            ),
        ]
        | None
    ) = None
    """The values to try (numbers, strings, booleans), in order for the grid strategy."""
    min: float | None = None
    """The range's lower bound."""
    max: float | None = None
    """The range's upper bound (inclusive for int)."""
    scale: Scale | None = None
    """linear (default) or log (min must be > 0)."""
    type: ParameterType | None = None
    """float (default) or int."""


class Goal(StrEnum):
    """Whether a higher (maximize) or lower (minimize) metric is better."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class Objective(KubeModel):
    """The validation metric trials are compared on."""

    metric: Metric
    """The metric, computed on validation folds of the training rows (never on the
    hold-out set, which scores the refit model)."""
    goal: Goal | None = None
    """maximize or minimize. Default: minimize for rmse and mae, maximize otherwise."""


class Search(KubeModel):
    """A hyperparameter search: trials run as one Indexed Job (parallelism pods at a
    time, spread over nodes); each trial knows its parameters from its index. The best
    trial is refit on the training rows and registered; failed trials are recorded."""

    rules = (
        Rule(
            cel="!has(self.strategy) || self.strategy != 'grid' || "
            "self.parameters.all(k, !has(self.parameters[k].min) && !has(self.parameters[k].max))",
            message="spec.search.strategy grid needs a list of values for every parameter; "
            "use strategy random for ranges",
            check=lambda s: (
                s.strategy != SearchStrategy.GRID
                or all(p.values is not None for p in s.parameters.values())
            ),
            field_path=".parameters",
        ),
        Rule(
            cel="self.parameters.all(k, k.matches(" + repr(PARAMETER_NAME) + "))",
            message="spec.search.parameters: each key must be an estimator parameter name "
            "(letters, digits and _, e.g. max_depth)",
            check=lambda s: all(re.match(PARAMETER_NAME, k) for k in s.parameters),
            field_path=".parameters",
        ),
    )

    parameters: Annotated[dict[str, ParameterSpace], Field(min_length=1, max_length=32)]
    """Per estimator parameter, the values to try: {values: [...]} or {min, max, scale,
    type}. A trial's parameters go on top of spec.estimator.params."""
    strategy: SearchStrategy = SearchStrategy.RANDOM
    """grid or random (default)."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    """The seed of the random strategy: the same seed gives the same trials."""
    max_trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)] | None = None
    """How many trials run (1 to 100). Default: the grid's size, or 10 for random. A
    grid larger than this runs its first maxTrials combinations."""
    parallelism: Annotated[int, Field(ge=1, le=32)] = 1
    """How many trials run at once."""
    cv_folds: Annotated[int, Field(ge=2, le=10)] | None = None
    """Score each trial by k-fold cross-validation on the training rows. Default: one
    validation split of the training rows (validation.testSize of them)."""
    objective: Objective
    """The metric trials are compared on, and whether to maximize or minimize it."""

    def trial_count(self) -> int:
        """How many trials run (the trainer computes the same)."""
        if self.strategy == SearchStrategy.GRID:
            size = math.prod(len(p.values or ()) for p in self.parameters.values())
            return min(self.max_trials or size, size)
        return self.max_trials or DEFAULT_RANDOM_TRIALS


class Validation(KubeModel):
    """How the model is evaluated: a seeded train/test split and hold-out metrics."""

    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """The fraction of rows held out for evaluation, between 0 and 1 (exclusive)."""
    seed: Annotated[int, Field(ge=0)] = 0
    """The random seed for the split and for estimators that take a random_state."""
    metrics: Annotated[list[Metric], Field(min_length=1, max_length=8)] | None = None
    """The metrics to compute. Default: accuracy and f1_macro for classifiers; r2, rmse
    and mae for regressors."""


class Output(KubeModel):
    """Where the run's artifacts are written."""

    storage_uri: StorageUri | None = None
    """The base URI for artifacts (pvc://, s3://); each run writes under
    <storageUri>/<model>/<run>/. Default: the operator's configured storage."""


class AutoPromote(KubeModel):
    """Promote a new version to Production when it meets the policy."""

    rules = (
        Rule(
            cel="!has(self.minimum) || !has(self.maximum) || self.minimum <= self.maximum",
            message="spec.registration.autoPromote.minimum must not exceed "
            "spec.registration.autoPromote.maximum",
            check=lambda a: a.minimum is None or a.maximum is None or a.minimum <= a.maximum,
            field_path=".minimum",
        ),
    )

    metric: Metric
    """The metric the policy looks at; it must be one the run computes."""
    minimum: float | None = None
    """The metric must be at least this (for metrics where higher is better)."""
    maximum: float | None = None
    """The metric must be at most this (for rmse, mae: lower is better)."""
    must_beat_production: bool = True
    """The new version must score better than the current Production version."""


class RegistrationStage(StrEnum):
    """The stage a new version is registered in: None, Staging or Production."""

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"


class Registration(KubeModel):
    """How a successful run is registered as a ModelVersion."""

    rules = (
        Rule(
            cel="!has(self.autoPromote) || !has(self.stage) || self.stage != 'Production'",
            message="spec.registration.autoPromote cannot be combined with stage Production "
            "(every version would already be in Production)",
            check=lambda r: r.auto_promote is None or r.stage != RegistrationStage.PRODUCTION,
            field_path=".autoPromote",
            reason="FieldValueForbidden",
        ),
    )

    stage: RegistrationStage = RegistrationStage.NONE
    """The stage a new version gets: None, Staging or Production."""
    auto_promote: AutoPromote | None = None
    """Promote the new version to Production when the metric meets minimum/maximum and
    (by default) beats the current Production version."""

    @property
    def registry_stage(self) -> Stage:
        return Stage(self.stage.value)


class RunPolicy(KubeModel):
    """How runs execute, as in Kubeflow's runPolicy."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 1
    """How many times a failed trainer pod is retried before the run fails."""
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    """A run still going after this many seconds is stopped and fails."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    """Delete a finished run's Job (and pods) this many seconds after it ends. The
    operator deletes it, only once it has recorded the run's result."""
    suspend: bool = False
    """Suspend the TrainingJob: no new runs start (schedule included) and a running one
    is stopped."""


class TrainingJobSpec(KubeModel):
    """The desired training: what to train on, how, and what to do with the result.
    A new spec (generation) starts a new run; so do `schedule` and retrain requests."""

    rules = (
        Rule(
            cel=f"!has(self.schedule) || !self.schedule.matches({NEVER_FIRES!r})",
            message="spec.schedule never fires: that day of the month does not exist in "
            "that month (30 or 31 February, 31 April, June, September or November)",
            check=lambda s: s.schedule is None or not re.search(NEVER_FIRES, s.schedule),
            field_path=".schedule",
        ),
        Rule(
            cel="!has(self.registration) || !has(self.registration.autoPromote) || "
            "!has(self.validation) || !has(self.validation.metrics) || "
            "self.registration.autoPromote.metric in self.validation.metrics",
            message="spec.registration.autoPromote.metric must be one of spec.validation.metrics",
            check=lambda s: (
                s.registration.auto_promote is None
                or s.validation.metrics is None
                or s.registration.auto_promote.metric in s.validation.metrics
            ),
            field_path=".registration.autoPromote.metric",
        ),
    )

    model: ModelName
    """The model this trains (a DNS-1123 label); its versions are named <model>-v<N>."""
    dataset: Dataset
    """The training data: exactly one of builtin (a scikit-learn dataset) or uri (a CSV or
    Parquet file, with the target column to predict)."""
    estimator: Estimator
    """The scikit-learn estimator to fit (class and params), with optional preprocessing;
    it must be one that converts to ONNX."""
    validation: Validation = Field(
        default_factory=Validation, json_schema_extra=defaults_to_empty_object()
    )
    """How the model is evaluated: the hold-out fraction (testSize), the split seed and
    the metrics to compute."""
    search: Search | None = None
    """A hyperparameter search: the trials run first (one Indexed Job), then the best
    trial's parameters are refit and registered as the run's version."""
    output: Output | None = None
    """Where the run writes model.onnx, metrics.json and profile.json. Default: the
    operator's configured storage."""
    registration: Registration = Field(
        default_factory=Registration, json_schema_extra=defaults_to_empty_object()
    )
    """How a successful run is registered: the stage the new ModelVersion gets (default
    None) and an optional autoPromote policy for Production."""
    schedule: Annotated[str, StringConstraints(pattern=CRON, max_length=128)] | None = None
    """Retrain on a cron schedule (exactly five fields: minute hour day-of-month month
    day-of-week, e.g. "0 3 * * *", or @daily, @hourly, ...; times in UTC; no seconds
    field). A run is skipped while another is active. An expression that cannot be
    parsed or never fires stalls the TrainingJob (Stalled names spec.schedule) and
    starts no run."""
    run_policy: RunPolicy = Field(
        default_factory=RunPolicy, json_schema_extra=defaults_to_empty_object()
    )
    """Retries (backoffLimit), a deadline per run, clean-up of finished Jobs
    (ttlSecondsAfterFinished) and suspension."""
    image: Image | None = None
    """The trainer image. Default: the operator's configured runtime image."""
    resources: ResourceRequirements | None = None
    """Compute resources for the trainer container: limits and requests per resource
    (cpu, memory), as in a Pod."""
    service_account_name: ObjectName | None = None
    """The ServiceAccount the trainer pod runs as."""
    node_selector: Annotated[dict[str, str], Field(max_length=32)] | None = None
    """Node labels the trainer pod must be scheduled on."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = None
    """Tolerations for the trainer pod."""
    env: (
        Annotated[list[EnvVar], Field(max_length=64, json_schema_extra=list_map("name"))] | None
    ) = None
    """Extra environment variables for the trainer container."""
    s3_credentials_secret: ObjectName | None = None
    """A Secret in this namespace with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    optionally AWS_ENDPOINT_URL, AWS_REGION, for s3:// data and artifacts."""

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar] | None) -> list[EnvVar] | None:
        check_unique_names(env, "spec.env")
        return env


class TrainingJobPhase(StrEnum):
    """Pending, Scheduled (waiting for the next scheduled run), Running, Succeeded,
    Failed or Suspended."""

    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class RunTrigger(StrEnum):
    """What started a run: Spec (a new generation), Schedule, Retrain (drift on an
    InferenceService) or Manual."""

    SPEC = "Spec"
    SCHEDULE = "Schedule"
    RETRAIN = "Retrain"
    MANUAL = "Manual"


class RunOutcome(StrEnum):
    """Running, Succeeded, Failed, or Cancelled (superseded or suspended)."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class TrainingRun(StatusModel):
    """One run of the TrainingJob."""

    name: str
    """The run name, unique within the TrainingJob."""
    job: str | None = None
    """The batch/v1 Job that executes the run."""
    trigger: RunTrigger | None = None
    """What started the run."""
    generation: int | None = None
    """The TrainingJob metadata.generation the run trains."""
    start_time: datetime | None = None
    """When the run started."""
    completion_time: datetime | None = None
    """When the run ended."""
    outcome: RunOutcome
    """How the run went."""
    version: int | None = None
    """The ModelVersion number the run registered."""
    metric: MetricValue | None = None
    """The run's headline metric."""
    message: ShortText | None = None
    """Why the run ended this way, for a person."""


class TrialRecord(StatusModel):
    """One search trial: its parameters and how it scored."""

    index: int
    """The trial index (the Indexed Job's completion index)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The trial's estimator parameters."""
    outcome: str
    """Succeeded or Failed."""
    metric: float | None = None
    """The objective on the validation folds."""
    message: ShortText | None = None
    """Why the trial failed."""


class SearchStatus(StatusModel):
    """The newest registered search: its best trial and a bounded list of trials."""

    run: str
    """The run that searched."""
    strategy: str | None = None
    """grid or random."""
    total_trials: int | None = None
    """How many trials ran."""
    succeeded: int | None = None
    """How many trials succeeded."""
    failed: int | None = None
    """How many trials failed (recorded, not fatal)."""
    trials: list[TrialRecord] = Field(default_factory=list, max_length=MAX_STATUS_TRIALS)
    """Up to 20 trials, by index: the failed ones (up to 5) and the best."""
    best_trial: int | None = None
    """The index of the best trial."""
    best_params: dict[str, Any] | None = None
    """The best trial's parameters (what the registered version was refit with)."""
    best_metric: MetricValue | None = None
    """The best trial's objective on the validation folds."""


class TrainingJobStatus(StatusBase):
    """The observed state of the TrainingJob."""

    phase: TrainingJobPhase | None = None
    """A one-word summary: Pending, Scheduled, Running, Succeeded, Failed or Suspended."""
    runs: list[TrainingRun] = Field(default_factory=list, max_length=MAX_RUN_HISTORY)
    """Recent runs, oldest first (a bounded history)."""
    active_run: str | None = None
    """The run in progress, if any."""
    last_version: int | None = None
    """The newest ModelVersion number this TrainingJob registered."""
    last_metric: MetricValue | None = None
    """The headline metric of the newest registered version."""
    last_schedule_time: datetime | None = None
    """When the schedule last started a run."""
    next_schedule_time: datetime | None = None
    """When the schedule starts the next run."""
    search: SearchStatus | None = None
    """The newest registered run's hyperparameter search."""


class TrainingJob(CustomResource):
    """A TrainingJob trains a scikit-learn model on a dataset, converts it to ONNX,
    evaluates it on a hold-out set and registers the result as a ModelVersion."""

    kind_info: ClassVar[KindInfo] = KindInfo(
        kind="TrainingJob",
        plural="trainingjobs",
        short_names=("tj",),
        printer_columns=(
            PrinterColumn("Model", ".spec.model", "string", "The model this trains."),
            PrinterColumn("Phase", ".status.phase", "string", "A one-word summary."),
            PrinterColumn("Last Version", ".status.lastVersion", "integer", "The newest version."),
            PrinterColumn("Metric", ".status.lastMetric.name", "string", "Headline metric."),
            PrinterColumn("Score", ".status.lastMetric.value", "number", "Its value."),
            PrinterColumn(
                "Best Trial", ".status.search.bestMetric.value", "number", "Best search trial."
            ),
            PrinterColumn("Schedule", ".spec.schedule", "string", "Cron schedule.", priority=1),
            PrinterColumn("Active Run", ".status.activeRun", "string", "Run in progress.", 1),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation."),
        ),
        selectable_fields=(".spec.model",),
    )
    rules = (
        Rule(
            cel="size(self.metadata.name) <= 52",
            message="metadata.name must be at most 52 characters (it names the run's Jobs)",
            check=lambda tj: len(tj.name) <= 52,
            field_path=".metadata",
        ),
    )

    kind: Literal["TrainingJob"] = "TrainingJob"
    """Kind is the REST resource this object represents."""
    spec: TrainingJobSpec
    """The desired training: data, estimator, evaluation, registration and schedule."""
    status: TrainingJobStatus = Field(default_factory=TrainingJobStatus)
    """The observed state, written by the operator."""
