"""What only a real node shows: the operator's pods under enforced limits and a read-only
root, traffic through the InferenceService's Service and cluster DNS, a canary's share
of that traffic, and an HPA scaling on metrics-server's CPU figures."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from mlplane_operator.policies.rollout import parse_traffic
from tests.kube import eventually, image, kubectl
from tests.operator.helpers import (
    apply,
    condition,
    failed,
    inference_service,
    serving_pods,
    training_job,
    wait_for,
    wait_serving,
)

pytestmark = pytest.mark.node

SETOSA = [5.1, 3.5, 1.4, 0.2]
V2_REQUEST = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": SETOSA}]}
).encode()


def cluster_ip(api: client.ApiClient, namespace: str, service: str) -> str:
    return str(client.CoreV1Api(api).read_namespaced_service(service, namespace).spec.cluster_ip)


def infer_through(address: str, model: str) -> tuple[int, dict[str, Any]]:
    """One V2 request to a Service's ClusterIP on a new connection (kube-proxy picks an
    endpoint per connection, so keep-alive would pin every request to one pod)."""
    request = urllib.request.Request(
        f"http://{address}:8080/v2/models/{model}/infer",
        data=V2_REQUEST,
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def train_v2(namespace: str) -> None:
    """A new spec for the iris TrainingJob (another estimator): v2, straight to Production."""
    apply(
        namespace,
        training_job(
            "iris",
            "iris",
            registration={"stage": "Production"},
            estimator={"class": "DecisionTreeClassifier", "params": {"max_depth": 3}},
        ),
    )


@pytest.fixture
def other_namespace(kube_api: client.ApiClient, op_namespace: str) -> Iterator[str]:
    """A namespace the operator does not watch, for a client application."""
    core = client.CoreV1Api(kube_api)
    name = f"client-{op_namespace.partition('-')[2]}"[:63]
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def test_the_url_answers_a_pod_in_another_namespace_and_serving_pods_are_locked_down(
    kube_api: client.ApiClient, op_namespace: str, other_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris"),
    )
    isvc = wait_serving(kube_api, ns, "iris")
    url = f"{isvc['status']['url']}/v2/models/iris/infer"
    script = (
        "import json, sys, time, urllib.request\n"
        f"body = {V2_REQUEST.decode()!r}.encode()\n"
        "for attempt in range(30):\n"
        "    try:\n"
        f"        request = urllib.request.Request({url!r}, body, "
        "{'Content-Type': 'application/json'})\n"
        "        print(urllib.request.urlopen(request, timeout=5).read().decode()); break\n"
        "    except OSError as error:\n"
        "        print('retry', error, file=sys.stderr, flush=True); time.sleep(1)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
            "containers": [
                {"name": "client", "image": image("RUNTIME"), "command": ["python", "-c", script]}
            ],
        },
    }
    client.CoreV1Api(kube_api).create_namespaced_pod(other_namespace, pod)
    eventually(
        lambda: (
            client.CoreV1Api(kube_api).read_namespaced_pod("client", other_namespace).status.phase
            in ("Succeeded", "Failed")
        ),
        timeout=120,
        what="the client pod to finish",
    )
    answer = json.loads(kubectl("logs", "-n", other_namespace, "client").stdout)
    assert answer["model_version"] == "1"
    assert answer["outputs"][0]["data"] == [0]  # setosa

    server = serving_pods(kube_api, ns, "iris")[0].metadata.name
    denied = kubectl(
        "exec", "-n", ns, server, "-c", "server", "--",
        "python", "-c", "open('/written', 'w')", check=False,
    )  # fmt: skip
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr, denied.stderr
    whoami = kubectl("exec", "-n", ns, server, "-c", "server", "--", "python", "-c",
                     "import os; print(os.getuid(), os.getgid())").stdout.split()  # fmt: skip
    assert whoami == ["65532", "65532"]


def test_grpc_through_the_service_answers_tritonclient_and_batches(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    """The Service's grpc port reaches the server's gRPC listener (from the host, through
    the ClusterIP as any client in the cluster would), and spec.server.batching reaches the
    server: concurrent gRPC callers each get their own row's answer."""
    ns = op_namespace
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris", server={"batching": {"maxBatchSize": 16}}),
    )
    wait_serving(kube_api, ns, "iris")
    service = client.CoreV1Api(kube_api).read_namespaced_service("iris", ns)
    grpc_port = next(p for p in service.spec.ports if p.name == "grpc")
    assert (grpc_port.port, grpc_port.app_protocol) == (8001, "kubernetes.io/h2c")
    address = cluster_ip(kube_api, ns, "iris")
    grpc_client = tritonclient.grpc.InferenceServerClient(f"{address}:8001")

    def grpc_ready() -> bool:
        try:
            return bool(grpc_client.is_server_ready())
        except InferenceServerException:  # kube-proxy may not route to it yet
            return False

    eventually(grpc_ready, timeout=60, what="gRPC through the Service")
    assert grpc_client.is_model_ready("iris", "1")
    assert grpc_client.get_model_metadata("iris").platform == "onnxruntime_onnx"
    rows = np.array([SETOSA, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], np.float32)
    labels: dict[int, list[int]] = {}

    def caller(index: int) -> None:
        own = tritonclient.grpc.InferenceServerClient(f"{address}:8001")
        for _ in range(20):
            tensor = tritonclient.grpc.InferInput("input", [1, 4], "FP32")
            tensor.set_data_from_numpy(rows[index % 3 : index % 3 + 1])
            answer = own.infer("iris", [tensor])
            labels.setdefault(index, []).append(int(answer.as_numpy("label")[0]))
        own.close()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: set(found) for i, found in labels.items()} == {
        i: {[0, 2, 1][i % 3]} for i in range(9)
    }
    assert sum(len(found) for found in labels.values()) == 180
    with urllib.request.urlopen(f"http://{address}:8080/metrics", timeout=10) as response:
        text = response.read().decode()
    traffic = parse_traffic(text)
    assert traffic.requests >= 180  # gRPC inference counts where canary analysis reads
    batch_size = next(
        s.value for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "mlplane_batch_max_rows"
    )  # fmt: skip
    assert batch_size == 16  # spec.server.batching reached the server


