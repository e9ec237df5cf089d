"""Hold-out metrics: the requested ones, or sensible defaults per task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm

from mlplane_runtime.errors import UserError

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "precision", "recall", "roc_auc")
REGRESSION_METRICS = ("r2", "rmse", "mae")
DEFAULT_CLASSIFICATION = ("accuracy", "f1_macro")
DEFAULT_REGRESSION = ("r2", "rmse", "mae")

Array = npt.NDArray[Any]


def check_metrics(requested: tuple[str, ...], classification: bool) -> tuple[str, ...]:
    """The metrics to compute; unknown or wrong-task names fail with the allowed ones."""
    allowed = CLASSIFICATION_METRICS if classification else REGRESSION_METRICS
    unknown = [name for name in requested if name not in allowed]
    if unknown:
        task = "classification" if classification else "regression"
        raise UserError(
            f"spec.validation.metrics {unknown} are not available for {task}; "
            f"allowed: {', '.join(allowed)}"
        )
    if requested:
        return requested
    return DEFAULT_CLASSIFICATION if classification else DEFAULT_REGRESSION


def _roc_auc(y: Array, scores: Array | None) -> float:
    if scores is None:
        raise UserError("metric roc_auc needs an estimator with predict_proba")
    if scores.shape[1] == 2:
        return float(skm.roc_auc_score(y, scores[:, 1]))
    return float(skm.roc_auc_score(y, scores, multi_class="ovr", average="macro"))


def evaluate(
    names: tuple[str, ...], y_true: Array, y_pred: Array, scores: Array | None
) -> dict[str, float]:
    """Compute each named metric; rounded to 6 digits for a compact report."""
    table: dict[str, Callable[[], float]] = {
        "accuracy": lambda: float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": lambda: float(skm.f1_score(y_true, y_pred, average="macro")),
        "precision": lambda: float(
            skm.precision_score(y_true, y_pred, average="macro", zero_division=0)
        ),
        "recall": lambda: float(skm.recall_score(y_true, y_pred, average="macro")),
        "roc_auc": lambda: _roc_auc(y_true, scores),
        "r2": lambda: float(skm.r2_score(y_true, y_pred)),
        "rmse": lambda: float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": lambda: float(skm.mean_absolute_error(y_true, y_pred)),
    }
    results: dict[str, float] = {}
    for name in names:
        try:
            value = round(table[name](), 6)
        except ValueError as exc:
            raise UserError(
                f"metric {name!r} cannot be computed on the hold-out set: {exc}"
            ) from exc
        if not np.isfinite(value):
            # r2 on a single hold-out row, say: NaN is not JSON, nor a score to promote on.
            raise UserError(
                f"metric {name!r} is {value} on the hold-out set of {len(y_true)} row(s); "
                "hold out more rows (spec.validation.testSize) or use more data"
            )
        results[name] = value
    return results
