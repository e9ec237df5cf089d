"""The trainer: every builtin set and csv/parquet files train, convert and pass parity;
bad specs fail with exit code 2 and a message; artifacts are published atomically and
never replaced."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge

from mlplane_runtime.errors import UserError
from mlplane_runtime.storage import AlreadyPublishedError, publish_directory
from mlplane_runtime.trainer import train as training
from mlplane_runtime.trainer.convert import InputLayout, check_parity, to_onnx
from mlplane_runtime.trainer.estimators import ALLOWED
from mlplane_runtime.trainer.evaluation import evaluate
from mlplane_runtime.trainer.spec import parse_spec
from tests.runtime.conftest import BIN, TrainedModel, train_model

IRIS = InputLayout(("sepal length", "sepal width", "petal length", "petal width"))


@pytest.mark.parametrize(
    ("dataset", "estimator", "metric"),
    [
        ("iris", {"class": "RandomForestClassifier", "params": {"n_estimators": 10}}, "accuracy"),
        (
            "wine",
            {
                "class": "LogisticRegression",
                "params": {"max_iter": 1000},
                "preprocessing": ["StandardScaler"],
            },
            "accuracy",
        ),
        (
            "breast_cancer",
            {"class": "GradientBoostingClassifier", "params": {"n_estimators": 10}},
            "accuracy",
        ),
        ("diabetes", {"class": "RandomForestRegressor", "params": {"n_estimators": 10}}, "r2"),
        ("digits", {"class": "DecisionTreeClassifier", "params": {"max_depth": 8}}, "accuracy"),
    ],
)
def test_each_builtin_dataset_trains_converts_and_passes_parity(
    tmp_path: Path, dataset: str, estimator: dict[str, Any], metric: str
) -> None:
    model = train_model(tmp_path, dataset, {"builtin": dataset}, estimator)
    assert sorted(p.name for p in model.run_dir.iterdir()) == [
        "manifest.json",
        "metrics.json",
        "model.onnx",
        "profile.json",
        "result.json",
    ]
    assert model.result["metrics"][metric] > 0.1
    manifest = json.loads((model.run_dir / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["sha256"] == model.sha256
    signature = model.result["signature"]
    assert signature["inputs"][0]["name"] == "input"
    assert signature["inputs"][0]["datatype"] == "FP32"
    names = [o["name"] for o in signature["outputs"]]
    assert names == (["predictions"] if dataset == "diabetes" else ["label", "probabilities"])
    metrics = json.loads((model.run_dir / "metrics.json").read_text())
    assert metrics["parity"].get("labelMismatches", 0) == 0


def test_profile_has_bins_and_cdf_per_feature_and_prediction_distribution(
    iris_model: TrainedModel,
) -> None:
    profile = json.loads((iris_model.run_dir / "profile.json").read_text())
    assert len(profile["features"]) == 4
    feature = profile["features"][0]
    assert len(feature["proportions"]) == len(feature["binEdges"]) + 1
    assert abs(sum(feature["proportions"]) - 1) < 1e-3
    assert feature["cdf"][-1] == 1.0
    assert sorted(profile["prediction"]["labels"]) == [0, 1, 2]


def _write_iris_csv(path: Path, string_labels: bool) -> None:
    bunch = load_iris()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "d", "species"])
        for row, target in zip(bunch.data, bunch.target, strict=True):
            writer.writerow([*row, bunch.target_names[target] if string_labels else target])


def test_csv_with_string_labels_trains_and_onnx_returns_the_labels(tmp_path: Path) -> None:
    _write_iris_csv(tmp_path / "iris.csv", string_labels=True)
    model = train_model(
        tmp_path / "out",
        "iris-csv",
        {
            "uri": f"file://{tmp_path}/iris.csv",
            "format": "csv",
            "target": "species",
            "features": ["a", "b", "c", "d"],
        },
        {"class": "KNeighborsClassifier"},
    )
    assert model.result["dataset"]["sha256"]
    session = ort.InferenceSession(model.model_path.read_bytes())
    labels = session.run(["label"], {"input": np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)})[0]
    assert list(labels) == ["setosa"]


def test_parquet_file_on_a_pvc_path_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bunch = load_iris()
    claim = tmp_path / "pvc" / "data"
    claim.mkdir(parents=True)
    table = pa.table({**{f"f{i}": bunch.data[:, i] for i in range(4)}, "y": bunch.target})
    pq.write_table(table, claim / "iris.parquet")
    monkeypatch.setenv("MLPLANE_PVC_ROOT", str(tmp_path / "pvc"))
    model = train_model(
        tmp_path / "out",
        "iris-pq",
        {"uri": "pvc://data/iris.parquet", "format": "parquet", "target": "y"},
        {"class": "GaussianNB"},
        metrics=["accuracy", "roc_auc", "precision", "recall"],
    )
    assert set(model.result["metrics"]) == {"accuracy", "roc_auc", "precision", "recall"}


def run_cli(*args: str, env: dict[str, str], log: Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [str(BIN / "mlplane-train"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "MLPLANE_TERMINATION_LOG": str(log), **env},
        timeout=120,
    )
    return proc.returncode, json.loads(log.read_text()), proc.stderr


def test_cli_writes_the_compact_result_to_the_termination_log(tmp_path: Path) -> None:
    spec = {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {"class": "DecisionTreeClassifier"},
    }
    code, result, _ = run_cli(
        "--run",
        "r7",
        "--output",
        str(tmp_path / "store"),
        log=tmp_path / "term",
        env={"MLPLANE_TRAINING_SPEC": json.dumps(spec)},
    )
    assert code == 0
    assert len((tmp_path / "term").read_bytes()) <= 4096
    assert result["artifact"]["uri"] == f"{tmp_path}/store/iris/r7/model.onnx"
    assert result["baseline"]["uri"].endswith("/iris/r7/profile.json")
    assert result["estimator"]["class"] == "DecisionTreeClassifier"
    assert "onnxruntime" in result["libraries"]
    assert not [p for p in (tmp_path / "store" / "iris").iterdir() if p.name.startswith(".")]


def test_unknown_estimator_fails_with_exit_2_and_the_allowlist(tmp_path: Path) -> None:
    spec = {"model": "m", "dataset": {"builtin": "iris"}, "estimator": {"class": "XGBoost"}}
    code, result, stderr = run_cli(
        "--output",
        str(tmp_path),
        log=tmp_path / "term",
        env={"MLPLANE_TRAINING_SPEC": json.dumps(spec)},
    )
    assert code == 2
    assert result["reason"] == "UserError"
    assert "XGBoost" in result["error"]
    assert all(name in result["error"] for name in ALLOWED)
    assert "not supported" in stderr


def test_unreachable_storage_is_transient_exit_3(tmp_path: Path) -> None:
    spec = {
        "model": "m",
        "dataset": {"builtin": "iris"},
        "estimator": {"class": "DecisionTreeClassifier"},
    }
    code, result, _ = run_cli(
        "--output",
        "s3://bucket/models",
        log=tmp_path / "term",
        env={
            "MLPLANE_TRAINING_SPEC": json.dumps(spec),
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    assert (code, result["reason"]) == (3, "Transient")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"dataset": {"builtin": "iris"}, "estimator": {"class": "SVC"}}, "spec.model"),
        (
            {"model": "m", "dataset": {"builtin": "mnist"}, "estimator": {"class": "SVC"}},
            "spec.dataset.builtin",
        ),
        (
            {
                "model": "m",
                "dataset": {"builtin": "iris", "uri": "/x"},
                "estimator": {"class": "SVC"},
            },
            "exactly one",
        ),
        (
            {"model": "m", "dataset": {"uri": "/x.csv"}, "estimator": {"class": "SVC"}},
            "spec.dataset.target",
        ),
        (
            {
                "model": "m",
                "dataset": {"builtin": "iris"},
                "estimator": {"class": "SVC"},
                "validation": {"testSize": 1.5},
            },
            "testSize",
        ),
    ],
)
def test_bad_spec_names_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_spec(spec)


@pytest.mark.parametrize(
    ("estimator", "validation", "message"),
    [
        ({"class": "Ridge", "params": {"alphas": 1}}, {}, "has no parameter"),
        ({"class": "Ridge"}, {"metrics": ["accuracy"]}, "not available for regression"),
        ({"class": "SVC", "preprocessing": ["PCA"]}, {}, "preprocessing"),
        ({"class": "LogisticRegression", "params": {"C": -1}}, {}, "fitting"),
        ({"class": "LogisticRegression"}, {}, "fractional"),
    ],
)
def test_bad_estimator_settings_fail_as_user_errors(
    tmp_path: Path, estimator: dict[str, Any], validation: dict[str, Any], message: str
) -> None:
    dataset = "diabetes" if message == "fractional" else "iris"
    with pytest.raises(UserError, match=message):
        train_model(tmp_path, "m", {"builtin": dataset}, estimator, **validation)


def test_verify_accepts_the_artifact_and_refuses_a_tampered_one(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    signature = json.dumps(iris_model.result["signature"])
    code, result, _ = run_cli(
        "verify",
        "--artifact-uri",
        str(iris_model.model_path),
        "--sha256",
        iris_model.sha256,
        "--signature",
        signature,
        env={},
        log=tmp_path / "ok",
    )
    assert (code, result["verified"], result["sha256"]) == (0, True, iris_model.sha256)

    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(iris_model.model_path.read_bytes() + b"\0")
    code, result, _ = run_cli(
        "verify",
        "--artifact-uri",
        f"file://{tampered}",
        "--sha256",
        iris_model.sha256,
        env={},
        log=tmp_path / "bad",
    )
    assert code == 2
    assert "sha256 mismatch" in result["error"]

    wrong = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 5]}],
        "outputs": iris_model.result["signature"]["outputs"],
    }
    code, result, _ = run_cli(
        "verify",
        "--artifact-uri",
        str(iris_model.model_path),
        "--sha256",
        iris_model.sha256,
        "--signature",
        json.dumps(wrong),
        env={},
        log=tmp_path / "sig",
    )
    assert code == 2
    assert "declared shape [-1, 5]" in result["error"]


def _iris_rows() -> tuple[np.ndarray, np.ndarray]:
    data = load_iris()
    return data.data.astype(np.float32), data.target


def test_parity_check_refuses_an_onnx_model_that_disagrees_on_labels() -> None:
    x, y = _iris_rows()
    fitted = LogisticRegression(max_iter=500).fit(x, y)
    other = LogisticRegression(max_iter=500).fit(x, (y + 1) % 3)  # every label rotated
    assert check_parity(to_onnx(fitted, IRIS, True), fitted, x, IRIS, True)["labelMismatches"] == 0
    with pytest.raises(UserError, match=r"disagree on \d+ of 150 hold-out labels"):
        check_parity(to_onnx(other, IRIS, True), fitted, x, IRIS, True)


def test_parity_check_refuses_a_regressor_off_by_more_than_the_tolerance() -> None:
    x, y = _iris_rows()
    fitted = Ridge().fit(x, y.astype(float))
    scaled = Ridge().fit(x, y * 1.01)  # 1 % off: far beyond float32-versus-float64 noise
    assert check_parity(to_onnx(fitted, IRIS, False), fitted, x, IRIS, False)["maxAbsError"] < 1e-4
    with pytest.raises(UserError, match="differ by up to"):
        check_parity(to_onnx(scaled, IRIS, False), fitted, x, IRIS, False)


def test_a_parity_failure_fails_the_run_before_anything_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _iris_rows()
    wrong = to_onnx(LogisticRegression(max_iter=500).fit(x, (y + 1) % 3), IRIS, True)
    monkeypatch.setattr(training, "to_onnx", lambda *_: wrong)  # a converter bug, simulated
    spec = parse_spec(
        {
            "model": "iris",
            "dataset": {"builtin": "iris"},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 500}},
        }
    )
    with pytest.raises(UserError, match="parity check failed"):
        training.train(spec, training.RunIdentity("iris", "run-1", str(tmp_path)))
    assert list(tmp_path.rglob("*")) == []  # no artifact, not even a partial one


def _iris_spec(seed: int = 0) -> Any:
    return parse_spec(
        {
            "model": "iris",
            "dataset": {"builtin": "iris"},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 500}},
            "validation": {"seed": seed},
        }
    )


def test_a_retried_run_reports_what_its_first_attempt_published_and_replaces_nothing(
    tmp_path: Path,
) -> None:
    identity = training.RunIdentity("iris", "run-1", str(tmp_path))
    first = training.train(_iris_spec(), identity)
    model = tmp_path / "iris" / "run-1" / "model.onnx"
    before = (model.read_bytes(), model.stat().st_mtime_ns)
    # A second attempt of the same run (a pod retried after its predecessor published
    # and died before reporting) gets the published result, not a new model.
    again = training.train(_iris_spec(seed=7), identity)
    assert again == json.loads((tmp_path / "iris" / "run-1" / "result.json").read_text())
    assert again["artifact"] == first["artifact"]
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before


def test_publishing_over_published_artifacts_is_refused(tmp_path: Path) -> None:
    target = str(tmp_path / "iris" / "run-1")
    publish_directory(target, {"model.onnx": b"v1", "manifest.json": b"{}"}, "manifest.json")
    with pytest.raises(AlreadyPublishedError, match="refusing to replace"):
        publish_directory(target, {"model.onnx": b"v2", "manifest.json": b"{}"}, "manifest.json")
    assert (tmp_path / "iris" / "run-1" / "model.onnx").read_bytes() == b"v1"
    assert [p.name for p in (tmp_path / "iris").iterdir()] == ["run-1"]  # no staging left


def test_artifacts_of_another_run_under_the_same_id_are_never_replaced(tmp_path: Path) -> None:
    run_dir = tmp_path / "iris" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    (run_dir / "model.onnx").write_bytes(b"registered elsewhere")
    with pytest.raises(UserError, match="refusing to replace"):
        training.train(_iris_spec(), training.RunIdentity("iris", "run-1", str(tmp_path)))
    assert (run_dir / "model.onnx").read_bytes() == b"registered elsewhere"


def test_a_metric_that_is_not_a_number_fails_the_run_naming_the_metric_and_the_fix() -> None:
    with pytest.raises(UserError, match=r"metric 'r2' is nan .* 1 row\(s\).*testSize"):
        evaluate(("r2",), np.array([1.0]), np.array([2.0]), None)
