"""Sliding-window drift detection against the training profile (PSI or KS per feature)."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlplane_runtime.errors import UserError
from mlplane_runtime.profile import bin_counts, ks_statistic, proportions, psi

METHODS = ("psi", "ks")
OTHER = "\0other"  # a predicted label the training data never had
DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.2}


@dataclass(frozen=True)
class FeatureBaseline:
    name: str
    edges: list[float]
    proportions: npt.NDArray[np.float64]
    cdf_points: npt.NDArray[np.float64]
    cdf: npt.NDArray[np.float64]


def _feature(raw: Any, index: int) -> FeatureBaseline:
    try:
        return FeatureBaseline(
            name=str(raw["name"]),
            edges=[float(e) for e in raw["binEdges"]],
            proportions=np.asarray(raw["proportions"], dtype=np.float64),
            cdf_points=np.asarray(raw["cdfPoints"], dtype=np.float64),
            cdf=np.asarray(raw["cdf"], dtype=np.float64),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"baseline profile: features[{index}] is malformed: {exc!r}") from exc


class DriftDetector:
    """Keeps the last `window` rows and compares them with the baseline profile."""

    def __init__(
        self,
        profile: dict[str, Any],
        *,
        method: str = "psi",
        threshold: float | None = None,
        min_samples: int = 100,
        window: int = 1000,
    ) -> None:
        if method not in METHODS:
            raise UserError(f"--method {method!r} is unknown; allowed: {', '.join(METHODS)}")
        if not isinstance(profile.get("features"), list) or not profile["features"]:
            raise UserError("baseline profile has no 'features'")
        if window < 1 or min_samples < 1:
            raise UserError("--window and --min-samples must be positive")
        self.method = method
        self.threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
        self.min_samples = min(min_samples, window)
        self.window = window
        self.features = [_feature(raw, i) for i, raw in enumerate(profile["features"])]
        prediction = profile.get("prediction") or {}
        self.prediction_labels = [str(v) for v in prediction.get("labels", [])]
        # each prediction is kept as its training label (or OTHER), so a window of long
        # or ever-new strings costs no more than one of known labels
        self._labels = {label: label for label in self.prediction_labels}
        self.prediction_baseline = np.asarray(prediction.get("proportions", []), dtype=float)
        # float32 like the model's input and the profile's edges, so ties land in the same bin
        self._rows = np.zeros((window, len(self.features)), dtype=np.float32)
        self._next = 0
        self._filled = 0
        self._predictions: collections.deque[str] = collections.deque(maxlen=window)
        self.received = 0
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None

    @property
    def n_features(self) -> int:
        return len(self.features)

    def add(self, rows: npt.NDArray[Any], predictions: list[Any] | None) -> None:
        """Append rows (and their predictions) to the window; oldest rows fall out."""
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(
                f"rows must have {self.n_features} features, got shape {list(rows.shape)}"
            )
        received = rows.shape[0]
        rows = rows[-self.window :]
        with self._lock:
            count = rows.shape[0]
            end = self._next + count
            if end <= self.window:
                self._rows[self._next : end] = rows
            else:
                split = self.window - self._next
                self._rows[self._next :] = rows[:split]
                self._rows[: count - split] = rows[split:]
            self._next = end % self.window
            self._filled = min(self.window, self._filled + count)
            if predictions is not None and self.prediction_labels:
                labels = self._labels
                self._predictions.extend(
                    labels.get(p if isinstance(p, str) else str(p), OTHER)
                    for p in predictions[-self.window :]
                )
            self.received += received
            self._cached = None

    def summary(self) -> dict[str, Any]:
        """The drift verdict: {detected, method, threshold, samples, features, ...}."""
        with self._lock:
            if self._cached is None:
                self._cached = self._evaluate()
            return self._cached

    def _evaluate(self) -> dict[str, Any]:
        samples = self._filled
        result: dict[str, Any] = {
            "detected": False,
            "method": self.method,
            "threshold": self.threshold,
            "samples": samples,
            "minSamples": self.min_samples,
            "received": self.received,
            "features": {},
        }
        if samples < self.min_samples:
            result["reason"] = f"waiting for {self.min_samples} samples (have {samples})"
            return result
        window = self._rows[:samples]
        scores = {
            f.name: round(self._score(f, window[:, i]), 6) for i, f in enumerate(self.features)
        }
        drifted = sorted(name for name, score in scores.items() if score > self.threshold)
        result.update(detected=bool(drifted), features=scores, drifted=drifted)
        if self.prediction_labels and self._predictions:
            result["prediction"] = self._prediction_summary()
        return result

    def _score(self, feature: FeatureBaseline, values: npt.NDArray[Any]) -> float:
        if self.method == "ks":
            return float(ks_statistic(feature.cdf_points, feature.cdf, values))
        return float(psi(feature.proportions, proportions(bin_counts(values, feature.edges))))

    def _prediction_summary(self) -> dict[str, Any]:
        counts = collections.Counter(self._predictions)
        total = sum(counts.values())
        window = np.asarray([counts.get(label, 0) / total for label in self.prediction_labels])
        return {
            "proportions": dict(zip(self.prediction_labels, window.round(6).tolist(), strict=True)),
            "psi": round(psi(self.prediction_baseline, window), 6),
        }
