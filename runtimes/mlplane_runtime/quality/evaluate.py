"""Live model quality: join the logged predictions with the feedback on request id, per
version, and score them (accuracy, f1_macro, rmse, mae, r2, as scikit-learn computes
them).

A prediction is labeled when feedback for its request id arrived with one true value per
row of the request; feedback whose truth has another length, or (for an error metric) a
value that is not a number, is counted as unusable, never guessed at.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sklearn import metrics as sk

from mlplane_runtime.errors import UserError
from mlplane_runtime.quality.log import Truth, read_feedback, read_predictions

CLASSIFICATION = ("accuracy", "f1_macro")
REGRESSION = ("rmse", "mae", "r2")
METRICS = CLASSIFICATION + REGRESSION
LOWER_IS_BETTER = frozenset({"rmse", "mae"})


@dataclass
class Labeled:
    """The labeled rows of one version: what it predicted and what was true."""

    predicted: list[Any] = field(default_factory=list)
    truth: list[Any] = field(default_factory=list)
    logged: int = 0  # rows logged in the window, labeled or not


@dataclass
class Joined:
    versions: dict[str, Labeled]
    unusable: int  # logged rows whose feedback could not be used
    unmatched: int  # feedback ids with no logged prediction in the window


@functools.lru_cache(maxsize=4096, typed=True)  # typed: True and 1 are other classes
def label(value: Any) -> str:
    """A class label as a comparable string: 1, 1.0 and "1" are the same class."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return str(int(number)) if number.is_integer() else value
    return str(value)


def number(value: Any) -> float | None:
    """A finite number from a JSON value (a number or a numeric string), else None."""
    if isinstance(value, bool):
        return None
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        return None
    return parsed if math.isfinite(parsed) else None


def join(
    ids: Sequence[str],
    rows: Sequence[int],
    versions: Sequence[str],
    predictions: Sequence[Any],
    feedback: dict[str, Truth],
    metric: str,
) -> Joined:
    """Pair each logged row with its true value (pure)."""
    numeric = metric in REGRESSION
    by_version: dict[str, Labeled] = {}
    unusable = 0
    seen: set[str] = set()
    for request_id, row, version, predicted in zip(ids, rows, versions, predictions, strict=True):
        labeled = by_version.setdefault(version, Labeled())
        labeled.logged += 1
        truth = feedback.get(request_id)
        if truth is None:
            continue
        seen.add(request_id)
        if not 0 <= row < len(truth) or predicted is None:
            unusable += 1
            continue
        if numeric:
            want, got = number(truth[row]), number(predicted)
            if want is None or got is None:
                unusable += 1
                continue
            labeled.truth.append(want)
            labeled.predicted.append(got)
        else:
            labeled.truth.append(label(truth[row]))
            labeled.predicted.append(label(predicted))
    return Joined(by_version, unusable, len(feedback.keys() - seen))


def score(metric: str, truth: list[Any], predicted: list[Any]) -> float | None:
    """The metric over labeled rows; None where it is undefined (no rows, r2 of one)."""
    if not truth or (metric == "r2" and len(truth) < 2):
        return None
    if metric == "accuracy":
        return float(sk.accuracy_score(truth, predicted))
    if metric == "f1_macro":
        return float(sk.f1_score(truth, predicted, average="macro"))
    if metric == "rmse":
        return float(sk.root_mean_squared_error(truth, predicted))
    if metric == "mae":
        return float(sk.mean_absolute_error(truth, predicted))
    if metric == "r2":
        return float(sk.r2_score(truth, predicted))
    raise UserError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")


def evaluate(root: str, metric: str, start: float, end: float) -> dict[str, Any]:
    """Score every version that logged rows in [start, end] against the feedback that
    arrived since `start`: the result the operator reports as status.quality."""
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not one of {', '.join(METRICS)}")
    table = read_predictions(root, start, end)
    feedback = read_feedback(root, start, end)
    joined = join(
        table["id"].to_pylist(),
        table["row"].to_pylist(),
        table["version"].to_pylist(),
        table["prediction"].to_pylist(),
        feedback,
        metric,
    )
    versions = [
        {
            "version": version,
            "metric": metric,
            "value": score(metric, labeled.truth, labeled.predicted),
            "labeled": len(labeled.truth),
            "logged": labeled.logged,
        }
        for version, labeled in sorted(joined.versions.items())
    ]
    return {
        "metric": metric,
        "windowStart": start,
        "windowEnd": end,
        "versions": versions,
        "feedback": len(feedback),
        "unusable": joined.unusable,
        "unmatched": joined.unmatched,
    }
