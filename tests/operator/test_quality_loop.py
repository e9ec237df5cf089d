"""The quality loop on the real local cluster: predictions are logged by the serving
pod, ground truth comes back as feedback, an evaluation Job scores the served version,
degraded quality retrains the model on the labeled production rows, and the new version
is canaried behind a gate on its own live quality."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from kubernetes import client
from sklearn.datasets import load_iris

from tests.kube import eventually
from tests.operator.helpers import (
    apply,
    condition,
    inference_service,
    read,
    serving_pods,
    training_job,
    wait_for,
    wait_serving,
)

IRIS = load_iris()


def post(url: str, document: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, json.loads(response.read()), dict(response.headers)


def test_feedback_that_disagrees_degrades_quality_and_retrains(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    monitoring = {
        "logging": {"sampleRate": 1, "rollSeconds": 2},
        "quality": {
            "metric": "accuracy",
            "threshold": 0.8,
            "minLabeled": 100,
            "windowSeconds": 900,
            "intervalSeconds": 10,
        },
        "retrain": {"trainingJob": "iris", "cooldownSeconds": 600},
    }
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris", monitoring=monitoring),
    )
    wait_serving(kube_api, ns, "iris")
    # By version: the evaluator pods of the InferenceService carry its label too.
    (pod,) = serving_pods(kube_api, ns, "iris", version=1)
    base = f"http://{pod.status.pod_ip}:8080/v2/models/iris"
    rows = load_iris().data
    predicted: dict[str, int] = {}
    for index in range(500):
        row = [float(v) for v in rows[index % len(rows)]]
        request = {
            "id": f"q-{index}",
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}],
        }
        status, body, headers = post(f"{base}/infer", request)
        assert (status, body["id"], headers["mlplane-model-version"]) == (200, f"q-{index}", "1")
        predicted[body["id"]] = body["outputs"][0]["data"][0]
    # The truth disagrees with 60 % of the answers: live accuracy is 0.4.
    truth = {
        request_id: (label + 1) % 3 if int(request_id[2:]) % 5 < 3 else label
        for request_id, label in predicted.items()
    }
    ids = sorted(truth)
    assert post(f"{base}/feedback", {"id": ids[0], "truth": [truth[ids[0]]]})[1] == {"accepted": 1}
    batch = {"feedback": [{"id": i, "truth": [truth[i]]} for i in ids[1:]]}
    assert post(f"{base}/feedback", batch)[1] == {"accepted": 499}

    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: (
            condition(i, "QualityDegraded").get("status") == "True"
            and any(r.get("labeled") == 500 for r in (i["status"].get("quality") or []))
        ),
        "QualityDegraded over all 500 labeled predictions",
        timeout=240,
    )
    (reading,) = isvc["status"]["quality"]
    assert (reading["version"], reading["metric"], reading["labeled"]) == (1, "accuracy", 500)
    assert abs(reading["value"] - 0.4) < 1e-9
    assert "accuracy 0.4 over 500 labeled" in condition(isvc, "QualityDegraded")["message"]
    assert condition(isvc, "RetrainRequested")["reason"] == "QualityDegraded"
    tj = wait_for(
        kube_api,
        ns,
        "trainingjobs",
        "iris",
        lambda t: any(r.get("trigger") == "Retrain" for r in t["status"].get("runs", [])),
        "a retraining run",
    )
    assert [r["trigger"] for r in tj["status"]["runs"]] == ["Spec", "Retrain"]
    wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v2",
        lambda m: (m.get("status") or {}).get("verified") is True,
        "the retrained version",
    )


def predict_and_label(base: str, prefix: str, copies: int, version: str) -> None:
    """Every iris row `copies` times through `base` (one pod), each answered by
    `version`, then the truth of a world where every class moved on by one."""
    ids = []
    for copy in range(copies):
        for index, row in enumerate(IRIS.data):
            request = {
                "id": f"{prefix}-{copy}-{index}",
                "inputs": [
                    {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(row)}
                ],
            }
            status, _, headers = post(f"{base}/infer", request)
            assert (status, headers["mlplane-model-version"]) == (200, version)
            ids.append((request["id"], int(IRIS.target[index] + 1) % 3))
    batch = {"feedback": [{"id": i, "truth": [truth]} for i, truth in ids]}
    assert post(f"{base}/feedback", batch)[1] == {"accepted": len(ids)}


def test_a_version_retrained_on_feedback_is_promoted_by_its_live_quality(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    monitoring = {
        "logging": {"sampleRate": 1, "rollSeconds": 2},
        "quality": {
            "metric": "accuracy",
            "threshold": 0.8,
            "minLabeled": 100,
            "windowSeconds": 900,
            "intervalSeconds": 10,
        },
        "retrain": {"trainingJob": "iris", "cooldownSeconds": 600},
    }
    rollout = {
        "strategy": "Canary",
        "canary": {"steps": [50], "stepSeconds": 15},
        "analysis": {"minRequests": 10, "minQuality": 0.8, "qualityTolerance": 0.05},
        "progressDeadlineSeconds": 300,
    }
    feedback = {"inferenceService": "iris", "windowSeconds": 900}
    apply(
        ns,
        training_job(
            "iris",
            "iris",
            dataset={"builtin": "iris", "feedback": feedback},
            estimator={"class": "RandomForestClassifier", "params": {"n_estimators": 20}},
            registration={"stage": "Production"},
        ),
        inference_service("iris", "iris", monitoring=monitoring, rollout=rollout),
    )
    wait_serving(kube_api, ns, "iris")
    (stable,) = serving_pods(kube_api, ns, "iris", version=1)
    # Production's truth moved on: v1 is wrong about every row.
    predict_and_label(f"http://{stable.status.pod_ip}:8080/v2/models/iris", "a", 3, "1")

    v2 = wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v2",
        lambda m: (m.get("status") or {}).get("verified") is True,
        "the version retrained on the feedback",
        timeout=300,
    )
    lineage = v2["spec"]["lineage"]["feedback"]
    assert (lineage["inferenceService"], lineage["rows"]) == ("iris", 450)
    assert lineage["uri"].endswith("/feedback.parquet")
    assert len(lineage["sha256"]) == 64
    degraded = read(kube_api, ns, "inferenceservices", "iris")
    assert degraded is not None
    assert "v1: live accuracy" in condition(degraded, "QualityDegraded")["message"]

    canary = eventually(
        lambda: serving_pods(kube_api, ns, "iris", version=2), timeout=180, what="a v2 canary pod"
    )
    assert (read(kube_api, ns, "inferenceservices", "iris") or {})["status"]["servingVersion"] == 1
    predict_and_label(f"http://{canary[0].status.pod_ip}:8080/v2/models/iris", "b", 1, "2")

    isvc = wait_serving(kube_api, ns, "iris", version=2, timeout=240)
    promoted = isvc["status"]["rolloutHistory"][-1]
    assert (promoted["version"], promoted["outcome"]) == (2, "Succeeded")
    # Judged on its own labeled predictions against stable's, both in the message.
    assert re.search(
        r"v2 live accuracy [0-9.]+ over 1[0-5][0-9] labeled predictions \(stable v1: ",
        promoted["message"],
    ), promoted["message"]
