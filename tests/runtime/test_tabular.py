"""XGBoost and LightGBM estimators, and tabular data with categorical (string) columns:
they train, convert with onnxmltools, pass the same parity gate as scikit-learn, and the
model takes each column as a named input (strings as BYTES) so that rows go in as the
data has them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton

from mlplane_runtime.errors import UserError
from mlplane_runtime.trainer import data
from mlplane_runtime.trainer.estimators import ALLOWED, estimator_class
from mlplane_runtime.trainer.spec import parse_spec
from mlplane_runtime.trainer.train import RunIdentity, train
from tests.runtime.conftest import (
    Process,
    TrainedModel,
    categorical_feeds,
    free_port,
    get_json,
    http,
    serve_args,
    start,
    stop,
    train_model,
    write_categorical_csv,
)

BOOSTERS = ("XGBClassifier", "XGBRegressor", "LGBMClassifier", "LGBMRegressor")


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", BOOSTERS)
def test_each_booster_trains_converts_and_passes_parity(tmp_path: Path, name: str) -> None:
    classifier = name.endswith("Classifier")
    dataset = "breast_cancer" if classifier else "diabetes"
    model = train_model(
        tmp_path,
        "m",
        {"builtin": dataset},
        {"class": name, "params": {"n_estimators": 15, "max_depth": 3}},
    )
    metrics = json.loads((model.run_dir / "metrics.json").read_text())
    outputs = [o["name"] for o in model.result["signature"]["outputs"]]
    if classifier:
        assert model.result["metrics"]["accuracy"] > 0.85
        assert metrics["parity"]["labelMismatches"] == 0
        assert outputs == ["label", "probabilities"]
    else:
        assert model.result["metrics"]["r2"] > 0.2
        assert metrics["parity"]["maxAbsError"] < 1e-3
        assert outputs == ["predictions"]
    assert model.result["signature"]["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 30 if classifier else 10]}
    ]
    assert model.result["libraries"]["onnxmltools"]


@pytest.mark.parametrize("name", [*BOOSTERS, "xgboost.XGBClassifier", "lightgbm.LGBMRegressor"])
def test_booster_names_resolve_and_are_in_the_allowlist(name: str) -> None:
    assert estimator_class(name).__name__ == name.rsplit(".", 1)[-1]
    assert name.rsplit(".", 1)[-1] in ALLOWED


def test_an_unknown_booster_parameter_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"XGBClassifier has no parameter\(s\) \['depth'\].*max_depth"
    ):
        train_model(
            tmp_path, "m", {"builtin": "iris"}, {"class": "XGBClassifier", "params": {"depth": 3}}
        )


def test_categorical_csv_serves_named_inputs_that_match_the_pipeline(
    churn_model: TrainedModel, tmp_path: Path
) -> None:
    signature = churn_model.result["signature"]
    assert signature["inputs"] == [
        {"name": "age", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "color", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "income", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "size", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert churn_model.result["metrics"]["accuracy"] > 0.8  # the encoder carries the signal
    assert churn_model.result["estimator"]["categorical"] == {
        "encoder": "OneHotEncoder",
        "columns": ["color", "size"],
    }
    profile = json.loads((churn_model.run_dir / "profile.json").read_text())
    assert profile["featureOrder"] == ["age", "income"]  # drift bins for numeric columns
    rows = _rows(write_categorical_csv(tmp_path / "fresh.csv", rows=50, seed=9))
    rows.append({"age": "30", "color": "purple", "income": "40", "size": "S"})  # unseen
    session = ort.InferenceSession(churn_model.model_path.read_bytes())
    labels = session.run(["label"], categorical_feeds(rows))[0]
    truth = np.array([int(r["churned"]) for r in rows[:-1]])
    assert np.mean(labels[:-1] == truth) > 0.8
    assert labels[-1] in (0, 1)  # an unseen category is ignored (all-zero), not an error


@pytest.mark.parametrize(
    ("encoder", "name", "preprocessing"),
    [
        ("OrdinalEncoder", "LGBMClassifier", []),
        ("OneHotEncoder", "LogisticRegression", ["StandardScaler"]),
        ("OrdinalEncoder", "RandomForestClassifier", []),
    ],
)
def test_parquet_with_string_columns_trains_with_either_encoder(
    tmp_path: Path, encoder: str, name: str, preprocessing: list[str]
) -> None:
    rows = _rows(write_categorical_csv(tmp_path / "d.csv"))
    table = pa.table(
        {
            "age": [int(r["age"]) for r in rows],
            "color": [r["color"] for r in rows],
            "income": [float(r["income"]) for r in rows],
            "size": [r["size"] for r in rows],
            "churned": [int(r["churned"]) for r in rows],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    model = train_model(
        tmp_path / "out",
        "churn",
        {"uri": str(tmp_path / "d.parquet"), "format": "parquet", "target": "churned"},
        {
            "class": name,
            "preprocessing": preprocessing,
            "categorical": {"encoder": encoder, "columns": ["color", "size"]},
        },
    )
    assert [i["datatype"] for i in model.result["signature"]["inputs"]] == [
        "FP32", "BYTES", "FP32", "BYTES",
    ]  # fmt: skip
    assert model.result["metrics"]["accuracy"] > 0.7


def _spec(data: Path, estimator: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "m",
        "dataset": {"uri": str(data), "target": "churned"},
        "estimator": estimator,
    }


def test_a_string_column_not_named_categorical_fails_naming_the_field(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "d.csv")
    spec = parse_spec(_spec(data, {"class": "XGBClassifier"}))
    with pytest.raises(UserError, match=r"'color' is not numeric.*spec.estimator.categorical"):
        train(spec, RunIdentity("m", "r", str(tmp_path / "out")))


def test_a_categorical_column_that_is_not_a_feature_is_refused(tmp_path: Path) -> None:
    data = write_categorical_csv(tmp_path / "d.csv")
    estimator = {"class": "XGBClassifier", "categorical": {"columns": ["colour"]}}
    spec = parse_spec(_spec(data, estimator))
    with pytest.raises(UserError, match=r"categorical.columns \['colour'\] are not feature"):
        train(spec, RunIdentity("m", "r", str(tmp_path / "out")))


@pytest.mark.parametrize(
    ("categorical", "message"),
    [
        ({"encoder": "TargetEncoder", "columns": ["color"]}, "encoder 'TargetEncoder' is unknown"),
        ({"columns": []}, "must name at least one column"),
        ({"columns": ["color", "color"]}, "names a column twice"),
    ],
)
def test_bad_categorical_specs_are_refused(
    tmp_path: Path, categorical: dict[str, Any], message: str
) -> None:
    data = tmp_path / "d.csv"
    with pytest.raises(UserError, match=message):
        parse_spec(_spec(data, {"class": "XGBClassifier", "categorical": categorical}))


def test_categorical_with_a_builtin_dataset_is_refused() -> None:
    raw = {
        "model": "m",
        "dataset": {"builtin": "iris"},
        "estimator": {"class": "XGBClassifier", "categorical": {"columns": ["x"]}},
    }
    with pytest.raises(UserError, match="categorical needs a csv/parquet dataset"):
        parse_spec(raw)


def test_xgboost_classifier_with_string_labels_says_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    rows = _rows(write_categorical_csv(tmp_path / "src.csv"))
    with data.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "churned": "yes" if row["churned"] == "1" else "no"})
    estimator = {"class": "XGBClassifier", "categorical": {"columns": ["color", "size"]}}
    with pytest.raises(UserError, match=r"labels 0\.\.1.*use LGBMClassifier"):
        train(parse_spec(_spec(data, estimator)), RunIdentity("m", "r", str(tmp_path / "o")))


@pytest.fixture(scope="module")
def churn_server(churn_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "churn.log"
    process = start(serve_args(churn_model, port), log, "/v2/health/ready", port)
    yield process
    stop(process)


def _v2_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A V2 request with the rows as the csv has them: a [n, 1] tensor per column."""

    def column(name: str, datatype: str, cast: Any) -> dict[str, Any]:
        data = [cast(r[name]) for r in rows]
        return {"name": name, "datatype": datatype, "shape": [len(rows), 1], "data": data}

    return {
        "inputs": [
            column("age", "FP32", float),
            column("color", "BYTES", str),
            column("income", "FP32", float),
            column("size", "BYTES", str),
        ]
    }


