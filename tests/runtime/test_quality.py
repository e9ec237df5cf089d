"""The quality loop's runtime half: request ids and the version header, the prediction
log written by the monitor (rolled, bounded, flushed on SIGTERM), feedback through any
server, and the evaluation that joins them per version."""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlplane_runtime.httpserver import RequestError
from mlplane_runtime.monitor.app import LOG_METRICS
from mlplane_runtime.monitor.predictionlog import PredictionLog
from mlplane_runtime.quality.evaluate import evaluate, join, label, score
from mlplane_runtime.quality.log import (
    Feedback,
    LoggedRows,
    read_feedback,
    read_predictions,
    write_feedback,
    write_predictions,
)
from mlplane_runtime.server.dataplane import MAX_ID_LENGTH, parse_feedback
from tests.runtime.conftest import (
    BIN,
    Process,
    TrainedModel,
    free_port,
    http,
    serve_args,
    start,
    stop,
)

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


def v2_body(rows: list[list[float]], request_id: str | None = None) -> bytes:
    document: dict[str, Any] = {
        "inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]
    }
    if request_id is not None:
        document["id"] = request_id
    return json.dumps(document).encode()


# --- request ids and the version header ---------------------------------------------


def test_every_answer_carries_an_id_and_the_serving_version(server: Process) -> None:
    url = server.url + "/v2/models/iris/infer"
    status, body, headers = http("POST", url, v2_body(IRIS_ROWS, "client-7"))
    assert status == 200
    assert json.loads(body)["id"] == "client-7"
    assert headers["mlplane-model-version"] == "v1"
    generated = {json.loads(http("POST", url, v2_body(IRIS_ROWS))[1])["id"] for _ in range(20)}
    assert len(generated) == 20
    assert all(generated)
    status, body, headers = http(
        "POST",
        server.url + "/v1/models/iris:predict",
        json.dumps({"instances": IRIS_ROWS, "id": "v1-client"}).encode(),
    )
    assert status == 200
    assert headers["mlplane-model-version"] == "v1"
    assert json.loads(body) == {"predictions": json.loads(body)["predictions"], "id": "v1-client"}
    status, body, _ = http(
        "POST",
        server.url + "/v1/models/iris:predict",
        json.dumps({"instances": IRIS_ROWS}).encode(),
    )
    assert status == 200
    assert json.loads(body)["id"]


def test_a_bad_request_id_is_a_400_naming_the_field(server: Process) -> None:
    for bad in ("", "x" * (MAX_ID_LENGTH + 1)):
        status, body, _ = http(
            "POST", server.url + "/v2/models/iris/infer", v2_body(IRIS_ROWS, bad)
        )
        assert status == 400
        assert "'id'" in json.loads(body)["error"]


# --- feedback validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "feedback must be a JSON object"),
        ({"truth": [1]}, "'id' is required"),
        ({"id": 3, "truth": [1]}, "'id'"),
        ({"id": "a"}, "'truth'"),
        ({"id": "a", "truth": []}, "'truth'"),
        ({"id": "a", "truth": [True]}, "'truth[0]'"),
        ({"id": "a", "truth": [1, None]}, "'truth[1]'"),
        ({"id": "a", "truth": [1], "label": 2}, "unknown field(s) ['label']"),
        ({"feedback": []}, "'feedback'"),
        ({"feedback": [{"id": "a", "truth": [1]}, {"id": "b"}]}, "'feedback[1].truth'"),
        ({"feedback": [{"id": "a", "truth": [1]}], "id": "x"}, "beside 'feedback'"),
    ],
)
def test_bad_feedback_names_the_field(document: Any, field: str) -> None:
    with pytest.raises(RequestError) as error:
        parse_feedback(document, max_rows=100)
    assert error.value.status == 400
    assert field in str(error.value)


def test_feedback_single_and_batch_forms_are_accepted() -> None:
    assert parse_feedback({"id": "a", "truth": [1, "setosa", 2.5]}, 100) == [
        {"id": "a", "truth": [1, "setosa", 2.5]}
    ]
    batch = {"feedback": [{"id": "a", "truth": [0]}, {"id": "b", "truth": [1]}]}
    assert [e["id"] for e in parse_feedback(batch, 100)] == ["a", "b"]


def test_feedback_on_a_server_without_a_prediction_log_is_a_404(server: Process) -> None:
    status, body, _ = http(
        "POST",
        server.url + "/v2/models/iris/feedback",
        json.dumps({"id": "a", "truth": [0]}).encode(),
    )
    assert status == 404
    assert "spec.monitoring.logging" in json.loads(body)["error"]


# --- the join and the metrics -------------------------------------------------------


