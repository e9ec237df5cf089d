"""spec.dataset.feedback: an InferenceService's labeled production rows (its logged inputs
with the truth their feedback gave), added to the training data, and the snapshot of
them that the run publishes next to the model (feedback.parquet: the feature columns and
the target, one row per labeled row).

A true value the target cannot hold (a string for a numeric target, a fractional class,
a missing value) and a logged row that is not finite are counted as unusable and
reported in the result, never guessed at.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from mlplane_runtime.errors import UserError
from mlplane_runtime.quality.evaluate import label, number
from mlplane_runtime.quality.log import read_labeled_rows
from mlplane_runtime.trainer.data import Dataset
from mlplane_runtime.trainer.spec import DatasetSpec

FEEDBACK_FILE = "feedback.parquet"
BUILTIN_TARGET = "target"  # the snapshot's target column for a builtin dataset


@dataclass(frozen=True)
class ProductionRows:
    """The data with the labeled rows added, and what the run reports about them."""

    dataset: Dataset
    snapshot: bytes  # the rows added, as Parquet
    rows: int
    unusable: int
    inference_service: str
    window: tuple[float, float]  # epoch seconds

    def lineage(self, location: str, sha256: str) -> dict[str, Any]:
        """result["feedback"]: what the ModelVersion's spec.lineage.feedback records."""
        return {
            "inferenceService": self.inference_service,
            "uri": f"{location}/{FEEDBACK_FILE}",
            "sha256": sha256,
            "rows": self.rows,
            "unusable": self.unusable,
            "windowStart": self.window[0],
            "windowEnd": self.window[1],
        }


def add_feedback(
    data: Dataset, spec: DatasetSpec, log_uri: str, classification: bool, now: float
) -> ProductionRows | None:
    """`data` plus the labeled rows of spec.dataset.feedback's last windowSeconds before
    `now`, read under `log_uri`; None without spec.dataset.feedback."""
    feedback = spec.feedback
    if feedback is None:
        return None
    if not log_uri:
        raise UserError(
            "spec.dataset.feedback needs the InferenceService's log: pass --feedback-log-uri "
            "or set MLPLANE_FEEDBACK_LOG_URI (the operator sets it from the InferenceService)"
        )
    start = now - feedback.window_seconds
    labeled = read_labeled_rows(log_uri, start, now, data.features.shape[1])
    values, usable = _truths(labeled.truths, data.target, classification)
    usable &= np.isfinite(labeled.inputs).all(axis=1)
    inputs, target = labeled.inputs[usable], _as_target(values, usable, data.target)
    combined = Dataset(
        np.concatenate([data.features, inputs]).astype(np.float32, copy=False),
        np.concatenate([data.target, target]),
        data.feature_names,
        data.uri,
        data.sha256,
    )
    name = spec.target or BUILTIN_TARGET
    snapshot = _parquet(inputs, target, data.feature_names, name)
    unusable = labeled.unusable + int((~usable).sum())
    return ProductionRows(
        combined, snapshot, len(target), unusable, feedback.inference_service, (start, now)
    )


def _truths(
    truths: list[Any], target: npt.NDArray[Any], classification: bool
) -> tuple[list[Any], npt.NDArray[np.bool_]]:
    """Each true value as the target holds it, and which ones it can hold."""
    values: list[Any] = []
    usable = np.zeros(len(truths), dtype=bool)
    numeric = target.dtype.kind in "iuf"
    for index, truth in enumerate(truths):
        value: Any = None
        if truth is not None and not numeric:
            value = label(truth)
        elif truth is not None:
            parsed = number(truth)
            if parsed is not None and not classification:
                value = parsed
            elif parsed is not None and parsed.is_integer():
                value = int(parsed)
        usable[index] = value is not None
        values.append(value)
    return values, usable


def _as_target(
    values: list[Any], usable: npt.NDArray[np.bool_], base: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    kept = [v for v, ok in zip(values, usable, strict=True) if ok]
    if base.dtype.kind in "iu" and all(isinstance(v, int) for v in kept):
        return np.asarray(kept, dtype=np.int64)
    if base.dtype.kind in "iuf":
        return np.asarray(kept, dtype=np.float64)
    return np.asarray(kept, dtype=str)


def _parquet(
    inputs: npt.NDArray[np.float32], target: npt.NDArray[Any], names: list[str], target_name: str
) -> bytes:
    columns: dict[str, Any] = {name: inputs[:, j] for j, name in enumerate(names)}
    columns[target_name] = target.tolist()
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, compression="zstd")
    return buffer.getvalue()
