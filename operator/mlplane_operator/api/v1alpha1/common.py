"""Types shared by the three kinds: names, URIs, stages, pod knobs and status parts."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, WithJsonSchema, field_validator

from mlplane_operator.api.base import KubeModel, Rule, StatusModel, list_map

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A pvc:// path segment that is neither "." nor "..": the URI must stay inside its claim
# (RE2, which CEL uses, has no lookahead; hence the three spellings of "not a dot name").
_PVC_SEGMENT = r"([^\s/.][^\s/]*|\.[^\s/.][^\s/]*|\.\.[^\s/]+)?"
STORAGE_URI = (
    rf"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/{_PVC_SEGMENT})*|(s3|https?)://[^\s/]+(/[^\s]*)?)$"
)
SHA256_HEX = r"^[a-f0-9]{64}$"
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

ModelName = Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=63)]
"""A model name: a DNS-1123 label (versions are named `<model>-v<N>`)."""
ObjectName = Annotated[str, StringConstraints(pattern=DNS1123_SUBDOMAIN, max_length=253)]
StorageUri = Annotated[str, StringConstraints(pattern=STORAGE_URI, max_length=2048)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_HEX, min_length=64, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
Image = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY, max_length=64)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity: an integer or a string such as `500m`, `1Gi`."""


class Stage(StrEnum):
    """A registry stage: None (registered only), Staging, Production or Archived."""

    NONE = "None"
    STAGING = "Staging"
    PRODUCTION = "Production"
    ARCHIVED = "Archived"


class ConditionStatus(StrEnum):
    """True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """The condition types every mlplane kind reports (kstatus conventions)."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


def utc_now() -> datetime:
    """Now, to the second: the precision Kubernetes keeps for timestamps."""
    return datetime.now(UTC).replace(microsecond=0)


class ResourceRequirements(KubeModel):
    """Compute resources for the container, as in a Pod (corev1.ResourceRequirements)."""

    limits: Annotated[dict[str, Quantity], Field(max_length=16)] | None = None
    """The most the container may use, per resource (cpu, memory, ...)."""
    requests: Annotated[dict[str, Quantity], Field(max_length=16)] | None = None
    """What the scheduler reserves for the container, per resource (cpu, memory, ...)."""


class TolerationOperator(StrEnum):
    """Exists (any value) or Equal (the value must match)."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect to match: NoSchedule, PreferNoSchedule or NoExecute."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(KubeModel):
    """A toleration for the pod, as in a Pod (corev1.Toleration)."""

    rules = (
        Rule(
            cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
            message="spec.tolerations[].value must be empty when operator is Exists",
            check=lambda t: t.operator != TolerationOperator.EXISTS or t.value is None,
            field_path=".value",
        ),
    )

    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    """The taint key to tolerate; empty with operator Exists means every taint."""
    operator: TolerationOperator | None = None
    """How key and value match the taint. Default Equal."""
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    """The taint value to match (operator Equal)."""
    effect: TaintEffect | None = None
    """The taint effect to match; empty means all effects."""
    toleration_seconds: int | None = None
    """With effect NoExecute: how long the pod stays bound after the taint appears."""


class EnvVar(KubeModel):
    """An environment variable for the container: a literal value or a reference."""

    rules = (
        Rule(
            cel="!(has(self.value) && has(self.valueFrom))",
            message="spec.env[]: set value or valueFrom, not both",
            check=lambda e: e.value is None or e.value_from is None,
            field_path=".valueFrom",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.valueFrom) || !('secretKeyRef' in self.valueFrom)",
            message="spec.env[].valueFrom.secretKeyRef is not allowed: the operator would "
            "hand a Secret of this namespace to a pod on behalf of whoever may create this "
            "object; allowed: value, configMapKeyRef, fieldRef, resourceFieldRef",
            check=lambda e: e.value_from is None or "secretKeyRef" not in e.value_from,
            field_path=".valueFrom",
            reason="FieldValueForbidden",
        ),
    )

    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=128)]
    """The variable name."""
    value: Annotated[str, StringConstraints(max_length=32768)] | None = None
    """The literal value."""
    value_from: dict[str, dict[str, Any]] | None = None
    """Where the value comes from, as in a Pod: configMapKeyRef, fieldRef or
    resourceFieldRef, passed to the container unchanged. Not secretKeyRef: creating this
    object must not be a way to read the namespace's Secrets."""


def check_unique_names(items: list[Any] | None, where: str) -> None:
    """Mirror of list-type map: raise naming the first duplicated `name`."""
    seen: set[str] = set()
    for item in items or []:
        if item.name in seen:
            raise ValueError(f"{where}: duplicate name {item.name!r}")
        seen.add(item.name)


class Condition(StatusModel):
    """An observation of one aspect of the object (metav1.Condition)."""

    type: Annotated[str, StringConstraints(pattern=CONDITION_TYPE, max_length=316)]
    """The condition type: Ready (the aggregate), Reconciling (work in progress), Stalled
    (failed and will not recover without a change), or a kind-specific one."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: Annotated[
        str, StringConstraints(pattern=CONDITION_REASON, min_length=1, max_length=1024)
    ]
    """A CamelCase word saying why the condition has this status."""
    message: Annotated[str, StringConstraints(max_length=32768)]
    """A sentence for a person: what happened, and what to do about it."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this condition was computed from."""


class MetricValue(StatusModel):
    """A named metric and its value."""

    name: str
    """The metric name, e.g. accuracy or rmse."""
    value: float
    """The metric value on the hold-out set."""


class StatusBase(StatusModel):
    """What every mlplane status has: the observed generation, a phase and conditions."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(
        default_factory=list, max_length=32, json_schema_extra=list_map("type")
    )
    """Standard conditions: Ready (aggregate), Reconciling, Stalled and kind-specific ones."""

    @field_validator("conditions")
    @classmethod
    def _unique_condition_types(cls, conditions: list[Condition]) -> list[Condition]:
        types = [c.type for c in conditions]
        if len(types) != len(set(types)):
            raise ValueError("status.conditions: duplicate condition type")
        return conditions

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if any."""
        return next((c for c in self.conditions if c.type == type_), None)
