"""The base classes every mlplane API model derives from.

A model is the single source of truth for one part of the API: its fields (with
camelCase aliases and their docstrings as descriptions), their bounds and defaults, and
the cross-field rules. Each `Rule` carries a CEL expression that the API server
enforces at admission and, next to it, the same check in Python, so that the operator
(and the unit tests) reject exactly what the API server rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "mlplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

RuleReason = Literal[
    "FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"
]


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: a CEL expression for the API server and its Python twin.

    `check` receives the model instance and returns True when the rule holds. It is None
    only for transition rules (they compare with `oldSelf`, which exists only on update).
    `field_path` (relative to the model, e.g. ".target") makes the API server report the
    error at that field instead of at the object that owns the rule.
    """

    cel: str
    message: str
    check: Callable[[Any], bool] | None
    field_path: str | None = None
    reason: RuleReason | None = None
    message_expression: str | None = None

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.cel

    def to_schema(self) -> dict[str, Any]:
        """The `x-kubernetes-validations` entry for this rule."""
        entry: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extras for a list merged by key (server-side apply, duplicate keys rejected)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def preserve_unknown_fields() -> dict[str, Any]:
    """Schema extras for a free-form object whose content the API server keeps as given."""
    return {"x-kubernetes-preserve-unknown-fields": True}


def defaults_to_empty_object() -> dict[str, Any]:
    """Schema extras that make the API server create an omitted object (with its defaults).

    Use with `Field(default_factory=TheModel, ...)`: pydantic then fills the same defaults,
    so a parsed manifest equals what the API server stores.
    """
    return {"default": {}}


class KubeModel(BaseModel):
    """A part of a spec: camelCase on the wire, unknown fields rejected, rules checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,  # the successor of populate_by_name=True
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        extra="forbid",
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        own_rules = cls.__dict__.get("rules", ())
        if own_rules:
            target = handler.resolve_ref_schema(json_schema)
            target["x-kubernetes-validations"] = [rule.to_schema() for rule in own_rules]
        return json_schema

    def to_json(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optionals omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(KubeModel):
    """A part of a status. Written by the operator; unknown fields are ignored on read so
    that an older operator can read the status a newer one wrote."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    description: str
    priority: int = 0
    format: str | None = None

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "jsonPath": self.json_path,
            "type": self.type,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        if self.format:
            column["format"] = self.format
        return column


@dataclass(frozen=True)
class KindInfo:
    """What the CRD needs beyond the schema: names, columns, selectable fields."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    selectable_fields: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("mlplane",)
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


class CustomResource(KubeModel):
    """A whole object of one kind: apiVersion, kind, metadata, spec and status.

    Subclasses declare `spec` and `status` fields and a `kind_info`. Their `rules` are
    root-level rules (they may read `self.metadata.name`).
    """

    kind_info: ClassVar[KindInfo]

    api_version: str = API_VERSION
    """APIVersion defines the versioned schema of this representation of an object."""
    metadata: dict[str, Any] = {}
    """Standard object metadata (name, namespace, labels, annotations, ...)."""

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse an object as the API server (or a Kopf `body`) returns it."""
        return cls.model_validate(_plain(body))


def _plain(value: Any) -> Any:
    """Deep-copy Mappings (such as Kopf's body views) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
