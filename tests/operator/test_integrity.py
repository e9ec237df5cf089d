"""Nothing lost, nothing overwritten: the registry under GitOps operations (delete and
apply again, prune), several operator replicas, and manifests that pass admission but
can never work — with the operator as a real process against the real API server."""

from __future__ import annotations

import time
import uuid
from typing import Any

from kubernetes import client

from tests.kube import eventually, kubectl
from tests.operator.conftest import OperatorProcess
from tests.operator.helpers import (
    apply,
    condition,
    failed,
    inference_service,
    model_versions,
    read,
    succeeded,
    training_job,
    wait_for,
)

Manifest = dict[str, Any]


def _verified(mv: Manifest) -> bool:
    return (mv.get("status") or {}).get("verified") is True


def _last_version(version: int) -> Any:
    return lambda tj: succeeded(tj) and tj["status"].get("lastVersion") == version


def _reasons(api: client.ApiClient, namespace: str, name: str) -> set[str]:
    """The reasons of the Events on `name` so far (the operator posts them in the
    background, so a test waits for them as for a status)."""
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return {e.reason for e in events.items}


def _warnings(api: client.ApiClient, namespace: str, name: str, reason: str) -> list[Any]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [e for e in events.items if e.reason == reason and e.type == "Warning"]


def test_a_training_job_deleted_and_applied_again_registers_a_new_version_beside_the_old(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    manifest = training_job("iris", "iris", registration={"stage": "Production"})
    apply(ns, manifest)
    v1 = wait_for(kube_api, ns, "modelversions", "iris-v1", _verified, "iris-v1 to be verified")

    # What Argo CD's prune-and-sync (or Replace=true) does: the same manifest, a new object.
    kubectl("delete", "-n", ns, "trainingjob/iris", "--wait=true")
    apply(ns, manifest)
    tj = wait_for(kube_api, ns, "trainingjobs", "iris", _last_version(2), "the new run's version")
    assert tj["status"]["runs"][-1]["message"] == "registered iris-v2"
    v2 = wait_for(kube_api, ns, "modelversions", "iris-v2", _verified, "iris-v2 to be verified")
    assert v2["spec"]["artifact"]["uri"] != v1["spec"]["artifact"]["uri"]
    assert v2["spec"]["lineage"]["run"] == v1["spec"]["lineage"]["run"] == "iris-1"

    # iris-v1's artifact still has the sha256 its record holds: a record applied by hand
    # with the same artifact passes the operator's verification Job (sha256, ONNX load).
    audit = {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": "audit-v1"},
        "spec": {"model": "audit", "version": 1, "artifact": v1["spec"]["artifact"]},
    }
    apply(ns, audit)
    checked = wait_for(
        kube_api,
        ns,
        "modelversions",
        "audit-v1",
        lambda m: (m.get("status") or {}).get("verified") is not None,
        "the audit verification",
    )
    assert checked["status"]["verified"] is True, checked["status"].get("message")
    assert [mv["metadata"]["name"] for mv in model_versions(kube_api, ns, "iris")] == [
        "iris-v1",
        "iris-v2",
    ]


def test_a_version_number_is_never_given_again_after_its_version_is_deleted(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(ns, training_job("m", "m"))
    wait_for(kube_api, ns, "trainingjobs", "m", _last_version(1), "m-v1")
    apply(ns, training_job("m", "m", validation={"seed": 7, "metrics": ["accuracy"]}))
    wait_for(kube_api, ns, "trainingjobs", "m", _last_version(2), "m-v2")

    # A person deletes m-v2, then the TrainingJob itself (its status forgets everything).
    kubectl("delete", "-n", ns, "modelversion/m-v2", "trainingjob/m", "--wait=true")
    apply(ns, training_job("m", "m", validation={"seed": 9, "metrics": ["accuracy"]}))
    tj = wait_for(kube_api, ns, "trainingjobs", "m", _last_version(3), "m-v3")
    assert tj["status"]["runs"][-1]["message"] == "registered m-v3"
    assert [mv["metadata"]["name"] for mv in model_versions(kube_api, ns, "m")] == [
        "m-v1",
        "m-v3",
    ]
    assert read(kube_api, ns, "modelversions", "m-v2") is None
    ledger = client.CoreV1Api(kube_api).read_namespaced_config_map("mlplane-versions-m", ns)
    assert ledger.data["highest"] == "3"
    assert not ledger.metadata.owner_references  # nothing collects it


def test_a_schedule_that_never_fires_stalls_once_with_one_event_and_starts_nothing(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    # 31 February or April: admission's rule sees single months only; the operator
    # finds that no date matches.
    apply(ns, training_job("never", "never", schedule="0 0 31 2,4 *"))
    tj = wait_for(
        kube_api,
        ns,
        "trainingjobs",
        "never",
        lambda t: condition(t, "Stalled").get("status") == "True",
        "Stalled",
        timeout=60,
    )
    stalled = condition(tj, "Stalled")
    assert stalled["reason"] == "InvalidSchedule"
    assert "spec.schedule '0 0 31 2,4 *' never fires" in stalled["message"]
    assert tj["status"]["phase"] == "Failed"
    assert tj["status"]["observedGeneration"] == 1
    eventually(lambda: _warnings(kube_api, ns, "never", "InvalidSchedule"), what="the Event")
    version = tj["metadata"]["resourceVersion"]
    time.sleep(12)  # two resync passes and then some
    assert len(_warnings(kube_api, ns, "never", "InvalidSchedule")) == 1
    after = read(kube_api, ns, "trainingjobs", "never")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == version  # no write since
    assert client.BatchV1Api(kube_api).list_namespaced_job(ns).items == []


def test_two_active_replicas_register_each_run_once_and_leave_exactly_one_production(
    kube_api: client.ApiClient, op_namespace: str, kubeconfig: str, operator: OperatorProcess
) -> None:
    """Two operator processes without peering: both reconcile every object at once, as
    two replicas do while a leader hand-over is in progress."""
    ns = op_namespace
    second = OperatorProcess(kubeconfig, "operator-tests-second.log")
    second.start()
    try:
        policy = {
            "autoPromote": {"metric": "accuracy", "minimum": 0.5, "mustBeatProduction": False}
        }
        names = ("a", "b", "c")
        apply(ns, *(training_job(name, "shared", registration=policy) for name in names))
        for name in names:
            tj = wait_for(kube_api, ns, "trainingjobs", name, succeeded, f"{name} to succeed")
            assert len(tj["status"]["runs"]) == 1
            assert (
                tj["status"]["runs"][0]["message"]
                == f"registered shared-v{tj['status']['lastVersion']}"
            )

        def settled() -> list[Manifest] | None:
            versions = model_versions(kube_api, ns, "shared")
            done = all(
                _verified(mv) and not (mv["metadata"].get("annotations") or {}) for mv in versions
            )
            return versions if done and len(versions) >= 3 else None

        versions = eventually(settled, timeout=120, what="three verified, promoted versions")
        assert [mv["spec"]["version"] for mv in versions] == [1, 2, 3]
        assert sorted(mv["spec"]["lineage"]["trainingJob"] for mv in versions) == list(names)
        time.sleep(6)  # a resync pass of both replicas after the last promotion
        stages = [mv["spec"]["stage"] for mv in model_versions(kube_api, ns, "shared")]
        assert stages.count("Production") == 1, stages
        assert stages.count("Archived") == 2, stages
    finally:
        second.stop()


def test_a_run_whose_job_is_collected_at_once_by_its_ttl_still_registers(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    apply(ns, training_job("iris", "iris", runPolicy={"ttlSecondsAfterFinished": 0}))
    tj = wait_for(kube_api, ns, "trainingjobs", "iris", _last_version(1), "iris-v1")
    assert tj["status"]["runs"][-1]["message"] == "registered iris-v1"
    batch = client.BatchV1Api(kube_api)
    eventually(
        lambda: (
            not [j for j in batch.list_namespaced_job(ns).items if "verify" not in j.metadata.name]
        ),
        timeout=120,
        what="the recorded run's Job to be collected",
    )


def test_a_run_whose_job_is_deleted_while_the_operator_is_down_is_resumed_and_registers(
    kube_api: client.ApiClient, op_namespace: str, operator: OperatorProcess
) -> None:
    ns = op_namespace
    apply(ns, training_job("iris", "iris"))
    batch = client.BatchV1Api(kube_api)
    eventually(lambda: batch.list_namespaced_job(ns).items, what="the run's Job")
    operator.kill()
    try:
        eventually(
            lambda: (batch.read_namespaced_job("iris-1", ns).status.succeeded or 0) >= 1,
            timeout=180,
            what="the run to finish while the operator is down",
        )
        # Its result is now only in the pod's termination message (and result.json).
        kubectl("delete", "-n", ns, "job/iris-1", "--cascade=foreground", "--wait=true")
    finally:
        operator.start()
    tj = wait_for(kube_api, ns, "trainingjobs", "iris", _last_version(1), "iris-v1")
    (run,) = tj["status"]["runs"]
    assert (run["name"], run["message"]) == ("iris-1", "registered iris-v1")
    eventually(lambda: "RunResumed" in _reasons(kube_api, ns, "iris"), what="the RunResumed Event")
    assert [mv["metadata"]["name"] for mv in model_versions(kube_api, ns, "iris")] == ["iris-v1"]


def test_a_metric_that_is_not_a_number_fails_the_run_once_naming_the_fix(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    one_test_row = training_job(
        "tiny",
        "tiny",
        dataset={"builtin": "diabetes"},
        estimator={"class": "RandomForestRegressor", "params": {"n_estimators": 5}},
        validation={"testSize": 0.001, "metrics": ["r2"]},  # r2 of one row is NaN
        runPolicy={"backoffLimit": 2},
    )
    apply(ns, one_test_row)
    tj = wait_for(kube_api, ns, "trainingjobs", "tiny", failed, "the run to fail")
    stalled = condition(tj, "Stalled")
    assert stalled["status"] == "True"
    assert "metric 'r2' is nan" in stalled["message"]
    assert "spec.validation.testSize" in stalled["message"]
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        ns, label_selector="mlplane.io/trainingjob=tiny"
    )
    assert len(pods.items) == 1  # a user error: not retried
    assert model_versions(kube_api, ns, "tiny") == []


def test_a_job_the_api_server_rejects_stalls_the_training_job_once_naming_the_field(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    # The TrainingJob schema takes any string map; a Pod's nodeSelector keys are labels.
    apply(ns, training_job("bad", "bad", nodeSelector={"not a label key": "x"}))
    tj = wait_for(kube_api, ns, "trainingjobs", "bad", failed, "the run to fail", timeout=60)
    stalled = condition(tj, "Stalled")
    assert stalled["status"] == "True"
    assert "the API server rejected its Job" in stalled["message"]
    assert "nodeSelector" in stalled["message"]
    assert tj["status"]["runs"][-1]["outcome"] == "Failed"
    eventually(lambda: _warnings(kube_api, ns, "bad", "JobRejected"), what="the Event")
    version = tj["metadata"]["resourceVersion"]
    time.sleep(12)  # two resync passes and then some: nothing is sent again
    assert len(_warnings(kube_api, ns, "bad", "JobRejected")) == 1
    after = read(kube_api, ns, "trainingjobs", "bad")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == version


def test_a_new_spec_cancels_an_older_run_stuck_pending_and_runs_itself(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    nowhere = {"mlplane.io/no-such-node": "true"}  # valid, and no node has it
    apply(ns, training_job("iris", "iris", nodeSelector=nowhere))
    wait_for(
        kube_api,
        ns,
        "trainingjobs",
        "iris",
        lambda t: (t.get("status") or {}).get("activeRun") == "iris-1",
        "the first run to start",
        timeout=60,
    )
    core = client.CoreV1Api(kube_api)
    eventually(
        lambda: [
            p
            for p in core.list_namespaced_pod(ns, label_selector="mlplane.io/run=iris-1").items
            if p.status.phase == "Pending"
        ],
        what="its pod, unschedulable",
    )
    apply(ns, training_job("iris", "iris"))  # the fix: generation 2
    tj = wait_for(kube_api, ns, "trainingjobs", "iris", _last_version(1), "generation 2's run")
    runs = {run["name"]: run for run in tj["status"]["runs"]}
    assert runs["iris-1"]["outcome"] == "Cancelled"
    assert runs["iris-1"]["message"] == "superseded by generation 2 before it started"
    assert (runs["iris-2"]["outcome"], runs["iris-2"]["generation"]) == ("Succeeded", 2)
    assert tj["status"]["phase"] == "Succeeded"
    eventually(
        lambda: "RunSuperseded" in _reasons(kube_api, ns, "iris"), what="the RunSuperseded Event"
    )
    eventually(
        lambda: not core.list_namespaced_pod(ns, label_selector="mlplane.io/run=iris-1").items,
        what="the cancelled run's pod to go",
    )


def test_the_operator_policy_refuses_images_and_keeps_credentials_from_other_images(
    kube_api: client.ApiClient, kubeconfig: str, crds_installed: None
) -> None:
    """An operator of its own, for a namespace of its own, with an image policy and
    platform S3 credentials configured."""
    ns = f"policy-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    policed = OperatorProcess(
        kubeconfig,
        "operator-tests-policy.log",
        MLPLANE_WATCH_NAMESPACES=ns,
        MLPLANE_ALLOWED_IMAGES="registry.example.com/ml/*",
        MLPLANE_S3_SECRET="platform-s3",
        MLPLANE_S3_ENDPOINT="http://s3.invalid:9000",
    )
    policed.start()
    try:
        apply(
            ns,
            training_job("foreign", "foreign", image="docker.io/someone/anything:1"),
            training_job(
                "allowed",
                "allowed",
                image="registry.example.com/ml/trainer:2",
                output={"storageUri": "s3://models/runs"},
            ),
            inference_service("served", "served", image="docker.io/someone/anything:1"),
        )
        stalled = {}
        for plural, name in (
            ("trainingjobs", "foreign"),
            ("trainingjobs", "allowed"),
            ("inferenceservices", "served"),
        ):
            found = wait_for(
                kube_api,
                ns,
                plural,
                name,
                lambda o: condition(o, "Stalled").get("status") == "True",
                f"{name} to be Stalled",
                timeout=60,
            )
            stalled[name] = condition(found, "Stalled")
        assert stalled["foreign"]["reason"] == "ImageNotAllowed"
        assert stalled["foreign"]["message"].startswith(
            "spec.image 'docker.io/someone/anything:1' is not allowed"
        )
        assert "registry.example.com/ml/*" in stalled["foreign"]["message"]
        assert stalled["allowed"]["reason"] == "NoCredentials"
        assert "MLPLANE_S3_SECRET" in stalled["allowed"]["message"]
        assert "spec.s3CredentialsSecret" in stalled["allowed"]["message"]
        assert stalled["served"]["reason"] == "ImageNotAllowed"
        assert client.BatchV1Api(kube_api).list_namespaced_job(ns).items == []
        assert client.AppsV1Api(kube_api).list_namespaced_deployment(ns).items == []
    finally:
        policed.stop()
        core.delete_namespace(ns, propagation_policy="Background")


def test_a_deployment_the_api_server_rejects_stalls_the_inference_service_naming_the_field(
    kube_api: client.ApiClient, op_namespace: str
) -> None:
    ns = op_namespace
    # The schema checks each quantity, not that requests stay within limits; a Pod does.
    upside_down = {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}
    apply(
        ns,
        training_job("iris", "iris", registration={"stage": "Production"}),
        inference_service("iris", "iris", resources=upside_down),
    )
    isvc = wait_for(
        kube_api,
        ns,
        "inferenceservices",
        "iris",
        lambda i: condition(i, "Stalled").get("status") == "True",
        "the InferenceService to stall",
    )
    stalled = condition(isvc, "Stalled")
    assert stalled["reason"] == "ChildRejected"
    assert "the API server rejected a child" in stalled["message"]
    assert "resources" in stalled["message"]
    eventually(lambda: _warnings(kube_api, ns, "iris", "ChildRejected"), what="the Event")
    time.sleep(12)  # two resync passes and then some
    assert len(_warnings(kube_api, ns, "iris", "ChildRejected")) == 1
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(ns).items == []
