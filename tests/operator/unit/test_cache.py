"""The watch-fed store, the due-time queue and the decisions around them (pure)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from mlplane_operator.cache import (
    DueQueue,
    Store,
    newer,
    subset_equal,
    watched,
    without_job_template,
    without_pod_spec,
)
from mlplane_operator.policies.due import seconds_until_due
from mlplane_operator.resync import ServersOfModel, backoff_seconds, owners


def obj(name: str, rv: str = "1", namespace: str = "ns", **labels: str) -> dict[str, Any]:
    return {
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "labels": labels},
    }


def test_store_selects_by_namespace_and_every_label() -> None:
    store = Store()
    store.replace([obj("a", tj="x", c="t"), obj("b", tj="y", c="t"), obj("c", "1", "other")], "9")
    assert [o["metadata"]["name"] for o in store.select("ns")] == ["a", "b"]
    assert [o["metadata"]["name"] for o in store.select("ns", {"c": "t", "tj": "y"})] == ["b"]
    assert store.select("ns", {"tj": "z"}) == []
    assert store.resource_version == "9"


def test_store_moves_an_object_whose_labels_changed() -> None:
    store = Store()
    store.upsert(obj("a", "1", tj="x"))
    store.upsert(obj("a", "2", tj="y"))
    assert store.select("ns", {"tj": "x"}) == []
    assert [o["metadata"]["resourceVersion"] for o in store.select("ns", {"tj": "y"})] == ["2"]


def test_store_keeps_the_newer_version_over_a_late_watch_event() -> None:
    """Read-your-writes: the operator's own write (rv 7) is not replaced by an older
    event the watch delivers afterwards (rv 5)."""
    store = Store()
    assert store.upsert(obj("a", "7"))
    assert not store.upsert(obj("a", "5"))
    assert store.get("ns", "a")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]
    assert store.upsert(obj("a", "8"))


def test_store_keeps_no_managed_fields() -> None:
    store = Store()
    job = obj("a")
    job["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    store.upsert(job)
    assert "managedFields" not in store.get("ns", "a")["metadata"]  # type: ignore[index]
    assert job["metadata"]["managedFields"]  # the caller's object is left alone


def test_a_store_keeps_what_its_trim_keeps() -> None:
    store = Store(trim=without_job_template)
    job = obj("a")
    job["spec"] = {"suspend": True, "template": {"spec": {"containers": []}}}
    store.upsert(job)
    assert store.get("ns", "a")["spec"] == {"suspend": True}  # type: ignore[index]
    assert "template" in job["spec"]
    assert "spec" not in without_pod_spec({"metadata": {}, "spec": {}, "status": {}})


def test_resource_versions_that_are_not_integers_are_taken_as_they_come() -> None:
    assert newer(obj("a", "x"), obj("a", "9"))
    assert newer(obj("a", "10"), obj("a", "9"))  # compared as numbers, not as text


def test_a_relist_reports_what_disappeared_meanwhile() -> None:
    store = Store()
    store.replace([obj("a"), obj("b")], "1")
    gone = store.replace([obj("b")], "5")
    assert [o["metadata"]["name"] for o in gone] == ["a"]
    assert store.get("ns", "a") is None
    assert len(store) == 1


def test_store_holds_only_watched_namespaces() -> None:
    store = Store(["op-*"])
    store.replace([obj("a", namespace="op-1"), obj("b", namespace="kube-system")], "1")
    assert not store.upsert(obj("c", namespace="default"))
    assert [o["metadata"]["name"] for o in store.all()] == ["a"]
    assert watched("anything", [])


def test_remove_drops_the_object_from_every_index() -> None:
    store = Store()
    store.upsert(obj("a", tj="x"))
    store.remove("ns", "a")
    assert store.select("ns") == []
    assert store.select("ns", {"tj": "x"}) == []


def test_subset_equal_ignores_what_the_server_added() -> None:
    wanted = {"spec": {"replicas": 2, "template": {"containers": [{"name": "s", "image": "i"}]}}}
    live = {
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 10,
            "template": {"containers": [{"name": "s", "image": "i", "imagePullPolicy": "X"}]},
        },
        "status": {"readyReplicas": 1},
    }
    assert subset_equal(wanted, live)
    assert not subset_equal({"spec": {"replicas": 3}}, live)
    assert not subset_equal({"spec": {"template": {"containers": []}}}, live)  # lengths
    assert not subset_equal({"spec": {"replicas": True}}, {"spec": {"replicas": 1}})
    assert not subset_equal({"metadata": {"labels": {"a": "b"}}}, {"metadata": {}})
    assert subset_equal({"metadata": {"annotations": {}}}, {"metadata": {}})  # never stored


def test_queue_hands_out_keys_at_their_due_time_earliest_request_wins() -> None:
    queue = DueQueue()
    queue.add("a", 10.0)
    queue.add("b", 5.0)
    queue.add("a", 3.0)  # an event: sooner than the scheduled step
    queue.add("b", 50.0)  # later than already asked for: ignored
    assert queue.pop_due(1.0) is None
    assert queue.pop_due(4.0) == "a"
    assert queue.pop_due(4.0) is None
    assert queue.pop_due(6.0) == "b"
    assert len(queue) == 0


def test_queue_runs_a_key_on_one_worker_and_again_when_asked_meanwhile() -> None:
    queue = DueQueue()
    queue.add("a", 0.0)
    assert queue.pop_due(1.0) == "a"
    queue.add("a", 0.0)  # an event while the pass runs
    assert queue.pop_due(1.0) is None  # not on a second worker at once
    queue.done("a")
    assert queue.pop_due(1.0) == "a"  # but once more after it, on the newer state
    queue.done("a")
    assert queue.pop_due(1.0) is None


def test_queue_wait_wakes_for_a_new_key_and_on_close() -> None:
    queue = DueQueue()
    clock = [0.0]
    got: list[Any] = []
    worker = threading.Thread(target=lambda: got.append(queue.wait(clock[0], lambda: clock[0])))
    worker.start()
    queue.add("a", 0.0)
    worker.join(5)
    assert got == ["a"]
    closer = threading.Thread(target=lambda: got.append(queue.wait(0.0, lambda: 0.0)))
    closer.start()
    queue.close()
    closer.join(5)
    assert got == ["a", None]


def test_a_reader_gets_a_copy_it_may_change_without_changing_the_store() -> None:
    store = Store()
    store.upsert(obj("a", app="iris"))
    mine = store.get("ns", "a")
    assert mine == obj("a", app="iris")
    mine["metadata"]["labels"]["app"] = "changed"
    (listed,) = store.select("ns", {"app": "iris"})
    listed["metadata"]["name"] = "changed"
    assert store.get("ns", "a") == obj("a", app="iris")
    assert store.stored_keys() == [("ns", "a")]


def test_backoff_doubles_and_is_bounded() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff_seconds(40) == 300


def test_child_events_queue_their_owners() -> None:
    job = {
        "metadata": {
            "name": "tj-1",
            "namespace": "ns",
            "ownerReferences": [{"kind": "TrainingJob", "name": "tj", "controller": True}],
        }
    }
    assert owners("Job", job, lambda ns, name: None) == [("TrainingJob", "ns", "tj")]
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "labels": {"batch.kubernetes.io/job-name": "tj-1"},
        }
    }
    assert owners("Pod", pod, lambda ns, name: ("TrainingJob", ns, "tj")) == [
        ("TrainingJob", "ns", "tj")
    ]
    slice_ = {
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "labels": {"mlplane.io/inferenceservice": "is"},
        }
    }
    assert owners("EndpointSlice", slice_, lambda ns, name: None) == [
        ("InferenceService", "ns", "is")
    ]


def isvc(namespace: str, name: str, model: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"model": model}}


def test_a_model_versions_events_reach_only_the_servers_of_that_model_in_its_namespace() -> None:
    servers = ServersOfModel()
    servers.remember(isvc("a", "iris", "iris"), "ADDED")
    servers.remember(isvc("b", "iris", "iris"), "ADDED")
    servers.remember(isvc("b", "other", "iris"), "ADDED")
    # The same name deleted in another namespace (a finished test, a removed tenant)
    # must not make namespace a's server deaf to its versions.
    servers.remember(isvc("b", "iris", "iris"), "DELETED")
    assert servers.serving("a", "iris") == ["iris"]
    assert servers.serving("b", "iris") == ["other"]
    # A server switched to another model follows it.
    servers.remember(isvc("a", "iris", "flowers"), "MODIFIED")
    assert servers.serving("a", "iris") == []
    assert servers.serving("a", "flowers") == ["iris"]
    assert servers.serving("a", None) == []


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def training_job(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "model": "m",
            "dataset": {"builtin": "iris"},
            "estimator": {"class": "LogisticRegression"},
            **spec,
        },
        "status": status,
    }


def test_a_scheduled_training_job_is_due_at_its_next_slot() -> None:
    body = training_job(
        {"schedule": "0 * * * *"}, {"nextScheduleTime": (NOW + timedelta(minutes=20)).isoformat()}
    )
    assert seconds_until_due("TrainingJob", body, NOW, 5) == 1200


def test_a_finished_run_is_due_when_its_ttl_ends_and_not_after() -> None:
    run = {
        "name": "t-1",
        "outcome": "Succeeded",
        "completionTime": (NOW - timedelta(seconds=30)).isoformat(),
    }
    body = training_job({"runPolicy": {"ttlSecondsAfterFinished": 100}}, {"runs": [run]})
    assert seconds_until_due("TrainingJob", body, NOW, 5) == 70
    assert seconds_until_due("TrainingJob", body, NOW + timedelta(seconds=80), 5) is None


def test_a_training_job_without_time_driven_work_waits_for_events() -> None:
    assert seconds_until_due("TrainingJob", training_job({}, {}), NOW, 5) is None
    assert seconds_until_due("ModelVersion", {}, NOW, 5) is None


def inference_service(spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mlplane.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"model": "m", "stage": "Production", **spec},
        "status": status,
    }


def test_a_rollout_in_progress_and_drift_detection_are_polled() -> None:
    rolling = inference_service({}, {"servingVersion": 1, "canaryVersion": 2})
    assert seconds_until_due("InferenceService", rolling, NOW, 5) == 5
    drift = inference_service({"monitoring": {"drift": {"enabled": True}}}, {"servingVersion": 1})
    assert seconds_until_due("InferenceService", drift, NOW, 5) == 5
    steady = inference_service({}, {"servingVersion": 1, "rolloutPhase": "Succeeded"})
    assert seconds_until_due("InferenceService", steady, NOW, 5) is None
