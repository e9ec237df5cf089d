"""The server over real HTTP: V2 and V1 answers match ONNX Runtime, tritonclient works
unchanged, every client mistake is a 4xx JSON error, and a tampered artifact is refused."""

from __future__ import annotations

import contextlib
import http.client as http_client
import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlplane_runtime.httpserver import Request
from mlplane_runtime.server import metrics
from mlplane_runtime.server.dataplane import DataPlane
from mlplane_runtime.server.model import OIP_TO_NUMPY, OnnxModel
from mlplane_runtime.server.rest import RestApp
from tests.runtime.conftest import (
    Process,
    TrainedModel,
    free_port,
    get_json,
    http,
    serve_args,
    start,
    stop,
)

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], np.float32)


def reference(model: TrainedModel, rows: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.model_path.read_bytes())
    return list(session.run(None, {"input": rows}))


def infer(url: str, document: Any, path: str = "/v2/models/iris/infer") -> tuple[int, Any]:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    status, raw, _ = http("POST", url + path, body, {"Content-Type": "application/json"})
    return status, json.loads(raw)


def v2_request(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ],
        **extra,
    }


def test_health_and_metadata_describe_the_onnx_model(server: Process) -> None:
    assert get_json(server.url + "/v2/health/live") == (200, {"live": True})
    assert get_json(server.url + "/v2/health/ready") == (200, {"ready": True})
    assert get_json(server.url + "/v2/models/iris/ready")[0] == 200
    assert get_json(server.url + "/v2")[1]["extensions"] == ["binary_tensor_data"]
    status, metadata = get_json(server.url + "/v2/models/iris")
    assert status == 200
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert get_json(server.url + "/v2/models/iris/versions/v1")[1]["versions"] == ["v1"]


def test_v2_infer_matches_onnx_runtime_and_echoes_the_id(
    server: Process, iris_model: TrainedModel
) -> None:
    labels, probabilities = reference(iris_model, ROWS)
    status, response = infer(server.url, v2_request(ROWS, id="req-42"))
    assert status == 200
    assert (response["id"], response["model_name"], response["model_version"]) == (
        "req-42",
        "iris",
        "v1",
    )
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["label"]["data"] == labels.tolist()
    assert by_name["probabilities"]["shape"] == [3, 3]
    np.testing.assert_allclose(by_name["probabilities"]["data"], probabilities.ravel(), rtol=1e-6)


def test_v2_output_selection_flat_data_and_version_path(server: Process) -> None:
    request = {
        "inputs": [
            {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS.ravel().tolist()}
        ],
        "outputs": [{"name": "probabilities"}],
        "parameters": {"x": 1},
    }
    status, response = infer(server.url, request, "/v2/models/iris/versions/v1/infer")
    assert status == 200
    assert [o["name"] for o in response["outputs"]] == ["probabilities"]


def test_v1_predict_matches_onnx_runtime(server: Process, iris_model: TrainedModel) -> None:
    status, response = infer(server.url, {"instances": ROWS.tolist()}, "/v1/models/iris:predict")
    assert status == 200
    assert response["predictions"] == reference(iris_model, ROWS)[0].tolist()
    assert get_json(server.url + "/v1/models/iris") == (200, {"name": "iris", "ready": True})


def test_regressor_outputs_predictions(
    regression_server: Process, diabetes_model: TrainedModel
) -> None:
    rows = np.random.default_rng(0).normal(0, 0.05, (5, 10)).astype(np.float32)
    expected = reference(diabetes_model, rows)[0].ravel()
    status, response = infer(regression_server.url, v2_request(rows), "/v2/models/diabetes/infer")
    assert status == 200
    assert response["outputs"][0]["name"] == "predictions"
    np.testing.assert_allclose(response["outputs"][0]["data"], expected, rtol=1e-6)
    status, response = infer(
        regression_server.url, {"instances": rows.tolist()}, "/v1/models/diabetes:predict"
    )
    np.testing.assert_allclose(response["predictions"], expected, rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_works_unchanged(
    server: Process, iris_model: TrainedModel, binary: bool
) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.get_model_metadata("iris")["platform"] == "onnxruntime_onnx"
    tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probabilities")
    ]
    result = client.infer("iris", [tensor], outputs=outputs, request_id="t1")
    labels, probabilities = reference(iris_model, ROWS)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    assert result.get_response()["id"] == "t1"
    default = client.infer("iris", [tensor])  # no outputs: binary_data_output for all
    np.testing.assert_array_equal(default.as_numpy("label"), labels)
    client.close()


