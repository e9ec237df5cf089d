"""What an InferenceService runs: a Deployment per served version, one Service in front
of them all, an HPA with autoscaling, and a ServiceMonitor."""

from __future__ import annotations

from typing import Any

from mlplane_operator import labels
from mlplane_operator.builders.serving import (
    REPLICAS_BY_HPA,
    build_deployment,
    build_hpa,
    build_service,
    build_service_monitor,
)
from mlplane_runtime.monitor.cli import parse_args as parse_monitor_args
from mlplane_runtime.server.cli import parse_args as parse_server_args
from tests.operator.unit.objects import (
    IMAGE,
    MODEL_SHA,
    NAMESPACE,
    PROFILE_SHA,
    S3_ENDPOINT,
    S3_SECRET,
    Manifest,
    claim_volumes,
    env_of,
    inferenceservice,
    inferenceservice_body,
    modelversion,
    modelversion_body,
    mounts_of,
    settings,
)

DRIFT = {"drift": {"enabled": True, "method": "psi", "threshold": 0.25, "minSamples": 200}}


def deployment(
    isvc_body: Manifest | None = None,
    mv_body: Manifest | None = None,
    replicas: int | None = 2,
    annotations: dict[str, str] | None = None,
    **setting: Any,
) -> Manifest:
    isvc_body = isvc_body or inferenceservice_body()
    mv = modelversion(mv_body or modelversion_body())
    return build_deployment(
        inferenceservice(isvc_body), isvc_body, mv, replicas, settings(**setting), annotations
    )


def containers(manifest: Manifest) -> dict[str, Manifest]:
    return {c["name"]: c for c in manifest["spec"]["template"]["spec"]["containers"]}


def test_deployment_is_named_after_the_service_and_version() -> None:
    manifest = deployment(mv_body=modelversion_body(version=7))
    assert manifest["kind"] == "Deployment"
    assert manifest["metadata"]["name"] == "iris-v7"
    assert manifest["metadata"]["namespace"] == NAMESPACE


def test_server_serves_the_modelversion_artifact() -> None:
    server = containers(deployment())["server"]
    assert server["command"] == ["mlplane-serve"]
    assert server["image"] == IMAGE
    args = server["args"]
    assert "--model-uri=pvc://mlplane-artifacts/models/iris/iris-3/model.onnx" in args
    assert "--model-name=iris" in args
    assert "--model-version=3" in args
    assert f"--sha256={MODEL_SHA}" in args


def test_server_arguments_parse_with_mlplane_serve() -> None:
    isvc = inferenceservice_body(threads=4, monitoring=DRIFT)
    parsed = parse_server_args(containers(deployment(isvc))["server"]["args"])
    assert parsed.model_uri == "pvc://mlplane-artifacts/models/iris/iris-3/model.onnx"
    assert parsed.model_name == "iris"
    assert parsed.model_version == "3"
    assert parsed.sha256 == MODEL_SHA
    assert parsed.port == 8080
    assert parsed.threads == 4
    assert parsed.monitor_url == "http://127.0.0.1:8082"  # the monitor's loopback samples port
    assert (parsed.sample_rate, parsed.max_samples_per_second) == (1.0, 200)  # API defaults


def test_sampling_limits_reach_the_server() -> None:
    drift = {"drift": {**DRIFT["drift"], "sampleRate": 0.25, "maxSamplesPerSecond": 0}}
    isvc = inferenceservice_body(monitoring=drift)
    parsed = parse_server_args(containers(deployment(isvc))["server"]["args"])
    assert (parsed.sample_rate, parsed.max_samples_per_second) == (0.25, 0)


def test_monitor_arguments_parse_with_mlplane_monitor() -> None:
    monitor = containers(deployment(inferenceservice_body(monitoring=DRIFT)))["monitor"]
    parsed = parse_monitor_args(monitor["args"])
    assert parsed.baseline_uri == "pvc://mlplane-artifacts/models/iris/iris-3/profile.json"
    assert parsed.baseline_sha256 == PROFILE_SHA
    assert parsed.method == "psi"
    assert parsed.threshold == 0.25
    assert parsed.min_samples == 200
    assert parsed.port == 8081
    assert parsed.samples_port == 8082


