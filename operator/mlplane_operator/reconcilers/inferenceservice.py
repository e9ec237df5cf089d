"""InferenceService → Deployments per version, one Service, HPA, rollouts, drift and
quality loops.

Each call resolves the target ModelVersion (pinned, or the verified version in the
followed stage), applies the children it owns by server-side apply, advances a rollout
by at most one step, reads drift from the monitor sidecars and live quality from the
evaluation Jobs, and writes the status once.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from mlplane_operator import conditions, kube, labels, metrics
from mlplane_operator.api.v1alpha1 import InferenceService, ModelVersion
from mlplane_operator.api.v1alpha1.inferenceservice import Analysis
from mlplane_operator.builders import serving
from mlplane_operator.policies import images, rollout
from mlplane_operator.policies import quality as quality_policy
from mlplane_operator.reconcilers import quality, scrape
from mlplane_operator.reconcilers.locks import object_lock, reconcile_latest
from mlplane_operator.settings import OperatorSettings

Manifest = dict[str, Any]
log = logging.getLogger(__name__)


Readings = dict[tuple[int, int, str], list[str | None]]  # (version, port, path) -> per pod


def reconcile(body: Manifest, settings: OperatorSettings) -> None:
    metadata = body["metadata"]
    lock = object_lock("InferenceService", metadata["namespace"], metadata["name"])
    readings = _read_pods(body, settings)  # before the lock: pods may be slow to answer
    reconcile_latest(
        "InferenceService",
        body,
        lock,
        lambda latest: _Reconcile(latest, settings, readings).run(),
    )


def _read_pods(body: Manifest, settings: OperatorSettings) -> Readings:
    """What the pass will want from the pods, read without holding the object's lock:
    the canary's /metrics during an analysed rollout, the serving version's /drift with
    drift detection on. A version the pass wants but this did not read (a canary that
    starts in this very pass) is judged on the next pass."""
    isvc = InferenceService.from_body(body)
    wanted: list[tuple[int, int, str]] = []
    if isvc.spec.rollout.analysis is not None and isvc.status.canary_version is not None:
        wanted.append((isvc.status.canary_version, settings.serving_port, "/metrics"))
    if isvc.status.serving_version is not None and serving.drift_enabled(isvc):
        wanted.append((isvc.status.serving_version, settings.monitor_port, "/drift"))
    if not wanted:
        return {}
    pods = [
        pod
        for pod in kube.cached_list("Pod", isvc.namespace, {labels.INFERENCE_SERVICE: isvc.name})
        if (pod.get("status") or {}).get("podIP")
        and _pod_ready(pod)
        and not pod["metadata"].get("deletionTimestamp")
    ]
    targets = [
        (key, pod["status"]["podIP"])
        for key in wanted
        for pod in pods
        if (pod["metadata"].get("labels") or {}).get(labels.VERSION) == str(key[0])
    ]
    texts = scrape.fetch_all((ip, port, path) for (_, port, path), ip in targets)
    readings: Readings = {key: [] for key in wanted}
    for (key, _), text in zip(targets, texts, strict=True):
        readings[key].append(text)
    return readings


class _Reconcile:
    """One pass over one InferenceService; the fields collect what the status reports."""

    def __init__(self, body: Manifest, settings: OperatorSettings, readings: Readings) -> None:
        self.body, self.settings, self.readings = body, settings, readings
        self.isvc = InferenceService.from_body(body)
        self.now = datetime.now(UTC).replace(microsecond=0)
        status = self.isvc.status
        self.serving: int | None = status.serving_version
        self.canary: int | None = status.canary_version
        self.weight: int | None = status.canary_weight
        self.rollout_phase: str | None = (
            status.rollout_phase.value if status.rollout_phase else None
        )
        self.history: list[Manifest] = [r.to_json() for r in status.rollout_history]
        self.observed: list[conditions.Observed] = []
        self.blocked: str | None = None
        self.versions: list[ModelVersion] = []  # the model's versions, read once per pass
        self.evaluation: quality.Evaluation | None = None
        self.canary_wait: quality_policy.CanaryWait | None = None  # for an evaluation
        self.deployments: dict[int, Manifest] = {}  # version -> its live Deployment

    # --- the pass ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except kube.Rejected as error:
            # Admitted as an InferenceService, refused as a child (requests above
            # limits, say): say so, naming the field, instead of failing every pass.
            self._stall("ChildRejected", f"the API server rejected a child: {error}")

    def _run(self) -> None:
        isvc = self.isvc
        deployments = {
            int(d["metadata"]["labels"][labels.VERSION]): d
            for d in kube.cached_list(
                "Deployment", isvc.namespace, {labels.INFERENCE_SERVICE: isvc.name}
            )
            if labels.VERSION in d["metadata"].get("labels", {})
        }
        if self.serving is not None and self.serving not in deployments:
            self.serving = None  # deleted under us: treat as a first deployment
        self.deployments = deployments
        target, waiting = self._resolve_target()
        refused = self._refusal(target)
        if refused is not None:
            self._stall(*refused)  # the running Deployments stay as they are: no outage
            return
        kube.apply_if_changed(serving.build_service(isvc, self.body, self.settings))
        total = self._total_replicas()

        if target is not None:
            self.observed.append(
                conditions.Observed(
                    "TargetResolved", "True", "Resolved", f"target is {target.name}"
                )
            )
        if target is None:
            self.blocked = waiting
            if self.serving is not None:
                self.observed.append(
                    conditions.Observed("TargetResolved", "False", "NoTarget", waiting)
                )
        elif self.serving is None or target.spec.version == self.serving:
            self._steady(target, total, deployments)
        elif target.spec.version in self._rolled_back_versions():
            self.blocked = (
                f"version {target.spec.version} was rolled back; still serving v{self.serving}. "
                "Promote or pin another version to roll out again"
            )
            self._keep_serving(total, deployments)
        elif isvc.spec.rollout.strategy.value == "Canary":
            self._canary_step(target, total, deployments)
        else:
            self._rolling_update(target, total, deployments)

        if self.serving is not None:
            hpa = serving.build_hpa(isvc, self.body, self.serving)
            if hpa is not None:
                kube.apply_if_changed(hpa)
            elif kube.cached_get("HorizontalPodAutoscaler", isvc.namespace, isvc.name) is not None:
                kube.delete("HorizontalPodAutoscaler", isvc.namespace, isvc.name)
            self._service_monitor()
        self._drift()
        self.evaluation = quality.evaluate(
            isvc, self.body, self.serving, self.settings, self.now, self.canary_wait
        )
        self._quality()
        self._write_status()

    # --- target ------------------------------------------------------------------------

    def _resolve_target(self) -> tuple[ModelVersion | None, str]:
        spec = self.isvc.spec
        candidates = self.versions = [
            ModelVersion.from_body(mv)
            for mv in kube.cached_list("ModelVersion", self.isvc.namespace)
            if mv["spec"].get("model") == spec.model
        ]
        if spec.version is not None:
            wanted = [mv for mv in candidates if mv.spec.version == spec.version]
            description = f"{spec.model} version {spec.version}"
        else:
            stage = spec.effective_stage
            wanted = [mv for mv in candidates if stage is not None and mv.spec.stage == stage]
            description = f"a {stage} version of {spec.model}"
        verified = [mv for mv in wanted if mv.status.verified]
        if verified:
            return max(verified, key=lambda mv: mv.spec.version), ""
        if any(mv.status.verified is False for mv in wanted):
            return None, f"{description} failed verification; it will not be served"
        if wanted:
            return None, f"waiting for {description} to be verified"
        return None, f"waiting for {description} (no such ModelVersion yet)"

    def _refusal(self, target: ModelVersion | None) -> tuple[str, str] | None:
        """(reason, message) when the operator policy forbids serving this spec."""
        image = self.isvc.spec.image
        refused = images.image_refusal(image, self.settings)
        if refused:
            return "ImageNotAllowed", refused
        if target is None:
            return None
        baseline = target.spec.baseline.uri if target.spec.baseline else None
        uses_s3 = any(
            (uri or "").startswith("s3://") for uri in (target.spec.artifact.uri, baseline)
        )
        refused = images.serving_credentials_refusal(
            image, uses_s3, target.spec.s3_credentials_secret, self.settings
        )
        return ("NoCredentials", refused) if refused else None

    def _stall(self, reason: str, message: str) -> None:
        stored = conditions.find([c.to_json() for c in self.isvc.status.conditions], "Stalled")
        if (stored or {}).get("reason") != reason or (stored or {}).get("message") != message:
            kube.post_event(self.body, "Warning", reason, message)
        generation = self.isvc.metadata.get("generation", 1)
        status: Manifest = {
            "observedGeneration": generation,
            "phase": "Failed",
            "conditions": conditions.merge_conditions(
                [c.to_json() for c in self.isvc.status.conditions],
                conditions.stalled(reason, message),
                generation,
            ),
        }
        kube.write_status_if_changed(self.body, status)

    def _rolled_back_versions(self) -> set[int]:
        return {r["version"] for r in self.history if r.get("outcome") == "RolledBack"}

    # --- strategies --------------------------------------------------------------------

    def _total_replicas(self) -> int:
        """The capacity to keep: spec.replicas, or under autoscaling what the HPA has
        scaled the serving version to (within minReplicas..maxReplicas), so that a new
        version starts at the capacity the traffic needs now."""
        scaling = self.isvc.spec.autoscaling
        if scaling is None:
            return self.isvc.spec.effective_replicas
        live = self.deployments.get(self.serving) if self.serving is not None else None
        current = int(((live or {}).get("spec") or {}).get("replicas") or scaling.min_replicas)
        return min(max(current, scaling.min_replicas), scaling.max_replicas)

    def _deploy(
        self, mv: ModelVersion, replicas: int, annotations: dict[str, str] | None = None
    ) -> Manifest:
        """Apply one version's Deployment. Under autoscaling the serving version's replica
        count is the HPA's: handed over once, then never applied again."""
        version = mv.spec.version
        by_hpa = self.isvc.spec.autoscaling is not None and version == self.serving
        live = self.deployments.get(version)
        if by_hpa and live is not None:
            live_annotations = live["metadata"].get("annotations") or {}
            if serving.REPLICAS_BY_HPA not in live_annotations:
                count = int((live.get("spec") or {}).get("replicas") or replicas)
                kube.hand_replicas_to_hpa(self.isvc.namespace, live["metadata"]["name"], count)
        elif by_hpa:
            by_hpa = False  # a first Deployment: created with a count, handed over next pass
        return kube.apply_if_changed(
            serving.build_deployment(
                self.isvc,
                self.body,
                mv,
                None if by_hpa else replicas,
                self.settings,
                annotations,
            )
        )

    def _steady(self, target: ModelVersion, total: int, deployments: dict[int, Manifest]) -> None:
        first = self.serving is None
        self._deploy(target, total)
        if first:
            self._record(target.spec.version, None, "Succeeded", "first deployment")
            kube.post_event(self.body, "Normal", "Serving", f"serving {target.name}")
        self.serving, self.canary, self.weight = target.spec.version, None, None
        self.rollout_phase = self.rollout_phase or "Succeeded"
        self._remove_others({target.spec.version}, deployments)

    def _keep_serving(self, total: int, deployments: dict[int, Manifest]) -> None:
        assert self.serving is not None
        current = self._model_version(self.serving)
        if current is not None:
            self._deploy(current, total)
        self.canary, self.weight = None, None
        self._remove_others({self.serving}, deployments)

    def _rolling_update(
        self, target: ModelVersion, total: int, deployments: dict[int, Manifest]
    ) -> None:
        assert self.serving is not None
        version = target.spec.version
        if self.rollout_phase != "Progressing" or self.canary != version:
            self._record(
                version,
                self.serving,
                "Progressing",
                "rolling update started",
                strategy="RollingUpdate",
            )
        self.canary, self.weight, self.rollout_phase = version, None, "Progressing"
        applied = self._deploy(target, total)
        if _ready_replicas(applied) >= max(total, 1):
            previous = self.serving
            self.serving, self.canary = version, None
            self._remove_others({version}, deployments)
            self._finish(version, previous, "Succeeded", "rolling update complete", "RollingUpdate")
            return
        deadline = self.isvc.spec.rollout.progress_deadline_seconds
        if rollout.past_deadline(self._rollout_started(version), deadline, self.now):
            # The previous version still serves (its Deployment is kept until the new
            # one is ready): dropping the new one is the rollback.
            message = (
                f"no progress within spec.rollout.progressDeadlineSeconds ({deadline} s): "
                f"{_ready_replicas(applied)} of {max(total, 1)} pods of v{version} ready"
            )
            if not self.isvc.spec.rollout.auto_rollback:
                self.rollout_phase = "Failed"
                return
            kube.delete(
                "Deployment", self.isvc.namespace, serving.deployment_name(self.isvc, version)
            )
            self.canary = None
            self._finish(version, self.serving, "RolledBack", message, "RollingUpdate")
            kube.post_event(
                self.body, "Warning", "RolledBack", f"v{version} rolled back: {message}"
            )

    def _canary_step(
        self, target: ModelVersion, total: int, deployments: dict[int, Manifest]
    ) -> None:
        assert self.serving is not None
        spec = self.isvc.spec.rollout
        steps = spec.canary.steps if spec.canary else [50]
        step_seconds = spec.canary.step_seconds if spec.canary else 60
        version = target.spec.version
        existing = deployments.get(version)
        annotations = (existing or {}).get("metadata", {}).get("annotations") or {}
        if existing is None or self.canary != version or serving.STEP not in annotations:
            step, started = 0, self.now
            self._record(
                version,
                self.serving,
                "Progressing",
                f"canary started at {steps[0]}%",
                strategy="Canary",
            )
            kube.post_event(
                self.body, "Normal", "CanaryStarted", f"canary v{version} at {steps[0]}%"
            )
        else:
            step = int(annotations[serving.STEP])
            started = datetime.fromisoformat(annotations[serving.STEP_STARTED])
        if step >= len(steps):
            self._promote_canary(target, total, started, deployments)
            return
        stable_replicas, canary_replicas = rollout.canary_split(total, steps[step])
        stable = self._model_version(self.serving)
        if stable is not None:
            self._deploy(stable, stable_replicas)
        applied = self._deploy(target, canary_replicas, _step_annotations(step, started))
        self.canary, self.weight, self.rollout_phase = version, steps[step], "Progressing"
        self._remove_others({self.serving, version}, deployments)
        # Progress is a step advancing: a step that has not passed its analysis within
        # progressDeadlineSeconds after its stepSeconds fails the rollout.
        overdue = rollout.past_deadline(
            started, step_seconds + spec.progress_deadline_seconds, self.now
        )
        deadline = (
            "no progress within spec.rollout.progressDeadlineSeconds "
            f"({spec.progress_deadline_seconds} s)"
        )
        if _ready_replicas(applied) < canary_replicas:
            if overdue:
                self._fail_canary(
                    version, stable, total, f"{deadline}: the canary pods are not ready"
                )
            return
        if (self.now - started).total_seconds() < step_seconds:
            return
        due = quality_policy.CanaryWait(started + timedelta(seconds=step_seconds), step_seconds)
        verdict = self._analyse(version, due, overdue)
        if verdict.outcome == "wait":
            self.observed.append(
                conditions.Observed(
                    "CanaryAnalysis", "Unknown", verdict.reason or "WaitingForTraffic",
                    verdict.message,
                )
            )  # fmt: skip
            if overdue:
                self._fail_canary(version, stable, total, f"{deadline}: {verdict.message}")
            return
        if verdict.outcome == "fail":
            self.observed.append(
                conditions.Observed(
                    "CanaryAnalysis", "False", verdict.reason or "AnalysisFailed", verdict.message
                )
            )
            self._fail_canary(version, stable, total, verdict.message)
            return
        self.observed.append(
            conditions.Observed(
                "CanaryAnalysis", "True", verdict.reason or "AnalysisPassed", verdict.message
            )
        )
        if step + 1 < len(steps):
            stable_replicas, canary_replicas = rollout.canary_split(total, steps[step + 1])
            self._deploy(target, canary_replicas, _step_annotations(step + 1, self.now))
            if stable is not None:
                self._deploy(stable, stable_replicas)
            self.weight = steps[step + 1]
            kube.post_event(
                self.body,
                "Normal",
                "CanaryStep",
                f"canary v{version} at {steps[step + 1]}%: {verdict.message}",
            )
            return
        # Every step passed: bring the canary to full capacity, then cut over.
        self._promote_canary(target, total, self.now, deployments, verdict.message)

    def _promote_canary(
        self,
        target: ModelVersion,
        total: int,
        started: datetime,
        deployments: dict[int, Manifest],
        message: str = "",
    ) -> None:
        """The last step: the canary Deployment grows to the whole capacity while the
        stable one keeps serving, and takes over only once all its pods are ready, so
        the cut-over never drops capacity."""
        assert self.serving is not None
        spec = self.isvc.spec.rollout
        steps = spec.canary.steps if spec.canary else [50]
        version = target.spec.version
        applied = self._deploy(target, total, _step_annotations(len(steps), started))
        self.canary, self.weight, self.rollout_phase = version, steps[-1], "Progressing"
        if _ready_replicas(applied) < max(total, 1):
            if rollout.past_deadline(started, spec.progress_deadline_seconds, self.now):
                stable = self._model_version(self.serving)
                self._fail_canary(
                    version,
                    stable,
                    total,
                    "no progress within spec.rollout.progressDeadlineSeconds "
                    f"({spec.progress_deadline_seconds} s): {_ready_replicas(applied)} of "
                    f"{max(total, 1)} pods of v{version} ready for the promotion",
                )
            return
        previous = self.serving
        self.serving, self.canary, self.weight = version, None, None
        self._remove_others({version}, deployments)
        detail = f": {message}" if message else ""
        self._finish(version, previous, "Succeeded", f"canary promoted{detail}", "Canary")

    def _fail_canary(
        self, version: int, stable: ModelVersion | None, total: int, message: str
    ) -> None:
        """The canary failed its analysis or its deadline: roll back (autoRollback) or
        stop where it is (rolloutPhase Failed)."""
        if not self.isvc.spec.rollout.auto_rollback:
            self.rollout_phase = "Failed"
            return
        kube.delete("Deployment", self.isvc.namespace, serving.deployment_name(self.isvc, version))
        if stable is not None:
            self._deploy(stable, total)
        self.canary, self.weight = None, None
        self._finish(version, self.serving, "RolledBack", message, "Canary")
        kube.post_event(
            self.body, "Warning", "RolledBack", f"canary v{version} rolled back: {message}"
        )

    def _analyse(
        self, version: int, step: quality_policy.CanaryWait, overdue: bool
    ) -> rollout.Verdict:
        """The step's verdict on the canary's traffic and, with a quality gate, on its
        live quality (a wait for it brings the next evaluation forward)."""
        analysis = self.isvc.spec.rollout.analysis
        if analysis is None:
            return rollout.Verdict("pass", "no analysis configured")
        traffic = self._analyse_traffic(version, analysis)
        quality_spec = self.isvc.spec.monitoring.quality if self.isvc.spec.monitoring else None
        if not analysis.gates_quality or quality_spec is None or self.serving is None:
            return traffic
        gate = rollout.analyse_quality(
            analysis,
            quality_spec,
            self.isvc.status.quality,
            (version, self.serving),
            step.step_due,
            overdue,
        )
        if gate.outcome == "wait":
            self.canary_wait = step
        return rollout.combine(traffic, gate)

    def _analyse_traffic(self, version: int, analysis: Analysis) -> rollout.Verdict:
        traffic: list[rollout.Traffic] = []
        unreadable = 0
        for text in self._scrape(version, self.settings.serving_port, "/metrics"):
            parsed = _traffic_or_none(text)
            if parsed is None:
                unreadable += 1
            else:
                traffic.append(parsed)
        return rollout.analyse(
            traffic,
            analysis.max_error_rate,
            analysis.max_latency_p99_ms,
            analysis.min_requests,
            unreadable,
        )

    # --- drift -------------------------------------------------------------------------

    def _drift(self) -> None:
        if self.serving is None or not serving.drift_enabled(self.isvc):
            return
        verdicts = []
        for text in self._scrape(self.serving, self.settings.monitor_port, "/drift"):
            try:
                verdicts.append(json.loads(text or ""))
            except ValueError:
                continue
        if not verdicts:
            return
        detected = [v for v in verdicts if v.get("detected")]
        was = conditions.is_true(
            [c.to_json() for c in self.isvc.status.conditions], "DriftDetected"
        )
        if not detected:
            samples = sum(int(v.get("samples", 0)) for v in verdicts)
            self.observed.append(
                conditions.Observed(
                    "DriftDetected", "False", "NoDrift", f"no drift in {samples} samples"
                )
            )
            return
        features = sorted(
            {f for v in detected for f, d in (v.get("features") or {}).items() if _drifted(d)}
        )
        message = f"drift detected on v{self.serving}" + (
            f" in {', '.join(features[:8])}" if features else ""
        )
        self.observed.append(conditions.Observed("DriftDetected", "True", "DriftDetected", message))
        if not was:
            kube.post_event(self.body, "Warning", "DriftDetected", message)
        self._request_retrain(message, "DriftDetected")

    # --- quality -----------------------------------------------------------------------

    def _quality(self) -> None:
        evaluation = self.evaluation
        if evaluation is None:
            return
        self.observed.extend(evaluation.observed)
        if evaluation.degraded is None:
            return
        was = conditions.is_true(
            [c.to_json() for c in self.isvc.status.conditions], "QualityDegraded"
        )
        if not was:
            kube.post_event(self.body, "Warning", "QualityDegraded", evaluation.degraded)
        self._request_retrain(evaluation.degraded, "QualityDegraded")

    def _request_retrain(self, why: str, reason: str) -> None:
        retrain = self.isvc.spec.monitoring.retrain if self.isvc.spec.monitoring else None
        if retrain is None:
            return
        last = self.isvc.status.last_retrain_time
        if last is not None and (self.now - last).total_seconds() < retrain.cooldown_seconds:
            return
        if kube.get("TrainingJob", self.isvc.namespace, retrain.training_job) is None:
            self.observed.append(
                conditions.Observed(
                    "RetrainRequested",
                    "False",
                    "TrainingJobNotFound",
                    f"TrainingJob {retrain.training_job} does not exist",
                )
            )
            return
        request = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        kube.patch_merge(
            "TrainingJob", self.isvc.namespace, retrain.training_job,
            {"metadata": {"annotations": {labels.RETRAIN_REQUESTED: request}}},
        )  # fmt: skip
        self.isvc.status.last_retrain_time = self.now
        metrics.RETRAINS.inc()
        text = f"requested a run of TrainingJob {retrain.training_job}: {why}"
        self.observed.append(conditions.Observed("RetrainRequested", "True", reason, text))
        kube.post_event(self.body, "Normal", "RetrainRequested", text)

    # --- helpers -----------------------------------------------------------------------

    def _scrape(self, version: int, port: int, path: str) -> list[str | None]:
        """What each ready pod of `version` answered on `path` (read before the pass)."""
        return self.readings.get((version, port, path), [])

    def _rollout_started(self, version: int) -> datetime | None:
        """When the rollout of `version` in progress started, from the rollout history."""
        for entry in reversed(self.history):
            if entry["version"] == version and entry["outcome"] == "Progressing":
                return datetime.fromisoformat(str(entry["startTime"]).replace("Z", "+00:00"))
        return None

    def _model_version(self, version: int) -> ModelVersion | None:
        """The model's ModelVersion `version`, from the list this pass already read."""
        return next((mv for mv in self.versions if mv.spec.version == version), None)

    def _remove_others(self, keep: set[int | None], deployments: dict[int, Manifest]) -> None:
        for version, deployment in deployments.items():
            if version not in keep:
                kube.delete("Deployment", self.isvc.namespace, deployment["metadata"]["name"])

    def _record(
        self,
        version: int,
        previous: int | None,
        outcome: str,
        message: str,
        strategy: str | None = None,
    ) -> None:
        entry: Manifest = {
            "version": version,
            "outcome": outcome,
            "message": message,
            "startTime": _iso(self.now),
        }
        if previous is not None:
            entry["previousVersion"] = previous
        if strategy:
            entry["strategy"] = strategy
        if outcome != "Progressing":
            entry["completionTime"] = _iso(self.now)
        self.history = [*self.history, entry][-20:]
        self.rollout_phase = outcome

    def _finish(
        self, version: int, previous: int | None, outcome: str, message: str, strategy: str
    ) -> None:
        for entry in reversed(self.history):
            if entry["version"] == version and entry["outcome"] == "Progressing":
                entry.update(outcome=outcome, message=message[:1024], completionTime=_iso(self.now))
                break
        else:
            self._record(version, previous, outcome, message, strategy)
        self.rollout_phase = outcome
        metrics.ROLLOUTS.labels(strategy=strategy, outcome=outcome).inc()
        if outcome == "Succeeded":
            kube.post_event(
                self.body, "Normal", "RolloutSucceeded", f"now serving v{version}: {message}"
            )

    def _service_monitor(self) -> None:
        monitoring = self.isvc.spec.monitoring
        wanted = monitoring and monitoring.service_monitor and self.settings.service_monitors
        if wanted and kube.crd_exists("servicemonitors.monitoring.coreos.com"):
            kube.apply(serving.build_service_monitor(self.isvc, self.body))

    def _write_status(self) -> None:
        isvc, generation = self.isvc, self.isvc.metadata.get("generation", 1)
        pods = kube.cached_list("Pod", isvc.namespace, {labels.INFERENCE_SERVICE: isvc.name})
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in live if _pod_ready(p))
        serving_ready = sum(
            1
            for p in live
            if _pod_ready(p) and p["metadata"]["labels"].get(labels.VERSION) == str(self.serving)
        )
        endpoints = self._service_has_endpoints()
        crash_looping = _crash_looping(live)
        if self.serving is None:
            phase = (
                "Failed" if self.blocked and "failed verification" in self.blocked else "Pending"
            )
            observed = (conditions.stalled if phase == "Failed" else conditions.progressing)(
                "NoServableVersion", self.blocked or "waiting for a version"
            )
        elif serving_ready == 0 or not endpoints:
            why = crash_looping or (
                "no ready pod behind the Service"
                if endpoints
                else "the Service has no ready endpoints"
            )
            phase, observed = (
                "Progressing",
                conditions.progressing("PodsNotReady", f"v{self.serving}: {why}"),
            )
        elif self.rollout_phase == "Progressing":
            phase = "Progressing"
            # Still serving the stable version (Ready) while the new one rolls out.
            message = f"serving v{self.serving}; rolling out v{self.canary}"
            observed = [
                conditions.Observed("Ready", "True", "Serving", message),
                conditions.Observed("Reconciling", "True", "RolloutInProgress", message),
                conditions.Observed("Stalled", "False", "RolloutInProgress", ""),
            ]
        else:
            phase = "Ready"
            message = f"serving {isvc.spec.model} v{self.serving} on {ready} ready pod(s)"
            if self.blocked:
                message += f"; {self.blocked}"
            observed = conditions.ready("Serving", message)
        status: Manifest = {
            "observedGeneration": generation,
            "phase": phase,
            "url": f"http://{isvc.name}.{isvc.namespace}.svc:{self.settings.serving_port}",
            "servingVersion": self.serving,
            "canaryVersion": self.canary,
            "canaryWeight": self.weight,
            "replicas": len(live),
            "readyReplicas": ready,
            "rolloutPhase": self.rollout_phase,
            "rolloutHistory": self.history,
            "lastRetrainTime": _iso(isvc.status.last_retrain_time)
            if isvc.status.last_retrain_time
            else None,
            **self._quality_status(),
            "conditions": conditions.merge_conditions(
                [c.to_json() for c in isvc.status.conditions],
                [*observed, *self.observed],
                generation,
            ),
        }
        kube.write_status_if_changed(self.body, status)

    def _quality_status(self) -> Manifest:
        evaluation = self.evaluation
        if evaluation is None:
            return {"quality": None, "lastEvaluationTime": None}
        last = evaluation.last_evaluation
        return {
            "quality": evaluation.readings,
            "lastEvaluationTime": _iso(last) if last else None,
        }

    def _service_has_endpoints(self) -> bool:
        slices = kube.cached_list(
            "EndpointSlice", self.isvc.namespace, {"kubernetes.io/service-name": self.isvc.name}
        )
        return any(
            (endpoint.get("conditions") or {}).get("ready")
            for s in slices
            for endpoint in s.get("endpoints") or []
        )


def _traffic_or_none(text: str | None) -> rollout.Traffic | None:
    """A pod's traffic, or None when it did not answer with the Prometheus text format."""
    if text is None:
        return None
    try:
        return rollout.parse_traffic(text)
    except ValueError:
        return None


def _step_annotations(step: int, started: datetime) -> dict[str, str]:
    return {serving.STEP: str(step), serving.STEP_STARTED: started.isoformat()}


def _ready_replicas(deployment: Manifest) -> int:
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def _pod_ready(pod: Manifest) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _crash_looping(pods: list[Manifest]) -> str | None:
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in {
                "CrashLoopBackOff",
                "ErrImagePull",
                "ImagePullBackOff",
                "CreateContainerConfigError",
            }:
                name = f"pod {pod['metadata']['name']} container {status['name']}"
                return f"{name}: {waiting['reason']} {waiting.get('message', '')}".strip()
    return None


def _drifted(detail: Any) -> bool:
    return bool(detail.get("drifted")) if isinstance(detail, dict) else False


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
