"""The monitor's HTTP endpoints and Prometheus metrics.

POST /samples   from the server: a JSON header {"shape": [n, features], "predictions": [...]}
                then n rows of little-endian FP32, its length in Inference-Header-Content-Length;
                or all JSON, {"inputs": [[...], ...], "predictions": [...]} (for people and tests)
POST /predictions  from the server, with a prediction log: the same binary body, its
                header also holding "ids", "counts" (rows per request), "times",
                "version", and "final" on the server's last batch
POST /feedback  from the server: {"feedback": [{"id": ..., "truth": [...]}, ...]},
                written to storage before it is acknowledged
GET  /drift     the JSON verdict (the operator polls it)
GET  /metrics   Prometheus
GET  /healthz

Only the pod's own server may write samples, predictions or feedback (fake drift or
fake labels would trigger retraining): the app that accepts them listens on the
loopback interface alone, and the one on the pod's address, which the Service exposes,
refuses them with 403.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from mlplane_runtime.errors import RuntimeFailure
from mlplane_runtime.httpserver import (
    HEADER_LENGTH,
    Offload,
    Request,
    RequestError,
    Response,
    error_response,
    json_response,
    parse_json,
)
from mlplane_runtime.monitor.drift import DriftDetector
from mlplane_runtime.monitor.predictionlog import LogMetrics, PredictionLog
from mlplane_runtime.quality.log import Feedback, LoggedRows

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
LOG_METRICS = LogMetrics(REGISTRY)
WRITES = ("/samples", "/predictions", "/feedback")  # loopback only


class MonitorApp:
    def __init__(
        self,
        detector: DriftDetector | None,
        samples_from: str | None = None,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        """`samples_from`: where samples are accepted instead (None: here), for the 403.
        `detector` None: no drift detection; `prediction_log` None: no prediction log."""
        self.detector = detector
        self.samples_from = samples_from
        self.prediction_log = prediction_log
        self.final_received = False  # the server's last batch of the prediction log is in
        if detector is not None:
            DRIFT_THRESHOLD.set(detector.threshold)

    def __call__(self, request: Request) -> Response | Offload:
        try:
            return self._route(request)
        except RequestError as exc:
            return error_response(exc.status, str(exc))

    def _route(self, request: Request) -> Response | Offload:
        path, method = request.path, request.method
        if path in WRITES and method == "POST":
            if self.samples_from is not None:
                raise RequestError(
                    f"{path} is accepted only from inside the pod, on "
                    f"{self.samples_from}; this address serves GET /drift, /metrics, /healthz",
                    403,
                )
            if path == "/samples":
                return self._samples(request)
            if path == "/predictions":
                return self._predictions(request)
            return self._feedback(request)
        if path == "/drift" and method == "GET":
            return json_response(200, self._detector().summary())
        if path == "/metrics" and method == "GET":
            self._export()
            return Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())
        if path in ("/healthz", "/ready") and method == "GET":
            return json_response(200, {"ok": True})
        raise RequestError(f"no route for {method} {path}", 404)

    def _detector(self) -> DriftDetector:
        if self.detector is None:
            raise RequestError("drift detection is off (no --baseline-uri)", 404)
        return self.detector

    def _log(self) -> PredictionLog:
        if self.prediction_log is None:
            raise RequestError("the prediction log is off (no --log-uri)", 404)
        return self.prediction_log

    def _samples(self, request: Request) -> Response:
        detector = self._detector()
        try:
            rows, header = _decode_samples(request)
            detector.add(rows, _predictions_of(header, len(rows)))
        except (ValueError, TypeError, OverflowError, RequestError) as exc:
            REJECTED.inc()
            status = exc.status if isinstance(exc, RequestError) else 400
            raise RequestError(f"bad samples: {exc}", status) from exc
        SAMPLES.inc(len(rows))
        return json_response(200, {"accepted": len(rows)})

    def _predictions(self, request: Request) -> Response:
        prediction_log = self._log()
        try:
            rows, header = _decode_samples(request)
            batch = _logged_rows(rows, header) if len(rows) else None
        except (ValueError, TypeError, OverflowError, RequestError) as exc:
            REJECTED.inc()
            status = exc.status if isinstance(exc, RequestError) else 400
            raise RequestError(f"bad predictions: {exc}", status) from exc
        accepted = prediction_log.add(batch) if batch is not None else True
        if header.get("final") is True:
            self.final_received = True
        if not accepted:
            raise RequestError("the prediction log's buffer is full; rows dropped", 503)
        return json_response(200, {"accepted": len(rows)})

    def _feedback(self, request: Request) -> Offload:
        prediction_log = self._log()
        document = parse_json(request.body)
        entries = document.get("feedback") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not all(_is_feedback(e) for e in entries):
            raise RequestError('expected {"feedback": [{"id": "...", "truth": [...]}, ...]}')
        feedback = Feedback([e["id"] for e in entries], [e["truth"] for e in entries])
        return Offload(functools.partial(_write_feedback, prediction_log, feedback))

    def _export(self) -> None:
        if self.detector is None:
            return
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


def _is_feedback(entry: Any) -> bool:
    """The shape the server sends (it checked each field for the client)."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and isinstance(entry.get("truth"), list)
    )


def _write_feedback(prediction_log: PredictionLog, feedback: Feedback) -> Response:
    """On a worker thread: the write is acknowledged only once it is on storage."""
    try:
        prediction_log.write_feedback(feedback)
    except RuntimeFailure as exc:
        return error_response(503, f"cannot store the feedback: {exc}")
    return json_response(200, {"accepted": len(feedback.ids)})


def _predictions_of(header: dict[str, Any], rows: int) -> list[Any] | None:
    predictions = header.get("predictions")
    if predictions is not None and (not isinstance(predictions, list) or len(predictions) != rows):
        raise ValueError("'predictions' must be a list with one entry per row")
    return predictions


def _logged_rows(rows: np.ndarray[Any, Any], header: dict[str, Any]) -> LoggedRows:
    """A /predictions batch, checked: every request's id, row count and time."""
    ids, counts, times = header.get("ids"), header.get("counts"), header.get("times")
    version = header.get("version")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError("'ids' must be a list of strings, one per request")
    if (
        not isinstance(counts, list)
        or len(counts) != len(ids)
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in counts)
    ):
        raise ValueError("'counts' must list each request's rows (positive integers)")
    if sum(counts) != len(rows):
        raise ValueError(f"'counts' add up to {sum(counts)}, but the body has {len(rows)} rows")
    if (
        not isinstance(times, list)
        or len(times) != len(ids)
        or not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times)
    ):
        raise ValueError("'times' must hold one time (epoch seconds) per request")
    if not isinstance(version, str):
        raise ValueError("'version' must be a string")
    predictions = _predictions_of(header, len(rows))
    return LoggedRows(rows.astype(np.float32), predictions, ids, counts, times, version)


def _decode_samples(request: Request) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    """The rows (2-D) and the JSON header (or document) of a `/samples` body."""
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        _json_size(len(request.body), "an all-JSON body")
        document = parse_json(request.body)
        if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
            raise RequestError('expected {"inputs": [[...], ...], "predictions": [...]}')
        return np.asarray(document["inputs"], dtype=np.float64), document
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
    return np.frombuffer(data, dtype="<f4").reshape(shape), header


def _json_size(size: int, what: str) -> None:
    if size > MAX_SAMPLES_JSON_BYTES:
        raise RequestError(
            f"{what} has {size} bytes; at most {MAX_SAMPLES_JSON_BYTES} are allowed (send "
            "the rows as binary FP32 after a JSON header)",
            413,
        )
