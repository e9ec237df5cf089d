"""The monitor's HTTP endpoints and Prometheus metrics.

POST /samples   {"inputs": [[...], ...], "predictions": [...]}   from the server
GET  /drift     the JSON verdict (the operator polls it)
GET  /metrics   Prometheus
GET  /healthz
"""

from __future__ import annotations

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from mlplane_runtime.httpserver import (
    Request,
    RequestError,
    Response,
    error_response,
    json_response,
    parse_json,
)
from mlplane_runtime.monitor.drift import DriftDetector

REGISTRY = CollectorRegistry(auto_describe=True)
FEATURE_DRIFT = Gauge(
    "mlplane_feature_drift", "Drift score per feature (PSI or KS).", ["feature"], registry=REGISTRY
)
DRIFT_DETECTED = Gauge(
    "mlplane_drift_detected", "1 when any feature drifts past the threshold.", registry=REGISTRY
)
DRIFT_THRESHOLD = Gauge("mlplane_drift_threshold", "The drift threshold.", registry=REGISTRY)
SAMPLES = Counter("mlplane_monitor_samples", "Rows received from the server.", registry=REGISTRY)
REJECTED = Counter(
    "mlplane_monitor_rejected_samples", "Sample batches refused as malformed.", registry=REGISTRY
)
WINDOW = Gauge("mlplane_monitor_window_samples", "Rows in the sliding window.", registry=REGISTRY)
PREDICTIONS = Gauge(
    "mlplane_prediction_proportion",
    "Share of each predicted label in the window.",
    ["label"],
    registry=REGISTRY,
)
PREDICTION_DRIFT = Gauge(
    "mlplane_prediction_drift",
    "PSI of the window's predicted labels against training.",
    registry=REGISTRY,
)


class MonitorApp:
    def __init__(self, detector: DriftDetector) -> None:
        self.detector = detector
        DRIFT_THRESHOLD.set(detector.threshold)

    def __call__(self, request: Request) -> Response:
        try:
            return self._route(request)
        except RequestError as exc:
            return error_response(exc.status, str(exc))

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/samples" and method == "POST":
            return self._samples(request.body)
        if path == "/drift" and method == "GET":
            return json_response(200, self.detector.summary())
        if path == "/metrics" and method == "GET":
            self._export()
            return Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())
        if path in ("/healthz", "/ready") and method == "GET":
            return json_response(200, {"ok": True})
        raise RequestError(f"no route for {method} {path}", 404)

    def _samples(self, body: bytes) -> Response:
        document = parse_json(body)
        if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
            REJECTED.inc()
            raise RequestError('expected {"inputs": [[...], ...], "predictions": [...]}')
        try:
            rows = np.asarray(document["inputs"], dtype=np.float64)
            predictions = document.get("predictions")
            if predictions is not None and (
                not isinstance(predictions, list) or len(predictions) != len(rows)
            ):
                raise ValueError("'predictions' must be a list with one entry per row")
            self.detector.add(rows, predictions)
        except (ValueError, TypeError) as exc:
            REJECTED.inc()
            raise RequestError(f"bad samples: {exc}") from exc
        SAMPLES.inc(len(rows))
        return json_response(200, {"accepted": len(rows)})

    def _export(self) -> None:
        summary = self.detector.summary()
        for name, score in summary["features"].items():
            FEATURE_DRIFT.labels(name).set(score)
        DRIFT_DETECTED.set(1 if summary["detected"] else 0)
        WINDOW.set(summary["samples"])
        prediction = summary.get("prediction")
        if prediction:
            for label, share in prediction["proportions"].items():
                PREDICTIONS.labels(label).set(share)
            PREDICTION_DRIFT.set(prediction["psi"])
