"""Kopf registrations: thin and level-based, one reconciler per kind.

Every handler hands the object to its kind's reconciler. The reconcilers are idempotent,
so a watch event of the object, of one of its children, or the periodic resync may all
call them, in any order, any number of times. Only event handlers are used: they need no
finalizer, so deleting an object never waits for the operator (Kopf's timers, daemons
and deletion handlers would each put a finalizer on every object). Handlers return
nothing (Kopf would store a return value in the status).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf

from mlplane_operator import kube, labels
from mlplane_operator.api.v1alpha1 import GROUP, VERSION
from mlplane_operator.reconcilers import inferenceservice, modelversion, trainingjob
from mlplane_operator.resync import Reconciler, Resync
from mlplane_operator.settings import get_settings

RECONCILERS: dict[str, Reconciler] = {
    "TrainingJob": trainingjob.reconcile,
    "ModelVersion": modelversion.reconcile,
    "InferenceService": inferenceservice.reconcile,
}
PLURALS = {
    "TrainingJob": "trainingjobs",
    "ModelVersion": "modelversions",
    "InferenceService": "inferenceservices",
}
PRIORITY = random.randint(1, 32767)  # peers of equal priority would pause each other
_resync: list[Resync] = []


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # our own Events say what a person needs
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    resync = Resync(RECONCILERS, get_settings(), PRIORITY)
    resync.start()
    _resync.append(resync)


@kopf.on.cleanup()
def stop_resync(**_: Any) -> None:
    for resync in _resync:
        resync.stop()


def _register(kind: str) -> None:
    @kopf.on.event(GROUP, VERSION, PLURALS[kind], id=f"reconcile-{PLURALS[kind]}")
    def reconcile_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type == "DELETED" or body.metadata.get("deletionTimestamp"):
            return
        RECONCILERS[kind](dict(body), get_settings())


for _kind in RECONCILERS:
    _register(_kind)


def _reconcile_owner(namespace: str, kind: str, name: str) -> None:
    owner = kube.get(kind, namespace, name)
    if owner is not None and not owner["metadata"].get("deletionTimestamp"):
        RECONCILERS[kind](owner, get_settings())


@kopf.on.event("batch", "v1", "jobs", labels={labels.COMPONENT: kopf.PRESENT})
def job_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    """A run or a verification moved: reconcile its owner now, not at the next resync."""
    if type is None:  # the initial listing: the resync covers it
        return
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") in ("TrainingJob", "ModelVersion") and ref.get("controller"):
            _reconcile_owner(body.metadata.namespace or "", ref["kind"], ref["name"])


@kopf.on.event("apps", "v1", "deployments", labels={labels.INFERENCE_SERVICE: kopf.PRESENT})
def deployment_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type is None:
        return
    owner = body.metadata.labels[labels.INFERENCE_SERVICE]
    _reconcile_owner(body.metadata.namespace or "", "InferenceService", owner)
