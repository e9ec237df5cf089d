"""Kopf registrations: thin, level-based, one reconciler per kind.

Every handler does the same thing: hand the latest body to its kind's reconciler. The
reconcilers are idempotent, so a create, an update, a resume after a restart, a timer
tick and a child's event may all call them, in any order, any number of times.
Handlers return nothing (Kopf would store a return value in the status).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from mlplane_operator import kube, labels
from mlplane_operator.api.v1alpha1 import GROUP, VERSION
from mlplane_operator.reconcilers import inferenceservice, modelversion, trainingjob
from mlplane_operator.settings import OperatorSettings, get_settings

Reconciler = Callable[[dict[str, Any], OperatorSettings], None]
KINDS: dict[str, tuple[str, Reconciler, float]] = {
    # kind: (plural, reconciler, timer interval in seconds)
    "TrainingJob": ("trainingjobs", trainingjob.reconcile, 10.0),
    "ModelVersion": ("modelversions", modelversion.reconcile, 15.0),
    "InferenceService": ("inferenceservices", inferenceservice.reconcile, 3.0),
}
RETRY_SECONDS = 5


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our status schemas are strict, so Kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="kopf.mlplane.io"
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.mlplane.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events say what a person needs
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


def _reconcile(kind: str, body: kopf.Body) -> None:
    _, reconcile, _ = KINDS[kind]
    reconcile(dict(body), get_settings())


def _register(kind: str) -> None:
    plural, _, interval = KINDS[kind]

    handler_id = f"reconcile-{plural}"

    @kopf.on.resume(GROUP, VERSION, plural, id=handler_id, backoff=RETRY_SECONDS)
    @kopf.on.create(GROUP, VERSION, plural, id=handler_id, backoff=RETRY_SECONDS)
    @kopf.on.update(GROUP, VERSION, plural, id=handler_id, backoff=RETRY_SECONDS)
    @kopf.timer(
        GROUP, VERSION, plural, id=f"tick-{plural}", interval=interval, backoff=RETRY_SECONDS
    )
    def reconcile_handler(body: kopf.Body, **_: Any) -> None:
        _reconcile(kind, body)


for _kind in KINDS:
    _register(_kind)


def _reconcile_owner(namespace: str, kind: str, name: str) -> None:
    owner = kube.get(kind, namespace, name)
    if owner is not None and not owner["metadata"].get("deletionTimestamp"):
        KINDS[kind][1](owner, get_settings())


@kopf.on.event("batch", "v1", "jobs", labels={labels.COMPONENT: kopf.PRESENT})
def job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A run or a verification moved: reconcile its owner now, not at the next tick."""
    if type is None:  # the initial listing: timers cover it
        return
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") in ("TrainingJob", "ModelVersion") and ref.get("controller"):
            _reconcile_owner(body.metadata.namespace or "", ref["kind"], ref["name"])


@kopf.on.event("apps", "v1", "deployments", labels={labels.INFERENCE_SERVICE: kopf.PRESENT})
def deployment_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type is None:
        return
    _reconcile_owner(
        body.metadata.namespace or "",
        "InferenceService",
        body.metadata.labels[labels.INFERENCE_SERVICE],
    )


@kopf.on.field(GROUP, VERSION, "modelversions", field="spec.stage")
@kopf.on.field(GROUP, VERSION, "modelversions", field="status.verified")
def version_changed(body: kopf.Body, **_: Any) -> None:
    """A promotion or a verification changes what InferenceServices should serve."""
    namespace, model = body.metadata.namespace or "", body.spec.get("model")
    for isvc in kube.list_("InferenceService", namespace):
        if isvc["spec"].get("model") == model:
            inferenceservice.reconcile(isvc, get_settings())
