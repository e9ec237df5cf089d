"""The chart installed for real: `helm install` runs the operator on the local node under
the chart's ServiceAccount and RBAC, and it takes examples/iris from a TrainingJob to a
served prediction; then the release's children and the release itself go away cleanly.

Both namespaces (the release's and the one it watches) enforce the restricted Pod
Security Standard, so the operator pod and every pod it creates (training, verification,
serving) must pass it. The whole lifecycle runs once, in a module-scoped fixture that
records what it saw; the tests below assert on the record.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client

from tests.delivery.helm import built_images, install, uninstall
from tests.kube import REPO, eventually, image, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.node]

GROUP, VERSION = "mlplane.io", "v1alpha1"
PLURALS = ("trainingjobs", "modelversions", "inferenceservices")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]  # a setosa

Manifest = dict[str, Any]


@dataclass
class Lifecycle:
    """What the module fixture did and saw, in order."""

    release: str
    system: str  # the release's namespace
    workloads: str  # the namespace the operator watches
    operator_pod: Manifest = field(default_factory=dict)
    operator_log: str = ""
    components: set[str] = field(default_factory=set)  # mlplane.io/component of pods seen
    version: int = 0
    prediction: Manifest = field(default_factory=dict)
    pod_security_violations: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)  # of iris, before they were deleted
    left_after_uninstall: list[str] = field(default_factory=list)
    user_data_after_uninstall: list[str] = field(default_factory=list)
    finalizers_after_uninstall: dict[str, list[str]] = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------


def host_operators_watching(namespaces: list[str]) -> list[str]:
    """Operators started by hand on the host (they share our network namespace; pods do
    not) that watch any of `namespaces`: they would reconcile alongside the chart's."""
    found = []
    own_net = os.readlink("/proc/self/ns/net")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"mlplane_operator" not in (proc / "cmdline").read_bytes():
                continue
            if os.readlink(proc / "ns" / "net") != own_net:
                continue
            env = dict(
                line.split("=", 1)
                for line in (proc / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in line
            )
        except OSError:
            continue
        patterns = [p for p in env.get("MLPLANE_WATCH_NAMESPACES", "").split(",") if p]
        if not patterns or any(fnmatch.fnmatch(ns, p) for ns in namespaces for p in patterns):
            found.append(f"pid {proc.name} watching {patterns or 'every namespace'}")
    return found


def create_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"t-{prefix}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED))
    )
    return name


def custom_objects(api: client.ApiClient, namespace: str, plural: str) -> list[Manifest]:
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, plural
    )
    return cast(list[Manifest], cast(Manifest, found)["items"])


def read(api: client.ApiClient, namespace: str, plural: str, name: str) -> Manifest | None:
    try:
        found = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return cast(Manifest, found)


def names(kind: str, namespace: str | None, selector: str) -> list[str]:
    """`kubectl get <kind> -l <selector> -o name` in a namespace (None: cluster scope)."""
    scope = ["-n", namespace] if namespace else []
    labels = ["-l", selector] if selector else []
    result = kubectl("get", kind, *scope, *labels, "-o", "name", "--ignore-not-found")
    return result.stdout.split()


def pods(namespace: str, selector: str = "") -> list[Manifest]:
    labels = ["-l", selector] if selector else []
    items: list[Manifest] = json.loads(
        kubectl("get", "pods", "-n", namespace, *labels, "-o", "json").stdout
    )["items"]
    return items


def diagnostics(api: client.ApiClient, life: Lifecycle) -> str:
    """Status, events and the operator's log, for assertion messages."""
    parts = []
    for args in (
        ["get", "mlplane,jobs,deployments,pods", "-n", life.workloads, "-o", "wide"],
        ["get", "events", "-n", life.workloads, "--sort-by=.lastTimestamp"],
        ["get", "pods,events", "-n", life.system],
    ):
        parts.append(kubectl(*args, check=False).stdout[-3000:])
    for plural in ("trainingjobs", "inferenceservices"):
        body = read(api, life.workloads, plural, "iris") or {}
        parts.append(f"{plural}/iris status: {json.dumps(body.get('status', {}))[:1500]}")
    parts.append(f"operator log:\n{operator_log(life)[-4000:]}")
    return "\n".join(parts)


