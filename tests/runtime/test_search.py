"""Hyperparameter search in the trainer: a trial's parameters follow from its index
alone, bad search specs are refused naming the field, trials record their failures, and
the refit publishes the best trial's model with the search in its result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlplane_runtime.errors import UserError
from mlplane_runtime.termination import MAX_BYTES, compact
from mlplane_runtime.trainer.search import parse_search, trial_params
from mlplane_runtime.trainer.spec import parse_spec
from mlplane_runtime.trainer.train import RunIdentity
from mlplane_runtime.trainer.trials import collect_trials, refit, run_trial, trial_uri
from tests.runtime.conftest import BIN, write_categorical_csv

OBJECTIVE = {"metric": "accuracy"}


def _search(**fields: Any) -> dict[str, Any]:
    return {"objective": OBJECTIVE, **fields}


def test_grid_trials_walk_the_product_in_a_fixed_order() -> None:
    search = parse_search(
        _search(
            strategy="grid",
            parameters={"max_depth": {"values": [2, 4]}, "learning_rate": [0.1, 0.3, 1]},
        )
    )
    assert search is not None
    assert search.trials == 6
    points = [trial_params(search, i) for i in range(6)]
    assert points[0] == {"learning_rate": 0.1, "max_depth": 2}
    assert points[1] == {"learning_rate": 0.1, "max_depth": 4}
    assert {tuple(sorted(p.items())) for p in points} == {
        (("learning_rate", lr), ("max_depth", d)) for lr in (0.1, 0.3, 1) for d in (2, 4)
    }


def test_max_trials_cuts_a_grid_and_parallelism_never_exceeds_the_trials() -> None:
    search = parse_search(
        _search(strategy="grid", parameters={"a": [1, 2, 3]}, maxTrials=2, parallelism=8)
    )
    assert search is not None
    assert (search.trials, search.parallelism) == (2, 2)


def test_random_trials_are_deterministic_per_index_and_respect_their_ranges() -> None:
    raw = _search(
        strategy="random",
        seed=7,
        maxTrials=50,
        parameters={
            "learning_rate": {"min": 0.001, "max": 1, "scale": "log"},
            "max_depth": {"min": 2, "max": 8, "type": "int"},
            "n_estimators": {"min": 10, "max": 1000, "scale": "log", "type": "int"},
            "booster": ["gbtree", "dart"],
        },
    )
    search = parse_search(raw)
    assert search is not None
    first = [trial_params(search, i) for i in range(50)]
    again = parse_search(raw)
    assert again is not None
    assert [trial_params(again, i) for i in reversed(range(50))] == first[::-1]
    for point in first:
        assert 0.001 <= point["learning_rate"] <= 1
        assert isinstance(point["max_depth"], int)
        assert 2 <= point["max_depth"] <= 8
        assert isinstance(point["n_estimators"], int)
        assert 10 <= point["n_estimators"] <= 1000
        assert point["booster"] in ("gbtree", "dart")
    assert len({p["learning_rate"] for p in first}) > 40  # actually random
    assert min(p["learning_rate"] for p in first) < 0.01  # log scale reaches the low decades
    assert {p["max_depth"] for p in first} == set(range(2, 9))
    other_seed = parse_search({**raw, "seed": 8})
    assert other_seed is not None
    assert trial_params(other_seed, 0) != first[0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_search(parameters={}), "spec.search.parameters must map at least one"),
        (_search(parameters={"a": [1]}, maxTrials=0), "spec.search.maxTrials must be an integer"),
        (_search(parameters={"a": [1]}, maxTrials=101), "from 1 to 100"),
        (_search(parameters={"a": {"min": 2, "max": 1}}), r"parameters.a: min \(2\) must be less"),
        (
            _search(parameters={"a": {"min": 0, "max": 1, "scale": "log"}}),
            "a log scale needs min > 0",
        ),
        (_search(parameters={"a": {"min": 0.2, "max": 0.7, "type": "int"}}), "no integer lies"),
        (_search(parameters={"a": {"min": 0, "max": 1}}, strategy="grid"), "grid strategy needs"),
        (_search(parameters={"a": [1]}, strategy="bayes"), "strategy 'bayes' is unknown"),
        (_search(parameters={"a": [1]}, cvFolds=1), "spec.search.cvFolds must be an integer"),
        (_search(parameters={"a": [1]}, parallelism=0), "spec.search.parallelism"),
        ({"parameters": {"a": [1]}}, "spec.search.objective.metric is required"),
        (_search(parameters={"a": []}), "spec.search.parameters.a is an empty list"),
        (_search(parameters={"a": {"min": 0, "max": 1, "step": 2}}), r"unknown field\(s\)"),
    ],
)
def test_bad_search_specs_are_refused_naming_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_search(raw)


def _spec(data: Path, search: dict[str, Any], **estimator: Any) -> dict[str, Any]:
    return {
        "model": "churn",
        "dataset": {"uri": str(data), "target": "churned"},
        "estimator": {
            "class": "XGBClassifier",
            "categorical": {"columns": ["color", "size"]},
            **estimator,
        },
        "search": search,
    }


def test_the_refit_publishes_the_best_trial_with_the_search_in_its_result(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "churn.csv")
    search = _search(
        strategy="grid", cvFolds=3, parameters={"max_depth": [1, 3], "n_estimators": [2, 30]}
    )
    spec = parse_spec(_spec(data, search))
    identity = RunIdentity("churn", "r1", str(tmp_path / "out"))
    trials = [run_trial(spec, identity, i) for i in range(4)]
    assert all(t["outcome"] == "Succeeded" and len(t["folds"]) == 3 for t in trials)
    best = max(trials, key=lambda t: (t["metric"], -t["index"]))
    result = refit(spec, identity)
    summary = result["search"]
    assert summary["bestTrial"] == best["index"]
    assert summary["bestParams"] == best["params"]
    assert summary["bestMetric"] == {"name": "accuracy", "value": best["metric"]}
    assert summary["metricSpread"]["min"] == min(t["metric"] for t in trials)
    assert (summary["strategy"], summary["trials"], summary["succeeded"]) == ("grid", 4, 4)
    assert result["estimator"]["params"] == best["params"]  # lineage: what the model is
    manifest = json.loads((tmp_path / "out/churn/r1/manifest.json").read_text())
    assert manifest["search"]["bestParams"] == best["params"]
    assert run_trial(spec, identity, 0) == trials[0]  # a retried trial pod reports its result


@pytest.mark.parametrize(
    ("estimator", "parameter", "good", "refused"),
    [("XGBClassifier", "max_depth", 3, -5), ("LGBMClassifier", "num_leaves", 8, 1)],
)
def test_a_failed_trial_is_recorded_and_the_search_goes_on(
    tmp_path: Path, estimator: str, parameter: str, good: int, refused: int
) -> None:
    data = write_categorical_csv(tmp_path / "churn.csv")
    search = _search(strategy="grid", parameters={parameter: [good, refused]})
    raw = _spec(data, search, params={"n_estimators": 10})
    raw["estimator"]["class"] = estimator
    spec = parse_spec(raw)
    identity = RunIdentity("churn", "r1", str(tmp_path / "out"))
    outcomes = [run_trial(spec, identity, i) for i in range(2)]
    assert [t["outcome"] for t in outcomes] == ["Succeeded", "Failed"]
    assert f"fitting {estimator} failed" in outcomes[1]["message"]
    result = refit(spec, identity)
    assert result["search"]["bestParams"] == {parameter: good}
    assert (result["search"]["succeeded"], result["search"]["failed"]) == (1, 1)
    failed = [t for t in result["search"]["trialResults"] if t["outcome"] == "Failed"]
    assert failed
    assert failed[0]["index"] == 1


def test_all_trials_failing_fails_the_run_with_the_reasons(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "churn.csv")
    spec = parse_spec(_spec(data, _search(strategy="grid", parameters={"depth": [1, 2]})))
    identity = RunIdentity("churn", "r1", str(tmp_path / "out"))
    for index in range(2):
        assert "has no parameter(s) ['depth']" in run_trial(spec, identity, index)["message"]
    with pytest.raises(UserError, match=r"all 2 search trials failed: 2x .*\['depth'\]"):
        refit(spec, identity)
    assert not (tmp_path / "out/churn/r1").exists()


def test_a_trial_whose_pod_never_published_counts_as_failed(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "churn.csv")
    spec = parse_spec(_spec(data, _search(strategy="grid", parameters={"max_depth": [2, 3]})))
    identity = RunIdentity("churn", "r1", str(tmp_path / "out"))
    run_trial(spec, identity, 1)  # trial 0's pod died before it wrote anything
    trials = collect_trials(spec, identity)
    assert [t["outcome"] for t in trials] == ["Failed", "Succeeded"]
    assert "published no result" in trials[0]["message"]
    assert trial_uri(identity, 1).endswith("/churn/r1-search/trial-1")


def test_the_search_result_fits_the_termination_message(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "churn.csv", rows=120)
    search = _search(
        maxTrials=30,
        parameters={
            "learning_rate": {"min": 0.01, "max": 0.5, "scale": "log"},
            "max_depth": {"min": 1, "max": 4, "type": "int"},
            "n_estimators": [3, 5],
        },
    )
    spec = parse_spec(_spec(data, search))
    identity = RunIdentity("churn", "r1", str(tmp_path / "out"))
    for index in range(30):
        run_trial(spec, identity, index)
    result = refit(spec, identity)
    assert len(result["search"]["trialResults"]) == 20
    text = compact(json.loads(json.dumps(result)))
    assert len(text.encode()) <= MAX_BYTES
    kept = json.loads(text)
    assert kept["search"]["bestParams"] == result["search"]["bestParams"]
    assert kept["artifact"] == result["artifact"]


def test_the_cli_runs_the_trial_of_its_job_completion_index(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "churn.csv")
    spec = _spec(data, _search(strategy="grid", parameters={"max_depth": [2, 3]}))
    env = {
        "MLPLANE_TRAINING_SPEC": json.dumps(spec),
        "MLPLANE_RUN": "r9",
        "MLPLANE_OUTPUT_URI": str(tmp_path / "out"),
        "MLPLANE_TERMINATION_LOG": str(tmp_path / "term"),
        "JOB_COMPLETION_INDEX": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run([str(BIN / "mlplane-train"), "trial"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    trial = json.loads((tmp_path / "term").read_text())
    assert (trial["index"], trial["params"], trial["outcome"]) == (1, {"max_depth": 3}, "Succeeded")
    assert (tmp_path / "out/churn/r9-search/trial-1/result.json").exists()