def _input(**override: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    tensor.update(override)
    return {"inputs": [tensor]}


DEEP = (
    b'{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":'
    + b"[" * 2000
    + b"1"
    + b"]" * 2000
    + b"}]}"
)

MALFORMED: list[tuple[str, str, Any, int, str]] = [
    ("not-json", "/v2/models/iris/infer", b"{not json", 400, "not valid JSON"),
    ("empty-body", "/v2/models/iris/infer", b"", 400, "empty request body"),
    ("json-array", "/v2/models/iris/infer", [1, 2], 400, "must be a JSON object"),
    ("no-inputs", "/v2/models/iris/infer", {"id": "x"}, 400, "'inputs'"),
    ("missing-input", "/v2/models/iris/infer", _input(name="other"), 400, "missing input"),
    (
        "unknown-extra-input",
        "/v2/models/iris/infer",
        {"inputs": [*_input()["inputs"], {**_input()["inputs"][0], "name": "extra"}]},
        400,
        "unknown input",
    ),
    ("wrong-datatype", "/v2/models/iris/infer", _input(datatype="FP64"), 400, "does not match"),
    ("unknown-datatype", "/v2/models/iris/infer", _input(datatype="FLOAT"), 400, "not supported"),
    (
        "strings-as-data",
        "/v2/models/iris/infer",
        _input(data=["a", "b", "c", "d"]),
        400,
        "does not hold FP32",
    ),
    ("length-vs-shape", "/v2/models/iris/infer", _input(data=[1, 2, 3]), 400, "needs 4"),
    (
        "wrong-feature-count",
        "/v2/models/iris/infer",
        _input(shape=[1, 3], data=[1, 2, 3]),
        400,
        "does not match the model's [-1, 4]",
    ),
    ("absurd-shape", "/v2/models/iris/infer", _input(shape=[10**9, 10**9]), 400, "more than"),
    ("negative-shape", "/v2/models/iris/infer", _input(shape=[-1, 4]), 400, "non-negative"),
    (
        "empty-but-huge-shape",
        "/v2/models/iris/infer",
        _input(shape=[0, 2**40, 2**40], data=[]),
        400,
        "dimension above",
    ),
    (
        "ragged-data",
        "/v2/models/iris/infer",
        _input(shape=[2, 2], data=[[1, 2], [3]]),
        400,
        "rectangular",
    ),
    ("deep-nesting", "/v2/models/iris/infer", DEEP, 400, "JSON"),
    ("null-data", "/v2/models/iris/infer", _input(data=None), 400, "does not hold"),
    (
        "unknown-output",
        "/v2/models/iris/infer",
        {**_input(), "outputs": [{"name": "nope"}]},
        400,
        "unknown output",
    ),
    ("id-not-string", "/v2/models/iris/infer", {**_input(), "id": 5}, 400, "'id'"),
    ("empty-batch", "/v2/models/iris/infer", _input(shape=[0, 4], data=[]), 400, "no data"),
    ("unknown-model", "/v2/models/nope/infer", _input(), 404, "not found"),
    # the route and the model are resolved before the body is parsed, as KServe does
    ("unknown-model-malformed-body", "/v2/models/nope/infer", b"{not json", 404, "not found"),
    ("unknown-model-empty-body", "/v2/models/nope/infer", b"", 404, "not found"),
    (
        "unknown-version-malformed-body",
        "/v2/models/iris/versions/v9/infer",
        b"{not json",
        404,
        "not found",
    ),
    ("v1-unknown-model-malformed-body", "/v1/models/nope:predict", b"[1,", 404, "not found"),
    ("unknown-version", "/v2/models/iris/versions/v9/infer", _input(), 404, "not found"),
    ("unknown-route", "/v3/anything", _input(), 404, "no route"),
    ("v1-no-instances", "/v1/models/iris:predict", {"inputs": [[1, 2, 3, 4]]}, 400, "'instances'"),
    ("v1-wrong-width", "/v1/models/iris:predict", {"instances": [[1, 2]]}, 400, "does not match"),
    (
        "v1-strings",
        "/v1/models/iris:predict",
        {"instances": [["a", "b", "c", "d"]]},
        400,
        "must hold numbers",
    ),
    (
        "v1-unknown-model",
        "/v1/models/nope:predict",
        {"instances": [[1, 2, 3, 4]]},
        404,
        "not found",
    ),
    (
        "oversize-body",
        "/v2/models/iris/infer",
        b"[" + b"1," * 40000 + b"1]",
        413,
        "exceeds the limit",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_get_a_4xx_json_error(
    server: Process, path: str, body: Any, status: int, message: str
) -> None:
    got, response = infer(server.url, body, path)
    assert got == status
    assert message in response["error"]


def test_wrong_method_is_405_and_server_survives_garbage(server: Process) -> None:
    assert http("GET", server.url + "/v2/models/iris/infer")[0] == 405
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")
    assert get_json(server.url + "/v2/health/live")[0] == 200


def test_binary_extension_errors_are_4xx(server: Process) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    body = header + np.zeros(3, np.float32).tobytes()  # 12 bytes, not 16
    status, raw, _ = http(
        "POST",
        server.url + "/v2/models/iris/infer",
        body,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400
    assert "runs past the body" in json.loads(raw)["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["name", "shape", "datatype", "data", "inputs", "outputs", "id", "parameters", "x"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=json_values, path=st.sampled_from(["/v2/models/iris/infer", "/v1/models/iris:predict"])
)
def test_random_payloads_never_get_a_5xx(server: Process, payload: Any, path: str) -> None:
    body = json.dumps(payload, allow_nan=True).encode()
    status, raw, _ = http("POST", server.url + path, body)
    assert status < 500, raw
    if status >= 400:
        assert "error" in json.loads(raw)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=12),
    shape=st.lists(st.integers(0, 5), max_size=3),
)
def test_random_tensors_never_get_a_5xx(
    server: Process, data: list[float], shape: list[int]
) -> None:
    status, response = infer(server.url, _input(shape=shape, data=data))
    assert status in (200, 400), response


DIMENSIONS = st.sampled_from([0, 1, 2, 3, 4, 5, 2**24, 2**24 + 1, 2**31, 2**40, 2**63 - 1])
DATATYPES = st.sampled_from([*OIP_TO_NUMPY, "BYTES", "FLOAT", ""])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(DIMENSIONS, max_size=9),
    datatype=DATATYPES,
    data=st.lists(st.integers(-3, 300) | st.floats(width=32) | st.booleans(), max_size=24),
    binary_bytes=st.none() | st.integers(0, 96),
)
def test_hostile_shapes_and_datatypes_never_get_a_5xx(
    server: Process, shape: list[int], datatype: str, data: list[Any], binary_bytes: int | None
) -> None:
    """Zero, huge and mismatched dimensions, every datatype, JSON and binary data: a 4xx
    naming the problem, or a 200 when the tensor happens to fit the model."""
    tensor: dict[str, Any] = {"name": "input", "shape": shape, "datatype": datatype}
    headers = {"Content-Type": "application/json"}
    if binary_bytes is None:
        tensor["data"] = data
        body = json.dumps({"inputs": [tensor]}).encode()
    else:
        tensor["parameters"] = {"binary_data_size": binary_bytes}
        header = json.dumps({"inputs": [tensor]}).encode()
        body = header + bytes(range(binary_bytes))
        headers["Inference-Header-Content-Length"] = str(len(header))
    status, raw, _ = http("POST", server.url + "/v2/models/iris/infer", body, headers)
    assert status in (200, 400, 413), raw  # 413: more rows than --max-rows
    if status != 200:
        assert json.loads(raw)["error"]


def test_metrics_count_requests_rows_and_model_info(server: Process) -> None:
    infer(server.url, v2_request(ROWS))
    status, raw, _ = http("GET", server.url + "/metrics")
    text = raw.decode()
    assert status == 200
    assert 'mlplane_requests_total{code="200",protocol="v2"}' in text
    assert 'mlplane_requests_total{code="400",protocol="v2"}' in text
    assert "mlplane_request_duration_seconds_bucket" in text
    assert 'mlplane_model_info{model="iris",sha256="' in text
    rows = [line for line in text.splitlines() if line.startswith("mlplane_predicted_rows_total")]
    assert float(rows[0].split()[1]) >= 3


def test_tampered_artifact_is_never_ready_and_exits_4(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(iris_model.model_path.read_bytes().replace(b"input", b"inpuT"))
    port = free_port()
    args = serve_args(iris_model, port)
    args[args.index("--model-uri") + 1] = str(tampered)
    process = start(
        args, tmp_path / "log", None, port, env={"MLPLANE_TERMINATION_LOG": str(tmp_path / "term")}
    )
    seen_ready = False
    while process.proc.poll() is None:
        with contextlib.suppress(OSError):
            seen_ready |= http("GET", process.url + "/v2/health/ready")[0] == 200
        time.sleep(0.02)
    assert process.proc.returncode == 4
    assert not seen_ready
    assert "sha256 mismatch" in process.output()
    assert json.loads((tmp_path / "term").read_text())["reason"] == "IntegrityError"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--monitor-url", "ftp://monitor:21"], "monitor URL must be http://host:port"),
        (["--sample-rate", "1.5"], "0 <= --sample-rate <= 1"),
        (["--max-samples-per-second", "-1"], "--max-samples-per-second must be >= 0"),
    ],
)
def test_bad_sampling_flags_exit_2_naming_the_flag(
    iris_model: TrainedModel, tmp_path: Path, flags: list[str], message: str
) -> None:
    term = tmp_path / "term"
    process = start(
        serve_args(iris_model, free_port(), *flags),
        tmp_path / "log",
        None,
        0,
        env={"MLPLANE_TERMINATION_LOG": str(term)},
    )
    assert process.proc.wait(timeout=30) == 2
    assert message in json.loads(term.read_text())["error"]


