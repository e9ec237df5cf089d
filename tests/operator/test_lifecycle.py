"""The model lifecycle on the real local cluster: train, register, verify, promote,
serve — with the operator as a real process and the pods run by the local node."""

from __future__ import annotations

from kubernetes import client

from tests.kube import eventually, kubectl
from tests.operator.conftest import OperatorProcess
from tests.operator.helpers import (
    apply,
    condition,
    failed,
    infer,
    inference_service,
    model_versions,
    read,
    serving_pods,
    succeeded,
    training_job,
    wait_for,
    wait_serving,
)

SETOSA = [5.1, 3.5, 1.4, 0.2]


def _verified(mv: dict) -> bool:
    return (mv.get("status") or {}).get("verified") is True


def test_a_training_job_registers_a_verified_version_with_lineage_that_gets_served(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job(
            "iris",
            "iris",
            registration={"autoPromote": {"metric": "accuracy", "minimum": 0.8}},
        ),
        inference_service("iris", "iris"),
    )
    tj = wait_for(kube_api, ns, "trainingjobs", "iris", succeeded, "the run to succeed")
    assert tj["status"]["lastVersion"] == 1
    assert tj["status"]["runs"][-1]["outcome"] == "Succeeded"
    assert condition(tj, "Ready")["status"] == "True"

    mv = wait_for(kube_api, ns, "modelversions", "iris-v1", _verified, "verification")
    lineage = mv["spec"]["lineage"]
    assert lineage["trainingJob"] == "iris"
    assert lineage["run"] == tj["status"]["runs"][-1]["name"]
    assert lineage["estimator"]["class"] == "LogisticRegression"
    assert mv["spec"]["artifact"]["uri"].endswith("/model.onnx")
    assert len(mv["spec"]["artifact"]["sha256"]) == 64
    assert mv["spec"]["metrics"]["accuracy"] >= 0.8
    assert mv["spec"]["signature"]["inputs"][0]["shape"] == [-1, 4]
    assert condition(mv, "ArtifactVerified")["status"] == "True"

    mv = wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v1",
        lambda m: m["spec"]["stage"] == "Production",
        "autoPromote",
    )
    assert [s["stage"] for s in mv["status"]["stageHistory"]][-1] == "Production"

    isvc = wait_serving(kube_api, ns, "iris")
    assert isvc["status"]["servingVersion"] == 1
    assert isvc["status"]["url"] == f"http://iris.{ns}.svc:8080"
    pods = serving_pods(kube_api, ns, "iris")
    assert len(pods) == 1
    code, body = infer(pods[0].status.pod_ip, "iris", [SETOSA])
    assert code == 200
    assert body["outputs"][0]["data"] == [0]  # setosa
    assert body["model_version"] == "1"


def test_a_failing_run_reports_the_trainer_message_and_is_not_retried(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job(
            "bad", "bad", estimator={"class": "NotAnEstimator"}, runPolicy={"backoffLimit": 3}
        ),
    )
    tj = wait_for(
        kube_api,
        ns,
        "trainingjobs",
        "bad",
        failed,
        "the run to fail",
    )
    stalled = condition(tj, "Stalled")
    assert stalled["status"] == "True"
    assert "NotAnEstimator" in stalled["message"]
    assert "allowed:" in stalled["message"]  # names what is allowed
    assert "user error" in stalled["message"]
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        ns, label_selector="mlplane.io/trainingjob=bad"
    )
    assert len(pods.items) == 1  # a user error fails the Job at once: backoffLimit not spent
    assert model_versions(kube_api, ns, "bad") == []
    # The trainer's own words are in the pod's log, through the API server and the kubelet.
    logs = kubectl("logs", "-n", ns, pods.items[0].metadata.name, "-c", "trainer").stdout
    assert "NotAnEstimator" in logs


def test_two_training_jobs_of_one_model_finishing_together_get_distinct_versions(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(ns, training_job("first", "shared"), training_job("second", "shared"))
    for name in ("first", "second"):
        wait_for(kube_api, ns, "trainingjobs", name, succeeded, f"{name} to succeed")
    versions = model_versions(kube_api, ns, "shared")
    assert sorted(mv["spec"]["version"] for mv in versions) == [1, 2]
    assert {mv["spec"]["lineage"]["trainingJob"] for mv in versions} == {"first", "second"}


def test_a_tampered_artifact_fails_verification_and_is_never_served(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(ns, training_job("iris", "iris"))
    wait_for(kube_api, ns, "modelversions", "iris-v1", _verified, "the genuine version")
    genuine = read(kube_api, ns, "modelversions", "iris-v1")
    assert genuine is not None
    tampered = {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "iris-v2"},
        "spec": {
            "model": "iris",
            "version": 2,
            "artifact": {**genuine["spec"]["artifact"], "sha256": "0" * 64},
            "stage": "Production",
        },
    }
    apply(ns, tampered, inference_service("iris", "iris", version=2))
    mv = wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v2",
        lambda m: (m.get("status") or {}).get("verified") is False,
        "verification to fail",
    )
    assert condition(mv, "ArtifactVerified")["status"] == "False"
    assert "sha256" in condition(mv, "ArtifactVerified")["message"]
    assert condition(mv, "Stalled")["status"] == "True"
    assert read(kube_api, ns, "modelversions", "iris-v1")["spec"]["stage"] != "Archived"  # type: ignore[index]
    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: "failed verification" in condition(i, "Ready").get("message", ""),
        "the InferenceService to refuse it",
    )
    assert isvc["status"].get("servingVersion") is None
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(ns).items == []


