"""What an InferenceService runs (pure): a Deployment per served version, one Service in
front of all of them, an HPA when autoscaling, a ServiceMonitor when asked."""

from __future__ import annotations

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import InferenceService, ModelVersion
from mlplane_operator.builders.quality import log_root
from mlplane_operator.builders.workloads import (
    PVC_ROOT,
    Manifest,
    child_metadata,
    claims_of,
    container_security_context,
    pod_security_context,
    s3_env,
    storage_volumes,
)
from mlplane_operator.settings import OperatorSettings

STEP = f"{labels.PREFIX}/canary-step"
STEP_STARTED = f"{labels.PREFIX}/canary-step-started"
# On a Deployment whose replica count belongs to the HorizontalPodAutoscaler: the operator
# has handed `spec.replicas` over and no longer applies it.
REPLICAS_BY_HPA = f"{labels.PREFIX}/replicas-by-hpa"
# mlplane-serve's drain (5 s) and grace (20 s) after SIGTERM fit in it.
TERMINATION_GRACE_SECONDS = 30


def deployment_name(isvc: InferenceService, version: int) -> str:
    return f"{isvc.name}-v{version}"


def selector(isvc: InferenceService) -> dict[str, str]:
    return {labels.INFERENCE_SERVICE: isvc.name, labels.COMPONENT: "server"}


def drift_enabled(isvc: InferenceService) -> bool:
    drift = isvc.spec.monitoring.drift if isvc.spec.monitoring else None
    return drift is not None and drift.enabled


def build_deployment(
    isvc: InferenceService,
    body: Manifest,
    mv: ModelVersion,
    replicas: int | None,
    settings: OperatorSettings,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    """The Deployment of one served version. `replicas` None: the HPA owns the count
    (the operator applies no `spec.replicas`, so it never fights the autoscaler)."""
    spec, artifact = isvc.spec, mv.spec.artifact
    version = mv.spec.version
    pod_labels = {**selector(isvc), labels.MODEL: spec.model, labels.VERSION: str(version)}
    baseline = mv.spec.baseline
    drift = spec.monitoring.drift if spec.monitoring and drift_enabled(isvc) else None
    monitored = drift is not None and baseline is not None
    logging = spec.monitoring.logging if spec.monitoring else None
    root = log_root(isvc, settings)
    baseline_uri = baseline.uri if monitored and baseline else None
    uris = [artifact.uri, baseline_uri, root]
    volumes, mounts, monitor_mounts = _volumes(artifact.uri, baseline_uri, root)
    uses_s3 = any((uri or "").startswith("s3://") for uri in uris)
    s3_vars, env_from = s3_env(
        settings.s3_endpoint if uses_s3 else None,
        # The version's own Secret (what wrote the artifact) or the platform's, and only
        # for the runtime image: whoever names an image here did not name that Secret.
        (mv.spec.s3_credentials_secret or settings.s3_secret)
        if uses_s3 and (spec.image or settings.runtime_image) == settings.runtime_image
        else None,
    )
    image = spec.image or settings.runtime_image
    args = [
        f"--model-uri={artifact.uri}",
        f"--model-name={spec.model}",
        f"--model-version={version}",
        f"--sha256={artifact.sha256}",
        f"--port={settings.serving_port}",
        f"--grpc-port={settings.serving_grpc_port}",
        f"--threads={spec.threads or 1}",
    ]
    sidecar = monitored or logging is not None
    if sidecar:
        args.append(f"--monitor-url=http://127.0.0.1:{settings.monitor_samples_port}")
    batching = spec.server.batching if spec.server else None
    if batching is not None:
        args += [
            f"--max-batch-size={batching.max_batch_size}",
            f"--max-batch-latency-ms={batching.max_latency_ms:g}",
        ]
    if monitored and drift is not None:
        args += [
            f"--sample-rate={drift.sample_rate}",
            f"--max-samples-per-second={drift.max_samples_per_second}",
        ]
    elif sidecar:
        args.append("--sample-rate=0")  # no drift samples: the monitor has no baseline
    if logging is not None:
        args.append(f"--log-sample-rate={logging.sample_rate}")
    server: Manifest = {
        "name": "server",
        "image": image,
        "command": ["mlplane-serve"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, *s3_vars],
        "ports": [
            {"name": "http", "containerPort": settings.serving_port},
            {"name": "grpc", "containerPort": settings.serving_grpc_port},
        ],
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "readinessProbe": _probe("/v2/health/ready", settings.serving_port, period=2),
        "livenessProbe": _probe("/v2/health/live", settings.serving_port, period=10, failures=3),
        "startupProbe": _probe("/v2/health/live", settings.serving_port, period=1, failures=120),
    }
    if env_from:
        server["envFrom"] = env_from
    if spec.resources:
        server["resources"] = spec.resources.to_json()
    containers = [server]
    if sidecar:
        monitor_args = [
            f"--port={settings.monitor_port}",
            f"--samples-port={settings.monitor_samples_port}",  # loopback only
        ]
        if monitored and drift is not None and baseline is not None:
            monitor_args += [
                f"--baseline-uri={baseline.uri}",
                f"--baseline-sha256={baseline.sha256}",
                f"--method={drift.method.value}",
                f"--threshold={drift.threshold}",
                f"--min-samples={drift.min_samples}",
            ]
        if logging is not None:
            monitor_args += [
                f"--log-uri={root}",
                f"--log-roll-seconds={logging.roll_seconds}",
                f"--log-roll-rows={logging.roll_rows}",
                f"--log-max-rows={max(100_000, logging.roll_rows)}",
            ]
        monitor: Manifest = {
            "name": "monitor",
            "image": image,
            "command": ["mlplane-monitor"],
            "args": monitor_args,
            "env": [{"name": "HOME", "value": "/tmp"}, *s3_vars],
            "ports": [{"name": "monitor", "containerPort": settings.monitor_port}],
            "volumeMounts": monitor_mounts,
            "securityContext": container_security_context(),
            # No probes: a pod is Ready only when every container is, so a readiness probe
            # here would take serving out of the Service whenever drift monitoring falters,
            # and a liveness restart would do the same while it restarts.
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"memory": "512Mi"},
            },
        }
        if env_from:
            monitor["envFrom"] = env_from
        containers.append(monitor)
    pod_spec: Manifest = {
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
    }
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    metadata = child_metadata(deployment_name(isvc, version), isvc.namespace, body, pod_labels)
    metadata["annotations"] = dict(annotations or {})
    if replicas is None:
        metadata["annotations"][REPLICAS_BY_HPA] = "true"
    deployment_spec: Manifest = {
        "selector": {"matchLabels": pod_labels},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": deployment_spec,
    }


