"""Kopf registrations: thin and level-based; the work queue does the work.

Kopf's events of the three kinds put the object in the queue (resync.Controller), as
do the events of our own watch-fed caches of the children; the queue's workers call
the kind's reconciler. The reconcilers are idempotent, so any of these may fire in
any order, any number of times. Only event handlers are used: they need no finalizer,
so deleting an object never waits for the operator (Kopf's timers, daemons and
deletion handlers would each put a finalizer on every object). Handlers return
nothing (Kopf would store a return value in the status).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import kopf

from mlplane_operator import kube
from mlplane_operator.api.v1alpha1 import GROUP, VERSION
from mlplane_operator.reconcilers import inferenceservice, modelversion, trainingjob
from mlplane_operator.resync import Controller, Reconciler
from mlplane_operator.settings import get_settings

log = logging.getLogger(__name__)
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
_controller: list[Controller] = []


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # our own Events say what a person needs
    settings.execution.max_workers = 4  # handlers only queue; the queue has its workers
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    controller = Controller(RECONCILERS, get_settings(), PRIORITY)
    controller.start()
    _controller.append(controller)


@kopf.on.cleanup()
def stop_controller(**_: Any) -> None:
    for controller in _controller:
        controller.stop()
    if not kube.flush_events(timeout=10):  # what a pass said before SIGTERM is not lost
        log.warning("stopped with Events not yet posted")


def _register(kind: str) -> None:
    @kopf.on.event(GROUP, VERSION, PLURALS[kind], id=f"reconcile-{PLURALS[kind]}")
    def reconcile_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type is None or type == "DELETED" or body.metadata.get("deletionTimestamp"):
            return  # the initial listing: the controller queued every object at start
        for controller in _controller:
            controller.enqueue(kind, body.metadata.namespace or "", body.metadata.name or "")


for _kind in RECONCILERS:
    _register(_kind)
