"""Search trials and the refit of the best one.

Trial i (`mlplane-train trial`, one pod of an Indexed Job) fits spec.estimator with the
i-th parameters of spec.search, scores them on the training rows only (k-fold with
cvFolds, else one validation split of them: the hold-out set stays unseen until the
refit), and publishes its result under ``<output>/<model>/<run>-search/trial-<i>/``. A
trial that fails for a reason retrying cannot fix records the failure and exits 0: one
bad corner of the space does not fail the search. The refit (`mlplane-train` with a
search spec) reads every trial's result, picks the best (ties: the lower index) and
trains it as a normal run, through the same parity gate and atomic publish.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from typing import Any

from sklearn.model_selection import KFold, StratifiedKFold

from mlplane_runtime.errors import UserError
from mlplane_runtime.storage import (
    AlreadyPublishedError,
    is_published,
    parse_uri,
    publish_directory,
    read_bytes,
)
from mlplane_runtime.trainer.estimators import build_estimator, check_params, estimator_class
from mlplane_runtime.trainer.evaluation import CLASSIFICATION_METRICS, REGRESSION_METRICS, evaluate
from mlplane_runtime.trainer.search import SearchSpec, trial_params
from mlplane_runtime.trainer.spec import TrainingSpec
from mlplane_runtime.trainer.train import (
    Prepared,
    RunIdentity,
    fit,
    prepare,
    published_result,
    scores,
    split,
    train,
)

TRIAL_FILE = "result.json"
SUCCEEDED, FAILED = "Succeeded", "Failed"
MAX_REPORTED_TRIALS = 20  # in the run's result (4 KiB termination message) and status
MAX_REPORTED_FAILURES = 5
MESSAGE_CHARS = 160


def trials_uri(identity: RunIdentity) -> str:
    return parse_uri(identity.output_uri).child(identity.model, f"{identity.run}-search").uri


def trial_uri(identity: RunIdentity, index: int) -> str:
    return f"{trials_uri(identity)}/trial-{index}"


def _search(spec: TrainingSpec) -> SearchSpec:
    if spec.search is None:
        raise UserError("a search trial needs spec.search")
    return spec.search


def _read_trial(location: str) -> dict[str, Any] | None:
    if not is_published(location, TRIAL_FILE):
        return None
    try:
        result = json.loads(read_bytes(f"{location}/{TRIAL_FILE}"))
    except (UserError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def check_objective(search: SearchSpec, classification: bool) -> None:
    allowed = CLASSIFICATION_METRICS if classification else REGRESSION_METRICS
    if search.objective.metric not in allowed:
        task = "classification" if classification else "regression"
        raise UserError(
            f"spec.search.objective.metric {search.objective.metric!r} is not a {task} "
            f"metric; allowed: {', '.join(allowed)}"
        )


def check_search(spec: TrainingSpec) -> None:
    """What every trial would fail on: a parameter the estimator does not have, or one
    set twice. Checked before any data is read."""
    search = _search(spec)
    cls = estimator_class(spec.estimator.class_name)
    check_params(cls, dict.fromkeys(search.parameters), "spec.search.parameters")
    both = sorted(set(search.parameters) & set(spec.estimator.params))
    if both:
        raise UserError(
            f"spec.search.parameters {both} are set in spec.estimator.params too; "
            "name each parameter in one place"
        )


def score_trial(spec: TrainingSpec, prepared: Prepared, params: dict[str, Any]) -> list[float]:
    """The objective on each validation fold of the training rows."""
    search = _search(spec)
    metric = search.objective.metric
    x, y = prepared.x_train, prepared.y_train
    seed = spec.validation.seed
    if search.cv_folds:
        splitter: Any = (
            StratifiedKFold(search.cv_folds, shuffle=True, random_state=seed)
            if prepared.classification
            else KFold(search.cv_folds, shuffle=True, random_state=seed)
        )
        try:
            folds = [(x[a], x[b], y[a], y[b]) for a, b in splitter.split(x, y)]
        except ValueError as exc:
            raise UserError(f"spec.search.cvFolds {search.cv_folds}: {exc}") from exc
    else:
        x_fit, x_val, y_fit, y_val = split(
            x, y, spec.validation.test_size, seed, prepared.classification
        )
        folds = [(x_fit, x_val, y_fit, y_val)]
    values = []
    for x_fit, x_val, y_fit, y_val in folds:
        estimator = build_estimator(spec.estimator, seed, prepared.data.feature_names, params)
        fit(estimator, x_fit, y_fit)
        value = evaluate((metric,), y_val, estimator.predict(x_val), scores(estimator, x_val))
        values.append(value[metric])
    return values


def run_trial(spec: TrainingSpec, identity: RunIdentity, index: int) -> dict[str, Any]:
    """Fit and score trial `index`, publish its result and return it. A trial published
    already (a retried pod) is not run again."""
    search = _search(spec)
    params = trial_params(search, index)
    location = trial_uri(identity, index)
    earlier = _read_trial(location)
    if earlier is not None:
        return earlier
    started = time.monotonic()
    result: dict[str, Any] = {"index": index, "params": params}
    try:
        check_search(spec)
        prepared = prepare(spec, identity.feedback_log_uri)
        check_objective(search, prepared.classification)
        folds = score_trial(spec, prepared, params)
        result.update(outcome=SUCCEEDED, metric=round(statistics.fmean(folds), 6))
        if len(folds) > 1:
            result["folds"] = folds
    except UserError as exc:  # this trial's parameters (or the spec) cannot work
        result.update(outcome=FAILED, message=str(exc)[:MESSAGE_CHARS])
    result["durationSeconds"] = round(time.monotonic() - started, 3)
    try:
        publish_directory(location, {TRIAL_FILE: json.dumps(result).encode()}, TRIAL_FILE)
    except AlreadyPublishedError:
        return _read_trial(location) or result
    return result


def collect_trials(spec: TrainingSpec, identity: RunIdentity) -> list[dict[str, Any]]:
    """Every trial's result, in index order; a trial that published none (its pod
    failed every attempt) is a failed trial."""
    search = _search(spec)
    trials = []
    for index in range(search.trials):
        found = _read_trial(trial_uri(identity, index))
        trials.append(
            found
            or {
                "index": index,
                "params": trial_params(search, index),
                "outcome": FAILED,
                "message": "the trial published no result: its pod failed (see the trial Job)",
            }
        )
    return trials


def summarize(search: SearchSpec, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The search in the run's result and the ModelVersion's lineage: the best trial,
    the spread of the metric, and a bounded list of trials (failures kept first)."""
    succeeded = [t for t in trials if t.get("outcome") == SUCCEEDED]
    if not succeeded:
        reasons = Counter(str(t.get("message", "no message")) for t in trials)
        text = "; ".join(f"{count}x {reason}" for reason, count in reasons.most_common(3))
        raise UserError(f"all {len(trials)} search trials failed: {text}")
    sign = 1 if search.objective.goal == "maximize" else -1
    ranked = sorted(succeeded, key=lambda t: (-sign * t["metric"], t["index"]))
    best = ranked[0]
    values = [t["metric"] for t in succeeded]
    failed = [t for t in trials if t.get("outcome") != SUCCEEDED]
    shown = failed[:MAX_REPORTED_FAILURES]
    shown += ranked[: MAX_REPORTED_TRIALS - len(shown)]
    return {
        **search.summary(),
        "succeeded": len(succeeded),
        "failed": len(failed),
        "bestTrial": best["index"],
        "bestParams": best["params"],
        "bestMetric": {"name": search.objective.metric, "value": best["metric"]},
        "metricSpread": {
            "min": min(values),
            "max": max(values),
            "mean": round(statistics.fmean(values), 6),
        },
        "trialResults": [
            {key: t[key] for key in ("index", "params", "outcome", "metric", "message") if key in t}
            for t in sorted(shown, key=lambda t: t["index"])
        ],
    }


def refit(spec: TrainingSpec, identity: RunIdentity) -> dict[str, Any]:
    """Train the best trial's parameters as the run, with the search in its result."""
    earlier = published_result(identity)
    if earlier is not None:
        return earlier
    search = _search(spec)
    summary = summarize(search, collect_trials(spec, identity))
    return train(spec, identity, overrides=summary["bestParams"], search=summary)