def test_sigterm_finishes_the_request_in_flight(iris_model: TrainedModel, tmp_path: Path) -> None:
    port = free_port()
    process = start(
        serve_args(iris_model, port, "--drain-seconds=0.5"),
        tmp_path / "log",
        "/v2/health/ready",
        port,
    )
    body = json.dumps(v2_request(ROWS)).encode()
    head = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body[:10])  # a request in flight
        time.sleep(0.2)
        process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        sock.sendall(body[10:])
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in response
    assert process.proc.wait(timeout=30) == 0
    assert stop(process) == 0


def test_an_exception_in_the_model_is_a_500_that_the_metrics_count(
    iris_model: TrainedModel,
) -> None:
    """What a canary's analysis reads: a version that fails every request must show
    its failures in mlplane_requests_total, not only in its log."""

    class BrokenPlane(DataPlane):
        def infer(self, *_: Any) -> Any:
            raise RuntimeError("the model blew up")

    def errors() -> float:
        families = text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode())
        return sum(
            s.value
            for f in families
            for s in f.samples
            if s.name == "mlplane_requests_total" and s.labels == {"protocol": "v2", "code": "500"}
        )

    model = OnnxModel("iris", "1", f"file://{iris_model.model_path}", iris_model.sha256)
    model.load()
    app = RestApp(BrokenPlane(model))
    before = errors()
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    request = Request(
        "POST", "/v2/models/iris/infer", "", {}, json.dumps({"inputs": [tensor]}).encode()
    )
    response = app(request)
    assert response.status == 500
    assert json.loads(response.body) == {"error": "internal server error"}
    assert errors() == before + 1


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` HTTP/1.1 responses (content-length framed) from a socket, in order."""
    buffer, responses = b"", []
    sock.settimeout(10)
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end].decode("latin-1").lower()
            length = int(head.split("content-length: ")[1].split("\r\n")[0])
            if len(buffer) >= head_end + 4 + length:
                responses.append(
                    (int(head.split()[1]), buffer[head_end + 4 : head_end + 4 + length])
                )
                buffer = buffer[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(responses)} responses"
        buffer += chunk
    return responses


def test_pipelined_answers_keep_their_order_around_an_offloaded_batch(server: Process) -> None:
    """A batch past --offload-rows is predicted on a worker thread; the requests
    pipelined behind it on the same connection are answered after it, in order."""
    big = json.dumps(v2_request(np.tile(ROWS, (100, 1)), id="big")).encode()
    small = json.dumps(v2_request(ROWS[:1], id="small")).encode()
    head = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    pipelined = (
        head % len(big) + big + head % len(small) + small + b"GET /v2/health/live HTTP/1.1\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(pipelined)
        (s1, b1), (s2, b2), (s3, b3) = read_responses(sock, 3)
    assert (s1, s2, s3) == (200, 200, 200)
    assert json.loads(b1)["id"] == "big"
    assert len(json.loads(b1)["outputs"][0]["data"]) == 300
    assert json.loads(b2)["id"] == "small"
    assert json.loads(b3) == {"live": True}


class Load:
    """Clients in threads, each sending V2 requests in a loop on a keep-alive connection
    (http.client reconnects after a `Connection: close`); every outcome is kept."""

    def __init__(self, url: str, clients: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.body = json.dumps(v2_request(ROWS)).encode()
        # (when, "200" or the error, whether the response carried Connection: close)
        self.outcomes: list[tuple[float, str, bool]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        connection = http_client.HTTPConnection(*self.address, timeout=10)
        while not self._stop.is_set():
            closes = False
            try:
                connection.request("POST", "/v2/models/iris/infer", self.body)
                response = connection.getresponse()
                response.read()
                outcome = str(response.status)
                closes = response.getheader("connection", "") == "close"
            except (OSError, http_client.HTTPException) as exc:
                outcome = repr(exc)
                connection.close()
            self.outcomes.append((time.monotonic(), outcome, closes))

    def failures(self) -> list[str]:
        return [outcome for _, outcome, _ in self.outcomes if outcome != "200"]


def test_sigterm_under_load_loses_no_request(iris_model: TrainedModel, tmp_path: Path) -> None:
    """A rollout's SIGTERM: readiness is 503 at once, but the server keeps serving for
    --drain-seconds (the endpoints take a while to drop the pod), each response closing
    its connection; requests in flight and those sent meanwhile all succeed; then exit 0."""
    port, drain = free_port(), 2.0
    process = start(
        serve_args(iris_model, port, f"--drain-seconds={drain}", "--grace-seconds=5"),
        tmp_path / "log",
        "/v2/health/ready",
        port,
    )
    load = Load(process.url, clients=4)
    body = json.dumps(v2_request(ROWS)).encode()
    head = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    in_flight = socket.create_connection(("127.0.0.1", port))
    try:
        load.start()
        time.sleep(0.5)
        in_flight.sendall(head % len(body) + body[:10])  # a request half sent at SIGTERM
        signalled = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        while get_json(process.url + "/v2/health/ready")[0] != 503:
            assert time.monotonic() - signalled < 0.5, "readiness did not flip at once"
        flipped_at = time.monotonic()
        in_flight.sendall(body[10:])
        answer = read_responses(in_flight, 1)
        time.sleep(drain - 0.7)  # the endpoints stop routing before the drain ends
        load.stop()
        stopped = time.monotonic()
        during_drain = [closes for t, _, closes in load.outcomes if flipped_at + 0.1 < t < stopped]
        assert process.proc.wait(timeout=15) == 0
        exited = time.monotonic() - signalled
    finally:
        load.stop()
        in_flight.close()
        stop(process)
    print(
        f"{len(load.outcomes)} requests, {len(during_drain)} during the drain, "
        f"{len(load.failures())} lost; ready 503 after {(flipped_at - signalled) * 1000:.0f} ms, "
        f"exit 0 after {exited:.1f} s"
    )
    assert load.failures() == []
    assert answer == [(200, answer[0][1])]
    assert len(during_drain) > 20
    assert all(during_drain)  # each response of the drain closes its connection
    assert drain <= exited < drain + 5
