"""A TrainingJob with spec.search: its trials run as one Indexed Job that the trainer
understands, the run's own Job follows once the trials are done, and the registered
version and the status record the search."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlplane_operator import labels
from mlplane_operator.api.v1alpha1 import ModelVersion, TrainingJobStatus
from mlplane_operator.builders.registry import build_model_version
from mlplane_operator.builders.training import (
    Run,
    build_training_job,
    build_trials_job,
    trials_job_name,
)
from mlplane_operator.policies.runs import FAILED, RUNNING, SUCCEEDED, observe_job, searching
from mlplane_operator.reconcilers.trainingjob import search_status
from mlplane_runtime.trainer.search import trial_params
from mlplane_runtime.trainer.spec import load_spec_text
from tests.operator.unit.objects import (
    IMAGE,
    Manifest,
    env_of,
    settings,
    trainer_result,
    trainingjob,
    trainingjob_body,
)

SEARCH = {
    "parameters": {
        "max_depth": {"values": [2, 4, 8]},
        "min_samples_leaf": {"min": 1, "max": 16, "scale": "log", "type": "int"},
    },
    "strategy": "random",
    "seed": 5,
    "maxTrials": 16,
    "parallelism": 2,
    "objective": {"metric": "accuracy"},
}
RUN = Run(number=2, trigger="Spec", generation=1)


def body(**search: Any) -> Manifest:
    return trainingjob_body(
        estimator={"class": "RandomForestClassifier"}, search={**SEARCH, **search}
    )


def trials_job(manifest: Manifest | None = None) -> Manifest:
    manifest = manifest or body()
    return build_trials_job(trainingjob(manifest), manifest, RUN, settings())


def test_trials_are_one_indexed_job_with_completions_and_parallelism() -> None:
    job = trials_job()
    assert job["metadata"]["name"] == "iris-2-trials" == trials_job_name("iris-2")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 16, 2)
    assert "backoffLimit" not in spec
    assert spec["backoffLimitPerIndex"] == 1  # runPolicy.backoffLimit, per trial
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailIndex"
    pod = spec["template"]["spec"]
    assert pod["containers"][0]["command"] == ["mlplane-train", "trial"]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == {labels.RUN: "iris-2"}
    for meta in (job["metadata"], spec["template"]["metadata"]):
        assert meta["labels"][labels.COMPONENT] == "trial"
        assert meta["labels"][labels.RUN] == "iris-2"


def test_a_grid_runs_its_size_unless_max_trials_is_smaller() -> None:
    grid = {"strategy": "grid", "parameters": {"a": {"values": [1, 2, 3]}, "b": {"values": [1, 2]}}}
    assert trials_job(body(**grid, maxTrials=None))["spec"]["completions"] == 6
    assert trials_job(body(**grid, maxTrials=4))["spec"]["completions"] == 4
    assert trials_job(body(**grid, maxTrials=4, parallelism=9))["spec"]["parallelism"] == 4


def test_trials_and_refit_share_the_run_id_and_the_trainer_reads_the_search() -> None:
    manifest = body()
    tj = trainingjob(manifest)
    trials, refit = (
        build_trials_job(tj, manifest, RUN, settings()),
        build_training_job(tj, manifest, RUN, settings()),
    )
    trial_env = env_of(trials["spec"]["template"]["spec"]["containers"][0])
    refit_env = env_of(refit["spec"]["template"]["spec"]["containers"][0])
    assert trial_env["MLPLANE_RUN"] == refit_env["MLPLANE_RUN"]
    spec = load_spec_text(trial_env["MLPLANE_TRAINING_SPEC"], "env")
    assert spec.search is not None
    assert spec.search.trials == 16
    assert spec.search.parallelism == 2
    points = [trial_params(spec.search, i) for i in range(16)]
    assert all(p["max_depth"] in (2, 4, 8) and 1 <= p["min_samples_leaf"] <= 16 for p in points)


def _finished(job: Manifest, *conditions: Manifest) -> Manifest:
    job["metadata"]["creationTimestamp"] = "2025-01-10T11:00:00Z"
    job["status"] = {"startTime": "2025-01-10T11:00:01Z", "conditions": list(conditions)}
    return job


def _condition(type_: str, reason: str = "", message: str = "") -> Manifest:
    return {"type": type_, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-10T11:05:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("conditions", "outcome", "refit"),
    [
        ((), RUNNING, False),
        ((_condition("Complete"),), RUNNING, True),
        (
            (_condition("FailureTarget", "FailedIndexes"), _condition("Failed", "FailedIndexes")),
            RUNNING,
            True,
        ),
        ((_condition("Failed", "DeadlineExceeded", "Job was active longer"),), FAILED, False),
    ],
)
def test_a_run_is_searching_until_its_trials_end_then_refits(
    conditions: tuple[Manifest, ...], outcome: str, refit: bool
) -> None:
    run, create_refit = searching(observe_job(_finished(trials_job(), *conditions)), "iris-2")
    assert (run.name, run.job, run.number) == ("iris-2", "iris-2-trials", 2)
    assert (run.outcome, create_refit) == (outcome, refit)
    if outcome == FAILED:
        assert "DeadlineExceeded" in (run.failure or "")


def test_a_failed_search_job_is_observed_under_its_own_name() -> None:
    observed = observe_job(_finished(trials_job(), _condition("Complete")))
    assert (observed.name, observed.outcome) == ("iris-2-trials", SUCCEEDED)


SUMMARY = {
    "strategy": "random",
    "seed": 5,
    "trials": 16,
    "cvFolds": None,
    "objective": {"metric": "accuracy", "goal": "maximize"},
    "succeeded": 15,
    "failed": 1,
    "bestTrial": 7,
    "bestParams": {"max_depth": 4, "min_samples_leaf": 3},
    "bestMetric": {"name": "accuracy", "value": 0.97},
    "metricSpread": {"min": 0.81, "max": 0.97, "mean": 0.9},
    "trialResults": [
        {
            "index": 3,
            "params": {"max_depth": 8, "min_samples_leaf": 1},
            "outcome": "Failed",
            "message": "fitting failed",
        },
        {
            "index": 7,
            "params": {"max_depth": 4, "min_samples_leaf": 3},
            "outcome": "Succeeded",
            "metric": 0.97,
        },
    ],
}


def test_the_registered_version_records_the_search_in_its_lineage() -> None:
    manifest = body()
    result = trainer_result(
        "iris-2",
        search=SUMMARY,
        estimator={"class": "RandomForestClassifier", "params": SUMMARY["bestParams"]},
    )
    mv = build_model_version(trainingjob(manifest), "iris-2", result, 3, IMAGE)
    search = mv["spec"]["lineage"]["search"]
    assert search["strategy"] == "random"
    assert search["trials"] == 16
    assert search["bestParams"] == {"max_depth": 4, "min_samples_leaf": 3}
    assert search["metricSpread"] == {"min": 0.81, "max": 0.97, "mean": 0.9}
    assert "trialResults" not in search  # the full list stays in the run's result.json
    assert mv["spec"]["lineage"]["estimator"]["params"] == SUMMARY["bestParams"]
    parsed = ModelVersion.model_validate(mv)
    assert parsed.spec.lineage is not None
    assert parsed.spec.lineage.search is not None
    assert parsed.spec.lineage.search.best_trial == 7


def test_a_shortened_result_still_registers_the_best_trial() -> None:
    result = trainer_result("iris-2", search={**SUMMARY, "trialResults": {"truncated": True}})
    mv = build_model_version(trainingjob(body()), "iris-2", result, 3, IMAGE)
    assert mv["spec"]["lineage"]["search"]["bestTrial"] == 7
    status = search_status("iris-2", result["search"])
    assert status is not None
    assert status["trials"] == []
    assert status["bestParams"] == SUMMARY["bestParams"]


def test_status_search_has_the_best_trial_and_the_bounded_trials() -> None:
    status = search_status("iris-2", json.loads(json.dumps(SUMMARY)))
    assert status is not None
    parsed = TrainingJobStatus.model_validate({"search": status})
    assert parsed.search is not None
    assert parsed.search.best_metric is not None
    assert (parsed.search.best_metric.name, parsed.search.best_metric.value) == ("accuracy", 0.97)
    assert [(t.index, t.outcome) for t in parsed.search.trials] == [(3, "Failed"), (7, "Succeeded")]
    assert (parsed.search.total_trials, parsed.search.failed) == (16, 1)
    assert search_status("iris-2", None) is None
