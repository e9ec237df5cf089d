"""Rollouts and the closed loop on the real local cluster: a canary that fails its
analysis (4xx, or 500 from a model that raises) is rolled back while the stable version
keeps answering, and drift in live requests makes the operator retrain the model."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import onnx
import pytest
from kubernetes import client
from onnx import TensorProto, helper

from tests.kube import BIN, eventually
from tests.operator.conftest import LOG_DIR, OperatorProcess
from tests.operator.helpers import (
    apply,
    condition,
    infer,
    inference_service,
    read,
    serving_pods,
    training_job,
    wait_for,
    wait_serving,
)

SETOSA = [5.1, 3.5, 1.4, 0.2]
# The node's bridge address: pods reach the host there (and nothing else outside).
HOST_FROM_PODS = os.environ.get("MLPLANE_GATEWAY", "10.88.0.1")


class Traffic(threading.Thread):
    """Iris requests spread over every ready serving pod, as a Service would send them;
    records the answers per version."""

    def __init__(self, api: client.ApiClient, namespace: str, isvc: str, rows: list[list[float]]):
        super().__init__(daemon=True)
        self.api, self.namespace, self.isvc, self.rows = api, namespace, isvc, rows
        self.codes: dict[str, list[int]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 240
        while not self.done.is_set() and time.monotonic() < deadline:
            for pod in serving_pods(self.api, self.namespace, self.isvc):
                version = pod.metadata.labels["mlplane.io/version"]
                try:
                    code, _ = infer(pod.status.pod_ip, self.isvc, self.rows)
                except OSError:
                    continue  # a pod going away mid-request
                self.codes.setdefault(version, []).append(code)
            time.sleep(0.05)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


def serve_flowers_v1_with_a_canary_rollout(api: client.ApiClient, namespace: str) -> None:
    """flowers v1 in Production and served; a new version gets one 50 % canary step,
    rolled back when more than 20 % of at least 10 answers are errors."""
    canary = {
        "strategy": "Canary",
        "canary": {"steps": [50], "stepSeconds": 2},
        "analysis": {"maxErrorRate": 0.2, "minRequests": 10},
        "autoRollback": True,
    }
    apply(
        namespace,
        training_job("good", "flowers", registration={"stage": "Production"}),
        inference_service("flowers", "flowers", rollout=canary),
    )
    wait_serving(api, namespace, "flowers", 1)


def test_a_canary_failing_its_analysis_rolls_back_and_stable_keeps_answering(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    serve_flowers_v1_with_a_canary_rollout(kube_api, ns)
    traffic = Traffic(kube_api, ns, "flowers", [SETOSA])
    traffic.start()
    try:
        # v2 is built to fail: trained on wine (13 features), it answers every iris
        # request (4 features) with a client error.
        apply(
            ns,
            training_job(
                "broken",
                "flowers",
                dataset={"builtin": "wine"},
                registration={"stage": "Production"},
            ),
        )
        wait_for(
            kube_api,
            ns,
            "inferenceservices",
            "flowers",
            lambda i: (i.get("status") or {}).get("canaryVersion") == 2,
            "the canary to start",
        )
        isvc = wait_for(
            kube_api,
            ns,
            "inferenceservices",
            "flowers",
            lambda i: i["status"].get("rolloutPhase") == "RolledBack",
            "the rollback",
        )
    finally:
        traffic.stop()
    assert isvc["status"]["servingVersion"] == 1
    assert isvc["status"].get("canaryVersion") is None
    last = isvc["status"]["rolloutHistory"][-1]
    assert (last["version"], last["outcome"]) == (2, "RolledBack")
    assert "error rate" in last["message"]
    assert condition(isvc, "CanaryAnalysis")["reason"] == "AnalysisFailed"
    assert 400 <= min(traffic.codes["2"]) < 500  # the canary really did fail
    assert set(traffic.codes["1"]) == {200}  # the stable version never did
    eventually(
        lambda: (
            not client.AppsV1Api(kube_api)
            .list_namespaced_deployment(ns, label_selector="mlplane.io/version=2")
            .items
        ),
        what="the canary Deployment to be removed",
    )
    code, body = infer(serving_pods(kube_api, ns, "flowers")[0].status.pod_ip, "flowers", [SETOSA])
    assert (code, body["model_version"]) == (200, "1")


def test_drift_in_live_requests_triggers_a_retraining_run(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    monitoring = {
        "drift": {"enabled": True, "method": "psi", "threshold": 0.2, "minSamples": 50},
        "retrain": {"trainingJob": "iris", "cooldownSeconds": 600},
    }
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris", monitoring=monitoring),
    )
    wait_serving(kube_api, ns, "iris")
    pod_ip = serving_pods(kube_api, ns, "iris")[0].status.pod_ip
    # Requests from another population: every feature shifted far off the training data.
    shifted = [[value + 6.0 for value in SETOSA] for _ in range(20)]
    for _ in range(6):
        code, _ = infer(pod_ip, "iris", shifted)
        assert code == 200
    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: condition(i, "DriftDetected").get("status") == "True",
        "drift to be detected",
    )
    assert condition(isvc, "RetrainRequested")["status"] == "True"
    tj = wait_for(
        kube_api,
        ns,
        "trainingjobs",
        "iris",
        lambda t: any(r.get("trigger") == "Retrain" for r in t["status"].get("runs", [])),
        "a retraining run",
    )
    assert [r["trigger"] for r in tj["status"]["runs"]] == ["Spec", "Retrain"]
    # The retrained version flows through registration and verification by itself.
    wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v2",
        lambda m: (m.get("status") or {}).get("verified") is True,
        "the retrained version",
    )
    tj = read(kube_api, ns, "trainingjobs", "iris")
    assert tj is not None
    assert "mlplane.io/retrain-requested" not in (tj["metadata"].get("annotations") or {})


def test_a_canary_that_cannot_be_judged_is_rolled_back_at_its_progress_deadline(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    """The analysis fails closed: with no traffic (or no readable metrics) it never
    passes, and progressDeadlineSeconds ends the wait with a rollback."""
    ns = op_namespace
    canary = {
        "strategy": "Canary",
        "canary": {"steps": [50], "stepSeconds": 1},
        "analysis": {"maxErrorRate": 0.1, "minRequests": 1000},  # never reached: no traffic
        "autoRollback": True,
        "progressDeadlineSeconds": 5,
    }
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris", rollout=canary),
    )
    wait_serving(kube_api, ns, "iris", 1)
    apply(
        ns,
        training_job(
            "iris",
            "iris",
            registration={"stage": "Production"},
            validation={"seed": 3, "metrics": ["accuracy"]},
        ),
    )
    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: (i.get("status") or {}).get("rolloutPhase") == "RolledBack",
        "the rollback at the deadline",
    )
    last = isvc["status"]["rolloutHistory"][-1]
    assert (last["version"], last["outcome"]) == (2, "RolledBack")
    assert "no progress within spec.rollout.progressDeadlineSeconds (5 s)" in last["message"]
    assert isvc["status"]["servingVersion"] == 1
    code, _ = infer(
        serving_pods(kube_api, ns, "iris", version=1)[0].status.pod_ip, "iris", [SETOSA]
    )
    assert code == 200


def model_that_raises() -> bytes:
    """A valid ONNX model for iris-shaped input that ONNX Runtime loads and verifies but
    cannot run on one row: it reshapes 4 values into rows of 3. Every request is a 500."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "rows_of_3"], ["scores"])],
        "raises",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["M", 3])],
        [helper.make_tensor("rows_of_3", TensorProto.INT64, [2], [-1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@pytest.fixture
def s3_for_pods(tmp_path: Path) -> Iterator[str]:
    """An S3 endpoint (gofakes3) that the node's pods reach; yields its URL."""
    with socket.socket() as probe:
        probe.bind((HOST_FROM_PODS, 0))
        port = probe.getsockname()[1]
    url = f"http://{HOST_FROM_PODS}:{port}"
    with (tmp_path / "gofakes3.log").open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "gofakes3"), "-backend", "memory", "-initialbucket", "team-a",
             "-host", f"{HOST_FROM_PODS}:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        eventually(lambda: socket.socket().connect_ex((HOST_FROM_PODS, port)) == 0,
                   what="gofakes3 to listen")  # fmt: skip
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_canary_whose_model_raises_answers_500_and_is_rolled_back(
    kube_api: client.ApiClient, kubeconfig: str, crds_installed: None, s3_for_pods: str
) -> None:
    """v2 is registered by hand on S3 with a Secret of its own; it passes verification,
    but every request makes ONNX Runtime raise. The 500s count as errors: rolled back."""
    ns = f"canary500-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    operator = OperatorProcess(
        kubeconfig, "operator-tests-canary500.log",
        MLPLANE_WATCH_NAMESPACES=ns, MLPLANE_S3_ENDPOINT=s3_for_pods,
    )  # fmt: skip
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    operator.start()
    try:
        credentials = {"AWS_ACCESS_KEY_ID": "team-a", "AWS_SECRET_ACCESS_KEY": "team-a-key",
                       "AWS_REGION": "us-east-1"}  # fmt: skip
        core.create_namespaced_secret(
            ns, client.V1Secret(metadata=client.V1ObjectMeta(name="team-a-s3"),
                                string_data=credentials),
        )  # fmt: skip
        serve_flowers_v1_with_a_canary_rollout(kube_api, ns)
        artifact = model_that_raises()
        boto3.client(
            "s3", endpoint_url=s3_for_pods, aws_access_key_id="team-a",
            aws_secret_access_key="team-a-key", region_name="us-east-1",
        ).put_object(Bucket="team-a", Key="flowers/v2/model.onnx", Body=artifact)  # fmt: skip
        traffic = Traffic(kube_api, ns, "flowers", [SETOSA])
        traffic.start()
        try:
            apply(ns, {
                "apiVersion": "mlplane.io/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": "flowers-v2"},
                "spec": {
                    "model": "flowers",
                    "version": 2,
                    "artifact": {"uri": "s3://team-a/flowers/v2/model.onnx", "format": "onnx",
                                 "sha256": hashlib.sha256(artifact).hexdigest()},
                    "s3CredentialsSecret": "team-a-s3",
                    "stage": "Production",
                },
            })  # fmt: skip
            wait_for(
                kube_api, ns, "inferenceservices", "flowers",
                lambda i: (i.get("status") or {}).get("canaryVersion") == 2,
                "the canary to start",
            )  # fmt: skip
            canary_pod = client.AppsV1Api(kube_api).list_namespaced_deployment(
                ns, label_selector="mlplane.io/version=2"
            ).items[0].spec.template.spec.containers[0]  # fmt: skip
            isvc = wait_for(
                kube_api, ns, "inferenceservices", "flowers",
                lambda i: i["status"].get("rolloutPhase") == "RolledBack",
                "the rollback",
            )  # fmt: skip
        finally:
            traffic.stop()
        # The canary read its artifact with the version's own Secret, not the platform's.
        assert [ref.secret_ref.name for ref in canary_pod.env_from] == ["team-a-s3"]
        assert isvc["status"]["servingVersion"] == 1
        last = isvc["status"]["rolloutHistory"][-1]
        assert (last["version"], last["outcome"]) == (2, "RolledBack")
        assert "error rate" in last["message"]
        assert set(traffic.codes["2"]) == {500}  # every answer of v2, and some came
        assert set(traffic.codes["1"]) == {200}
    finally:
        operator.stop()
        core.delete_namespace(ns, propagation_policy="Background")
