"""Hyperparameter search on the real cluster: the trials of an XGBoost classifier on a
csv with categorical columns run as one Indexed Job on the node, the best trial is refit
and registered (only it), and the served model answers V2 requests with string inputs
exactly as the same model fitted locally does."""

from __future__ import annotations

import csv
import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from kubernetes import client

from mlplane_runtime.trainer.estimators import build_estimator
from mlplane_runtime.trainer.spec import parse_spec
from mlplane_runtime.trainer.train import prepare
from tests.kube import eventually
from tests.operator.helpers import (
    apply,
    inference_service,
    model_versions,
    serving_pods,
    succeeded,
    training_job,
    wait_for,
    wait_serving,
)
from tests.runtime.conftest import categorical_feeds, write_categorical_csv

SEARCH = {
    "strategy": "grid",
    "parameters": {"max_depth": {"values": [1, 4, -5]}},  # -5: a trial XGBoost refuses
    "parallelism": 2,
    "objective": {"metric": "accuracy"},
}
ESTIMATOR = {
    "class": "XGBClassifier",
    "params": {"n_estimators": 25},
    "categorical": {"encoder": "OneHotEncoder", "columns": ["color", "size"]},
}


def _claim_path(kube_api: client.ApiClient, namespace: str, claim: str) -> Path:
    """The host directory of a claim's local volume (the node is this machine)."""
    core = client.CoreV1Api(kube_api)

    def bound() -> str | None:
        pvc = core.read_namespaced_persistent_volume_claim(claim, namespace)
        return pvc.spec.volume_name if pvc.status.phase == "Bound" else None

    volume = eventually(bound, timeout=60, interval=0.5, what=f"claim {claim} to be bound")
    return Path(core.read_persistent_volume(volume).spec.local.path)


def _v2_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows as the csv has them: a [n, 1] tensor per column, strings as BYTES."""

    def column(name: str, datatype: str, cast: Any) -> dict[str, Any]:
        data = [cast(row[name]) for row in rows]
        return {"name": name, "datatype": datatype, "shape": [len(rows), 1], "data": data}

    return {
        "inputs": [
            column("age", "FP32", float),
            column("color", "BYTES", str),
            column("income", "FP32", float),
            column("size", "BYTES", str),
        ]
    }


def _infer(pod_ip: str, document: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{pod_ip}:8080/v2/models/churn/infer",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_a_search_over_xgboost_on_categorical_csv_registers_and_serves_the_best_trial(
    kube_api: client.ApiClient, op_namespace: str, tmp_path: Path
) -> None:
    ns = op_namespace
    apply(
        ns,
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
    data = write_categorical_csv(_claim_path(kube_api, ns, "data") / "churn.csv", rows=400)
    data.chmod(0o644)
    apply(
        ns,
        training_job(
            "churn",
            "churn",
            dataset={"uri": "pvc://data/churn.csv", "target": "churned"},
            estimator=ESTIMATOR,
            search=SEARCH,
            registration={"stage": "Production"},
        ),
        inference_service("churn", "churn", stage="Production"),
    )
    tj = wait_for(kube_api, ns, "trainingjobs", "churn", succeeded, "the search", timeout=600)

    batch = client.BatchV1Api(kube_api)
    run = tj["status"]["runs"][-1]["name"]
    trials = batch.read_namespaced_job(f"{run}-trials", ns)
    assert (trials.spec.completion_mode, trials.spec.completions) == ("Indexed", 3)
    assert trials.spec.parallelism == 2
    trial_pods = (
        client.CoreV1Api(kube_api)
        .list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={run}-trials")
        .items
    )
    indexes = {
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in trial_pods
    }
    assert indexes == {"0", "1", "2"}

    search = tj["status"]["search"]
    assert (search["totalTrials"], search["succeeded"], search["failed"]) == (3, 2, 1)
    by_index = {t["index"]: t for t in search["trials"]}
    assert by_index[2]["outcome"] == "Failed"
    assert by_index[2]["params"] == {"max_depth": -5}
    best = max((by_index[0], by_index[1]), key=lambda t: (t["metric"], -t["index"]))
    assert search["bestParams"] == best["params"]
    assert search["bestMetric"] == {"name": "accuracy", "value": best["metric"]}

    versions = model_versions(kube_api, ns, "churn")
    assert [mv["spec"]["version"] for mv in versions] == [1]  # only the best is registered
    mv = versions[0]
    lineage = mv["spec"]["lineage"]
    assert lineage["search"]["bestParams"] == best["params"]
    assert (lineage["search"]["strategy"], lineage["search"]["trials"]) == ("grid", 3)
    assert lineage["estimator"]["params"] == {"n_estimators": 25, **best["params"]}
    assert mv["spec"]["signature"]["inputs"] == [
        {"name": "age", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "color", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "income", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "size", "datatype": "BYTES", "shape": [-1, 1]},
    ]

    wait_serving(kube_api, ns, "churn", timeout=300)
    pods = serving_pods(kube_api, ns, "churn")
    fresh = tmp_path / "fresh.csv"
    write_categorical_csv(fresh, rows=30, seed=11)
    with fresh.open() as handle:
        rows = list(csv.DictReader(handle))
    answer = _infer(pods[0].status.pod_ip, _v2_rows(rows))
    outputs = {o["name"]: o for o in answer["outputs"]}
    served_labels = np.array(outputs["label"]["data"])
    served_probabilities = np.array(outputs["probabilities"]["data"]).reshape(-1, 2)

    # The registered artifact, read from its claim, gives the same answers in process...
    artifact = mv["spec"]["artifact"]["uri"].removeprefix("pvc://")
    claim, _, key = artifact.partition("/")
    model = (_claim_path(kube_api, ns, claim) / key).read_bytes()
    assert hashlib.sha256(model).hexdigest() == mv["spec"]["artifact"]["sha256"]
    labels, probabilities = ort.InferenceSession(model).run(None, categorical_feeds(rows))
    np.testing.assert_array_equal(served_labels, labels)
    np.testing.assert_allclose(served_probabilities, probabilities, rtol=1e-6)
    # ...and so does the best trial's estimator fitted here on the same training rows.
    spec = parse_spec(
        {
            "model": "churn",
            "dataset": {"uri": str(data), "target": "churned"},
            "estimator": ESTIMATOR,
        }
    )
    prepared = prepare(spec)
    local = build_estimator(spec.estimator, 0, prepared.data.feature_names, best["params"])
    local.fit(prepared.x_train, prepared.y_train)
    table = np.array([[float(r["age"]), r["color"], float(r["income"]), r["size"]] for r in rows],
                     dtype=object)  # fmt: skip
    for i in (0, 2):
        table[:, i] = table[:, i].astype(np.float32)
    np.testing.assert_array_equal(served_labels, local.predict(table))
    np.testing.assert_allclose(served_probabilities, local.predict_proba(table), rtol=1e-4)
