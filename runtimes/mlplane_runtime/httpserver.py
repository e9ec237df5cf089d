"""A small HTTP/1.1 server: an asyncio protocol over httptools' parser.

It does only what the runtimes need, on the shortest path we measured: keep-alive and
pipelining, a request body limit, header size limits, write back-pressure, and graceful
shutdown (stop accepting, finish the request in flight on each connection, close idle
ones). The application is one synchronous callable from Request to Response; it runs on
the event loop, which suits handlers that take microseconds (ONNX Runtime on a few rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools
import orjson

log = logging.getLogger("mlplane.http")

JSON = b"application/json"

# What one client may hold of a server (each has a flag in the console scripts).
MAX_HEADER_BYTES = 64 * 1024  # request line and headers (and chunked trailers) of one request
MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES


# Where a JSON header ends and binary tensors begin (Open Inference Protocol binary extension).
HEADER_LENGTH = "inference-header-content-length"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Application = Callable[[Request], Response]


class RequestError(Exception):
    """A client mistake: answered with `status` (4xx) and a JSON error message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_json(body: bytes | memoryview) -> Any:
    """The JSON document in a request body; RequestError when there is none."""
    if not body:
        raise RequestError("empty request body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def json_response(status: int, document: object) -> Response:
    return Response(status, orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))


def error_response(status: int, message: str) -> Response:
    return Response(status, orjson.dumps({"error": message}))


def _encode(response: Response, keep_alive: bool) -> bytes:
    head = [
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
        % (
            response.status,
            _REASONS.get(response.status, b""),
            response.content_type,
            len(response.body),
        )
    ]
    for name, value in response.headers:
        head.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(response.body)
    return b"".join(head)


class HttpProtocol(asyncio.Protocol):
    """One connection: parse requests, call the application, write responses in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        # Raw bytes of the request being read, held to `raw_limit` plus twice the body
        # (chunk framing): httptools buffers a header line until its CRLF, so an endless
        # header or trailer is only seen here.
        self.raw_bytes = 0
        self.raw_limit = self.limits.max_header_bytes
        self.in_body = False
        self.busy = False  # a request has begun and has not been answered yet
        self.closing = False
        self.failed = False  # answered with an error; ignore the rest of the stream

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.failed:
            return
        self.raw_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
        if self.raw_bytes > self.raw_limit + 2 * self.body_size and not self.failed:
            self._too_large()

    def pause_writing(self) -> None:  # the client is not reading: stop reading from it
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.busy = True
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_header_bytes:
            self._fail(
                414, f"request line too long: the limit is {self.limits.max_header_bytes} bytes"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.failed:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        limits = self.limits
        self.in_body = True
        self.raw_limit = self.raw_bytes + limits.max_header_bytes  # for trailers
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > limits.max_body_bytes:
            self._fail(
                413,
                f"request body of {length} bytes exceeds the limit of "
                f"{limits.max_body_bytes} bytes",
            )
            return
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.failed:
            return
        self.body_size += len(body)
        if self.body_size > self.limits.max_body_bytes:
            self._fail(413, f"request body exceeds the limit of {self.limits.max_body_bytes} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.raw_bytes = self.body_size = 0
        self.raw_limit = self.limits.max_header_bytes
        self.in_body = False
        if self.failed or self.transport is None or self.transport.is_closing():
            return
        url = httptools.parse_url(self.url)
        request = Request(
            method=self.parser.get_method().decode("ascii", "replace"),
            path=url.path.decode("utf-8", "replace"),
            query=(url.query or b"").decode("utf-8", "replace"),
            headers=self.headers,
            body=b"".join(self.body) if len(self.body) != 1 else self.body[0],
        )
        self.body = []
        try:
            response = self.server.app(request)
        except Exception:  # the application must not take the connection down
            log.exception("unhandled error for %s %s", request.method, request.path)
            response = error_response(500, "internal server error")
        keep_alive = self.parser.should_keep_alive() and not self.closing
        self.transport.write(_encode(response, keep_alive))
        self.busy = False
        if not keep_alive:
            self.transport.close()

    # helpers
    def _too_large(self) -> None:
        if self.in_body:
            self._fail(
                413,
                f"chunk framing and trailers exceed the limit of twice the body plus "
                f"{self.limits.max_header_bytes} bytes",
            )
        else:
            self._fail(
                431,
                f"request head (request line and headers) exceeds the limit of "
                f"{self.limits.max_header_bytes} bytes",
            )

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we will not read further, then close the connection."""
        self.failed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_encode(error_response(status, message), keep_alive=False))
            self.transport.close()
        self.busy = False

    def shutdown(self) -> None:
        """Close now if idle; otherwise after the response to the request in flight."""
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()


class HttpServer:
    def __init__(self, app: Application, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.connections: set[HttpProtocol] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0 picks a free one); return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host, port, reuse_address=True, backlog=1024
        )
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def shutdown(self, grace_seconds: float = 25.0) -> None:
        """Stop accepting; let in-flight requests finish; close the connections."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (measured faster), else asyncio's default loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
