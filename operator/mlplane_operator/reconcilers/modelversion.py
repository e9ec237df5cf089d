"""ModelVersion: verify the artifact, then apply stages.

Nothing serves a version before a verification Job (`mlplane-train verify`) has checked
its artifact. Only a verified version gets the stage its TrainingJob asked for or its
autoPromote policy grants, and only a verified Production version archives the previous
Production version of its model, so a bad artifact can never displace a good one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from mlplane_operator import conditions, kube, labels, metrics
from mlplane_operator.api.v1alpha1 import ModelVersion
from mlplane_operator.builders.verification import build_verification_job, verification_job_name
from mlplane_operator.policies import runs as job_policy
from mlplane_operator.policies.promotion import Verdict, evaluate_auto_promote, promotion_rank
from mlplane_operator.reconcilers import ledger
from mlplane_operator.reconcilers.locks import object_lock, reconcile_latest
from mlplane_operator.settings import OperatorSettings

Manifest = dict[str, Any]
log = logging.getLogger(__name__)
PRODUCTION, ARCHIVED = "Production", "Archived"


def reconcile(body: Manifest, settings: OperatorSettings) -> None:
    metadata = body["metadata"]
    # Stage changes touch every version of a model: one model at a time.
    model = (body.get("spec") or {}).get("model", metadata["name"])
    lock = object_lock("model", metadata["namespace"], model)
    reconcile_latest("ModelVersion", body, lock, lambda latest: _reconcile(latest, settings))


def _reconcile(body: Manifest, settings: OperatorSettings) -> None:
    mv = ModelVersion.from_body(body)
    now = datetime.now(UTC).replace(microsecond=0)
    verified, verify_message, verified_time = _verification(mv, body, settings, now)
    stage = mv.spec.stage.value
    stage_reason = None
    if verified:
        stage, stage_reason = _apply_registration(mv, body, stage)
        if stage == PRODUCTION:
            _archive_other_production(mv, body, now)

    history = [change.to_json() for change in mv.status.stage_history]
    if not history or history[-1]["stage"] != stage:
        history.append(
            {"stage": stage, "time": _iso(now), "reason": stage_reason or "stage set in spec"}
        )
    generation = mv.metadata.get("generation", 1)
    if verified is None:
        phase = "Verifying"
        observed = [
            conditions.Observed("ArtifactVerified", "Unknown", "Verifying", verify_message),
            *conditions.progressing("Verifying", verify_message),
        ]
    elif verified:
        phase = "Ready"
        observed = [
            conditions.Observed("ArtifactVerified", "True", "Verified", verify_message),
            *conditions.ready("Verified", f"verified; stage {stage}"),
        ]
    else:
        phase = "Failed"
        message = verify_message + (
            "; its stage Production is ignored: it can never be served"
            if stage == PRODUCTION
            else ""
        )
        observed = [
            conditions.Observed("ArtifactVerified", "False", "VerificationFailed", verify_message),
            *conditions.stalled("VerificationFailed", message),
        ]
    status: Manifest = {
        "observedGeneration": generation,
        "phase": phase,
        "verified": verified,
        "verifiedTime": verified_time,
        "headlineMetric": _headline(mv),
        "stageHistory": history[-50:],
        "message": verify_message[:1024] or None,
        "conditions": conditions.merge_conditions(
            [c.to_json() for c in mv.status.conditions], observed, generation
        ),
    }
    kube.write_status_if_changed(body, status)


def _verification(
    mv: ModelVersion, body: Manifest, settings: OperatorSettings, now: datetime
) -> tuple[bool | None, str, str | None]:
    """(verified: True/False, or None while the Job runs; message; when it was decided)."""
    if mv.status.verified is not None:  # the spec that was verified is immutable
        decided = mv.status.verified_time
        return mv.status.verified, mv.status.message or "", _iso(decided) if decided else None
    job = kube.cached_get("Job", mv.namespace, verification_job_name(mv))
    if job is None:
        ledger.record_used(mv.spec.model, mv.namespace, mv.spec.version)
        kube.create(build_verification_job(mv, body, settings))
        kube.post_event(body, "Normal", "Verifying", f"verifying artifact {mv.spec.artifact.uri}")
        return None, "a verification Job is checking the artifact", None
    run = job_policy.observe_job(job)
    if run.outcome == job_policy.RUNNING:
        return None, "a verification Job is checking the artifact", None
    # From the API server: the pod's cache may lag the Job's completion.
    pods = kube.list_("Pod", mv.namespace, {"batch.kubernetes.io/job-name": run.name})
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp", ""))
    message = job_policy.trainer_message(pods[-1] if pods else None, container="verifier")
    if run.outcome == job_policy.SUCCEEDED:
        metrics.VERIFICATIONS.labels(result="verified").inc()
        text = f"artifact verified: sha256 {mv.spec.artifact.sha256[:12]}…, loads in ONNX Runtime"
        kube.post_event(body, "Normal", "Verified", text)
        return True, text, _iso(now)
    text = (message or {}).get("error") or run.failure or "the verification Job failed"
    metrics.VERIFICATIONS.labels(result="failed").inc()
    kube.post_event(body, "Warning", "VerificationFailed", str(text))
    return False, f"verification failed: {text}"[:1024], _iso(now)


def _apply_registration(mv: ModelVersion, body: Manifest, stage: str) -> tuple[str, str | None]:
    """Apply the requested stage or the autoPromote policy once, after verification.
    The annotations are removed in the same patch, so this happens exactly once."""
    annotations = mv.metadata.get("annotations") or {}
    requested = annotations.get(labels.REQUESTED_STAGE)
    policy_text = annotations.get(labels.AUTO_PROMOTE)
    if requested is None and policy_text is None:
        return stage, None
    target, reason = requested or stage, f"registered in stage {requested}" if requested else None
    verdict: Verdict | None = None
    if policy_text is not None:
        production = _production_versions(mv)
        verdict = evaluate_auto_promote(
            json.loads(policy_text),
            mv.spec.metrics or {},
            production[0]["spec"].get("metrics") if production else None,
        )
        if verdict.promote:
            target, reason = PRODUCTION, f"autoPromote: {verdict.reason}"
    patched = kube.patch_merge(
        "ModelVersion", mv.namespace, mv.name,
        {
            "metadata": {
                "annotations": {labels.REQUESTED_STAGE: None, labels.AUTO_PROMOTE: None},
                "resourceVersion": body["metadata"]["resourceVersion"],  # decided on this
            },
            "spec": {"stage": target},
        },
    )  # fmt: skip
    body["metadata"]["resourceVersion"] = patched["metadata"]["resourceVersion"]
    if verdict is not None:  # after the patch: only the pass that applied it announces it
        kube.post_event(
            body,
            "Normal",
            "Promoted" if verdict.promote else "NotPromoted",
            f"autoPromote: {verdict.reason}",
        )
    return target, reason


def _production_versions(mv: ModelVersion) -> list[Manifest]:
    """Other verified Production versions of the same model, newest first."""
    found = [
        other
        for other in kube.list_("ModelVersion", mv.namespace)
        if other["spec"].get("model") == mv.spec.model
        and other["metadata"]["name"] != mv.name
        and other["spec"].get("stage") == PRODUCTION
    ]
    return sorted(found, key=lambda o: o["spec"]["version"], reverse=True)


def _archive_other_production(mv: ModelVersion, body: Manifest, now: datetime) -> None:
    """At most one Production version per model: the one promoted last wins, the higher
    version on a tie, so that every pass, on every replica, agrees on the one to keep.
    The archive applies only over the version of the other that was read: if it changed
    meanwhile (promoted again, say), the pass runs again on what it is now."""
    mine = promotion_rank([c.to_json() for c in mv.status.stage_history], mv.spec.version, now)
    for other in _production_versions(mv):
        history = (other.get("status") or {}).get("stageHistory")
        if promotion_rank(history, int(other["spec"]["version"]), now) > mine:
            continue  # the other one is newer: it will archive this one
        name = other["metadata"]["name"]
        kube.patch_merge(
            "ModelVersion", mv.namespace, name,
            {
                "metadata": {"resourceVersion": other["metadata"]["resourceVersion"]},
                "spec": {"stage": ARCHIVED},
            },
        )  # fmt: skip
        kube.post_event(
            other, "Normal", "Archived", f"archived: {mv.name} was promoted to Production"
        )
        kube.post_event(
            body, "Normal", "PromotedToProduction", f"{name} archived; {mv.name} is Production"
        )


def _headline(mv: ModelVersion) -> Manifest | None:
    values = mv.spec.metrics or {}
    for name in ("accuracy", "f1_macro", "r2", "rmse", *sorted(values)):
        if name in values:
            return {"name": name, "value": float(values[name])}
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
