"""The gRPC transport: the Open Inference Protocol's `inference.GRPCInferenceService`
over the same DataPlane as REST.

Each RPC translates its message into the data-plane call that the REST route makes, so
both protocols check, predict and fail alike: a RequestError becomes the gRPC status of
its HTTP status (`STATUS_CODES`) with the same message. Tensors come as
`raw_input_contents` (what tritonclient sends) or as typed `contents`; outputs always go
back as `raw_output_contents`, as Triton answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message

from mlplane_runtime.httpserver import OFFLOAD_THREADS, RequestError
from mlplane_runtime.server import metrics
from mlplane_runtime.server.codec import (
    DATATYPES,
    Array,
    InferenceRequest,
    RequestedOutput,
    bytes_tensor,
    from_binary,
    parse_shape,
)
from mlplane_runtime.server.dataplane import DataPlane
from mlplane_runtime.server.model import OIP_TO_NUMPY, OnnxModel
from mlplane_runtime.server.oip import grpc_predict_v2_pb2 as pb
from mlplane_runtime.server.rest import OFFLOAD_BODY_BYTES, OFFLOAD_ROWS

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
DEFAULT_PORT = 8001  # Triton's; KServe's 8081 is the monitor's in an mlplane pod
# Clients are sent a GOAWAY after this long on one connection, so that they reconnect
# through the Service now and then: without it a gRPC client stays on the pod it first
# reached, and neither scaling nor a canary's replica share would move its traffic.
MAX_CONNECTION_AGE_MS = 30_000
MAX_CONNECTION_AGE_GRACE_MS = 5_000

# The gRPC status of each HTTP status a RequestError carries.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

# The typed `contents` field of each datatype (FP16 has none: raw contents only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}

Reply = TypeVar("Reply", bound=Message)


def decode_request(message: pb.ModelInferRequest) -> InferenceRequest:
    """A ModelInferRequest as the data plane's InferenceRequest; a malformed one is a
    RequestError naming the input and what is allowed."""
    if not message.inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise RequestError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
            "give one per input, in order, or use contents for all"
        )
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    rows = 0
    for index, tensor in enumerate(message.inputs):
        if not tensor.name:
            raise RequestError(f"inputs[{index}].name must be a non-empty string")
        where = f"input {tensor.name!r}"
        if tensor.name in inputs:
            raise RequestError(f"{where} is given twice")
        if tensor.datatype not in DATATYPES:
            raise RequestError(
                f"{where}: datatype {tensor.datatype!r} is not supported; "
                f"allowed: {', '.join(DATATYPES)}"
            )
        shape = parse_shape(list(tensor.shape), where)
        rows = max(rows, shape[0] if shape else 1)
        if raw:
            if tensor.HasField("contents"):
                raise RequestError(f"{where}: contents and raw_input_contents are exclusive")
            inputs[tensor.name] = from_binary(raw[index], tensor.datatype, shape, where)
        else:
            inputs[tensor.name] = _from_contents(tensor, shape, where)
        datatypes[tensor.name] = tensor.datatype
    outputs = [RequestedOutput(item.name, True) for item in message.outputs] or None
    return InferenceRequest(
        id=message.id or None,
        inputs=inputs,
        datatypes=datatypes,
        outputs=outputs,
        binary_outputs=True,
        rows=rows,
    )


def _strings_from_contents(values: list[bytes], shape: tuple[int, ...], where: str) -> Array:
    """BYTES as contents.bytes_contents: one UTF-8 string per element."""
    expected = int(np.prod(shape))
    if len(values) != expected:
        raise RequestError(
            f"{where}: contents.bytes_contents has {len(values)} elements but shape "
            f"{list(shape)} needs {expected}"
        )
    try:
        strings = [value.decode("utf-8") for value in values]
    except UnicodeDecodeError as exc:
        raise RequestError(f"{where}: a BYTES element is not UTF-8: {exc}") from exc
    return np.array(strings, dtype=object).reshape(shape)


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...], where: str
) -> Array:
    if tensor.datatype == "BYTES":
        return _strings_from_contents(list(tensor.contents.bytes_contents), shape, where)
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        raise RequestError(f"{where}: {tensor.datatype} data must be sent as raw_input_contents")
    values = getattr(tensor.contents, field)
    expected = int(np.prod(shape))
    if len(values) != expected:
        raise RequestError(
            f"{where}: contents.{field} has {len(values)} elements but shape {list(shape)} "
            f"needs {expected}"
        )
    try:
        array = np.array(values, dtype=OIP_TO_NUMPY[tensor.datatype])
    except OverflowError as exc:
        raise RequestError(f"{where}: a value does not fit {tensor.datatype}: {exc}") from exc
    return array.reshape(shape)


def encode_response(
    header: dict[str, Any], outputs: list[tuple[str, str, Array, bool]]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=header["model_name"],
        model_version=header["model_version"],
        id=header.get("id") or "",
    )
    for name, datatype, array, _ in outputs:
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(
            bytes_tensor(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()
        )
    return response


def _tensor_metadata(tensor: dict[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
    )


class GrpcApp:
    """The RPCs of `inference.GRPCInferenceService` over one DataPlane."""

    def __init__(self, dataplane: DataPlane, offload_rows: int = OFFLOAD_ROWS) -> None:
        self.dataplane = dataplane
        self.offload_rows = offload_rows
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None
        self._latency = metrics.LATENCY.labels("grpc")
        self._counters: dict[tuple[str, int], Callable[[], None]] = {}

    # health and metadata
    async def server_live(
        self, _: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        async with self._rpc("health", context):
            return pb.ServerLiveResponse(live=self.dataplane.live())

    async def server_ready(
        self, _: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async with self._rpc("health", context):
            return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def model_ready(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async with self._rpc("health", context):
            model = self.dataplane.get_model(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=model.ready and self.dataplane.ready())

    async def server_metadata(
        self, _: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async with self._rpc("grpc", context):
            return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async with self._rpc("grpc", context):
            found = self.dataplane.model_metadata(request.name, request.version or None)
            return pb.ModelMetadataResponse(
                name=found["name"],
                versions=found["versions"],
                platform=found["platform"],
                inputs=[_tensor_metadata(t) for t in found["inputs"]],
                outputs=[_tensor_metadata(t) for t in found["outputs"]],
            )

    # inference
    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async with self._rpc("grpc", context):
            model = self.dataplane.ready_model(request.model_name, request.model_version or None)
            if sum(len(raw) for raw in request.raw_input_contents) > OFFLOAD_BODY_BYTES:
                return await self._offload(self._decode_and_infer, model, request)
            decoded = decode_request(request)
            if self.dataplane.batches(decoded):
                return encode_response(*await self.dataplane.infer_batched(model, decoded))
            if decoded.rows > self.offload_rows:
                self.dataplane.check_rows(decoded.rows)
                return await self._offload(self._infer_decoded, model, decoded)
            return self._infer_decoded(model, decoded)

    def _decode_and_infer(
        self, model: OnnxModel, request: pb.ModelInferRequest
    ) -> pb.ModelInferResponse:
        return self._infer_decoded(model, decode_request(request))

    def _infer_decoded(self, model: OnnxModel, decoded: InferenceRequest) -> pb.ModelInferResponse:
        header, outputs = self.dataplane.infer(model, decoded)
        return encode_response(header, outputs)

    async def _offload(self, job: Callable[..., Reply], *args: Any) -> Reply:
        """Heavy work on a worker thread, so that the loop keeps answering the probes."""
        if self._workers is None:
            self._workers = concurrent.futures.ThreadPoolExecutor(
                OFFLOAD_THREADS, thread_name_prefix="mlplane-grpc-offload"
            )
        return await asyncio.get_running_loop().run_in_executor(self._workers, job, *args)

    @contextlib.asynccontextmanager
    async def _rpc(self, protocol: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Around one RPC: its error as a gRPC status with the REST answer's message,
        counted under `protocol` with the HTTP status the same answer has over REST."""
        started = time.perf_counter()
        status = 200
        try:
            yield
        except asyncio.CancelledError:  # the client gave up (or its deadline passed)
            status = 499  # as nginx counts a request its client closed: not a success
            raise
        except RequestError as exc:
            status = exc.status
            code = STATUS_CODES.get(status, grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(code, str(exc))
        except Exception:
            # Counted like REST's 500s: a canary that fails every request must show it.
            log.exception("unhandled error in a gRPC %s request", protocol)
            status = 500
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        finally:
            if protocol == "grpc":
                self._latency.observe(time.perf_counter() - started)
            self._count(protocol, status)

    def _count(self, protocol: str, status: int) -> None:
        counter = self._counters.get((protocol, status))
        if counter is None:
            counter = metrics.REQUESTS.labels(protocol, str(status)).inc
            self._counters[protocol, status] = counter
        counter()

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)


def _handler(
    method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]],
    request_type: type[Message],
) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method,
        request_deserializer=request_type.FromString,
        response_serializer=lambda reply: reply.SerializeToString(),
    )


class GrpcServer:
    """A grpc.aio server on the running event loop, serving one GrpcApp."""

    def __init__(self, app: GrpcApp, max_message_bytes: int) -> None:
        self.app = app
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
                ("grpc.so_reuseport", 0),
            ]
        )
        handlers = {
            "ServerLive": _handler(app.server_live, pb.ServerLiveRequest),
            "ServerReady": _handler(app.server_ready, pb.ServerReadyRequest),
            "ModelReady": _handler(app.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": _handler(app.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": _handler(app.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": _handler(app.model_infer, pb.ModelInferRequest),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0 picks a free one); return the port."""
        bound = int(self._server.add_insecure_port(f"{host}:{port}"))
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {host}:{port}")
        await self._server.start()
        return bound

    async def shutdown(self, grace_seconds: float) -> None:
        """Refuse new RPCs, give the ones in flight `grace_seconds`, then cancel them."""
        await self._server.stop(grace_seconds)
        self.app.close()
