"""Data profiles for drift detection: per-feature bins (PSI) and CDF points (KS).

The trainer profiles the training data into ``profile.json``; the monitor compares a
window of served rows with it. Bins are quantile bins: ``binEdges`` are the interior
edges, so bin *i* holds values in ``(edges[i-1], edges[i]]`` with open outer bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

PROFILE_VERSION = 1
PSI_BINS = 10
CDF_POINTS = 101
EPSILON = 1e-4  # floor for empty bins so PSI stays finite

FloatArray = npt.NDArray[np.float64]


def bin_edges(values: FloatArray, bins: int = PSI_BINS) -> list[float]:
    """Interior quantile edges (duplicates removed, so discrete features get fewer bins)."""
    if values.size == 0:
        return []
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(edge) for edge in np.unique(quantiles)]


def bin_counts(values: FloatArray, edges: list[float]) -> FloatArray:
    """How many values fall in each bin defined by `edges` (len(edges) + 1 bins)."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return np.bincount(index, minlength=len(edges) + 1).astype(np.float64)


def proportions(counts: FloatArray) -> FloatArray:
    total = counts.sum()
    return counts / total if total > 0 else counts


def psi(expected: FloatArray, actual: FloatArray) -> float:
    """Population stability index between two proportion vectors."""
    e = np.maximum(expected, EPSILON)
    a = np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(points: FloatArray, baseline_cdf: FloatArray, values: FloatArray) -> float:
    """Kolmogorov-Smirnov distance between the baseline CDF (known at `points`) and the
    empirical CDF of `values`, evaluated at the same points."""
    if values.size == 0 or points.size == 0:
        return 0.0
    ordered = np.sort(values)
    window_cdf = np.searchsorted(ordered, points, side="right") / ordered.size
    return float(np.max(np.abs(window_cdf - baseline_cdf)))


def feature_profile(name: str, values: FloatArray) -> dict[str, Any]:
    edges = bin_edges(values)
    counts = bin_counts(values, edges)
    points = np.unique(np.quantile(values, np.linspace(0, 1, CDF_POINTS)))
    cdf = np.searchsorted(np.sort(values), points, side="right") / values.size
    return {
        "name": name,
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "binEdges": edges,
        "counts": [int(c) for c in counts],
        "proportions": [round(float(p), 6) for p in proportions(counts)],
        "cdfPoints": [float(p) for p in points],
        "cdf": [round(float(c), 6) for c in cdf],
    }


def categorical_profile(values: npt.NDArray[Any]) -> dict[str, Any]:
    labels, counts = np.unique(values, return_counts=True)
    return {
        "kind": "categorical",
        "labels": [label.item() if hasattr(label, "item") else label for label in labels],
        "counts": [int(c) for c in counts],
        "proportions": [round(float(c) / values.size, 6) for c in counts],
    }


def numeric_profile(values: FloatArray) -> dict[str, Any]:
    profile = feature_profile("value", values.astype(np.float64))
    profile["kind"] = "numeric"
    return profile


def build_profile(
    features: npt.NDArray[Any],
    feature_names: list[str],
    target: npt.NDArray[Any],
    predictions: npt.NDArray[Any],
    classification: bool,
) -> dict[str, Any]:
    """The training-data profile: per-feature bins, and label and prediction distributions."""
    data = features.astype(np.float64)
    outcome = categorical_profile if classification else numeric_profile
    return {
        "version": PROFILE_VERSION,
        "samples": int(data.shape[0]),
        "task": "classification" if classification else "regression",
        "features": [feature_profile(n, data[:, i]) for i, n in enumerate(feature_names)],
        "target": outcome(target),
        "prediction": outcome(predictions),
    }
