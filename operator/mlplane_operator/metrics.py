"""The operator's own Prometheus metrics (module-level collectors, one registry)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "mlplane_operator_reconciles", "Reconciles by kind and result.", ["kind", "result"],
    registry=REGISTRY,
)  # fmt: skip
RECONCILE_SECONDS = Histogram(
    "mlplane_operator_reconcile_duration_seconds", "Time spent in one reconcile.", ["kind"],
    registry=REGISTRY,
)  # fmt: skip
RUNS = Counter(
    "mlplane_operator_training_runs", "Training runs started, succeeded and failed.", ["event"],
    registry=REGISTRY,
)  # fmt: skip
VERSIONS = Counter(
    "mlplane_operator_versions_registered", "ModelVersions registered from runs.", registry=REGISTRY
)
VERIFICATIONS = Counter(
    "mlplane_operator_verifications", "Artifact verifications by result.", ["result"],
    registry=REGISTRY,
)  # fmt: skip
ROLLOUTS = Counter(
    "mlplane_operator_rollouts", "Rollouts by strategy and outcome.", ["strategy", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
RETRAINS = Counter(
    "mlplane_operator_retrains_requested",
    "Retrain requests sent because of drift or degraded quality.",
    registry=REGISTRY,
)
QUALITY = Gauge(
    "mlplane_operator_model_quality",
    "Live quality of a served version: its metric over the latest evaluation window.",
    ["namespace", "inferenceservice", "version", "metric"],
    registry=REGISTRY,
)

API_REQUESTS = Counter(
    "mlplane_operator_api_requests",
    "Requests to the API server (Kopf's own not counted), by verb and resource; a watch "
    "counts once, when it starts.",
    ["verb", "resource"],
    registry=REGISTRY,
)

EVENTS_DROPPED = Counter(
    "mlplane_operator_events_dropped",
    "Kubernetes Events not posted because the recorder's queue was full or the API "
    "server refused them.",
    registry=REGISTRY,
)


@contextmanager
def reconcile_timer(kind: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind=kind, result="error").inc()
        raise
    else:
        RECONCILES.labels(kind=kind, result="ok").inc()
    finally:
        RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