def test_server_is_ready_only_when_the_model_is_loaded() -> None:
    server = containers(deployment())["server"]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["ports"][0] == {"name": "http", "containerPort": 8080}


def test_monitor_sidecar_runs_when_drift_is_enabled_and_a_baseline_exists() -> None:
    manifest = deployment(inferenceservice_body(monitoring=DRIFT))
    assert set(containers(manifest)) == {"server", "monitor"}
    monitor = containers(manifest)["monitor"]
    assert monitor["command"] == ["mlplane-monitor"]
    assert monitor["ports"] == [{"name": "monitor", "containerPort": 8081}]
    assert monitor["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_monitor_sidecar_without_drift_monitoring() -> None:
    manifest = deployment()
    assert set(containers(manifest)) == {"server"}
    assert not any(a.startswith("--monitor-url") for a in containers(manifest)["server"]["args"])


def test_no_monitor_sidecar_when_drift_is_disabled() -> None:
    isvc = inferenceservice_body(monitoring={"drift": {"enabled": False}})
    assert set(containers(deployment(isvc))) == {"server"}


def test_no_monitor_sidecar_for_a_version_without_baseline() -> None:
    mv = modelversion_body()
    del mv["spec"]["baseline"]
    manifest = deployment(inferenceservice_body(monitoring=DRIFT), mv)
    assert set(containers(manifest)) == {"server"}
    assert not any(a.startswith("--monitor-url") for a in containers(manifest)["server"]["args"])


def test_fixed_replicas_are_set_on_the_deployment() -> None:
    assert deployment(replicas=3)["spec"]["replicas"] == 3


def test_replicas_left_to_the_hpa_are_not_applied_and_say_so() -> None:
    isvc = inferenceservice_body(
        autoscaling={"minReplicas": 2, "maxReplicas": 10}, resources={"requests": {"cpu": "1"}}
    )
    manifest = deployment(isvc, replicas=None)
    assert "replicas" not in manifest["spec"]
    assert manifest["metadata"]["annotations"][REPLICAS_BY_HPA] == "true"


def test_a_version_the_hpa_does_not_scale_gets_its_count_under_autoscaling_too() -> None:
    """A canary or a rolling update's new version starts at the capacity it needs,
    not at a Deployment's default of one pod."""
    isvc = inferenceservice_body(
        autoscaling={"minReplicas": 2, "maxReplicas": 10}, resources={"requests": {"cpu": "1"}}
    )
    manifest = deployment(isvc, replicas=4)
    assert manifest["spec"]["replicas"] == 4
    assert REPLICAS_BY_HPA not in manifest["metadata"]["annotations"]


def test_each_version_selects_only_its_own_pods() -> None:
    manifest = deployment(mv_body=modelversion_body(version=5))
    selector = manifest["spec"]["selector"]["matchLabels"]
    assert selector[labels.VERSION] == "5"
    assert selector[labels.INFERENCE_SERVICE] == "iris"
    template_labels = manifest["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()


def test_rollout_never_takes_a_ready_replica_away() -> None:
    strategy = deployment()["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }


def test_annotations_given_by_the_reconciler_are_set() -> None:
    manifest = deployment(annotations={"mlplane.io/canary-step": "1"})
    assert manifest["metadata"]["annotations"] == {"mlplane.io/canary-step": "1"}


def test_artifact_and_baseline_claims_are_mounted_read_only() -> None:
    mv = modelversion_body()
    mv["spec"]["baseline"]["uri"] = "pvc://profiles/iris/profile.json"
    manifest = deployment(inferenceservice_body(monitoring=DRIFT), mv)
    claims = claim_volumes(manifest["spec"]["template"]["spec"])
    assert sorted(c["claimName"] for c in claims.values()) == ["mlplane-artifacts", "profiles"]
    assert all(c["readOnly"] for c in claims.values())
    for container in containers(manifest).values():
        assert {"/mnt/pvc/mlplane-artifacts", "/mnt/pvc/profiles", "/tmp"} <= set(
            mounts_of(container)
        )


def test_s3_artifact_adds_endpoint_and_credentials_to_server_and_monitor() -> None:
    mv = modelversion_body(uri="s3://models/iris/model.onnx")
    mv["spec"]["baseline"]["uri"] = "s3://models/iris/profile.json"
    manifest = deployment(inferenceservice_body(monitoring=DRIFT), mv)
    for container in containers(manifest).values():
        assert env_of(container)["AWS_ENDPOINT_URL"] == S3_ENDPOINT
        assert container["envFrom"] == [{"secretRef": {"name": S3_SECRET}}]


def test_an_image_named_by_the_inference_service_never_gets_the_platform_s3_secret() -> None:
    mv = modelversion_body(uri="s3://models/iris/model.onnx")
    manifest = deployment(inferenceservice_body(image="docker.io/someone/anything:1"), mv)
    server = containers(manifest)["server"]
    assert env_of(server)["AWS_ENDPOINT_URL"] == S3_ENDPOINT
    assert "envFrom" not in server


def test_the_runtime_image_serves_a_version_with_the_credentials_that_wrote_it() -> None:
    mv = modelversion_body(uri="s3://team-a/iris/model.onnx")
    mv["spec"]["baseline"]["uri"] = "s3://team-a/iris/profile.json"
    mv["spec"]["s3CredentialsSecret"] = "team-a-s3"
    manifest = deployment(inferenceservice_body(monitoring=DRIFT), mv)
    for container in containers(manifest).values():
        assert container["envFrom"] == [{"secretRef": {"name": "team-a-s3"}}]
    # An image the InferenceService names gets neither the version's nor the platform's.
    custom = deployment(inferenceservice_body(image="docker.io/someone/anything:1"), mv)
    assert "envFrom" not in containers(custom)["server"]


def test_pvc_artifact_gets_no_s3_settings() -> None:
    server = containers(deployment())["server"]
    assert "AWS_ENDPOINT_URL" not in env_of(server)
    assert "envFrom" not in server


def test_server_pods_are_locked_down() -> None:
    manifest = deployment(inferenceservice_body(monitoring=DRIFT))
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in containers(manifest).values():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}


def test_image_resources_threads_and_service_account_of_the_spec_pass_through() -> None:
    isvc = inferenceservice_body(
        image="registry.example.com/team/serve:2.0",
        resources={"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        threads=2,
        serviceAccountName="iris-server",
    )
    manifest = deployment(isvc)
    server = containers(manifest)["server"]
    assert server["image"] == "registry.example.com/team/serve:2.0"
    assert server["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    assert "--threads=2" in server["args"]
    assert manifest["spec"]["template"]["spec"]["serviceAccountName"] == "iris-server"


def test_deployment_is_owned_by_the_inferenceservice() -> None:
    body = inferenceservice_body()
    (owner,) = deployment(body)["metadata"]["ownerReferences"]
    assert owner["kind"] == "InferenceService"
    assert owner["name"] == "iris"
    assert owner["uid"] == body["metadata"]["uid"]
    assert owner["controller"] is True


def test_service_selects_every_version_of_the_inferenceservice() -> None:
    body = inferenceservice_body()
    service = build_service(inferenceservice(body), body, settings())
    assert service["metadata"]["name"] == "iris"
    selector = service["spec"]["selector"]
    assert labels.VERSION not in selector
    for version in (3, 4):
        pod_labels = deployment(body, modelversion_body(version=version))["spec"]["template"][
            "metadata"
        ]["labels"]
        assert selector.items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http"},
        {"name": "grpc", "port": 8001, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
    ]


def test_server_listens_for_grpc_on_the_port_the_service_targets() -> None:
    body = inferenceservice_body()
    server = containers(deployment(body))["server"]
    declared = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert parse_server_args(server["args"]).grpc_port == declared["grpc"] == 8001
    service_ports = build_service(inferenceservice(body), body, settings())["spec"]["ports"]
    assert {"name": "grpc", "port": 8001, "targetPort": "grpc"}.items() <= service_ports[1].items()


def test_batching_is_off_unless_asked() -> None:
    parsed = parse_server_args(containers(deployment())["server"]["args"])
    assert parsed.max_batch_size == 0


def test_batching_reaches_the_server() -> None:
    isvc = inferenceservice_body(server={"batching": {"maxBatchSize": 32, "maxLatencyMs": 1.5}})
    parsed = parse_server_args(containers(deployment(isvc))["server"]["args"])
    assert (parsed.max_batch_size, parsed.max_batch_latency_ms) == (32, 1.5)
    defaults = inferenceservice_body(server={"batching": {}})
    parsed = parse_server_args(containers(deployment(defaults))["server"]["args"])
    assert (parsed.max_batch_size, parsed.max_batch_latency_ms) == (64, 0)


def test_service_exposes_the_monitor_port_with_drift_monitoring() -> None:
    body = inferenceservice_body(monitoring=DRIFT)
    ports = build_service(inferenceservice(body), body, settings())["spec"]["ports"]
    assert {"name": "monitor", "port": 8081, "targetPort": "monitor"} in ports


def test_service_exposes_no_monitor_write_port() -> None:
    """Anyone who reaches the Service could fake drift (and trigger retraining) through
    POST /samples: only the monitor's read port is exposed, and the samples port, bound
    to the pod's loopback, is neither a container port nor a Service port."""
    body = inferenceservice_body(monitoring=DRIFT)
    manifest = deployment(body)
    monitor = containers(manifest)["monitor"]
    samples_port = parse_monitor_args(monitor["args"]).samples_port
    assert samples_port != parse_monitor_args(monitor["args"]).port
    server_args = parse_server_args(containers(manifest)["server"]["args"])
    assert server_args.monitor_url == f"http://127.0.0.1:{samples_port}"
    declared = {p["containerPort"] for c in containers(manifest).values() for p in c["ports"]}
    assert samples_port not in declared
    service = build_service(inferenceservice(body), body, settings())
    named = {
        p["name"]: p["containerPort"] for c in containers(manifest).values() for p in c["ports"]
    }
    for port in service["spec"]["ports"]:
        assert port["port"] != samples_port
        assert named[port["targetPort"]] != samples_port


def test_server_readiness_does_not_depend_on_the_monitor() -> None:
    """A pod is Ready only when all its containers are: the monitor has no probe, so a
    failing monitor never takes serving out of the Service; the server's readiness is
    its own /v2/health/ready, which looks at the model alone."""
    manifest = deployment(inferenceservice_body(monitoring=DRIFT))
    server, monitor = containers(manifest)["server"], containers(manifest)["monitor"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe not in monitor
        assert server[probe]["httpGet"]["port"] == 8080
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_termination_grace_covers_the_servers_drain_and_grace() -> None:
    manifest = deployment()
    parsed = parse_server_args(containers(manifest)["server"]["args"])
    grace = manifest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert parsed.drain_seconds > 0
    assert parsed.drain_seconds + parsed.grace_seconds < grace


def test_hpa_scales_the_serving_deployment_on_cpu() -> None:
    body = inferenceservice_body(
        autoscaling={"minReplicas": 2, "maxReplicas": 10, "targetCPUUtilizationPercentage": 70},
        resources={"limits": {"cpu": "500m"}},
    )
    hpa = build_hpa(inferenceservice(body), body, 4)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iris-v4",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_no_hpa_without_autoscaling() -> None:
    body = inferenceservice_body(replicas=2)
    assert build_hpa(inferenceservice(body), body, 4) is None


def test_service_monitor_scrapes_the_server_metrics() -> None:
    body = inferenceservice_body()
    monitor = build_service_monitor(inferenceservice(body), body)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    service = build_service(inferenceservice(body), body, settings())
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items(), "selects the Service"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics"}]


def test_service_monitor_also_scrapes_the_drift_monitor() -> None:
    body = inferenceservice_body(monitoring={**DRIFT, "serviceMonitor": True})
    monitor = build_service_monitor(inferenceservice(body), body)
    assert {"port": "monitor", "path": "/metrics"} in monitor["spec"]["endpoints"]
    service_ports = {
        p["name"] for p in build_service(inferenceservice(body), body, settings())["spec"]["ports"]
    }
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
