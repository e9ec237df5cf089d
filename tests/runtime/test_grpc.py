"""The server over real gRPC: tritonclient.grpc works unchanged, each mistake is the gRPC
status of its REST answer with the same message, and the metrics count gRPC requests
where canary analysis reads them."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from mlplane_operator.policies.rollout import parse_traffic
from mlplane_runtime.server import metrics
from mlplane_runtime.server.dataplane import DataPlane
from mlplane_runtime.server.grpc_server import GrpcApp, GrpcServer
from mlplane_runtime.server.model import OnnxModel
from mlplane_runtime.server.oip import grpc_predict_v2_pb2
from tests.runtime.conftest import (
    Process,
    TrainedModel,
    free_port,
    http,
    serve_args,
    start,
    stop,
)
from tests.runtime.test_server import ROWS, reference

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
PROTO = "mlplane_runtime/server/oip/grpc_predict_v2.proto"
MAX_ROWS = 50
MAX_BODY = 65536


class GrpcProcess:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.target = f"127.0.0.1:{port}"

    def stub(self) -> service_pb2_grpc.GRPCInferenceServiceStub:
        return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(self.target))


def start_grpc(model: TrainedModel, log: Path, *extra: str) -> GrpcProcess:
    port, grpc_port = free_port(), free_port()
    args = serve_args(model, port, f"--grpc-port={grpc_port}", *extra)
    return GrpcProcess(start(args, log, "/v2/health/ready", port), grpc_port)


@pytest.fixture(scope="module")
def served(iris_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log = tmp_path_factory.mktemp("logs") / "grpc.log"
    server = start_grpc(iris_model, log, f"--max-rows={MAX_ROWS}", f"--max-body-bytes={MAX_BODY}")
    yield server
    stop(server.process)


def test_tritonclient_grpc_round_trip(served: GrpcProcess, iris_model: TrainedModel) -> None:
    client = triton.InferenceServerClient(served.target)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "v1")
    assert client.get_server_metadata().name == "mlplane"
    metadata = client.get_model_metadata("iris", as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["versions"] == ["v1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    result = client.infer("iris", [tensor], request_id="g1")
    labels, probabilities = reference(iris_model, ROWS)
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("g1", "iris", "v1")
    only = client.infer(
        "iris", [tensor], model_version="v1", outputs=[triton.InferRequestedOutput("label")]
    )
    assert [o.name for o in only.get_response().outputs] == ["label"]
    np.testing.assert_array_equal(only.as_numpy("label"), labels)
    client.close()


def test_typed_contents_are_accepted_as_well_as_raw(
    served: GrpcProcess, iris_model: TrainedModel
) -> None:
    request = infer_request()
    del request.raw_input_contents[:]
    request.inputs[0].contents.fp32_contents.extend(ROWS.ravel().tolist())
    response = served.stub().ModelInfer(request)
    labels = np.frombuffer(response.raw_output_contents[0], np.int64)
    np.testing.assert_array_equal(labels, reference(iris_model, ROWS)[0])


def test_a_large_request_is_answered_off_the_event_loop(
    served: GrpcProcess, iris_model: TrainedModel
) -> None:
    """Rows past --offload-rows run on the worker thread, with the same answer."""
    rows = np.tile(ROWS, (16, 1))[:MAX_ROWS]
    response = served.stub().ModelInfer(infer_request(rows))
    labels = np.frombuffer(response.raw_output_contents[0], np.int64)
    np.testing.assert_array_equal(labels, reference(iris_model, rows)[0])


def infer_request(rows: np.ndarray = ROWS, datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype=datatype, shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(datatype.replace("FP", "float")).tobytes())
    return request


def rest_body(rows: np.ndarray = ROWS, **tensor: Any) -> dict[str, Any]:
    entry = {"name": "input", "datatype": "FP32", "shape": list(rows.shape)}
    entry["data"] = rows.ravel().tolist()
    entry.update(tensor)
    return {"inputs": [entry]}


def _with(change: Callable[[pb.ModelInferRequest], object]) -> pb.ModelInferRequest:
    request = infer_request()
    change(request)
    return request


def _set_input(**fields: Any) -> Callable[[pb.ModelInferRequest], None]:
    def change(request: pb.ModelInferRequest) -> None:
        tensor = request.inputs[0]
        for name, value in fields.items():
            if name == "shape":
                del tensor.shape[:]
                tensor.shape.extend(value)
            else:
                setattr(tensor, name, value)

    return change


def _duplicate_input(request: pb.ModelInferRequest) -> None:
    request.inputs.add().CopyFrom(request.inputs[0])
    request.raw_input_contents.append(request.raw_input_contents[0])


def _unknown_output(request: pb.ModelInferRequest) -> None:
    request.outputs.add(name="nope")


TOO_MANY = np.zeros((MAX_ROWS + 1, 4), np.float32)
EMPTY = np.zeros((0, 4), np.float32)

# (case, gRPC request, REST path and body for the same mistake, gRPC code, HTTP status)
SHARED_MISTAKES = [
    (
        "unknown model",
        _with(lambda r: setattr(r, "model_name", "x")),
        ("/v2/models/x/infer", rest_body()),
        grpc.StatusCode.NOT_FOUND,
        404,
    ),
    (
        "unknown version",
        _with(lambda r: setattr(r, "model_version", "v9")),
        ("/v2/models/iris/versions/v9/infer", rest_body()),
        grpc.StatusCode.NOT_FOUND,
        404,
    ),
    (
        "wrong shape",
        _with(_set_input(shape=[4, 3])),
        ("/v2/models/iris/infer", rest_body(shape=[4, 3])),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "datatype not the model's",
        infer_request(datatype="FP64"),
        ("/v2/models/iris/infer", rest_body(datatype="FP64")),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "unsupported datatype",
        _with(_set_input(datatype="FP8")),
        ("/v2/models/iris/infer", rest_body(datatype="FP8")),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "missing input",
        _with(_set_input(name="features")),
        ("/v2/models/iris/infer", rest_body(name="features")),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "duplicate input",
        _with(_duplicate_input),
        ("/v2/models/iris/infer", {"inputs": rest_body()["inputs"] * 2}),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "unknown output",
        _with(_unknown_output),
        ("/v2/models/iris/infer", {**rest_body(), "outputs": [{"name": "nope"}]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "no inputs",
        pb.ModelInferRequest(model_name="iris"),
        ("/v2/models/iris/infer", {"inputs": []}),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "no data",
        infer_request(EMPTY),
        ("/v2/models/iris/infer", rest_body(EMPTY)),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "shape past the element limit",
        _with(_set_input(shape=[1 << 13, 1 << 12])),
        ("/v2/models/iris/infer", rest_body(shape=[1 << 13, 1 << 12])),
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
    ),
    (
        "more rows than --max-rows",
        infer_request(TOO_MANY),
        ("/v2/models/iris/infer", rest_body(TOO_MANY)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        413,
    ),
]


@pytest.mark.parametrize(
    ("request_", "rest", "code", "status"),
    [case[1:] for case in SHARED_MISTAKES],
    ids=[case[0] for case in SHARED_MISTAKES],
)
def test_each_mistake_is_the_status_and_message_of_its_rest_answer(
    served: GrpcProcess,
    request_: pb.ModelInferRequest,
    rest: tuple[str, dict[str, Any]],
    code: grpc.StatusCode,
    status: int,
) -> None:
    path, document = rest
    rest_status, body, _ = http(
        "POST", served.process.url + path, json.dumps(document).encode(), {}
    )
    assert rest_status == status
    with pytest.raises(grpc.RpcError) as caught:
        served.stub().ModelInfer(request_)
    assert caught.value.code() == code
    assert caught.value.details() == json.loads(body)["error"]


def _contents_and_raw(request: pb.ModelInferRequest) -> None:
    request.inputs[0].contents.fp32_contents.extend([1.0] * 12)


def _two_raw_entries(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents.append(b"")


def _short_raw(request: pb.ModelInferRequest) -> None:
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]


def _typed(datatype: str, field: str, values: list[Any], shape: list[int]) -> Any:
    def change(request: pb.ModelInferRequest) -> None:
        del request.raw_input_contents[:]
        _set_input(datatype=datatype, shape=shape)(request)
        getattr(request.inputs[0].contents, field).extend(values)

    return change


GRPC_MISTAKES = [
    ("contents and raw", _contents_and_raw, "contents and raw_input_contents are exclusive"),
    ("raw entries per input", _two_raw_entries, "raw_input_contents has 2 entries for 1 inputs"),
    ("raw size", _short_raw, "binary data has 44 bytes, shape [3, 4] of FP32 needs 48"),
    (
        "contents count",
        _typed("FP32", "fp32_contents", [1.0] * 5, [3, 4]),
        "contents.fp32_contents has 5 elements but shape [3, 4] needs 12",
    ),
    (
        "FP16 as contents",
        _typed("FP16", "fp32_contents", [1.0] * 4, [1, 4]),
        "FP16 data must be sent as raw_input_contents",
    ),
    (
        "value out of range",
        _typed("INT8", "int_contents", [300, 1, 2, 3], [1, 4]),
        "a value does not fit INT8",
    ),
    ("unnamed input", _set_input(name=""), "inputs[0].name must be a non-empty string"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [case[1:] for case in GRPC_MISTAKES],
    ids=[case[0] for case in GRPC_MISTAKES],
)
def test_malformed_grpc_tensors_are_invalid_argument_naming_the_problem(
    served: GrpcProcess, change: Callable[[pb.ModelInferRequest], None], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        served.stub().ModelInfer(_with(change))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


def test_unknown_model_in_metadata_and_ready_rpcs_is_not_found(served: GrpcProcess) -> None:
    stub = served.stub()
    for call, request in (
        (stub.ModelMetadata, pb.ModelMetadataRequest(name="x")),
        (stub.ModelReady, pb.ModelReadyRequest(name="x")),
        (stub.ModelReady, pb.ModelReadyRequest(name="iris", version="v9")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "not found" in caught.value.details()


def test_a_message_over_the_body_limit_is_resource_exhausted(served: GrpcProcess) -> None:
    rows = np.zeros((MAX_ROWS, MAX_BODY // (MAX_ROWS * 4) + 1), np.float32)
    with pytest.raises(grpc.RpcError) as caught:
        served.stub().ModelInfer(infer_request(rows))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_rpc_the_server_does_not_serve_is_unimplemented(served: GrpcProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        served.stub().RepositoryIndex(pb.RepositoryIndexRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_requests_count_in_the_traffic_canary_analysis_reads(served: GrpcProcess) -> None:
    def traffic() -> Any:
        return parse_traffic(http("GET", served.process.url + "/metrics")[1].decode())

    before = traffic()
    stub = served.stub()
    for _ in range(5):
        stub.ModelInfer(infer_request())
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_with(_set_input(shape=[4, 3])))
    stub.ServerReady(pb.ServerReadyRequest())  # health: not inference traffic
    after = traffic()
    assert after.requests - before.requests == 6
    assert after.errors - before.errors == 1
    assert after.buckets[-1][1] - before.buckets[-1][1] == 6


def test_an_exception_in_the_model_is_internal_and_counted_as_a_500(
    iris_model: TrainedModel,
) -> None:
    class BrokenPlane(DataPlane):
        def infer(self, *_: Any) -> Any:
            raise RuntimeError("the model blew up")

    model = OnnxModel("iris", "1", f"file://{iris_model.model_path}", iris_model.sha256)
    model.load()

    async def scenario() -> tuple[Any, str]:
        server = GrpcServer(GrpcApp(BrokenPlane(model)), MAX_BODY)
        port = await server.start("127.0.0.1", 0)
        client = triton_aio.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton_aio.InferInput("input", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS)
        try:
            await client.infer("iris", [tensor])
        except triton.InferenceServerException as exc:
            return exc.status(), exc.message()
        finally:
            await client.close()
            await server.shutdown(0)
        raise AssertionError("the broken model answered")

    def errors() -> float:
        labels = {"protocol": "grpc", "code": "500"}
        return metrics.REGISTRY.get_sample_value("mlplane_requests_total", labels) or 0.0

    before = errors()
    status, message = asyncio.run(scenario())
    assert status == "StatusCode.INTERNAL"
    assert message == "internal server error"
    assert errors() == before + 1


def test_sigterm_reports_not_ready_while_serving_on(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    """The drain as over REST: not ready at once, but answering for --drain-seconds."""
    server = start_grpc(iris_model, tmp_path / "log", "--drain-seconds=3")
    stub = server.stub()
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    server.process.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while stub.ServerReady(pb.ServerReadyRequest()).ready:
        assert time.monotonic() < deadline, "still ready after SIGTERM"
        time.sleep(0.05)
    assert not stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    assert len(stub.ModelInfer(infer_request()).raw_output_contents) == 2
    assert server.process.proc.wait(timeout=30) == 0


def test_the_committed_messages_are_the_proto_in_a_private_pool(tmp_path: Path) -> None:
    """`make grpc-stubs` was run after the last change to the .proto, and its messages
    stay out of the default pool, where tritonclient (imported here) has the same names."""
    out = tmp_path / "descriptors.pb"
    assert protoc.main(["protoc", f"-I{RUNTIMES}", f"--descriptor_set_out={out}", PROTO]) == 0
    generated = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _clear_json_names(generated.message_type)  # protoc leaves them out of Python modules
    committed = descriptor_pb2.FileDescriptorProto()
    grpc_predict_v2_pb2.DESCRIPTOR.CopyToProto(committed)
    assert committed == generated
    assert grpc_predict_v2_pb2.DESCRIPTOR.pool is not descriptor_pool.Default()


def _clear_json_names(messages: Any) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)
