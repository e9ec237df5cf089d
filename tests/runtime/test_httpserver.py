"""The HTTP server on its own, with a test application, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlplane_runtime.httpserver import HttpServer, Limits, Offload, Request, Response


@contextmanager
def running(server: HttpServer) -> Iterator[int]:
    """The server on an event loop in a thread; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield asyncio.run_coroutine_threadsafe(server.start("127.0.0.1", 0), loop).result(10)
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_at_the_cap_with_every_answer_being_computed_a_new_connection_gets_a_503() -> None:
    """Only connections waiting for their client make room at the cap: one whose answer
    is being computed is never reset."""
    release = threading.Event()

    def slow() -> Response:
        release.wait(10)
        return Response(200, b"{}")

    def app(request: Request) -> Offload:
        return Offload(slow)

    with running(HttpServer(app, Limits(max_connections=2))) as port:
        busy = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for sock in busy:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)  # both read and handed to the worker
        third = socket.create_connection(("127.0.0.1", port))
        refused = answer(third)
        release.set()
        answers = [answer(sock) for sock in busy]
        for sock in [*busy, third]:
            sock.close()
    assert refused.startswith(b"HTTP/1.1 503")
    assert b"at most 2 at once" in refused
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