def operator_log(life: Lifecycle) -> str:
    """The operator pod's log, through the API server and the kubelet (`kubectl logs`)."""
    pod = life.operator_pod.get("metadata", {}).get("name")
    if not pod:
        return ""
    return kubectl("logs", "-n", life.system, pod, "-c", "operator", check=False).stdout


def infer(pod_ip: str) -> Manifest:
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}
    request = urllib.request.Request(
        f"http://{pod_ip}:8080/v2/models/iris/infer",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: Manifest = json.load(response)
    return answer


def strip_finalizers(api: client.ApiClient, namespace: str) -> None:
    """Kopf's finalizer outlives the operator; without this the namespace never goes."""
    objects = client.CustomObjectsApi(api)
    for plural in PLURALS:
        for item in custom_objects(api, namespace, plural):
            if item["metadata"].get("finalizers"):
                objects.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )  # fmt: skip


# --- the lifecycle, once ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lifecycle(kube_api: client.ApiClient) -> Iterator[Lifecycle]:
    core = client.CoreV1Api(kube_api)
    system = create_namespace(core, "install-system")
    workloads = create_namespace(core, "install-workloads")
    life = Lifecycle(release=f"mlplane-{uuid.uuid4().hex[:5]}", system=system, workloads=workloads)
    try:
        run_lifecycle(kube_api, life)
        yield life
    finally:
        uninstall(system, release=life.release)
        strip_finalizers(kube_api, workloads)
        for namespace in (workloads, system):
            core.delete_namespace(namespace, propagation_policy="Background")


def run_lifecycle(api: client.ApiClient, life: Lifecycle) -> None:
    core = client.CoreV1Api(api)
    others = host_operators_watching([life.system, life.workloads])
    assert not others, f"an operator on the host would reconcile the test's namespaces: {others}"

    # 1. helm install, as a user would (namespace-scoped: only the workloads namespace).
    install(
        life.system,
        {**built_images(), "watchNamespaces": f"{{{life.workloads}}}"},
        release=life.release,
        timeout="3m",
    )
    selector = f"app.kubernetes.io/instance={life.release}"
    operators = pods(life.system, selector)
    assert len(operators) == 1, [p["metadata"]["name"] for p in operators]
    life.operator_pod = operators[0]

    # 2. examples/iris in the watched namespace, to a served prediction.
    kubectl("apply", "-n", life.workloads, "-f", str(REPO / "examples" / "iris"))

    def serving() -> Manifest | None:
        for pod in pods(life.workloads):
            component = pod["metadata"].get("labels", {}).get("mlplane.io/component")
            if component:
                life.components.add(component)
        isvc = read(api, life.workloads, "inferenceservices", "iris") or {}
        status = isvc.get("status") or {}
        ready = status.get("phase") == "Ready" and (status.get("readyReplicas") or 0) >= 1
        return status if ready and status.get("servingVersion") else None

    try:
        status = eventually(serving, timeout=240, interval=1, what="iris served")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnostics(api, life)}") from None
    life.version = int(status["servingVersion"])
    servers = pods(
        life.workloads, f"mlplane.io/inferenceservice=iris,mlplane.io/version={life.version}"
    )
    pod_ip = next(p["status"]["podIP"] for p in servers if p["status"].get("podIP"))
    life.prediction = infer(pod_ip)

    events = core.list_namespaced_event(life.workloads).items
    life.pod_security_violations = [
        f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}"
        for e in events
        if "PodSecurity" in (e.message or "")
    ]

    # 3. Deleting the TrainingJob and the InferenceService collects their children.
    def children() -> list[str]:
        return (
            names("deployments,services,horizontalpodautoscalers,pods", life.workloads,
                  "mlplane.io/inferenceservice=iris")
            + names("jobs,pods", life.workloads, "mlplane.io/trainingjob=iris")
        )  # fmt: skip

    life.children = children()
    for plural in ("inferenceservices", "trainingjobs"):
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, life.workloads, plural, "iris"
        )
    eventually(
        lambda: all(
            read(api, life.workloads, plural, "iris") is None
            for plural in ("inferenceservices", "trainingjobs")
        ),
        timeout=60,
        what="iris InferenceService and TrainingJob gone (the operator drops its finalizer)",
    )
    eventually(
        lambda: not children(),
        timeout=120,
        what="the InferenceService's and TrainingJob's children garbage-collected",
    )

    # 4. helm uninstall: the release's objects go, user data stays.
    life.operator_log = operator_log(life)
    uninstall(life.system, release=life.release)

    def release_objects() -> list[str]:
        return (
            names("deployments,replicasets,pods,services,serviceaccounts,configmaps,"
                  "roles,rolebindings,poddisruptionbudgets", life.system, selector)
            + names("roles,rolebindings", life.workloads, selector)
            + names("clusterroles,clusterrolebindings", None, selector)
        )  # fmt: skip

    try:
        eventually(lambda: not release_objects(), timeout=90, what="the release's objects gone")
    except AssertionError:
        life.left_after_uninstall = release_objects()
    life.user_data_after_uninstall = [
        f"modelversion/{mv['metadata']['name']}"
        for mv in custom_objects(api, life.workloads, "modelversions")
    ] + names("persistentvolumeclaims", life.workloads, "")  # fmt: skip
    life.finalizers_after_uninstall = {
        mv["metadata"]["name"]: mv["metadata"].get("finalizers") or []
        for mv in custom_objects(api, life.workloads, "modelversions")
    }