def test_v2_string_inputs_get_the_local_predictions(
    churn_server: Process, churn_model: TrainedModel, tmp_path: Path
) -> None:
    rows = _rows(write_categorical_csv(tmp_path / "fresh.csv", rows=20, seed=3))
    status, metadata = get_json(churn_server.url + "/v2/models/churn")
    assert status == 200
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("age", "FP32"), ("color", "BYTES"), ("income", "FP32"), ("size", "BYTES"),
    ]  # fmt: skip
    body = json.dumps(_v2_columns(rows)).encode()
    status, raw, _ = http("POST", churn_server.url + "/v2/models/churn/infer", body)
    assert status == 200, raw
    outputs = {o["name"]: o for o in json.loads(raw)["outputs"]}
    session = ort.InferenceSession(churn_model.model_path.read_bytes())
    labels, probabilities = session.run(None, categorical_feeds(rows))
    assert outputs["label"]["data"] == labels.tolist()
    np.testing.assert_allclose(
        np.array(outputs["probabilities"]["data"]).reshape(-1, 2), probabilities, rtol=1e-6
    )


def test_tritonclient_sends_binary_bytes_tensors(
    churn_server: Process, churn_model: TrainedModel, tmp_path: Path
) -> None:
    rows = _rows(write_categorical_csv(tmp_path / "fresh.csv", rows=7, seed=4))
    feeds = categorical_feeds(rows)
    client = triton.InferenceServerClient(churn_server.url.removeprefix("http://"))
    tensors = []
    for name, array in feeds.items():
        tensor = triton.InferInput(
            name, list(array.shape), "BYTES" if array.dtype == object else "FP32"
        )
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    result = client.infer("churn", tensors)
    session = ort.InferenceSession(churn_model.model_path.read_bytes())
    np.testing.assert_array_equal(result.as_numpy("label"), session.run(["label"], feeds)[0])
    client.close()


