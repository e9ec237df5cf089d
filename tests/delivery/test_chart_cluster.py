"""The chart against the real API server: every documented option renders to manifests
the server accepts (server-side dry run, after installing for real the CRDs the chart
installs first), and the operator's pods pass the restricted Pod Security Standard."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.delivery.helm import Manifest, dump, of_kind, one, render
from tests.delivery.test_chart import OPTIONS
from tests.kube import REPO, kubectl

# The Prometheus Operator is not installed on the local cluster: a minimal stand-in CRD
# lets the server validate that ServiceMonitors reach the right group/version/kind.
SERVICE_MONITOR_CRD: Manifest = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


def install_crds(crds: list[Manifest]) -> None:
    """Create CRDs for real, as Helm does before the release's other resources."""
    if not crds:
        return
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",  # other suites apply the same CRDs under their own manager
        "--field-manager=mlplane-tests",
        "-f",
        "-",
        stdin=dump(crds),
    )
    for crd in crds:
        kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd['metadata']['name']}"
        )


def applied(output: str) -> set[tuple[str, str]]:
    """(kind, name) of every object kubectl reports as applied in a server dry run."""
    found = set()
    for line in output.splitlines():
        if line.endswith("serverside-applied (server dry run)"):
            resource, _, name = line.split()[0].partition("/")
            found.add((resource.split(".")[0], name))
    return found


def dry_run(manifests: list[Manifest]) -> str:
    """Server-side dry run of an apply: admission and validation run, nothing is stored."""
    result = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",  # a real release may own the same shared objects
        "--field-manager=helm",
        "-f",
        "-",
        stdin=dump(manifests),
    )
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def chart_crds(kubeconfig: str) -> Iterator[None]:
    """The chart's mlplane.io CRDs (crds/), the stand-in ServiceMonitor CRD and, as the
    peering option installs them, the kopf.dev CRDs; removed again afterwards."""
    shipped = [
        yaml.safe_load(p.read_text()) for p in sorted((REPO / "charts/mlplane/crds").glob("*.yaml"))
    ]
    peering = of_kind(render({"peering.enabled": "true"}), "CustomResourceDefinition")
    extra = [SERVICE_MONITOR_CRD, *peering]
    install_crds([*shipped, *extra])
    yield
    for crd in extra:
        kubectl("delete", "crd", crd["metadata"]["name"], "--ignore-not-found", "--wait=false")


def in_namespace(values: dict[str, str], namespace: str) -> dict[str, str]:
    """Point every namespace an option names at the test's namespace."""
    values = dict(values)
    if "watchNamespaces" in values:
        values["watchNamespaces"] = "{" + namespace + "}"
    if values.get("argocd.healthChecks.enabled") == "true":
        values["argocd.healthChecks.namespace"] = namespace
    return values


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_is_accepted_by_the_api_server(
    chart_crds: None, namespace: str, option: str
) -> None:
    manifests = render(in_namespace(OPTIONS[option], namespace), namespace=namespace)
    # The kopf.dev CRDs are installed above (the chart creates them before its hooks).
    rest = [m for m in manifests if m["kind"] != "CustomResourceDefinition"]
    output = dry_run(rest)
    assert applied(output) == {(m["kind"].lower(), m["metadata"]["name"]) for m in rest}, output
    assert "Warning" not in output, output


def restricted_namespace(namespace: str) -> None:
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "pod-security.kubernetes.io/warn=restricted",
    )


def pod_from(deployment: Manifest, namespace: str, name: str) -> Manifest:
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": name, "namespace": namespace},
        "spec": template["spec"],
    }


def privileged(pod: Manifest) -> Manifest:
    pod = copy.deepcopy(pod)
    pod["metadata"]["name"] += "-privileged"
    pod["spec"]["securityContext"] = {}
    container: dict[str, Any] = pod["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    return pod


def test_restricted_pod_security_admits_the_operator_and_rejects_a_privileged_variant(
    namespace: str,
) -> None:
    restricted_namespace(namespace)
    manifests = render(namespace=namespace)
    # The pod's ServiceAccount must exist for admission to get as far as Pod Security.
    kubectl("apply", "-f", "-", stdin=dump(of_kind(manifests, "ServiceAccount")))
    deployment = one(manifests, "Deployment")

    admitted = kubectl(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        stdin=json.dumps(pod_from(deployment, namespace, "operator")),
        check=False,
    )
    assert admitted.returncode == 0, admitted.stderr
    assert "violate" not in admitted.stderr, admitted.stderr
    assert json.loads(admitted.stdout)["metadata"]["namespace"] == namespace

    rejected = kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=json.dumps(privileged(pod_from(deployment, namespace, "operator"))),
        check=False,
    )
    assert rejected.returncode != 0, "a privileged pod was admitted: Pod Security is not enforced"
    assert 'violates PodSecurity "restricted:latest"' in rejected.stderr, rejected.stderr

    # The Deployment itself draws no Pod Security warning either.
    assert "would violate" not in dry_run([deployment])


