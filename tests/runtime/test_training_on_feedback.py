"""Retraining on new data: `mlplane-train` with spec.dataset.feedback adds the labeled
production rows (logged inputs joined with their feedback) to the training data,
publishes the snapshot it used and reports it in its result."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris

from mlplane_runtime.errors import UserError
from mlplane_runtime.quality.log import (
    Feedback,
    LoggedRows,
    read_labeled_rows,
    write_feedback,
    write_predictions,
)
from mlplane_runtime.trainer import train as training
from mlplane_runtime.trainer.spec import parse_spec
from tests.runtime.test_trainer import run_cli

IRIS = load_iris()
NEW_WORLD = (IRIS.target + 1) % 3  # the truth production reports: every class moved on


def log_rows(
    root: str, rows: np.ndarray, ids: list[str], when: float, pod: str = "pod-a", seq: int = 1
) -> None:
    batch = LoggedRows(
        rows.astype(np.float32), [0] * len(ids), ids, [1] * len(ids), [when] * len(ids), "1"
    )
    write_predictions(root, [batch], pod, seq)


def log_the_new_world(root: str, now: float, copies: int = 3) -> list[str]:
    """Every iris row predicted `copies` times, each answered with its new class."""
    ids = [f"r{c}-{i}" for c in range(copies) for i in range(len(IRIS.data))]
    log_rows(root, np.tile(IRIS.data, (copies, 1)), ids, now - 120)
    truths = [[int(NEW_WORLD[i])] for _ in range(copies) for i in range(len(IRIS.data))]
    write_feedback(root, Feedback(ids, truths), "pod-a", now - 60)
    return ids


def iris_spec(window: int = 3600, **dataset: Any) -> dict[str, Any]:
    return {
        "model": "iris",
        "dataset": {
            "builtin": "iris",
            "feedback": {"inferenceService": "iris", "windowSeconds": window},
            **dataset,
        },
        # A forest: production contradicts the dataset on every row, three to one, and the
        # new classes are not a linear function of the features.
        "estimator": {"class": "RandomForestClassifier", "params": {"n_estimators": 20}},
    }


def test_a_run_learns_from_the_labeled_production_rows_and_publishes_them(
    tmp_path: Path,
) -> None:
    root = str(tmp_path / "log" / "ml" / "iris")
    now = time.time()
    log_the_new_world(root, now)
    log_rows(root, IRIS.data[:5], [f"unlabeled-{i}" for i in range(5)], now - 30, seq=2)
    store = tmp_path / "store"
    code, result, stderr = run_cli(
        "--run",
        "r2",
        "--output",
        str(store),
        log=tmp_path / "term",
        env={"MLPLANE_TRAINING_SPEC": json.dumps(iris_spec()), "MLPLANE_FEEDBACK_LOG_URI": root},
    )
    assert code == 0, stderr
    assert len((tmp_path / "term").read_bytes()) <= 4096
    snapshot = store / "iris" / "r2" / "feedback.parquet"
    feedback = result["feedback"]
    assert feedback["inferenceService"] == "iris"
    assert feedback["uri"] == str(snapshot)
    assert feedback["sha256"] == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    assert (feedback["rows"], feedback["unusable"]) == (450, 0)
    manifest = json.loads((store / "iris" / "r2" / "manifest.json").read_text())
    assert manifest["files"]["feedback.parquet"]["sha256"] == feedback["sha256"]
    table = pq.read_table(snapshot)
    assert table.column_names == [*IRIS.feature_names, "target"]
    assert table.num_rows == 450
    assert table["target"].to_pylist() == [int(t) for t in np.tile(NEW_WORLD, 3)]
    rows = json.loads((store / "iris" / "r2" / "metrics.json").read_text())["rows"]
    assert rows["train"] + rows["test"] == 150 + 450
    # Three labeled production rows for each original one: the model follows production.
    session = ort.InferenceSession(str(store / "iris" / "r2" / "model.onnx"))
    labels = session.run(["label"], {"input": IRIS.data.astype(np.float32)})[0]
    assert float(np.mean(labels == NEW_WORLD)) > 0.9


def test_only_rows_of_the_window_with_a_truth_for_them_are_used(tmp_path: Path) -> None:
    root, now = str(tmp_path / "log"), time.time()
    log_rows(root, IRIS.data[:2], ["old-0", "old-1"], now - 7200, seq=1)
    log_rows(root, IRIS.data[:4], ["a", "b", "c", "d"], now - 100, seq=2)
    log_rows(root, IRIS.data[:2, :3], ["narrow-0", "narrow-1"], now - 100, "pod-b", 1)
    write_feedback(root, Feedback(["old-0", "old-1"], [[1], [1]]), "p", now - 50)
    write_feedback(root, Feedback(["a", "b", "c"], [[2], [], [1]]), "p", now - 50)
    write_feedback(root, Feedback(["narrow-0", "narrow-1"], [[0], [0]]), "p", now - 40)
    write_feedback(root, Feedback(["c"], [[2]]), "p", now - 20)  # a later answer wins
    labeled = read_labeled_rows(root, now - 3600, now, width=4)
    assert labeled.truths == [2, 2]  # a (row 0) and c, the later answer
    np.testing.assert_array_equal(labeled.inputs, IRIS.data[[0, 2]].astype(np.float32))
    # b has no true value for its row; narrow-* are another model's rows.
    assert labeled.unusable == 3


def test_truths_the_target_cannot_hold_are_counted_not_guessed(tmp_path: Path) -> None:
    root, now = str(tmp_path / "log"), time.time()
    ids = ["ok", "text", "fraction", "numeric-text"]
    log_rows(root, IRIS.data[:4], ids, now - 100)
    write_feedback(root, Feedback(ids, [[1], ["setosa"], [1.5], ["2"]]), "p", now - 50)
    result = training.train(
        parse_spec(iris_spec()),
        training.RunIdentity("iris", "r1", str(tmp_path / "store"), feedback_log_uri=root),
    )
    assert (result["feedback"]["rows"], result["feedback"]["unusable"]) == (2, 2)
    snapshot = pq.read_table(io.BytesIO((tmp_path / "store/iris/r1/feedback.parquet").read_bytes()))
    assert snapshot["target"].to_pylist() == [1, 2]


def test_a_regressor_takes_numeric_truths_as_values(tmp_path: Path) -> None:
    root, now = str(tmp_path / "log"), time.time()
    data = IRIS.data[:3]
    log_rows(root, data, ["x", "y", "z"], now - 100)
    write_feedback(root, Feedback(["x", "y", "z"], [[0.25], ["n/a"], [3]]), "p", now - 50)
    labeled = read_labeled_rows(root, now - 3600, now, width=4)
    assert labeled.truths == [0.25, "n/a", 3]
    spec = iris_spec()
    spec["estimator"] = {"class": "Ridge"}
    result = training.train(
        parse_spec(spec),
        training.RunIdentity("iris", "r1", str(tmp_path / "store"), feedback_log_uri=root),
    )
    assert (result["feedback"]["rows"], result["feedback"]["unusable"]) == (2, 1)
    snapshot = pq.read_table(tmp_path / "store/iris/r1/feedback.parquet")
    assert snapshot["target"].to_pylist() == [0.25, 3.0]


def test_no_production_rows_yet_trains_on_the_dataset_and_says_zero(tmp_path: Path) -> None:
    result = training.train(
        parse_spec(iris_spec()),
        training.RunIdentity("iris", "r1", str(tmp_path / "store"), str(tmp_path / "empty")),
    )
    assert (result["feedback"]["rows"], result["feedback"]["unusable"]) == (0, 0)
    assert pq.read_table(tmp_path / "store/iris/r1/feedback.parquet").num_rows == 0


def test_feedback_without_the_log_location_is_a_user_error_naming_the_flag(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError, match="--feedback-log-uri or set MLPLANE_FEEDBACK_LOG_URI"):
        training.train(parse_spec(iris_spec()), training.RunIdentity("iris", "r1", str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("feedback", "message"),
    [
        ({"windowSeconds": 60}, "spec.dataset.feedback.inferenceService is required"),
        ({"inferenceService": "iris", "windowSeconds": 0}, "windowSeconds must be a positive"),
        ("iris", "spec.dataset.feedback must be an object"),
    ],
)
def test_a_bad_feedback_spec_names_the_field(feedback: Any, message: str) -> None:
    spec = iris_spec()
    spec["dataset"]["feedback"] = feedback
    with pytest.raises(UserError, match=message):
        parse_spec(spec)
