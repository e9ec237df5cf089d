"""The Helm chart, rendered offline: lint, values schema, CRD copies, RBAC shape, the
operator's settings and security context for every documented option."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from mlplane_operator.settings import OperatorSettings
from tests.delivery.helm import (
    CHART,
    Manifest,
    helm,
    of_kind,
    one,
    render,
    rules,
    template,
)
from tests.kube import KUBE_VERSION, REPO

# Every option the values document, as `--set` values; each is rendered and checked here
# and applied with a server-side dry run in test_chart_cluster.py.
OPTIONS: dict[str, dict[str, str]] = {
    "default": {},
    "ha-peering": {
        "replicaCount": "3",
        "topologySpreadConstraints[0].maxSkew": "1",
        "topologySpreadConstraints[0].topologyKey": "kubernetes.io/hostname",
        "topologySpreadConstraints[0].whenUnsatisfiable": "ScheduleAnyway",
    },
    "watch-namespaces": {"watchNamespaces": "{team-a,team-b}"},
    "watch-namespaces-ha": {"watchNamespaces": "{team-a}", "replicaCount": "2"},
    "service-monitors": {"metrics.serviceMonitor.enabled": "true", "serviceMonitors": "true"},
    "argocd-health": {"argocd.healthChecks.enabled": "true"},
    "grafana-dashboard": {"grafanaDashboard.enabled": "true"},
    "multi-node-storage": {
        "storage.pvc.accessMode": "ReadWriteMany",
        "storage.pvc.storageClass": "nfs",
    },
    "images-by-digest": {
        "image.repository": "registry.example.com/mlplane/operator",
        "image.digest": "sha256:" + "a" * 64,
        "runtime.image.repository": "registry.example.com/mlplane/runtime",
        "runtime.image.digest": "sha256:" + "b" * 64,
    },
    "s3-storage": {
        "storage.uri": "s3://models/mlplane",
        "storage.pvc.create": "false",
        "storage.s3.endpoint": "http://minio.minio:9000",
        "storage.s3.secretName": "mlplane-s3",
    },
}


def env_of(manifests: list[Manifest]) -> dict[str, Any]:
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.fixture(scope="module")
def rendered(helm_bin: str) -> dict[str, list[Manifest]]:
    return {name: render(values) for name, values in OPTIONS.items()}


def test_multi_node_storage_asks_for_a_read_write_many_claim(
    rendered: dict[str, list[Manifest]],
) -> None:
    env = env_of(rendered["multi-node-storage"])
    assert env["MLPLANE_STORAGE_PVC_ACCESS_MODE"] == "ReadWriteMany"
    assert env["MLPLANE_STORAGE_CLASS"] == "nfs"
    assert env_of(rendered["default"])["MLPLANE_STORAGE_PVC_ACCESS_MODE"] == "ReadWriteOnce"


def test_images_by_digest_win_over_tags(rendered: dict[str, list[Manifest]]) -> None:
    deployment = one(rendered["images-by-digest"], "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/mlplane/operator@sha256:" + "a" * 64
    runtime = env_of(rendered["images-by-digest"])["MLPLANE_RUNTIME_IMAGE"]
    assert runtime == "registry.example.com/mlplane/runtime@sha256:" + "b" * 64


def test_helm_renders_for_the_clusters_kubernetes_version(helm_bin: str, tmp_path: Any) -> None:
    """helm is stamped with the pinned Kubernetes version: no --kube-version needed."""
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "v.yaml").write_text(
        "# {{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}\n"
    )
    rendered = helm("template", "probe", str(chart)).stdout
    major, minor = KUBE_VERSION.removeprefix("v").split(".")[:2]
    assert f"# {major}.{minor}" in rendered


def test_helm_lint_strict_passes_for_every_option(helm_bin: str) -> None:
    for name, values in OPTIONS.items():
        args = [arg for k, v in values.items() for arg in ("--set", f"{k}={v}")]
        result = helm("lint", "--strict", str(CHART), *args, check=False)
        assert result.returncode == 0, f"{name}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCont": "2"}, "additional properties 'replicaCont' not allowed"),
        ({"storage.pvc.sise": "5Gi"}, "additional properties 'sise' not allowed"),
        ({"metrics.serviceMonitor.enable": "true"}, "additional properties 'enable' not allowed"),
        ({"logLevel": "VERBOSE"}, "logLevel"),
        ({"storage.uri": "/var/models"}, "storage/uri"),
    ],
)
def test_values_schema_rejects_typos_and_bad_values(
    helm_bin: str, values: dict[str, str], complaint: str
) -> None:
    result = template(values, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert complaint in result.stderr


def test_chart_crds_are_copies_of_the_generated_crds() -> None:
    generated = {p.name: p.read_text() for p in sorted((REPO / "crds").glob("*.yaml"))}
    shipped = {p.name: p.read_text() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert generated, "crds/ is empty: run `make crds`"
    assert shipped == generated, "charts/mlplane/crds/ differs from crds/: run `make chart-crds`"
    kinds = {yaml.safe_load(text)["spec"]["names"]["kind"] for text in shipped.values()}
    assert {"TrainingJob", "ModelVersion", "InferenceService"} <= kinds


@pytest.mark.parametrize("option", OPTIONS)
def test_no_rbac_rule_uses_a_wildcard(rendered: dict[str, list[Manifest]], option: str) -> None:
    for role, rule in rules(rendered[option]):
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: {rule}"
        assert rule["verbs"], rule
    assert not of_kind(rendered[option], "ClusterRoleBinding", "RoleBinding") or all(
        b["roleRef"]["name"] != "cluster-admin"
        for b in of_kind(rendered[option], "ClusterRoleBinding", "RoleBinding")
    )


def granted(manifests: list[Manifest], kind: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples granted by the Roles or ClusterRoles rendered."""
    return {
        (group, resource, verb)
        for role, rule in rules(manifests)
        if role["kind"] == kind
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_operator_may_register_but_never_delete_model_versions(
    rendered: dict[str, list[Manifest]],
) -> None:
    rbac = granted(rendered["default"], "ClusterRole")
    assert ("mlplane.io", "modelversions", "create") in rbac
    assert ("mlplane.io", "modelversions", "delete") not in rbac
    assert ("", "pods/proxy", "get") not in rbac
    assert not {r for r in rbac if r[1] in ("secrets", "pods/exec", "pods/proxy")}
    assert ("", "persistentvolumeclaims", "delete") not in rbac
    assert {v for g, r, v in rbac if r == "configmaps"} == {"get", "create", "update"}


def test_default_watches_all_namespaces_standalone(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["default"]
    assert [r["metadata"]["name"] for r in of_kind(manifests, "ClusterRole")] == ["mlplane"]
    assert not of_kind(manifests, "Role", "PodDisruptionBudget", "CustomResourceDefinition")
    env = env_of(manifests)
    assert env["MLPLANE_WATCH_NAMESPACES"] == ""
    assert env["MLPLANE_PEERING"] == ""
    assert one(manifests, "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    rbac = granted(manifests, "ClusterRole")
    assert not {r for r in rbac if r[0] in ("kopf.dev", "monitoring.coreos.com")}
    assert ("", "namespaces", "list") not in rbac, "Kopf lists namespaces only when namespaced"


def test_watch_namespaces_grants_roles_only_there(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["watch-namespaces"]
    roles = of_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(manifests, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    cluster = granted(manifests, "ClusterRole")
    assert {resource for _, resource, _ in cluster} == {"customresourcedefinitions", "namespaces"}
    assert {verb for *_, verb in cluster} == {"get", "list", "watch"}
    assert env_of(manifests)["MLPLANE_WATCH_NAMESPACES"] == "team-a,team-b"


@pytest.mark.parametrize(
    ("option", "peering_kind", "role_kind"),
    [
        ("ha-peering", "ClusterKopfPeering", "ClusterRole"),
        ("watch-namespaces-ha", "KopfPeering", "Role"),
    ],
)
def test_replicas_turn_kopf_peering_on(
    rendered: dict[str, list[Manifest]], option: str, peering_kind: str, role_kind: str
) -> None:
    manifests = rendered[option]
    crds = {c["metadata"]["name"] for c in of_kind(manifests, "CustomResourceDefinition")}
    assert crds == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    for crd in of_kind(manifests, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    peering = one(manifests, peering_kind)
    assert peering["metadata"]["name"] == "mlplane"
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    assert env_of(manifests)["MLPLANE_PEERING"] == "mlplane"
    assert env_of(manifests)["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    plural = peering_kind.lower() + "s"
    assert {v for g, r, v in granted(manifests, role_kind) if (g, r) == ("kopf.dev", plural)} == {
        "get",
        "list",
        "watch",
        "patch",
    }
    deployment = one(manifests, "Deployment")["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_topology_spread_gets_the_pod_selector(rendered: dict[str, list[Manifest]]) -> None:
    spec = one(rendered["ha-peering"], "Deployment")["spec"]
    (constraint,) = spec["template"]["spec"]["topologySpreadConstraints"]
    assert constraint["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"


def test_service_monitors_option(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["service-monitors"]
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert env_of(manifests)["MLPLANE_SERVICE_MONITORS"] == "true"
    verbs = {v for g, r, v in granted(manifests, "ClusterRole") if r == "servicemonitors"}
    assert verbs == {"get", "list", "watch", "create", "patch", "delete"}


def test_s3_storage_option(rendered: dict[str, list[Manifest]]) -> None:
    env = env_of(rendered["s3-storage"])
    assert env["MLPLANE_STORAGE_URI"] == "s3://models/mlplane"
    assert env["MLPLANE_S3_ENDPOINT"] == "http://minio.minio:9000"
    assert env["MLPLANE_S3_SECRET"] == "mlplane-s3"
    assert env["MLPLANE_STORAGE_PVC_CREATE"] == "false"


@pytest.mark.parametrize("option", OPTIONS)
def test_operator_environment_is_what_its_settings_read(
    rendered: dict[str, list[Manifest]], option: str
) -> None:
    """Each MLPLANE_* variable the chart sets is a field of OperatorSettings and parses."""
    env = {k: v for k, v in env_of(rendered[option]).items() if k.startswith("MLPLANE_")}
    fields = {f"MLPLANE_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= fields, f"unknown settings: {set(env) - fields}"
    settings = OperatorSettings.model_validate(
        {k.removeprefix("MLPLANE_").lower(): v for k, v in env.items()}
    )
    assert settings.metrics_port == 8080
    assert settings.health_port == 8081


@pytest.mark.parametrize("option", OPTIONS)
def test_operator_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[Manifest]], option: str
) -> None:
    pod = one(rendered[option], "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsUser"] == 65532
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"].keys() >= {"cpu", "memory"}
        assert container["livenessProbe"]["httpGet"]["port"] == "health"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/tmp"] in {v["name"] for v in pod["volumes"] if "emptyDir" in v}


def test_argocd_health_checks_render_the_lua_files(rendered: dict[str, list[Manifest]]) -> None:
    config = one(rendered["argocd-health"], "ConfigMap")
    assert config["metadata"]["namespace"] == "argocd"
    for kind in ("TrainingJob", "ModelVersion", "InferenceService"):
        lua = (CHART / "argocd" / "mlplane.io" / kind / "health.lua").read_text()
        assert config["data"][f"resource.customizations.health.mlplane.io_{kind}"] == lua
    assert not of_kind(rendered["default"], "ConfigMap"), "off by default"


def test_grafana_dashboard_covers_serving_drift_and_operator(
    rendered: dict[str, list[Manifest]],
) -> None:
    config = one(rendered["grafana-dashboard"], "ConfigMap")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["mlplane.json"])
    exprs = " ".join(
        t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]
    )
    for metric in (
        "mlplane_requests_total",
        "mlplane_request_duration_seconds_bucket",
        "mlplane_feature_drift",
        "mlplane_drift_detected",
        "process_resident_memory_bytes",
    ):
        assert metric in exprs
    assert "histogram_quantile(0.99" in exprs


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment above it or after it, or opens a block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        opens_block = match.group(3).strip() == "" and number + 1 < len(lines)
        previous = lines[number - 1].strip() if number else ""
        inline = "  # " in match.group(3)
        if not previous.startswith("#") and not opens_block and not inline:
            undocumented.append(f"values.yaml:{number + 1}: {line.strip()}")
    assert not undocumented, "\n".join(undocumented)


def test_values_schema_forbids_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")

    walk(schema, "")
    assert not open_objects
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: Any, schema_node: dict[str, Any], path: str) -> None:
        if isinstance(node, dict) and "properties" in schema_node:
            for key, value in node.items():
                assert key in schema_node["properties"], f"{path}.{key} not in the schema"
                keys(value, schema_node["properties"][key], f"{path}.{key}")

    keys(values, schema, "")
