"""The quality loop's operator half (pure): where the log goes, what the server and the
monitor are told, the evaluation Job, its result, QualityDegraded and the next slot."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mlplane_operator.api.v1alpha1.inferenceservice import Quality
from mlplane_operator.builders.quality import (
    build_evaluation_job,
    evaluation_job_name,
    log_root,
)
from mlplane_operator.builders.serving import build_deployment
from mlplane_operator.policies import quality as policy
from mlplane_operator.policies.due import seconds_until_due
from mlplane_runtime.monitor.cli import parse_args as parse_monitor_args
from mlplane_runtime.server.cli import parse_args as parse_server_args
from mlplane_runtime.trainer.cli import _evaluate_parser
from tests.operator.unit.objects import (
    NAMESPACE,
    Manifest,
    claim_volumes,
    inferenceservice,
    inferenceservice_body,
    modelversion,
    modelversion_body,
    settings,
)

LOGGING = {"logging": {"sampleRate": 0.5, "rollSeconds": 30, "rollRows": 500}}
QUALITY = {
    **LOGGING,
    "quality": {"metric": "accuracy", "threshold": 0.8, "minLabeled": 50, "intervalSeconds": 60},
}


def pod_of(monitoring: Manifest, **setting: Any) -> Manifest:
    body = inferenceservice_body(monitoring=monitoring)
    manifest = build_deployment(
        inferenceservice(body), body, modelversion(modelversion_body()), 1, settings(**setting)
    )
    pod: Manifest = manifest["spec"]["template"]["spec"]
    return pod


def containers(pod: Manifest) -> dict[str, Manifest]:
    return {c["name"]: c for c in pod["containers"]}


def test_the_log_lives_under_the_storage_namespace_and_name() -> None:
    isvc = inferenceservice(inferenceservice_body(monitoring=LOGGING))
    assert log_root(isvc, settings()) == f"pvc://mlplane-artifacts/models/{NAMESPACE}/iris"
    explicit = {"logging": {"storageUri": "s3://logs/ml/"}}
    isvc = inferenceservice(inferenceservice_body(monitoring=explicit))
    assert log_root(isvc, settings()) == f"s3://logs/ml/{NAMESPACE}/iris"
    assert log_root(inferenceservice(inferenceservice_body()), settings()) is None


def test_logging_without_drift_runs_a_monitor_with_only_the_log() -> None:
    pod = pod_of(LOGGING)
    server = parse_server_args(containers(pod)["server"]["args"])
    assert server.monitor_url == "http://127.0.0.1:8082"
    assert (server.sample_rate, server.log_sample_rate) == (0.0, 0.5)  # no drift samples
    monitor = parse_monitor_args(containers(pod)["monitor"]["args"])
    assert monitor.baseline_uri == ""
    assert monitor.log_uri == f"pvc://mlplane-artifacts/models/{NAMESPACE}/iris"
    assert (monitor.log_roll_seconds, monitor.log_roll_rows) == (30, 500)


def test_only_the_monitor_may_write_the_log_claim() -> None:
    pod = pod_of(LOGGING)
    (claim,) = claim_volumes(pod).values()
    assert claim == {"claimName": "mlplane-artifacts", "readOnly": False}
    mounts = {
        name: {m["mountPath"]: m.get("readOnly") for m in c["volumeMounts"]}
        for name, c in containers(pod).items()
    }
    assert mounts["server"]["/mnt/pvc/mlplane-artifacts"] is True
    assert mounts["monitor"]["/mnt/pvc/mlplane-artifacts"] is False


def test_drift_and_logging_share_one_monitor() -> None:
    pod = pod_of({"drift": {"enabled": True}, **LOGGING})
    server = parse_server_args(containers(pod)["server"]["args"])
    assert (server.sample_rate, server.log_sample_rate) == (1.0, 0.5)
    monitor = parse_monitor_args(containers(pod)["monitor"]["args"])
    assert monitor.baseline_uri.endswith("profile.json")
    assert monitor.log_uri.endswith("/iris")


def evaluation_job(monitoring: Manifest = QUALITY, end: int = 1_700_000_040) -> Manifest:
    body = inferenceservice_body(monitoring=monitoring)
    return build_evaluation_job(inferenceservice(body), body, end, settings())


def test_evaluation_job_scores_the_window_ending_at_its_slot() -> None:
    job = evaluation_job()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlplane-train"]
    assert container["args"][0] == "evaluate"
    args = _evaluate_parser().parse_args(container["args"][1:])
    assert args.log_uri == f"pvc://mlplane-artifacts/models/{NAMESPACE}/iris"
    assert (args.metric, args.window_seconds, args.window_end) == ("accuracy", 3600, 1_700_000_040)
    assert all(m.get("readOnly", True) for m in container["volumeMounts"] if m["name"] != "tmp")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "InferenceService"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_evaluation_job_names_fit_a_label_and_differ_per_slot() -> None:
    isvc = inferenceservice(inferenceservice_body(name="a" * 50, monitoring=QUALITY))
    names = {evaluation_job_name(isvc, end) for end in (1_700_000_040, 1_700_000_100)}
    assert len(names) == 2
    assert all(len(name) <= 63 for name in names)


def test_slots_are_aligned_to_the_interval_and_the_next_one_is_due() -> None:
    now = datetime.fromtimestamp(1_700_000_075, UTC)
    assert policy.window_end(60, now) == 1_700_000_040
    assert policy.seconds_until_next(60, now) == pytest.approx(25)
    body = inferenceservice_body(monitoring=QUALITY)
    assert seconds_until_due("InferenceService", body, now, 5.0) == pytest.approx(25)


RESULT = {
    "metric": "accuracy",
    "windowStart": 1_700_000_000.0,
    "windowEnd": 1_700_003_600.0,
    "versions": [
        {"version": "2", "metric": "accuracy", "value": 0.4, "labeled": 500, "logged": 500},
        {"version": "v1", "metric": "accuracy", "value": 1.0, "labeled": 3, "logged": 3},
        {"version": "3", "metric": "accuracy", "value": None, "labeled": 0, "logged": 20},
    ],
}


def test_readings_keep_mlplane_versions_with_their_window() -> None:
    readings = policy.readings(RESULT)
    assert [r["version"] for r in readings] == [2, 3]
    assert readings[0] == {
        "version": 2,
        "metric": "accuracy",
        "value": 0.4,
        "labeled": 500,
        "logged": 500,
        "windowStart": "2023-11-14T22:13:20Z",
        "windowEnd": "2023-11-14T23:13:20Z",
    }


def quality(**fields: Any) -> Quality:
    return Quality.model_validate({"metric": "accuracy", "threshold": 0.8, **fields})


def test_degraded_only_below_the_threshold_with_enough_labels() -> None:
    readings = {r["version"]: r for r in policy.readings(RESULT)}
    verdict = policy.judge(quality(minLabeled=100), readings[2], 2)
    assert (verdict.status, verdict.reason) == ("True", "QualityDegraded")
    assert "accuracy 0.4 over 500 labeled" in verdict.message
    assert policy.judge(quality(minLabeled=1000), readings[2], 2).status == "Unknown"
    assert policy.judge(quality(), readings[3], 3).reason == "InsufficientLabels"
    assert policy.judge(quality(), None, 4).status == "Unknown"
    assert policy.judge(quality(threshold=0.3, minLabeled=100), readings[2], 2).status == "False"


def test_error_metrics_degrade_above_the_threshold() -> None:
    reading = {"version": 1, "metric": "rmse", "value": 12.0, "labeled": 200}
    assert policy.judge(quality(metric="rmse", threshold=10), reading, 1).status == "True"
    assert policy.judge(quality(metric="rmse", threshold=15), reading, 1).status == "False"