def test_the_kopf_peering_crds_serve_the_peering_objects(chart_crds: None, namespace: str) -> None:
    """The hook's ClusterKopfPeering and KopfPeering are valid once the chart's CRDs are in."""
    for values in (OPTIONS["ha-peering"], in_namespace(OPTIONS["watch-namespaces-ha"], namespace)):
        manifests = render(values, namespace=namespace)
        peerings = of_kind(manifests, "ClusterKopfPeering", "KopfPeering")
        assert peerings
        expected = {(p["kind"].lower(), p["metadata"]["name"]) for p in peerings}
        assert applied(dry_run(peerings)) == expected


InstallRBAC = tuple[str, Callable[[dict[str, str]], list[Manifest]]]


def can_i(service_account: str, verb: str, resource: str, namespace: str | None) -> bool:
    """Ask the API server's authorizer; `resource` may name a subresource (pods/exec)."""
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={service_account}"]
    args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
    if subresource:
        args.append(f"--subresource={subresource}")
    result = kubectl(*args, check=False)
    assert "doesn't have a resource type" not in result.stderr, result.stderr
    return result.stdout.strip() == "yes"


@pytest.fixture
def installed_rbac(namespace: str) -> Iterator[InstallRBAC]:
    """The chart's ServiceAccount and RBAC applied for real (cluster-scoped names made
    unique by the namespace); removed afterwards."""
    created: list[Manifest] = []

    def apply(values: dict[str, str]) -> list[Manifest]:
        manifests = render({**values, "fullnameOverride": namespace}, namespace=namespace)
        rbac = of_kind(
            manifests, "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"
        )
        kubectl("apply", "-f", "-", stdin=dump(rbac))
        created.extend(m for m in rbac if m["kind"].startswith("Cluster"))
        return rbac

    yield namespace, apply
    for manifest in created:
        kubectl("delete", manifest["kind"], manifest["metadata"]["name"], "--ignore-not-found")


def test_rbac_grants_what_the_operator_needs_and_nothing_more(
    chart_crds: None, installed_rbac: InstallRBAC
) -> None:
    namespace, apply = installed_rbac
    apply({})
    sa = f"system:serviceaccount:{namespace}:{namespace}"
    allowed = [
        ("watch", "trainingjobs.mlplane.io"),
        ("patch", "inferenceservices.mlplane.io/status"),
        ("update", "trainingjobs.mlplane.io/finalizers"),
        ("create", "modelversions.mlplane.io"),
        ("create", "jobs.batch"),
        ("create", "deployments.apps"),
        ("create", "persistentvolumeclaims"),
        ("create", "horizontalpodautoscalers.autoscaling"),
        ("list", "pods"),
        ("create", "events"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    denied = [
        ("delete", "modelversions.mlplane.io"),
        ("delete", "trainingjobs.mlplane.io"),
        ("get", "secrets"),
        ("create", "pods/exec"),
        ("get", "pods/proxy"),
        ("delete", "persistentvolumeclaims"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("list", "clusterkopfpeerings.kopf.dev"),
        ("create", "servicemonitors.monitoring.coreos.com"),
    ]
    for verb, resource in allowed:
        assert can_i(sa, verb, resource, "any-namespace"), f"cannot {verb} {resource}"
    for verb, resource in denied:
        assert not can_i(sa, verb, resource, "any-namespace"), f"may {verb} {resource}"


def test_namespaced_rbac_stops_at_the_watched_namespaces(
    chart_crds: None, installed_rbac: InstallRBAC
) -> None:
    namespace, apply = installed_rbac
    apply({"watchNamespaces": "{" + namespace + "}", "replicaCount": "2"})
    sa = f"system:serviceaccount:{namespace}:{namespace}"
    assert can_i(sa, "create", "jobs.batch", namespace)
    assert can_i(sa, "patch", "kopfpeerings.kopf.dev", namespace)
    assert not can_i(sa, "create", "jobs.batch", "default")
    assert not can_i(sa, "watch", "trainingjobs.mlplane.io", None), "no cluster-wide watch"
    assert can_i(sa, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can_i(sa, "watch", "namespaces", None)