def test_tritonclient_grpc_sends_bytes_tensors_too(
    churn_model: TrainedModel, tmp_path: Path
) -> None:
    rows = _rows(write_categorical_csv(tmp_path / "fresh.csv", rows=7, seed=5))
    feeds = categorical_feeds(rows)
    port, grpc_port = free_port(), free_port()
    server = start(
        serve_args(churn_model, port, f"--grpc-port={grpc_port}"),
        tmp_path / "server.log",
        "/v2/health/ready",
        port,
    )
    try:
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensors = []
        for name, array in feeds.items():
            datatype = "BYTES" if array.dtype == object else "FP32"
            tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = client.infer("churn", tensors)
        session = ort.InferenceSession(churn_model.model_path.read_bytes())
        np.testing.assert_array_equal(result.as_numpy("label"), session.run(["label"], feeds)[0])
        client.close()
    finally:
        assert stop(server) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"color": {"datatype": "FP32", "data": [1.0]}}, "does not match the model's BYTES"),
        ({"color": {"data": [3]}}, "does not hold BYTES values"),
        ({"color": {"data": ["red", "blue"]}}, "has 2 elements but shape"),
        ({"size": None}, "missing input 'size'"),
    ],
)
def test_bad_string_inputs_are_a_400_naming_the_input(
    churn_server: Process, change: dict[str, Any], message: str
) -> None:
    request = _v2_columns([{"age": 30, "color": "red", "income": 40.0, "size": "M"}])
    inputs = []
    for tensor in request["inputs"]:
        if tensor["name"] in change and change[tensor["name"]] is None:
            continue
        inputs.append({**tensor, **change.get(tensor["name"], {})})
    body = json.dumps({"inputs": inputs}).encode()
    status, raw, _ = http("POST", churn_server.url + "/v2/models/churn/infer", body)
    assert status == 400
    assert message in json.loads(raw)["error"]


def test_binary_bytes_that_overrun_their_size_are_a_400(churn_server: Process) -> None:
    header = {
        "inputs": [
            {"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [30.0]},
            {
                "name": "color",
                "datatype": "BYTES",
                "shape": [1, 1],
                "parameters": {"binary_data_size": 6},
            },
            {"name": "income", "datatype": "FP32", "shape": [1, 1], "data": [40.0]},
            {"name": "size", "datatype": "BYTES", "shape": [1, 1], "data": ["M"]},
        ]
    }
    text = json.dumps(header).encode()
    chunk = (200).to_bytes(4, "little") + b"re"  # claims 200 bytes, has 2
    status, raw, _ = http(
        "POST", churn_server.url + "/v2/models/churn/infer", text + chunk,
        {"Inference-Header-Content-Length": str(len(text))},
    )  # fmt: skip
    assert status == 400
    assert "runs past its data" in json.loads(raw)["error"]


@pytest.mark.parametrize(
    "text",
    [
        "age, color ,income,size,churned\n30, red,1.5,M,1\n41,blue , 2.25,XL,0\n",  # padded
        "age,color,income,size,churned\n30,10001,1.5,M,yes\n41,02134,2,XL,no\n",  # digits as text
        "age,color,income,size,churned\n\n30,red,1e3,M,1\n\n41,,-2,XL,0\n",  # blank lines, ""
    ],
)
def test_the_fast_csv_reader_reads_what_the_csv_module_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    path = tmp_path / "d.csv"
    header, body = text.split("\n", 1)
    path.write_text(header + "\n" + body * 6)  # at least 10 rows
    dataset = parse_spec(
        _spec(path, {"class": "LGBMClassifier", "categorical": {"columns": ["color", "size"]}})
    ).dataset
    fast = data.load_dataset(dataset, ("color", "size"))
    monkeypatch.setattr(data, "_read_csv_arrow", lambda *_: None)
    reference = data.load_dataset(dataset, ("color", "size"))
    assert fast.feature_names == reference.feature_names == ["age", "color", "income", "size"]
    assert fast.features.tolist() == reference.features.tolist()
    assert fast.target.tolist() == reference.target.tolist()
    assert fast.target.dtype == reference.target.dtype


def test_a_csv_the_fast_reader_cannot_take_gets_the_csv_modules_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n" + "1,2,0\n" * 12 + "1,2\n")
    spec = parse_spec({"model": "m", "dataset": {"uri": str(path), "target": "y"},
                       "estimator": {"class": "XGBClassifier"}})  # fmt: skip
    with pytest.raises(UserError, match="line 14 has 2 fields, header has 3"):
        data.load_dataset(spec.dataset)