def test_labels_compare_as_the_same_class_whatever_their_json_type() -> None:
    assert label(1) == label(1.0) == label("1") == label(np.int64(1).item()) == "1"
    assert label("setosa") == "setosa"
    assert label(2.5) == "2.5"
    assert label(True) == "true"


def test_join_pairs_rows_with_their_truth_per_version() -> None:
    ids = ["a", "a", "b", "c", "d"]
    rows = [0, 1, 0, 0, 0]
    versions = ["1", "1", "1", "2", "2"]
    predictions = ["0", "1", "2", "1", "1"]
    feedback = {"a": [0, 2], "b": [2.0], "c": ["1"], "d": [1, 1], "z": [0]}
    joined = join(ids, rows, versions, predictions, feedback, "accuracy")
    assert joined.versions["1"].truth == ["0", "2", "2"]
    assert joined.versions["1"].predicted == ["0", "1", "2"]
    assert joined.versions["2"].truth == ["1", "1"]  # d's truth has two values for one row:
    assert joined.versions["2"].logged == 2  # its row 0 is still labeled
    assert joined.unmatched == 1  # "z" answered nothing logged
    assert score("accuracy", joined.versions["1"].truth, joined.versions["1"].predicted) == (
        pytest.approx(2 / 3)
    )


def test_truth_shorter_than_the_request_or_not_numeric_is_unusable() -> None:
    joined = join(["a", "a"], [0, 1], ["1", "1"], ["1.5", "2.5"], {"a": [1.0]}, "rmse")
    assert (joined.versions["1"].truth, joined.unusable) == ([1.0], 1)
    joined = join(["a"], [0], ["1"], ["1.5"], {"a": ["tall"]}, "mae")
    assert (joined.versions["1"].truth, joined.unusable) == ([], 1)


def test_metrics_match_their_definitions() -> None:
    truth, predicted = [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 5.0, 4.0]
    assert score("rmse", truth, predicted) == pytest.approx(math.sqrt(4 / 4))
    assert score("mae", truth, predicted) == pytest.approx(0.5)
    assert score("r2", truth, predicted) == pytest.approx(1 - 4 / 5)
    assert score("accuracy", ["a", "b", "b", "a"], ["a", "b", "a", "a"]) == 0.75
    # f1 per class: a: p=2/3 r=1 -> 0.8; b: p=1 r=1/2 -> 2/3; macro: their mean
    assert score("f1_macro", ["a", "b", "b", "a"], ["a", "b", "a", "a"]) == pytest.approx(
        (0.8 + 2 / 3) / 2
    )
    assert score("accuracy", [], []) is None
    assert score("r2", [1.0], [1.0]) is None


# --- the log on storage -------------------------------------------------------------


def logged(ids: list[str], when: float, version: str, predictions: list[Any]) -> LoggedRows:
    rows = np.zeros((len(ids), 4), np.float32)
    return LoggedRows(rows, predictions, ids, [1] * len(ids), [when] * len(ids), version)


def test_evaluation_reads_only_the_window_and_scores_each_version(tmp_path: Path) -> None:
    root, now = str(tmp_path / "log"), time.time()
    write_predictions(root, [logged(["old"], now - 7200, "1", [0])], "pod-a", 1)
    write_predictions(root, [logged(["a", "b", "c", "d"], now - 60, "1", [0, 1, 2, 0])], "pod-a", 2)
    write_predictions(root, [logged(["e", "f"], now - 30, "2", [1, 1])], "pod-b", 1)
    write_feedback(root, Feedback(["a", "b", "c", "d", "old"], [[0], [1], [0], [1], [0]]), "p", now)
    write_feedback(root, Feedback(["e", "f"], [[1], [0]]), "pod-b", now - 10)
    write_feedback(root, Feedback(["f"], [[1]]), "pod-a", now - 5)  # a later answer wins
    result = evaluate(root, "accuracy", now - 3600, now + 1)
    by_version = {v["version"]: v for v in result["versions"]}
    assert by_version["1"]["value"] == pytest.approx(0.5)
    assert by_version["1"]["labeled"] == 4
    assert by_version["2"]["value"] == 1.0
    assert by_version["2"]["labeled"] == 2
    assert result["unmatched"] == 1  # "old" was predicted before the window


def test_prediction_log_rolls_by_size_and_never_holds_more_than_its_bound(
    tmp_path: Path,
) -> None:
    root = str(tmp_path / "log")
    log = PredictionLog(root, LOG_METRICS, roll_rows=10, roll_seconds=3600, max_rows=30, pod="p")
    now = time.time()
    accepted = [
        log.add(logged([f"r{i}-{j}" for j in range(10)], now, "1", [0] * 10)) for i in range(4)
    ]
    assert accepted == [True, True, True, False]  # the fourth batch would pass 30 rows
    assert log.buffered() == 30
    log.roll()
    assert log.buffered() == 0
    table = read_predictions(root, now - 1, now + 1)
    assert table.num_rows == 30
    assert len(set(table["id"].to_pylist())) == 30


