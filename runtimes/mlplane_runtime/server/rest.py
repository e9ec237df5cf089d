"""The REST transport: HTTP requests to data-plane calls, for KServe V2 and V1.

Routes::

    GET  /v2/health/live | /v2/health/ready | /v2
    GET  /v2/models/{name}[/versions/{v}]        model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer
    POST /v2/models/{name}/feedback              ground truth for logged requests
    GET  /v1/models | /v1/models/{name}
    POST /v1/models/{name}:predict
    GET  /metrics
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlplane_runtime.httpserver import (
    HEADER_LENGTH,
    Deferred,
    Offload,
    Request,
    RequestError,
    Response,
    error_response,
    json_response,
    parse_json,
)
from mlplane_runtime.server import metrics
from mlplane_runtime.server.codec import (
    Array,
    InferenceRequest,
    V1Request,
    decode_v1,
    decode_v2,
    encode_v2,
)
from mlplane_runtime.server.dataplane import DataPlane
from mlplane_runtime.server.model import OnnxModel

# Inference heavier than this leaves the event loop for a worker thread, so that the
# probes and light requests keep their latency while it runs.
OFFLOAD_BODY_BYTES = 64 * 1024  # a body this large is parsed off the loop too
OFFLOAD_ROWS = 64  # the --offload-rows default

VERSION_HEADER = b"mlplane-model-version"  # on every inference answer: the version that served it

log = logging.getLogger(__name__)


class RestApp:
    """Callable HTTP application over one DataPlane."""

    def __init__(self, dataplane: DataPlane, offload_rows: int = OFFLOAD_ROWS) -> None:
        self.dataplane = dataplane
        self.offload_rows = offload_rows
        self._counters: dict[tuple[str, int], Callable[[], None]] = {}
        self._latency = {p: metrics.LATENCY.labels(p) for p in ("v1", "v2")}
        self._version = (VERSION_HEADER, (dataplane.model.version or "").encode("latin-1"))

    def __call__(self, request: Request) -> Response | Offload | Deferred:
        started = time.perf_counter()
        protocol = _protocol(request.path)
        try:
            response = self._route(request)
        except RequestError as exc:
            response = error_response(exc.status, str(exc))
        except Exception:
            response = self._internal_error(request)
        if isinstance(response, Offload):
            return Offload(
                functools.partial(self._finish, request, protocol, started, response.run)
            )
        if isinstance(response, Deferred):
            return Deferred(self._finish_deferred(request, protocol, started, response.result))
        self._observe(protocol, started, response.status)
        return response

    @staticmethod
    def _internal_error(request: Request) -> Response:
        # Counted like every other answer: a canary whose model raises on every request
        # must show up as 5xx in mlplane_requests_total, or it is promoted.
        log.exception("unhandled error for %s %s", request.method, request.path)
        return error_response(500, "internal server error")

    def _finish(
        self, request: Request, protocol: str, started: float, run: Callable[[], Response]
    ) -> Response:
        """An offloaded answer, on the worker thread: errors and metrics as inline."""
        try:
            response = run()
        except RequestError as exc:
            response = error_response(exc.status, str(exc))
        except Exception:
            response = self._internal_error(request)
        self._observe(protocol, started, response.status)
        return response

    async def _finish_deferred(
        self, request: Request, protocol: str, started: float, result: Awaitable[Response]
    ) -> Response:
        """An awaited answer (a shared batch): errors and metrics as inline."""
        try:
            response = await result
        except RequestError as exc:
            response = error_response(exc.status, str(exc))
        except Exception:
            response = self._internal_error(request)
        self._observe(protocol, started, response.status)
        return response

    def _observe(self, protocol: str, started: float, status: int) -> None:
        if protocol in self._latency:
            self._latency[protocol].observe(time.perf_counter() - started)
        self._count(protocol, status)

    def _count(self, protocol: str, status: int) -> None:
        key = (protocol, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = metrics.REQUESTS.labels(protocol, str(status)).inc
            self._counters[key] = counter
        counter()

    def _route(self, request: Request) -> Response | Offload | Deferred:
        parts = request.path.strip("/").split("/")
        head = parts[0]
        if head == "v2":
            return self._v2(request, parts[1:])
        if head == "v1":
            return self._v1(request, parts[1:])
        if request.path == "/metrics":
            _method(request, "GET")
            return Response(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST.encode())
        raise RequestError(f"no route for {request.method} {request.path}", 404)

    def _v2(self, request: Request, parts: list[str]) -> Response | Offload | Deferred:
        plane = self.dataplane
        if not parts or parts == [""]:
            _method(request, "GET")
            return json_response(200, plane.server_metadata())
        if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
            _method(request, "GET")
            ok = plane.live() if parts[1] == "live" else plane.ready()
            return json_response(200 if ok else 503, {parts[1]: ok})
        if parts[0] != "models" or len(parts) < 2:
            raise RequestError(f"no route for {request.method} {request.path}", 404)
        name, rest = parts[1], parts[2:]
        version: str | None = None
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = rest[1], rest[2:]
        if not rest:
            _method(request, "GET")
            return json_response(200, plane.model_metadata(name, version))
        if rest == ["ready"]:
            _method(request, "GET")
            model = plane.get_model(name, version)
            ready = model.ready and plane.ready()
            return json_response(200 if ready else 503, {"name": name, "ready": ready})
        if rest == ["infer"]:
            _method(request, "POST")
            return self._infer(request, name, version)
        if rest == ["feedback"] and version is None:
            _method(request, "POST")
            plane.get_model(name)
            document = parse_json(request.body)  # the sink waits for storage: off the loop
            return Offload(lambda: json_response(200, plane.feedback(name, document)))
        raise RequestError(f"no route for {request.method} {request.path}", 404)

    def _infer(
        self, request: Request, name: str, version: str | None
    ) -> Response | Offload | Deferred:
        model = self.dataplane.ready_model(name, version)
        json_length = request.headers.get(HEADER_LENGTH)
        length: int | None = None
        if json_length is not None:
            if not json_length.isdigit():
                raise RequestError(f"{HEADER_LENGTH} must be an integer")
            length = int(json_length)
        if len(request.body) > OFFLOAD_BODY_BYTES:
            return Offload(functools.partial(self._decode_and_infer, model, request.body, length))
        decoded = decode_v2(request.body, length)
        if self.dataplane.batches(decoded):
            return Deferred(self._infer_batched(model, decoded))
        if decoded.rows > self.offload_rows:
            self.dataplane.check_rows(decoded.rows)
            return Offload(functools.partial(self._infer_decoded, model, decoded))
        return self._infer_decoded(model, decoded)

    def _decode_and_infer(self, model: OnnxModel, body: bytes, length: int | None) -> Response:
        return self._infer_decoded(model, decode_v2(body, length))

    def _infer_decoded(self, model: OnnxModel, decoded: InferenceRequest) -> Response:
        return self._v2_response(*self.dataplane.infer(model, decoded))

    async def _infer_batched(self, model: OnnxModel, decoded: InferenceRequest) -> Response:
        return self._v2_response(*await self.dataplane.infer_batched(model, decoded))

    def _v2_response(
        self, header: dict[str, Any], outputs: list[tuple[str, str, Array, bool]]
    ) -> Response:
        body, binary_from = encode_v2(header, outputs)
        if binary_from is None:
            return Response(200, body, headers=[self._version])
        return Response(
            200,
            body,
            b"application/octet-stream",
            [(HEADER_LENGTH.encode(), str(binary_from).encode()), self._version],
        )

    def _v1(self, request: Request, parts: list[str]) -> Response | Offload:
        plane = self.dataplane
        if parts == ["models"]:
            _method(request, "GET")
            return json_response(200, {"models": [plane.model.name]})
        if len(parts) != 2 or parts[0] != "models":
            raise RequestError(f"no route for {request.method} {request.path}", 404)
        target = parts[1]
        if target.endswith(":predict"):
            _method(request, "POST")
            model = plane.ready_model(target[: -len(":predict")])
            if len(request.body) > OFFLOAD_BODY_BYTES:
                return Offload(functools.partial(self._decode_and_predict, model, request.body))
            decoded = decode_v1(request.body)
            if len(decoded.instances) > self.offload_rows:
                plane.check_rows(len(decoded.instances))
                return Offload(functools.partial(self._predict, model, decoded))
            return self._predict(model, decoded)
        _method(request, "GET")
        model = plane.get_model(target)
        return json_response(200, {"name": model.name, "ready": model.ready and plane.ready()})

    def _decode_and_predict(self, model: OnnxModel, body: bytes) -> Response:
        return self._predict(model, decode_v1(body))

    def _predict(self, model: OnnxModel, decoded: V1Request) -> Response:
        response = json_response(
            200, self.dataplane.predict_v1(model, decoded.instances, decoded.id)
        )
        response.headers.append(self._version)
        return response


def _method(request: Request, allowed: str) -> None:
    if request.method != allowed:
        raise RequestError(f"method {request.method} is not allowed here; use {allowed}", 405)


def _protocol(path: str) -> str:
    """The `protocol` label of a request, from its path alone."""
    if path.startswith("/v2/health/") or path.endswith("/ready"):
        return "health"
    if path.endswith("/feedback"):
        return "feedback"  # not inference: a canary's analysis must not count it
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1"):
        return "v1"
    return "metrics" if path == "/metrics" else "other"
