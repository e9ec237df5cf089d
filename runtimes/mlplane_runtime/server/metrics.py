"""Prometheus collectors of the server, on their own registry (never the default one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "mlplane_requests",
    "Requests by protocol (v1, v2 and grpc inference and metadata; health, metrics, other) "
    "and status code: the HTTP status, for gRPC the one the same answer has over REST.",
    ["protocol", "code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "mlplane_request_duration_seconds",
    "Time to handle an inference or metadata request, by protocol (v1, v2, grpc).",
    ["protocol"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
ROWS = Counter("mlplane_predicted_rows", "Rows predicted.", registry=REGISTRY)
BATCH_SIZE = Gauge(
    "mlplane_batch_max_rows",
    "Adaptive batching: the most rows of one shared run (--max-batch-size; 0: off).",
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "mlplane_batch_rows",
    "Rows per ONNX Runtime run of the adaptive batcher (requests that ran alone: none).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
BATCH_REQUESTS = Histogram(
    "mlplane_batch_requests",
    "Requests per ONNX Runtime run of the adaptive batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "mlplane_model_info",
    "The served model (1 once loaded): name, version and sha256 prefix.",
    ["model", "version", "sha256"],
    registry=REGISTRY,
)
MODEL_READY = Gauge(
    "mlplane_model_ready", "1 when the model is loaded and ready.", registry=REGISTRY
)
SAMPLES_SENT = Counter(
    "mlplane_samples_sent", "Rows handed to the monitor sidecar.", registry=REGISTRY
)
SAMPLES_DROPPED = Counter(
    "mlplane_samples_dropped",
    "Sampled rows dropped instead of delaying a request (queue_full, send_failed, unfit).",
    ["reason"],
    registry=REGISTRY,
)
SAMPLE_RATE = Gauge(
    "mlplane_sample_rate",
    "The share of predicted rows sampled for the monitor (lowered under load by the "
    "samples-per-second limit).",
    registry=REGISTRY,
)
LOGGED_SENT = Counter(
    "mlplane_prediction_log_rows_sent",
    "Predicted rows handed to the monitor sidecar for the prediction log.",
    registry=REGISTRY,
)
LOGGED_DROPPED = Counter(
    "mlplane_prediction_log_rows_dropped",
    "Rows of the prediction log dropped instead of delaying a request (queue_full, "
    "send_failed, unfit).",
    ["reason"],
    registry=REGISTRY,
)
