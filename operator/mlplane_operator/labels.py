"""Labels and annotations the operator puts on what it creates, in one place."""

from __future__ import annotations

PREFIX = "mlplane.io"
MANAGED_BY = {"app.kubernetes.io/managed-by": "mlplane"}

MODEL = f"{PREFIX}/model"
VERSION = f"{PREFIX}/version"
TRAINING_JOB = f"{PREFIX}/trainingjob"
TRAINING_JOB_UID = f"{PREFIX}/trainingjob-uid"  # on a ModelVersion: which incarnation ran it
RUN = f"{PREFIX}/run"
INFERENCE_SERVICE = f"{PREFIX}/inferenceservice"
COMPONENT = f"{PREFIX}/component"  # trainer | verifier | server
VERIFIES = f"{PREFIX}/verifies"  # on a verification Job: the ModelVersion's uid

# Annotations
TRIGGER = f"{PREFIX}/trigger"  # on a training Job: Spec | Schedule | Retrain | Manual
GENERATION = f"{PREFIX}/generation"  # on a training Job: the TrainingJob generation it trains
RUN_NUMBER = f"{PREFIX}/run-number"  # on a training Job
RETRAIN_REQUEST = f"{PREFIX}/retrain-request"  # on a training Job: the request it answers
RETRAIN_REQUESTED = f"{PREFIX}/retrain-requested"  # on a TrainingJob: a request id (time)
REQUESTED_STAGE = f"{PREFIX}/requested-stage"  # on a ModelVersion: stage once verified
AUTO_PROMOTE = f"{PREFIX}/auto-promote"  # on a ModelVersion: the policy (JSON) to apply


def owner_reference(body: dict[str, object], controller: bool = True) -> dict[str, object]:
    """An ownerReference to a custom resource, so garbage collection removes children."""
    metadata = body["metadata"]
    assert isinstance(metadata, dict)
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
