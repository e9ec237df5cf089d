"""The monitor's HTTP endpoints and Prometheus metrics.

POST /samples   from the server: a JSON header {"shape": [n, features], "predictions": [...]}
                then n rows of little-endian FP32, its length in Inference-Header-Content-Length;
                or all JSON, {"inputs": [[...], ...], "predictions": [...]} (for people and tests)
GET  /drift     the JSON verdict (the operator polls it)
GET  /metrics   Prometheus
GET  /healthz

Only the pod's own server may write samples (fake drift would trigger retraining): the
app that accepts them listens on the loopback interface alone, and the one on the pod's
address, which the Service exposes, refuses them with 403.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from mlplane_runtime.httpserver import (
    HEADER_LENGTH,
    Request,
    RequestError,
    Response,
    error_response,
    json_response,
    parse_json,
)
from mlplane_runtime.monitor.drift import DriftDetector

# The JSON parts of a /samples body become Python objects, several times their size: they
# are held to this (the binary rows, read in place, only to the body limit).
MAX_SAMPLES_JSON_BYTES = 1024 * 1024

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
    def __init__(self, detector: DriftDetector, samples_from: str | None = None) -> None:
        """`samples_from`: where samples are accepted instead (None: here), for the 403."""
        self.detector = detector
        self.samples_from = samples_from
        DRIFT_THRESHOLD.set(detector.threshold)

    def __call__(self, request: Request) -> Response:
        try:
            return self._route(request)
        except RequestError as exc:
            return error_response(exc.status, str(exc))

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/samples" and method == "POST":
            if self.samples_from is not None:
                raise RequestError(
                    "samples are accepted only from inside the pod, on "
                    f"{self.samples_from}; this address serves GET /drift, /metrics, /healthz",
                    403,
                )
            return self._samples(request)
        if path == "/drift" and method == "GET":
            return json_response(200, self.detector.summary())
        if path == "/metrics" and method == "GET":
            self._export()
            return Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())
        if path in ("/healthz", "/ready") and method == "GET":
            return json_response(200, {"ok": True})
        raise RequestError(f"no route for {method} {path}", 404)

    def _samples(self, request: Request) -> Response:
        try:
            rows, predictions = _decode_samples(request)
            if predictions is not None and (
                not isinstance(predictions, list) or len(predictions) != len(rows)
            ):
                raise ValueError("'predictions' must be a list with one entry per row")
            self.detector.add(rows, predictions)
        except (ValueError, TypeError, OverflowError, RequestError) as exc:
            REJECTED.inc()
            status = exc.status if isinstance(exc, RequestError) else 400
            raise RequestError(f"bad samples: {exc}", status) from exc
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


def _decode_samples(request: Request) -> tuple[np.ndarray[Any, Any], Any]:
    """The rows (2-D) and predictions (a list, or None) of a `/samples` body."""
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        _json_size(len(request.body), "an all-JSON body")
        document = parse_json(request.body)
        if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
            raise RequestError('expected {"inputs": [[...], ...], "predictions": [...]}')
        return np.asarray(document["inputs"], dtype=np.float64), document.get("predictions")
    if not length.isdigit() or int(length) > len(request.body):
        raise RequestError(f"{HEADER_LENGTH} {length!r} is not a length within the body")
    _json_size(int(length), "the JSON header")
    view = memoryview(request.body)
    header = parse_json(view[: int(length)])
    shape = header.get("shape") if isinstance(header, dict) else None
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise RequestError('the header must hold "shape": [rows, features]')
    data = view[int(length) :]
    if len(data) != shape[0] * shape[1] * 4:
        raise RequestError(
            f"{len(data)} bytes of rows do not match shape {shape} of FP32 (4 bytes each)"
        )
    return np.frombuffer(data, dtype="<f4").reshape(shape), header.get("predictions")


def _json_size(size: int, what: str) -> None:
    if size > MAX_SAMPLES_JSON_BYTES:
        raise RequestError(
            f"{what} has {size} bytes; at most {MAX_SAMPLES_JSON_BYTES} are allowed (send "
            "the rows as binary FP32 after a JSON header)",
            413,
        )
