"""The local node is a real one: kubelet + containerd + runc, running the images built
from our Dockerfile, with Services (kube-proxy), cluster DNS (CoreDNS), metrics
(metrics-server), logs and exec through the API server, and enforced limits."""

from __future__ import annotations

import re
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube import KUBE_VERSION, eventually, image, kubectl

pytestmark = pytest.mark.node

Manifest = dict[str, Any]
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
LOCKED_DOWN = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def pod_manifest(name: str, script: str, **spec: Any) -> Manifest:
    """A pod of the runtime image running `python -c script`, locked down like ours."""
    container = {
        "name": "main",
        "image": image("RUNTIME"),
        "command": ["python", "-c", script],
        "securityContext": LOCKED_DOWN,
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": spec.pop("restartPolicy", "Never"),
            "securityContext": RESTRICTED,
            "containers": [container],
            **spec,
        },
    }


def run_pod(kube_api: client.ApiClient, namespace: str, manifest: Manifest) -> None:
    client.CoreV1Api(kube_api).create_namespaced_pod(namespace, manifest)


def phase(kube_api: client.ApiClient, namespace: str, name: str) -> str:
    return str(client.CoreV1Api(kube_api).read_namespaced_pod(name, namespace).status.phase)


def wait_phase(
    kube_api: client.ApiClient, namespace: str, name: str, *phases: str, timeout: float = 120
) -> client.V1Pod:
    core = client.CoreV1Api(kube_api)
    eventually(
        lambda: phase(kube_api, namespace, name) in phases,
        timeout=timeout,
        what=f"pod {name} {'/'.join(phases)}",
    )
    return core.read_namespaced_pod(name, namespace)


SERVE_HOSTNAME = """
import http.server, socket
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = socket.gethostname().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8080), Handler).serve_forever()
"""