def test_a_trainer_over_its_memory_limit_is_reported_oom_killed_with_the_limit(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job(
            "hungry",
            "hungry",
            resources={"limits": {"memory": "48Mi"}, "requests": {"memory": "48Mi"}},
            runPolicy={"backoffLimit": 0},
        ),
    )
    tj = wait_for(
        kube_api,
        ns,
        "trainingjobs",
        "hungry",
        failed,
        "the run to fail",
    )
    message = tj["status"]["runs"][-1]["message"]
    assert "OOMKilled" in message, message
    assert "48Mi" in message, message
    assert "OOMKilled" in condition(tj, "Stalled")["message"]
    events = eventually(
        lambda: (
            client.CoreV1Api(kube_api)
            .list_namespaced_event(ns, field_selector="involvedObject.name=hungry,reason=OOMKilled")
            .items
        ),
        what="an OOMKilled Event on the TrainingJob",
    )
    assert "48Mi" in events[0].message


def test_a_canary_at_one_of_four_replicas_gets_a_quarter_of_the_services_traffic(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    rollout = {
        "strategy": "Canary",
        # One long step: the canary holds at 25 % while the traffic is counted.
        "canary": {"steps": [25, 50], "stepSeconds": 900},
        "analysis": {"maxErrorRate": 0.5, "minRequests": 1},
        "autoRollback": True,
    }
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris", replicas=4, rollout=rollout),
    )
    wait_serving(kube_api, ns, "iris", 1)
    eventually(lambda: len(serving_pods(kube_api, ns, "iris", 1)) == 4, timeout=120,
               what="four stable pods")  # fmt: skip
    train_v2(ns)
    wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: (i.get("status") or {}).get("canaryVersion") == 2,
        "the canary to start",
        timeout=240,
    )
    eventually(
        lambda: (
            (len(serving_pods(kube_api, ns, "iris", 2)), len(serving_pods(kube_api, ns, "iris", 1)))
            == (1, 3)
        ),
        timeout=180,
        what="1 canary and 3 stable pods ready",
    )
    address = cluster_ip(kube_api, ns, "iris")
    # kube-proxy programs the canary's endpoint a moment after the pod is ready: count
    # only once the Service has answered from both versions.
    seen: set[str] = set()
    eventually(
        lambda: (
            seen.add(infer_through(address, "iris")[1].get("model_version", ""))
            or seen >= {"1", "2"}
        ),
        timeout=60,
        interval=0.05,
        what="answers from both versions through the Service",
    )
    answers: Counter[str] = Counter()
    for _ in range(2000):
        code, body = infer_through(address, "iris")
        assert code == 200, body
        answers[body["model_version"]] += 1
    share = answers["2"] / sum(answers.values())
    assert 0.19 <= share <= 0.31, answers
    assert set(answers) == {"1", "2"}