# --- what it proves --------------------------------------------------------------------


def test_operator_runs_on_the_node_under_the_charts_service_account(lifecycle: Lifecycle) -> None:
    pod = lifecycle.operator_pod
    assert pod["spec"]["serviceAccountName"] == lifecycle.release
    assert pod["spec"]["nodeName"], "the operator pod was not scheduled"
    assert pod["spec"]["containers"][0]["image"] == image("OPERATOR")
    # The kubelet ran the image built from this checkout, by digest.
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(
        image("OPERATOR").split("@")[1]
    )
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready.get("Ready") == "True"


def test_iris_trained_verified_and_served_in_restricted_namespaces(lifecycle: Lifecycle) -> None:
    assert lifecycle.components >= {"trainer", "verifier", "server"}, lifecycle.components
    assert not lifecycle.pod_security_violations
    outputs = {o["name"]: o for o in lifecycle.prediction["outputs"]}
    assert outputs["label"]["data"] == [0], lifecycle.prediction  # setosa


def test_the_charts_rbac_is_enough(lifecycle: Lifecycle) -> None:
    """Nothing the operator did was refused: no 403 and no event it could not post."""
    refused = [
        line
        for line in lifecycle.operator_log.splitlines()
        if re.search(r"forbidden|\b403\b", line, re.IGNORECASE)
    ]
    assert lifecycle.operator_log, "no operator log"
    assert not refused, "\n".join(refused[:20])


def test_deleting_the_owners_collected_their_children(lifecycle: Lifecycle) -> None:
    """The fixture waited for them to go; here: there were children to collect."""
    kinds = {child.split("/")[0] for child in lifecycle.children}
    assert {"deployment.apps", "service", "job.batch", "pod"} <= kinds, lifecycle.children


def test_uninstall_leaves_only_crds_and_user_data(lifecycle: Lifecycle) -> None:
    assert not lifecycle.left_after_uninstall
    for plural in PLURALS:
        kubectl("get", "crd", f"{plural}.{GROUP}")  # CRDs are kept (helm never deletes them)
    assert f"modelversion/iris-v{lifecycle.version}" in lifecycle.user_data_after_uninstall
    assert "persistentvolumeclaim/mlplane-artifacts" in lifecycle.user_data_after_uninstall


def test_uninstall_leaves_no_finalizer_on_user_data(lifecycle: Lifecycle) -> None:
    assert lifecycle.finalizers_after_uninstall
    assert not any(lifecycle.finalizers_after_uninstall.values()), (
        lifecycle.finalizers_after_uninstall
    )