def web_server(kube_api: client.ApiClient, namespace: str, name: str = "web") -> str:
    """A pod answering its hostname on :8080 and a ClusterIP Service in front; its IP."""
    readiness = {"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}
    manifest = pod_manifest(name, SERVE_HOSTNAME, container=readiness, restartPolicy="Always")
    run_pod(kube_api, namespace, manifest)
    service = client.CoreV1Api(kube_api).create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    eventually(lambda: ready(kube_api, namespace, name), timeout=120, what=f"pod {name} Ready")
    return str(service.spec.cluster_ip)


def ready(kube_api: client.ApiClient, namespace: str, name: str) -> bool:
    pod = client.CoreV1Api(kube_api).read_namespaced_pod(name, namespace)
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# --- the node -------------------------------------------------------------------------


def test_the_node_is_a_kubelet_on_containerd_2(kube_api: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube_api).list_node().items
    assert len(nodes) == 1
    info = nodes[0].status.node_info
    assert info.kubelet_version == KUBE_VERSION
    assert info.kube_proxy_version in ("", KUBE_VERSION)  # deprecated field, may be empty
    assert re.fullmatch(r"containerd://2\.\d+\.\d+", info.container_runtime_version)
    assert {c.type: c.status for c in nodes[0].status.conditions}["Ready"] == "True"


def test_pods_run_the_image_built_from_the_dockerfile_by_digest(
    kube_api: client.ApiClient, namespace: str
) -> None:
    run_pod(
        kube_api,
        namespace,
        pod_manifest(
            "who",
            "import os, importlib.util as u, mlplane_runtime as m;"
            "print(os.getuid(), m.__file__, u.find_spec('pip') is None)",
        ),
    )
    pod = wait_phase(kube_api, namespace, "who", "Succeeded")
    status = pod.status.container_statuses[0]
    assert status.image_id.endswith(image("RUNTIME").split("@")[1])
    uid, path, no_pip = kubectl("logs", "-n", namespace, "who").stdout.split()
    assert uid == "65532"  # the image's nonroot user, not the host's
    assert path.startswith("/opt/venv/")  # installed in the image, not the host's checkout
    assert no_pip == "True"  # the final image carries no packaging tools


def test_kubectl_logs_and_exec_reach_the_container(
    kube_api: client.ApiClient, namespace: str
) -> None:
    script = "import sys, time; print('hello from the pod', flush=True); time.sleep(600)"
    run_pod(kube_api, namespace, pod_manifest("shell", script))
    wait_phase(kube_api, namespace, "shell", "Running")
    logs = eventually(
        lambda: kubectl("logs", "-n", namespace, "shell", check=False).stdout,
        what="the pod's log",
    )
    assert "hello from the pod" in logs
    result = kubectl("exec", "-n", namespace, "shell", "--", "python", "-c", "print(6 * 7)")
    assert result.stdout.strip() == "42"
    # Exec runs inside the container: its root filesystem is read-only.
    denied = kubectl(
        "exec", "-n", namespace, "shell", "--", "python", "-c", "open('/x', 'w')", check=False
    )
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr


def test_a_container_over_its_memory_limit_is_oom_killed(
    kube_api: client.ApiClient, namespace: str
) -> None:
    hog = "blocks = [bytearray(16 << 20) for _ in range(32)]"  # 512 MiB, limit 96 MiB
    limits = {"resources": {"limits": {"memory": "96Mi"}, "requests": {"memory": "96Mi"}}}
    run_pod(kube_api, namespace, pod_manifest("hog", hog, container=limits))
    pod = wait_phase(kube_api, namespace, "hog", "Failed")
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "OOMKilled"
    assert terminated.exit_code == 137


def test_a_volume_claim_is_provisioned_and_writable_by_a_non_root_pod(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    write = "open('/data/x', 'w').write('kept'); print(open('/data/x').read())"
    manifest = pod_manifest(
        "writer",
        write,
        container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
    )
    manifest["spec"]["securityContext"] = {**RESTRICTED, "fsGroup": 65532}
    run_pod(kube_api, namespace, manifest)
    pod = wait_phase(kube_api, namespace, "writer", "Succeeded", "Failed")
    assert pod.status.phase == "Succeeded", kubectl("logs", "-n", namespace, "writer").stdout
    assert kubectl("logs", "-n", namespace, "writer").stdout.strip() == "kept"
    claim = core.read_namespaced_persistent_volume_claim("data", namespace)
    assert claim.status.phase == "Bound"
    assert claim.spec.storage_class_name == "standard"


# --- Services and DNS -------------------------------------------------------------------


def test_a_service_answers_on_its_cluster_ip_from_the_host(
    kube_api: client.ApiClient, namespace: str
) -> None:
    cluster_ip = web_server(kube_api, namespace)

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    assert eventually(answer, timeout=60, what="the Service's answer") == "web"


def test_a_pod_reaches_a_service_in_another_namespace_by_its_dns_name(
    kube_api: client.ApiClient, namespace: str, request: pytest.FixtureRequest
) -> None:
    web_server(kube_api, namespace)
    other = request.getfixturevalue("other_namespace")
    url = f"http://web.{namespace}.svc.cluster.local/"
    script = (
        "import time, urllib.request\n"
        "for attempt in range(60):\n"
        "    try:\n"
        f"        print(urllib.request.urlopen({url!r}, timeout=2).read().decode()); break\n"
        "    except OSError as error:\n"
        "        print('retry', error, flush=True); time.sleep(1)\n"
    )
    run_pod(kube_api, other, pod_manifest("client", script))
    wait_phase(kube_api, other, "client", "Succeeded")
    assert kubectl("logs", "-n", other, "client").stdout.strip().splitlines()[-1] == "web"


def test_names_outside_the_cluster_do_not_resolve(
    kube_api: client.ApiClient, namespace: str
) -> None:
    script = (
        "import socket\n"
        "try:\n    socket.getaddrinfo('example.invalid', 80); print('resolved')\n"
        "except socket.gaierror as error:\n    print('unresolved', error.errno)\n"
        "print(socket.gethostbyname('kubernetes.default.svc.cluster.local'))\n"
    )
    run_pod(kube_api, namespace, pod_manifest("dns", script))
    wait_phase(kube_api, namespace, "dns", "Succeeded")
    lines = kubectl("logs", "-n", namespace, "dns").stdout.split("\n")
    assert lines[0].startswith("unresolved")
    assert (
        lines[1]
        == client.CoreV1Api(kube_api)
        .read_namespaced_service("kubernetes", "default")
        .spec.cluster_ip
    )


# --- metrics ------------------------------------------------------------------------------


def test_metrics_server_reports_node_and_pod_usage(
    kube_api: client.ApiClient, namespace: str
) -> None:
    run_pod(kube_api, namespace, pod_manifest("busy", "while True: pass"))
    wait_phase(kube_api, namespace, "busy", "Running")

    def pod_usage() -> Manifest | None:
        try:
            found: Manifest = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
                "metrics.k8s.io", "v1beta1", namespace, "pods", "busy"
            )
            return found
        except ApiException:
            return None

    usage = eventually(pod_usage, timeout=120, interval=2, what="metrics of pod busy")
    cpu = usage["containers"][0]["usage"]["cpu"]  # e.g. "987654321n"
    assert cpu.endswith("n"), usage
    assert int(cpu[:-1]) > 100_000_000, usage  # more than 0.1 core
    top = kubectl("top", "node").stdout
    assert "local-node-0" in top, top


@pytest.fixture
def other_namespace(kube_api: client.ApiClient, namespace: str) -> Any:
    core = client.CoreV1Api(kube_api)
    name = f"{namespace}-b"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")