def test_an_autoscaled_inference_service_scales_up_under_load_and_back_down(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service(
            "iris",
            "iris",
            autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
            resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}},
        ),
    )
    wait_serving(kube_api, ns, "iris")
    address = cluster_ip(kube_api, ns, "iris")
    autoscaling = client.AutoscalingV2Api(kube_api)

    def hpa() -> Any:
        return autoscaling.read_namespaced_horizontal_pod_autoscaler("iris", ns)

    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                infer_through(address, "iris")
            except OSError:
                time.sleep(0.05)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        eventually(lambda: (hpa().status.desired_replicas or 0) >= 2, timeout=180, interval=2,
                   what="the HPA to scale up")  # fmt: skip
        eventually(lambda: len(serving_pods(kube_api, ns, "iris")) >= 2, timeout=120, interval=1,
                   what="a second serving pod ready")  # fmt: skip
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment("iris-v1", ns)
    assert (deployment.spec.replicas or 0) >= 2  # set by the HPA, not by the operator
    eventually(lambda: hpa().status.desired_replicas == 1, timeout=240, interval=2,
               what="the HPA to scale back down")  # fmt: skip
    eventually(lambda: len(serving_pods(kube_api, ns, "iris")) == 1, timeout=120, interval=1,
               what="one serving pod again")  # fmt: skip
    isvc = wait_serving(kube_api, ns, "iris")
    assert condition(isvc, "Ready")["status"] == "True"


def test_autoscaled_rollouts_start_at_the_current_capacity_and_never_drop_it(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    """With an HPA, a new version starts at the capacity the HPA keeps (not at one pod),
    the canary grows to full capacity before it takes over, and the replica count is
    handed to the HPA without a reset to one."""
    ns = op_namespace
    scaling = {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 80}
    resources = {"requests": {"cpu": "100m"}}
    canary = {"strategy": "Canary", "canary": {"steps": [50], "stepSeconds": 2}}
    services = {"canary": canary, "rolling": {"strategy": "RollingUpdate"}}
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        *(
            inference_service(name, "iris", autoscaling=scaling, resources=resources, rollout=r)
            for name, r in services.items()
        ),
    )
    for name in services:
        wait_serving(kube_api, ns, name, 1)
        eventually(lambda n=name: len(serving_pods(kube_api, ns, n, 1)) == 2, timeout=120,
                   what=f"{name}: two v1 pods")  # fmt: skip

    lowest = dict.fromkeys(services, 2)
    stop = threading.Event()

    def watch_capacity() -> None:
        while not stop.is_set():
            for name in services:
                lowest[name] = min(lowest[name], len(serving_pods(kube_api, ns, name)))
            time.sleep(0.3)

    sampler = threading.Thread(target=watch_capacity, daemon=True)
    sampler.start()
    try:
        train_v2(ns)
        for name in services:
            wait_serving(kube_api, ns, name, 2, timeout=300)
            eventually(lambda n=name: len(serving_pods(kube_api, ns, n, 2)) == 2, timeout=120,
                       what=f"{name}: two v2 pods")  # fmt: skip
    finally:
        stop.set()
        sampler.join(timeout=10)
    assert lowest == dict.fromkeys(services, 2), lowest  # never below the HPA's capacity

    apps, autoscaling = client.AppsV1Api(kube_api), client.AutoscalingV2Api(kube_api)
    time.sleep(10)  # a few more passes: the count must not be reset after the handover
    for name in services:
        hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler(name, ns)
        assert hpa.spec.scale_target_ref.name == f"{name}-v2"
        deployment = apps.read_namespaced_deployment(f"{name}-v2", ns)
        assert deployment.spec.replicas == 2
        assert deployment.metadata.annotations["mlplane.io/replicas-by-hpa"] == "true"
        assert len(serving_pods(kube_api, ns, name, 2)) == 2