# --- the processes: server, monitor, SIGTERM ---------------------------------------


def start_logging_pair(
    model: TrainedModel, tmp_path: Path, root: Path, *monitor_args: str
) -> tuple[Process, Process]:
    monitor_port, samples_port, port = free_port(), free_port(), free_port()
    monitor = start(
        [
            str(BIN / "mlplane-monitor"),
            f"--log-uri={root}",
            "--log-roll-seconds=3600",  # nothing rolls by time here: only SIGTERM writes
            "--host=127.0.0.1",
            f"--port={monitor_port}",
            f"--samples-port={samples_port}",
            *monitor_args,
        ],
        tmp_path / "monitor.log",
        "/healthz",
        monitor_port,
    )
    server = start(
        serve_args(
            model,
            port,
            f"--monitor-url=http://127.0.0.1:{samples_port}",
            "--sample-rate=0",
            "--log-sample-rate=1",
        ),
        tmp_path / "server.log",
        "/v2/health/ready",
        port,
    )
    return server, monitor


def test_sigterm_loses_no_logged_row_or_feedback(iris_model: TrainedModel, tmp_path: Path) -> None:
    root = tmp_path / "log"
    server, monitor = start_logging_pair(iris_model, tmp_path, root)
    try:
        ids = []
        for index in range(200):
            given = f"q{index}" if index % 2 else None
            body = http("POST", server.url + "/v2/models/iris/infer", v2_body(IRIS_ROWS, given))[1]
            ids.append(json.loads(body)["id"])
        truth = [0, 1, 2]
        one = {"id": ids[0], "truth": truth}
        assert (
            http("POST", server.url + "/v2/models/iris/feedback", json.dumps(one).encode())[0]
            == 200
        )
        batch = {"feedback": [{"id": i, "truth": [2, 2, 2]} for i in ids[1:100]]}
        status, body, _ = http(
            "POST", server.url + "/v2/models/iris/feedback", json.dumps(batch).encode()
        )
        assert (status, json.loads(body)) == (200, {"accepted": 99})
        status, body, _ = http(
            "POST", server.url + "/v2/models/iris/feedback", json.dumps({"id": "x"}).encode()
        )
        assert status == 400
        assert "'truth'" in json.loads(body)["error"]
    finally:
        monitor.proc.terminate()  # both containers of a pod get SIGTERM at once
        assert stop(server) == 0
        assert monitor.proc.wait(timeout=30) == 0
    now = time.time()
    table = read_predictions(str(root), now - 600, now)
    assert table.num_rows == 600  # 200 requests of 3 rows: all of them
    assert sorted(set(table["id"].to_pylist())) == sorted(ids)
    assert set(table["version"].to_pylist()) == {"v1"}
    feedback = read_feedback(str(root), now - 600, now)
    assert len(feedback) == 100
    assert feedback[ids[0]] == truth
    files = list((root / "predictions").rglob("*.parquet"))
    assert len(files) == 1  # one file, written at SIGTERM
    first = pq.read_table(io.BytesIO(files[0].read_bytes()))
    assert first.column_names == ["id", "row", "time", "version", "input", "prediction"]
    np.testing.assert_allclose(first["input"][0].as_py(), IRIS_ROWS[0], rtol=1e-6)
    result = evaluate(str(root), "accuracy", now - 600, now)
    (version,) = result["versions"]
    assert version["labeled"] == 300
    assert version["logged"] == 600
    # the model gets the three iris rows right (0, 1, 2): "2, 2, 2" is right once in three
    assert version["value"] == pytest.approx((3 + 99 * 1) / 300)


def test_feedback_larger_than_the_monitor_takes_is_a_413_naming_the_limit(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    server, monitor = start_logging_pair(
        iris_model, tmp_path, tmp_path / "log", "--max-body-bytes=65536"
    )
    try:
        batch = {"feedback": [{"id": f"request-{i:06d}", "truth": [1]} for i in range(3000)]}
        body = json.dumps(batch).encode()
        assert 65536 < len(body) < 8 * 1024 * 1024  # within the server's own limit
        status, answer, _ = http("POST", server.url + "/v2/models/iris/feedback", body)
        assert status == 413
        assert "exceeds the limit of 65536 bytes" in json.loads(answer)["error"]
        small = {"feedback": [{"id": "request-1", "truth": [1]}]}
        status, answer, _ = http(
            "POST", server.url + "/v2/models/iris/feedback", json.dumps(small).encode()
        )
        assert (status, json.loads(answer)) == (200, {"accepted": 1})
    finally:
        monitor.proc.terminate()
        assert stop(server) == 0
        assert monitor.proc.wait(timeout=30) == 0
