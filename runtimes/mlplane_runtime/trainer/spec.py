"""The TrainingJob spec as the trainer reads it (the CRD's camelCase field names).

Fields the trainer does not use (schedule, runPolicy, registration, ...) are ignored;
the fields it uses are checked here, with errors that name the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlplane_runtime.errors import UserError
from mlplane_runtime.trainer.search import SearchSpec, parse_search

BUILTIN_DATASETS = ("iris", "wine", "breast_cancer", "diabetes", "digits")
FORMATS = ("csv", "parquet")
ENCODERS = ("OneHotEncoder", "OrdinalEncoder")


@dataclass(frozen=True)
class FeedbackSpec:
    """spec.dataset.feedback: an InferenceService's labeled production rows."""

    inference_service: str
    window_seconds: int = 7 * 86400


@dataclass(frozen=True)
class DatasetSpec:
    builtin: str = ""
    uri: str = ""
    format: str = "csv"
    target: str = ""
    features: tuple[str, ...] = ()
    feedback: FeedbackSpec | None = None


@dataclass(frozen=True)
class CategoricalSpec:
    """String columns encoded before the estimator; the model takes every column as a
    named input (strings as BYTES), so a client sends rows as they are in the data."""

    encoder: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class EstimatorSpec:
    class_name: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: tuple[str, ...] = ()
    categorical: CategoricalSpec | None = None


@dataclass(frozen=True)
class ValidationSpec:
    test_size: float = 0.2
    seed: int = 0
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingSpec:
    model: str
    dataset: DatasetSpec
    estimator: EstimatorSpec
    validation: ValidationSpec
    storage_uri: str = ""
    search: SearchSpec | None = None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of strings")
    return tuple(value)


def _dataset(raw: dict[str, Any]) -> DatasetSpec:
    builtin, uri = raw.get("builtin") or "", raw.get("uri") or ""
    if bool(builtin) == bool(uri):
        raise UserError("spec.dataset needs exactly one of 'builtin' or 'uri'")
    if builtin and builtin not in BUILTIN_DATASETS:
        raise UserError(
            f"spec.dataset.builtin {builtin!r} is unknown; allowed: {', '.join(BUILTIN_DATASETS)}"
        )
    fmt = raw.get("format") or "csv"
    if fmt not in FORMATS:
        raise UserError(f"spec.dataset.format {fmt!r} is unknown; allowed: {', '.join(FORMATS)}")
    target = raw.get("target") or ""
    if uri and not target:
        raise UserError("spec.dataset.target is required with spec.dataset.uri")
    return DatasetSpec(
        builtin=str(builtin),
        uri=str(uri),
        format=fmt,
        target=str(target),
        features=_string_list(raw.get("features"), "spec.dataset.features"),
        feedback=_feedback(raw.get("feedback")),
    )


def _feedback(value: Any) -> FeedbackSpec | None:
    if value is None:
        return None
    raw = _mapping(value, "spec.dataset.feedback")
    name = raw.get("inferenceService")
    if not name or not isinstance(name, str):
        raise UserError("spec.dataset.feedback.inferenceService is required (a name)")
    window = raw.get("windowSeconds", 7 * 86400)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise UserError(
            f"spec.dataset.feedback.windowSeconds must be a positive integer, got {window!r}"
        )
    return FeedbackSpec(inference_service=name, window_seconds=window)


def _categorical(raw: Any) -> CategoricalSpec | None:
    if raw is None:
        return None
    raw = _mapping(raw, "spec.estimator.categorical")
    encoder = raw.get("encoder") or "OneHotEncoder"
    if encoder not in ENCODERS:
        raise UserError(
            f"spec.estimator.categorical.encoder {encoder!r} is unknown; "
            f"allowed: {', '.join(ENCODERS)}"
        )
    columns = _string_list(raw.get("columns"), "spec.estimator.categorical.columns")
    if not columns:
        raise UserError("spec.estimator.categorical.columns must name at least one column")
    if len(set(columns)) != len(columns):
        raise UserError("spec.estimator.categorical.columns names a column twice")
    return CategoricalSpec(encoder=encoder, columns=columns)


def _estimator(raw: dict[str, Any]) -> EstimatorSpec:
    class_name = raw.get("class")
    if not class_name or not isinstance(class_name, str):
        raise UserError("spec.estimator.class is required")
    return EstimatorSpec(
        class_name=class_name,
        params=_mapping(raw.get("params"), "spec.estimator.params"),
        preprocessing=_string_list(raw.get("preprocessing"), "spec.estimator.preprocessing"),
        categorical=_categorical(raw.get("categorical")),
    )


def _validation(raw: dict[str, Any]) -> ValidationSpec:
    test_size = raw.get("testSize", 0.2)
    if isinstance(test_size, bool) or not isinstance(test_size, int | float):
        raise UserError("spec.validation.testSize must be a number")
    if not 0 < float(test_size) < 1:
        raise UserError(f"spec.validation.testSize must be in (0, 1), got {test_size}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"spec.validation.seed must be a non-negative integer, got {seed!r}")
    metrics = _string_list(raw.get("metrics"), "spec.validation.metrics")
    return ValidationSpec(test_size=float(test_size), seed=seed, metrics=metrics)


def parse_spec(raw: Any) -> TrainingSpec:
    """Build a TrainingSpec from a TrainingJob `spec` (or a whole TrainingJob object)."""
    raw = _mapping(raw, "the training spec")
    if "spec" in raw and "kind" in raw:
        raw = _mapping(raw["spec"], "spec")
    model = raw.get("model")
    if not model or not isinstance(model, str):
        raise UserError("spec.model is required")
    output = _mapping(raw.get("output"), "spec.output")
    dataset = _dataset(_mapping(raw.get("dataset"), "spec.dataset"))
    estimator = _estimator(_mapping(raw.get("estimator"), "spec.estimator"))
    if estimator.categorical and dataset.builtin:
        raise UserError(
            "spec.estimator.categorical needs a csv/parquet dataset (spec.dataset.uri); "
            "the builtin datasets have numeric columns only"
        )
    return TrainingSpec(
        model=model,
        dataset=dataset,
        estimator=estimator,
        validation=_validation(_mapping(raw.get("validation"), "spec.validation")),
        storage_uri=str(output.get("storageUri") or ""),
        search=parse_search(raw.get("search")),
    )


def load_spec_text(text: str, source: str) -> TrainingSpec:
    """Parse JSON or YAML text (JSON is YAML) into a TrainingSpec."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid JSON/YAML: {exc}") from exc
    return parse_spec(raw)


def load_spec_file(path: str) -> TrainingSpec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the spec file {path}: {exc}") from exc
    return load_spec_text(text, path)
