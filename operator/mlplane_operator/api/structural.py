"""Turn a pydantic JSON Schema into a Kubernetes structural schema.

pydantic emits JSON Schema 2020-12; a CRD needs the OpenAPI v3 subset that Kubernetes
calls *structural*: every node has a `type` (or is int-or-string, or preserves unknown
fields), no `$ref`, no `anyOf` except in the shapes Kubernetes allows. The conversion
follows the approach of azimuth-cloud/kube-custom-resource:

- `$ref` (and single-element `allOf`) is inlined; keywords next to it (the field's
  description, default, rules) win over the referenced definition's;
- `title` is dropped; `default: null` is dropped;
- `anyOf: [X, {type: null}]` (an `Optional`) becomes X, deliberately *not* marked
  `nullable` (kube-custom-resource marks it): the API server prunes a null sent for a
  non-nullable field, so `field: null` (as Helm templates often render) means "unset",
  exactly what None means to pydantic. A nullable field would store the null instead,
  and CEL `has()` would count it as set;
- `anyOf: [{type: integer}, {type: string}]` becomes `x-kubernetes-int-or-string`;
- `additionalProperties: false` (extra="forbid") is dropped: the API server prunes or,
  with strict field validation, rejects unknown fields by itself;
  `additionalProperties: true` (a `dict[str, Any]`) becomes
  `x-kubernetes-preserve-unknown-fields`; a schema there (a typed map) stays;
- numeric `exclusiveMinimum`/`exclusiveMaximum` become `minimum`/`maximum` plus the
  boolean flags of OpenAPI v3.0; `const` becomes a one-value `enum`.
"""

from __future__ import annotations

from typing import Any

JsonSchema = dict[str, Any]

_DROPPED = {"title", "$defs", "discriminator"}
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


class UnsupportedSchemaError(ValueError):
    """The model uses a construct that has no structural-schema equivalent."""


def to_structural(schema: JsonSchema) -> JsonSchema:
    """Convert a top-level pydantic JSON Schema (with its `$defs`) to a structural one."""
    return _convert(schema, schema.get("$defs", {}), path="")


def _convert(node: JsonSchema, defs: JsonSchema, path: str) -> JsonSchema:
    node = dict(node)
    base: JsonSchema = {}

    if "$ref" in node:
        base = _convert(_definition(node.pop("$ref"), defs), defs, path)
    elif "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise UnsupportedSchemaError(f"{path or '<root>'}: allOf with {len(parts)} parts")
        base = _convert(parts[0], defs, path)
    elif "anyOf" in node:
        options = node.pop("anyOf")
        non_null = [option for option in options if option.get("type") != "null"]
        if len(non_null) == 1:
            base = _convert(non_null[0], defs, path)
        elif sorted(non_null, key=lambda o: str(o.get("type"))) == _INT_OR_STRING:
            base = {"anyOf": _INT_OR_STRING, "x-kubernetes-int-or-string": True}
        elif node.get("x-kubernetes-int-or-string"):
            base = {"anyOf": _INT_OR_STRING}
        else:
            raise UnsupportedSchemaError(f"{path or '<root>'}: anyOf {non_null!r}")

    own = _convert_keywords(node, defs, path)
    merged = {**base, **own}
    rules = base.get("x-kubernetes-validations", []) + own.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = rules
    if not merged.get("type") and not _is_untyped_ok(merged):
        merged["x-kubernetes-preserve-unknown-fields"] = True
    return merged


def _convert_keywords(node: JsonSchema, defs: JsonSchema, path: str) -> JsonSchema:
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {
                name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}.*")
            # False (extra="forbid") is dropped
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    return out


def _definition(ref: str, defs: JsonSchema) -> JsonSchema:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise UnsupportedSchemaError(f"unresolvable $ref {ref!r}")
    definition: JsonSchema = defs[ref[len(prefix) :]]
    return definition


def _is_untyped_ok(schema: JsonSchema) -> bool:
    return bool(
        schema.get("x-kubernetes-int-or-string")
        or schema.get("x-kubernetes-preserve-unknown-fields")
    )


def walk(schema: JsonSchema, path: str = "") -> list[tuple[str, JsonSchema]]:
    """Every node of a structural schema with its dotted path (`spec.dataset.uri`,
    `spec.env[]`, `spec.metrics.*`), parents before children."""
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        nodes += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}.*")
    return nodes