def test_auto_promote_archives_the_previous_production_and_serving_follows(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    policy = {"autoPromote": {"metric": "accuracy", "minimum": 0.5, "mustBeatProduction": False}}
    apply(ns, training_job("iris", "iris", registration=policy), inference_service("iris", "iris"))
    wait_serving(kube_api, ns, "iris", 1)

    # A new spec (another seed) trains v2, which the policy promotes.
    apply(
        ns,
        training_job(
            "iris", "iris", registration=policy, validation={"seed": 7, "metrics": ["accuracy"]}
        ),
    )
    wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v2",
        lambda m: m["spec"]["stage"] == "Production",
        "v2 to be promoted",
    )
    v1 = wait_for(
        kube_api,
        ns,
        "modelversions",
        "iris-v1",
        # The stage is patched first; the status records it on the next write.
        lambda m: (
            m["spec"]["stage"] == "Archived"
            and (m.get("status") or {}).get("stageHistory", [{}])[-1].get("stage") == "Archived"
        ),
        "v1 to be archived, and its status to say so",
    )
    assert v1["status"]["stageHistory"][-1]["stage"] == "Archived"
    production = [
        mv for mv in model_versions(kube_api, ns, "iris") if mv["spec"]["stage"] == "Production"
    ]
    assert [mv["metadata"]["name"] for mv in production] == ["iris-v2"]

    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: (
            i["status"].get("servingVersion") == 2 and condition(i, "Ready").get("status") == "True"
        ),
        "v2 to roll out",
    )
    assert isvc["status"]["rolloutHistory"][-1]["outcome"] == "Succeeded"
    eventually(lambda: not serving_pods(kube_api, ns, "iris", version=1), what="v1 pods to go")
    deployments = client.AppsV1Api(kube_api).list_namespaced_deployment(ns).items
    assert [d.metadata.name for d in deployments] == ["iris-v2"]
    code, body = infer(serving_pods(kube_api, ns, "iris")[0].status.pod_ip, "iris", [SETOSA])
    assert (code, body["model_version"]) == (200, "2")


def test_a_restarted_operator_creates_no_duplicate_jobs_or_versions(
    kube_api: client.ApiClient, op_namespace: str, operator: OperatorProcess
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job(
            "iris",
            "iris",
            estimator={"class": "RandomForestClassifier", "params": {"n_estimators": 200}},
        ),
    )
    batch = client.BatchV1Api(kube_api)
    eventually(lambda: batch.list_namespaced_job(ns).items, what="the run's Job")
    operator.kill()
    operator.start()
    wait_for(
        kube_api, ns, "trainingjobs", "iris", succeeded, "the run to succeed after the restart"
    )
    operator.kill()  # and once more, after the version exists
    operator.start()
    wait_for(kube_api, ns, "modelversions", "iris-v1", _verified, "verification")
    training_jobs = [
        j for j in batch.list_namespaced_job(ns).items if "verify" not in j.metadata.name
    ]
    assert len(training_jobs) == 1
    assert [mv["metadata"]["name"] for mv in model_versions(kube_api, ns, "iris")] == ["iris-v1"]
    tj = read(kube_api, ns, "trainingjobs", "iris")
    assert tj is not None
    assert len(tj["status"]["runs"]) == 1


def test_deleting_a_training_job_or_inference_service_collects_its_children(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris"),
    )
    wait_serving(kube_api, ns, "iris")
    kubectl("delete", "-n", ns, "inferenceservice/iris", "trainingjob/iris", "--wait=true")
    apps, core, batch = (
        client.AppsV1Api(kube_api),
        client.CoreV1Api(kube_api),
        client.BatchV1Api(kube_api),
    )
    eventually(
        lambda: not apps.list_namespaced_deployment(ns).items, what="Deployments to be collected"
    )
    eventually(
        lambda: not core.list_namespaced_service(ns).items, what="the Service to be collected"
    )
    eventually(
        lambda: (
            not [j for j in batch.list_namespaced_job(ns).items if "verify" not in j.metadata.name]
        ),
        what="the training Jobs to be collected",
    )
    eventually(
        lambda: (
            not core.list_namespaced_pod(
                ns, label_selector="mlplane.io/inferenceservice=iris"
            ).items
        ),
        what="serving pods to go",
    )
    # The registry record is user data: it outlives the TrainingJob that made it.
    assert [mv["metadata"]["name"] for mv in model_versions(kube_api, ns, "iris")] == ["iris-v1"]


def test_deleting_the_served_model_version_keeps_serving_and_says_why(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris"),
    )
    wait_serving(kube_api, ns, "iris")
    kubectl("delete", "-n", ns, "modelversion/iris-v1", "--wait=true")
    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: condition(i, "TargetResolved").get("status") == "False",
        "the missing target",
    )
    assert "no such ModelVersion" in condition(isvc, "TargetResolved")["message"]
    assert isvc["status"]["servingVersion"] == 1
    code, _ = infer(serving_pods(kube_api, ns, "iris")[0].status.pod_ip, "iris", [SETOSA])
    assert code == 200  # no outage: the running version keeps answering
