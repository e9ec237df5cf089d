"""A small HTTP/1.1 server: an asyncio protocol over httptools' parser.

It does only what the runtimes need, on the shortest path we measured: keep-alive and
pipelining, write back-pressure, draining (serve on, but close each connection after its
next response), graceful shutdown (stop accepting, finish the request in flight on each
connection, close idle ones), and limits on what one client may hold
(`Limits`): bytes of a head and of a body, time to send a head, a body, or to read a
response, time idle between requests, and the number of connections. The timeouts cost
the request path no timer: a sweeper checks every connection's state about once a tick
against a coarse clock. The application is one synchronous callable from Request to
Response; it runs on the event loop, which suits handlers that take microseconds (ONNX
Runtime on a few rows). For a request heavy enough to starve the probes it returns an
`Offload` instead: the work runs on a worker thread while the loop keeps answering; for
one that waits on something (a shared batch) it returns a `Deferred` awaitable. Either
way the connection reads nothing more until that answer is written, so responses stay in
order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import logging
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

import httptools
import orjson

log = logging.getLogger("mlplane.http")

JSON = b"application/json"

# What one client may hold of a server (each has a flag in the console scripts).
MAX_HEADER_BYTES = 64 * 1024  # request line and headers (and chunked trailers) of one request
MAX_BODY_BYTES = 8 * 1024 * 1024
HEADER_TIMEOUT_SECONDS = 10.0  # from the connection's start, or a request's first byte
BODY_TIMEOUT_SECONDS = 30.0  # from the end of the head to the end of the body
IDLE_TIMEOUT_SECONDS = 60.0  # a keep-alive connection between requests
SEND_TIMEOUT_SECONDS = 30.0  # a client that stops reading its responses
# Beyond it, a new connection takes the place of the one that has waited longest for its
# client (so a flood of idle or slow connections cannot lock the probes out); when every
# connection has an answer being computed, the new one gets a 503.
MAX_CONNECTIONS = 1024
# Bodies larger than a head, summed over all connections while they are received and
# answered: without it, every connection could hold a whole body at once.
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
FILE_HEADROOM = 64  # descriptors kept for everything but client connections
# After an error answered mid-body, the rest the client sends is read and thrown away for
# this long (and up to the rest of its declared body plus LINGER_BYTES): closing with
# unread data resets the connection, and the client would never read the answer.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES
    header_timeout: float = HEADER_TIMEOUT_SECONDS
    body_timeout: float = BODY_TIMEOUT_SECONDS
    idle_timeout: float = IDLE_TIMEOUT_SECONDS
    send_timeout: float = SEND_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS
    max_buffered_bytes: int = MAX_BUFFERED_BYTES

    @property
    def tick(self) -> float:
        """How often the timeouts are checked: a quarter of the shortest, within 50 ms..1 s."""
        shortest = min(self.header_timeout, self.body_timeout, self.idle_timeout, self.send_timeout)
        return min(1.0, max(0.05, shortest / 4))


# What a connection waits for (HttpProtocol.reading): a first request, the next one
# (keep-alive), the rest of a head, the rest of a body.
FRESH, IDLE, HEAD, BODY = 0, 1, 2, 3


# Where a JSON header ends and binary tensors begin (Open Inference Protocol binary extension).
HEADER_LENGTH = "inference-header-content-length"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True  # what the client asked for (HTTP/1.1, no Connection: close)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Offload:
    """An answer to compute off the event loop: `run` is called on a worker thread."""

    run: Callable[[], Response]


@dataclass(slots=True)
class Deferred:
    """An answer that the event loop awaits (e.g. a place in a shared batch)."""

    result: Awaitable[Response]


Application = Callable[[Request], Response | Offload | Deferred]
OFFLOAD_THREADS = 1  # worker threads for Offload answers (one core; the loop has the other)


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
        self.reading = FRESH  # FRESH, IDLE, HEAD or BODY since `since` (the coarse clock)
        self.since = server.now
        self.stalled_since: float | None = None  # writing paused, or closing unsent data
        self.waiting = False  # an Offload answer is being computed
        self.queue: collections.deque[Request] = collections.deque()  # pipelined, in order
        self.discard = -1  # bytes still to throw away after an error (-1: not lingering)
        self.reserved = 0  # bytes of the body being read, held against max_buffered_bytes
        self.held = 0  # ... and of the one whose Offload answer is being computed
        self.closing = False
        self.failed = False  # answered with an error; ignore the rest of the stream

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        server = self.server
        self.since = time.monotonic()  # precise (not the loop's cached time): for evictions
        if len(server.connections) >= self.limits.max_connections and not server.evict():
            self.failed = True
            server.refused += 1
            message = (
                f"too many connections: this server holds at most "
                f"{self.limits.max_connections} at once; retry later"
            )
            stream.write(_encode(error_response(503, message), keep_alive=False))
            stream.close()
            return
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.server.buffered -= self.reserved + self.held
        self.reserved = self.held = 0
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.failed:
            if self.discard >= 0:
                self.discard -= len(data)
                if self.discard < 0 and self.transport is not None:
                    self.transport.abort()
            return
        self.raw_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
        raw = self.raw_bytes
        if raw > self.raw_limit and raw > self.raw_limit + 2 * self.body_size and not self.failed:
            self._too_large()

    def pause_writing(self) -> None:  # the client is not reading: stop reading from it
        if self.transport is not None:
            self.stalled_since = self.server.now
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.stalled_since = None
            if not self.waiting:
                self.transport.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.reading == IDLE:  # a fresh connection's head timer runs from its start
            self.since = self.server.now
        self.reading = HEAD
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
        self.reading, self.since = BODY, self.server.now
        self.raw_limit = self.raw_bytes + limits.max_header_bytes  # for trailers
        length = self.headers.get("content-length", "")
        if length.isdigit():
            size = int(length)
            if size > limits.max_body_bytes:
                self._fail(
                    413,
                    f"request body of {length} bytes exceeds the limit of "
                    f"{limits.max_body_bytes} bytes",
                )
                return
            if size > limits.max_header_bytes and not self._reserve(size):
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
        size, reserved = self.body_size, self.reserved
        grows = size > reserved and size > self.limits.max_header_bytes  # chunked bodies
        if grows and not self._reserve(size - reserved):
            return
        self.body.append(body)

    def _reserve(self, size: int) -> bool:
        """Hold `size` more body bytes against the server's budget, or answer 503."""
        server, budget = self.server, self.limits.max_buffered_bytes
        if server.buffered + size > budget:
            self._fail(
                503,
                f"the server is holding {server.buffered} bytes of other request bodies; "
                f"with this one it would pass its limit of {budget}; retry later",
            )
            return False
        server.buffered += size
        self.reserved += size
        return True

    def on_message_complete(self) -> None:
        self.raw_bytes = self.body_size = 0
        self.raw_limit = self.limits.max_header_bytes
        self.reading = IDLE
        transport = self.transport
        if self.failed or transport is None or transport.is_closing():
            return
        url = httptools.parse_url(self.url)
        request = Request(
            method=self.parser.get_method().decode("ascii", "replace"),
            path=url.path.decode("utf-8", "replace"),
            query=(url.query or b"").decode("utf-8", "replace"),
            headers=self.headers,
            body=b"".join(self.body) if len(self.body) != 1 else self.body[0],
            keep_alive=self.parser.should_keep_alive(),
        )
        self.body = []
        held = self.reserved  # 0 but for bodies larger than a head
        if self.waiting:  # pipelined behind an answer still being computed
            self.queue.append(request)
        else:
            self._answer(request, transport)
        if held:
            self.reserved = 0
            if self.waiting:  # offloaded: the body is held until the answer is sent
                self.held, held = held, 0
            self.server.buffered -= held

    def _answer(self, request: Request, transport: asyncio.Transport) -> None:
        """Call the application and write its answer (on an open `transport`)."""
        try:
            response = self.server.app(request)
        except Exception:  # the application must not take the connection down
            response = _internal_error(request)
        if isinstance(response, Offload | Deferred):
            self._offload(request, response)
            return
        keep_alive = request.keep_alive and not self.closing and not self.server.draining
        transport.write(_encode(response, keep_alive))
        self.since = self.server.now
        if not keep_alive:
            self._close()

    def _send(self, response: Response, keep_alive: bool) -> None:
        """Write an answer computed off the loop, if the connection is still there."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        keep_alive = keep_alive and not self.closing and not self.server.draining
        transport.write(_encode(response, keep_alive))
        self.since = self.server.now
        if not keep_alive:
            self._close()

    def _offload(self, request: Request, offload: Offload | Deferred) -> None:
        """Compute the answer on a worker thread, or await it; read nothing more until it
        is sent."""
        self.waiting = True
        if self.transport is not None:
            self.transport.pause_reading()
        future = (
            self.server.run_in_worker(offload.run)
            if isinstance(offload, Offload)
            else asyncio.ensure_future(offload.result)
        )
        future.add_done_callback(functools.partial(self._offloaded, request))

    def _offloaded(self, request: Request, future: asyncio.Future[Response]) -> None:
        self.waiting = False
        self.server.buffered -= self.held
        self.held = 0
        if future.cancelled():
            response = error_response(503, "the server is shutting down; retry")
        elif (error := future.exception()) is not None:
            response = _internal_error(request, error)
        else:
            response = future.result()
        self._send(response, request.keep_alive)
        transport = self.transport
        while self.queue and not self.waiting and transport and not transport.is_closing():
            self._answer(self.queue.popleft(), transport)
        if transport is None or transport.is_closing() or self.waiting:
            return
        self.since = self.server.now  # nothing was read meanwhile: the timers restart
        if self.stalled_since is None:
            transport.resume_reading()

    def busy(self) -> bool:
        """A request is being read, computed, or waits for its turn."""
        return self.reading >= HEAD or self.waiting or bool(self.queue)

    def expire(self, now: float) -> None:
        """Cut the connection if it has waited too long for what it waits for (the
        server's sweeper calls this about once a tick)."""
        if self.transport is None:
            return
        limits = self.limits
        if self.discard >= 0:
            if now - self.since > LINGER_SECONDS:
                self.transport.abort()
            return
        if self.stalled_since is not None:
            if now - self.stalled_since > limits.send_timeout:
                self.transport.abort()
            return
        if self.waiting:  # the application has it; --max-rows bounds its work
            return
        waited, reading = now - self.since, self.reading
        if reading == IDLE:
            if waited > limits.idle_timeout:
                self._close()
        elif reading == FRESH:  # nothing was sent: nothing to answer
            if waited > limits.header_timeout:
                self._close()
        elif reading == HEAD:
            if waited > limits.header_timeout:
                self._fail(
                    408,
                    f"the request head did not arrive within {limits.header_timeout:g} s "
                    "(header timeout)",
                )
        elif waited > limits.body_timeout:
            self._fail(
                408,
                f"the request body did not arrive within {limits.body_timeout:g} s (body timeout)",
            )

    # helpers
    def _too_large(self) -> None:
        if self.reading == BODY:
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
        """Answer a request we will not read further, then close the connection: at once
        when its head was bad; mid-body, after throwing away what the client still sends
        for a while (most clients send their whole body before they read an answer)."""
        self.failed = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_encode(error_response(status, message), keep_alive=False))
        if self.reading != BODY or not transport.can_write_eof():
            self._close()
            return
        transport.write_eof()  # the client reads the answer, then EOF; it closes, or we do
        length = self.headers.get("content-length", "")
        rest = max(0, int(length) - self.body_size) if length.isdigit() else 0
        self.discard = LINGER_BYTES + min(rest, 8 * self.limits.max_body_bytes)
        self.since = self.server.now

    def _close(self) -> None:
        """Close once the responses are sent; the sweeper aborts a client that does not
        read them within the send timeout."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()
            if self.stalled_since is None:
                self.stalled_since = self.server.now

    def shutdown(self) -> None:
        """Close now if idle; otherwise after the response to the request in flight."""
        self.closing = True
        if not self.busy():
            self._close()


class HttpServer:
    def __init__(self, app: Application, limits: Limits | None = None) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.connections: set[HttpProtocol] = set()
        self.refused = 0  # connections turned away at the connection limit
        self.evicted = 0  # ... and connections reset to make room for new ones
        self.buffered = 0  # body bytes held by all connections (see Limits)
        self.draining = False  # every response closes its connection (see drain())
        self.now = 0.0  # the coarse clock of the timeouts (monotonic), set by the sweeper
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._workers: concurrent.futures.ThreadPoolExecutor | None = None

    def run_in_worker(self, job: Callable[[], Response]) -> asyncio.Future[Response]:
        if self._workers is None:
            self._workers = concurrent.futures.ThreadPoolExecutor(
                OFFLOAD_THREADS, thread_name_prefix="mlplane-offload"
            )
        return asyncio.get_running_loop().run_in_executor(self._workers, job)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0 picks a free one); return the port."""
        loop = asyncio.get_running_loop()
        self.now = time.monotonic()
        _fit_file_limit(self.limits.max_connections + FILE_HEADROOM)
        self._server = await loop.create_server(
            lambda: HttpProtocol(self), host, port, reuse_address=True, backlog=1024
        )
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def _sweep(self) -> None:
        tick = self.limits.tick
        while True:
            await asyncio.sleep(tick)
            now = self.now = time.monotonic()
            for connection in list(self.connections):
                connection.expire(now)

    def evict(self) -> bool:
        """Make room at the connection limit: reset the connection that has waited
        longest for its client (idle, or slow to send), never one whose answer is being
        computed. False when there is none."""
        oldest = min(
            (c for c in self.connections if not c.waiting), key=lambda c: c.since, default=None
        )
        if oldest is None or oldest.transport is None:
            return False
        self.evicted += 1
        self.connections.discard(oldest)
        oldest.failed = True
        oldest.transport.abort()
        return True

    def drain(self) -> None:
        """Keep serving, but close each connection after its next response (with
        `Connection: close`), so that clients reconnect, to the pods still ready."""
        self.draining = True

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None


def _internal_error(request: Request, exc: BaseException | None = None) -> Response:
    log.error("unhandled error for %s %s", request.method, request.path, exc_info=exc or True)
    return error_response(500, "internal server error")


def _fit_file_limit(wanted: int) -> None:
    """Raise the soft limit on open files towards `wanted` (as Go does at start); warn
    when the hard limit is lower, since accept() would then fail before the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < wanted:
        log.warning(
            "open-file limit %d is below the connection limit plus %d; lower "
            "--max-connections or raise the limit",
            soft,
            FILE_HEADROOM,
        )


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
