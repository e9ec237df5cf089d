"""One training run: load, split, fit, evaluate, convert, check parity, profile, publish."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime
import skl2onnx
import sklearn
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split

import mlplane_runtime
from mlplane_runtime.artifacts import MODEL_FILE, new_session, session_signature, sha256_hex
from mlplane_runtime.errors import UserError
from mlplane_runtime.profile import build_profile
from mlplane_runtime.storage import (
    AlreadyPublishedError,
    is_published,
    parse_uri,
    publish_directory,
    read_bytes,
)
from mlplane_runtime.trainer.convert import InputLayout, check_parity, to_onnx
from mlplane_runtime.trainer.data import Dataset, load_dataset
from mlplane_runtime.trainer.estimators import build_estimator, is_classification
from mlplane_runtime.trainer.evaluation import check_metrics, evaluate
from mlplane_runtime.trainer.feedback import FEEDBACK_FILE, ProductionRows, add_feedback
from mlplane_runtime.trainer.spec import TrainingSpec

METRICS_FILE = "metrics.json"
PROFILE_FILE = "profile.json"
MANIFEST_FILE = "manifest.json"
RESULT_FILE = "result.json"  # the run's result, next to the artifacts it describes


@dataclass(frozen=True)
class RunIdentity:
    model: str
    run: str
    output_uri: str
    feedback_log_uri: str = ""  # the InferenceService log spec.dataset.feedback reads


def library_versions() -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "mlplane-runtime": mlplane_runtime.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
    for name in ("xgboost", "lightgbm", "onnxmltools"):  # imported by runs that need them
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(module.__version__)
    return versions


def split(x: Any, y: Any, test_size: float, seed: int, classification: bool) -> tuple[Any, ...]:
    """A seeded train/test split, stratified for classifiers when every class can be."""
    try:
        return tuple(
            train_test_split(
                x, y, test_size=test_size, random_state=seed,
                stratify=y if classification else None,
            )
        )  # fmt: skip
    except ValueError:
        # Stratification fails on classes with a single member; fall back to a plain split.
        return tuple(train_test_split(x, y, test_size=test_size, random_state=seed))


@dataclass(frozen=True)
class Prepared:
    """What a run and each of its search trials share: the task, the data and its split."""

    classification: bool
    metric_names: tuple[str, ...]
    data: Dataset  # with the production rows of spec.dataset.feedback, if any
    layout: InputLayout
    x_train: Any
    x_test: Any
    y_train: Any
    y_test: Any
    production: ProductionRows | None = None  # what spec.dataset.feedback added


def prepare(spec: TrainingSpec, feedback_log_uri: str = "") -> Prepared:
    """Check the estimator and the metrics, load the data (with the labeled production
    rows of spec.dataset.feedback, read under `feedback_log_uri`) and split it."""
    classification = is_classification(spec.estimator)
    metric_names = check_metrics(spec.validation.metrics, classification)
    categorical = spec.estimator.categorical.columns if spec.estimator.categorical else ()
    data = load_dataset(spec.dataset, categorical)
    production = add_feedback(data, spec.dataset, feedback_log_uri, classification, time.time())
    data = production.dataset if production else data
    if classification and data.target.dtype.kind == "f":
        raise UserError(
            f"{spec.estimator.class_name} is a classifier but target {spec.dataset.target!r} "
            "has fractional values; use a regressor"
        )
    if classification and spec.estimator.class_name.endswith("XGBClassifier"):
        _check_xgboost_labels(data.target)
    x_train, x_test, y_train, y_test = split(
        data.features, data.target, spec.validation.test_size, spec.validation.seed,
        classification,
    )  # fmt: skip
    layout = InputLayout(tuple(data.feature_names), data.categorical)
    return Prepared(
        classification, metric_names, data, layout, x_train, x_test, y_train, y_test, production
    )


def _check_xgboost_labels(target: Any) -> None:
    classes = np.unique(target)
    if classes.dtype.kind not in "iu" or list(classes) != list(range(len(classes))):
        shown = [str(c) for c in classes[:5]]
        raise UserError(
            f"XGBClassifier needs class labels 0..{len(classes) - 1}; the target has {shown}"
            f"{'...' if len(classes) > 5 else ''}: encode the target as 0..k-1, or use "
            "LGBMClassifier, which takes any labels"
        )


def _fit_errors() -> tuple[type[Exception], ...]:
    """What a fit raises for parameters or data it refuses (XGBoostError is a
    ValueError; LightGBM has its own)."""
    lightgbm = sys.modules.get("lightgbm")
    if lightgbm is None:
        return (ValueError, TypeError)
    return (ValueError, TypeError, lightgbm.basic.LightGBMError)


def fit(estimator: BaseEstimator, x: Any, y: Any) -> None:
    try:
        estimator.fit(x, y)
    except _fit_errors() as exc:
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        raise UserError(f"fitting {type(final).__name__} failed: {exc}") from exc


def scores(estimator: BaseEstimator, x: Any) -> Any:
    return estimator.predict_proba(x) if hasattr(estimator, "predict_proba") else None


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode()


def run_uri(identity: RunIdentity) -> str:
    return parse_uri(identity.output_uri).child(identity.model, identity.run).uri


def published_result(identity: RunIdentity) -> dict[str, Any] | None:
    """The result of this run if an earlier attempt published it (a retried pod whose
    predecessor published and then died), else None. A run id publishes once: artifacts
    that a ModelVersion may already record are never replaced."""
    uri = run_uri(identity)
    if not is_published(uri, MANIFEST_FILE):
        return None
    try:
        result = json.loads(read_bytes(f"{uri}/{RESULT_FILE}"))
    except (UserError, ValueError) as exc:
        raise UserError(
            f"{uri}: artifacts of run {identity.run!r} exist already and have no readable "
            f"{RESULT_FILE} ({exc}); refusing to replace them: use a new run id"
        ) from exc
    if not isinstance(result, dict) or (result.get("model"), result.get("run")) != (
        identity.model,
        identity.run,
    ):
        raise UserError(
            f"{uri}: the artifacts there belong to another run; refusing to replace them"
        )
    return result


def train(
    spec: TrainingSpec,
    identity: RunIdentity,
    overrides: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole training, publish the artifacts and the result, and return the
    result for the termination log. A run published already is not trained again.
    `overrides` (a search's best parameters) go on top of spec.estimator.params, and
    `search` (its summary) into the manifest and the result."""
    earlier = published_result(identity)
    if earlier is not None:
        return earlier
    started = time.monotonic()
    prepared = prepare(spec, identity.feedback_log_uri)
    classification, data, production = prepared.classification, prepared.data, prepared.production
    x_train, x_test, y_train, y_test = (
        prepared.x_train, prepared.x_test, prepared.y_train, prepared.y_test
    )  # fmt: skip
    estimator = build_estimator(spec.estimator, spec.validation.seed, data.feature_names, overrides)
    fit(estimator, x_train, y_train)
    metrics = evaluate(
        prepared.metric_names, y_test, estimator.predict(x_test), scores(estimator, x_test)
    )

    model_bytes = to_onnx(estimator, prepared.layout, classification)
    parity = check_parity(model_bytes, estimator, x_test, prepared.layout, classification)
    signature = session_signature(new_session(model_bytes))
    numeric = data.numeric_columns  # drift profiles are per numeric feature
    profiled = [data.feature_names[i] for i in numeric]
    profile = build_profile(
        np.asarray(x_train[:, numeric], dtype=np.float32), profiled, y_train,
        estimator.predict(x_train), classification,
    )  # fmt: skip
    profile["featureOrder"] = profiled

    libraries = library_versions()
    location = run_uri(identity)
    metrics_doc = {"holdout": metrics, "parity": parity, "rows": _rows(x_train, x_test)}
    files = {
        MODEL_FILE: model_bytes,
        METRICS_FILE: _json(metrics_doc),
        PROFILE_FILE: _json(profile),
    }
    if production:
        files[FEEDBACK_FILE] = production.snapshot
    digests = {name: digests_of(data) for name, data in files.items()}
    estimator_info: dict[str, Any] = {
        "class": spec.estimator.class_name,
        "params": {**spec.estimator.params, **(overrides or {})},
        "preprocessing": list(spec.estimator.preprocessing),
    }
    if spec.estimator.categorical is not None:
        estimator_info["categorical"] = {
            "encoder": spec.estimator.categorical.encoder,
            "columns": list(spec.estimator.categorical.columns),
        }
    dataset_info = {"uri": data.uri, "sha256": data.sha256, "features": data.feature_names}
    manifest = {
        "model": identity.model,
        "run": identity.run,
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": digests,
        "signature": signature,
        "task": "classification" if classification else "regression",
        "metrics": metrics,
        "dataset": dataset_info,
        "estimator": estimator_info,
        "libraries": libraries,
    }
    if search is not None:
        manifest["search"] = search
    files[MANIFEST_FILE] = _json(manifest)
    result = {
        "model": identity.model,
        "run": identity.run,
        "artifact": {
            "uri": f"{location}/{MODEL_FILE}",
            "format": "onnx",
            **digests[MODEL_FILE],
        },
        "signature": signature,
        "metrics": metrics,
        "baseline": {"uri": f"{location}/{PROFILE_FILE}", **digests[PROFILE_FILE]},
        "manifest": {"uri": f"{location}/{MANIFEST_FILE}", **digests_of(files[MANIFEST_FILE])},
        "dataset": {"uri": data.uri, "sha256": data.sha256},
        "estimator": estimator_info,
        "libraries": libraries,
        "durationSeconds": round(time.monotonic() - started, 3),
    }
    if production:
        result["feedback"] = production.lineage(location, digests[FEEDBACK_FILE]["sha256"])
    if search is not None:
        result["search"] = search
    files[RESULT_FILE] = _json(result)
    try:
        publish_directory(location, files, commit_file=MANIFEST_FILE)
    except AlreadyPublishedError:
        earlier = published_result(identity)  # another attempt of this run won the race
        if earlier is None:
            raise
        return earlier
    return result


def _rows(x_train: Any, x_test: Any) -> dict[str, int]:
    return {"train": len(x_train), "test": len(x_test)}


def digests_of(data: bytes) -> dict[str, Any]:
    return {"sha256": sha256_hex(data), "sizeBytes": len(data)}