def _volumes(
    artifact: str, baseline: str | None, root: str | None
) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """Volumes, the server's mounts and the monitor's: every claim is read-only but the
    one the monitor writes the prediction log to (read-only for the server even then)."""
    writable = claims_of(root)
    claims = claims_of(artifact, baseline, root)
    volumes, _ = storage_volumes(claims, read_only=True)
    scratch = {"name": "tmp", "mountPath": "/tmp"}
    server: list[Manifest] = [scratch]
    monitor: list[Manifest] = [scratch]
    for volume, claim in zip(volumes[1:], claims, strict=True):
        read_only = claim not in writable
        volume["persistentVolumeClaim"]["readOnly"] = read_only
        mount: Manifest = {"name": volume["name"], "mountPath": f"{PVC_ROOT}/{claim}"}
        server.append({**mount, "readOnly": True})
        monitor.append({**mount, "readOnly": read_only})
    return volumes, server, monitor


def _probe(path: str, port: int, period: int, failures: int = 3) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def build_service(isvc: InferenceService, body: Manifest, settings: OperatorSettings) -> Manifest:
    ports: list[Manifest] = [
        {"name": "http", "port": settings.serving_port, "targetPort": "http"},
        # Cleartext HTTP/2 (KEP-3726's standard name), so meshes and Gateway API routes
        # speak gRPC to it; Istio also reads the port's name.
        {
            "name": "grpc",
            "port": settings.serving_grpc_port,
            "targetPort": "grpc",
            "appProtocol": "kubernetes.io/h2c",
        },
    ]
    # the monitor's read side (/drift, /metrics); its samples port is loopback, never here
    if drift_enabled(isvc):
        ports.append({"name": "monitor", "port": settings.monitor_port, "targetPort": "monitor"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(isvc.name, isvc.namespace, body, selector(isvc)),
        "spec": {"selector": selector(isvc), "ports": ports},
    }


def build_hpa(isvc: InferenceService, body: Manifest, version: int) -> Manifest | None:
    scaling = isvc.spec.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(isvc.name, isvc.namespace, body, selector(isvc)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": deployment_name(isvc, version),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def build_service_monitor(isvc: InferenceService, body: Manifest) -> Manifest:
    ports = [{"port": "http", "path": "/metrics"}]
    if drift_enabled(isvc):
        ports.append({"port": "monitor", "path": "/metrics"})
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": child_metadata(isvc.name, isvc.namespace, body, selector(isvc)),
        "spec": {"selector": {"matchLabels": selector(isvc)}, "endpoints": ports},
    }
