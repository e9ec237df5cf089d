"""mlplane.io/v1alpha1: TrainingJob, ModelVersion and InferenceService."""

from mlplane_operator.api.base import API_VERSION, GROUP, VERSION, CustomResource
from mlplane_operator.api.v1alpha1.common import (
    Condition,
    ConditionStatus,
    ConditionType,
    MetricValue,
    Stage,
    utc_now,
)
from mlplane_operator.api.v1alpha1.inferenceservice import (
    InferenceService,
    InferenceServicePhase,
    InferenceServiceSpec,
    InferenceServiceStatus,
    RolloutPhase,
    RolloutRecord,
    RolloutStrategy,
)
from mlplane_operator.api.v1alpha1.modelversion import (
    ModelVersion,
    ModelVersionPhase,
    ModelVersionSpec,
    ModelVersionStatus,
    StageChange,
    version_name,
)
from mlplane_operator.api.v1alpha1.trainingjob import (
    TrainingJob,
    TrainingJobPhase,
    TrainingJobSpec,
    TrainingJobStatus,
    TrainingRun,
)

KINDS: tuple[type[CustomResource], ...] = (TrainingJob, ModelVersion, InferenceService)
"""Every kind of this version, in the order the CRDs are generated."""

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "InferenceService",
    "InferenceServicePhase",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "MetricValue",
    "ModelVersion",
    "ModelVersionPhase",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "RolloutPhase",
    "RolloutRecord",
    "RolloutStrategy",
    "Stage",
    "StageChange",
    "TrainingJob",
    "TrainingJobPhase",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "TrainingRun",
    "utc_now",
    "version_name",
]
