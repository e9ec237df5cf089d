"""Hostile clients against a real `mlplane-serve` process over real HTTP: each gets a 4xx
or a closed connection, never a 5xx, a stall or unbounded memory, and the probes keep
answering meanwhile."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import (
    Process,
    TrainedModel,
    free_port,
    http,
    serve_args,
    start,
    stop,
)

MiB = 1024 * 1024


@pytest.fixture
def fresh_server(iris_model: TrainedModel, tmp_path: Path) -> Iterator[Process]:
    """A server of its own, so that its memory and connections are this test's alone."""
    port = free_port()
    process = start(serve_args(iris_model, port), tmp_path / "server.log", "/v2/health/ready", port)
    yield process
    stop(process)


def rss_kib(process: Process, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{process.proc.pid}/status")


def port_of(process: Process) -> int:
    return int(process.url.rsplit(":", 1)[1])


class LivenessWatch:
    """GET /v2/health/live in a loop on fresh connections; records the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url + "/v2/health/live"
        self.slowest = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LivenessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = http("GET", self.url)[0]
            except OSError as exc:
                status, reason = 0, repr(exc)
            else:
                reason = f"HTTP {status}"
            took = time.monotonic() - started
            self.slowest = max(self.slowest, took)
            if status == 200:
                self.answers += 1
            else:
                self.failures.append(reason)
            time.sleep(0.05)


FLOOD_LIMIT = 64 * MiB  # what the issue saw accepted before the fix
HEADS = {
    "endless-header-value": b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nX-A: ",
    "endless-header-name": b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nX-",
    "endless-url": b"GET /v2/health/live?",
    "endless-trailer": (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nX-Trailer: "
    ),
}


def flood(port: int, head: bytes) -> tuple[int, bytes]:
    """Send `head` and then 'a' without end; return the bytes sent when the server cut
    the connection, and what it answered."""
    sent = 0
    chunk = b"a" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(head)
            while sent < FLOOD_LIMIT:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            raise AssertionError(f"the server took {sent} bytes of one header without end")
        answer = b""
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    return sent, answer


@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_header_flood_is_cut_with_memory_bounded_and_probes_answering(
    fresh_server: Process, head: bytes
) -> None:
    before = rss_kib(fresh_server)
    with LivenessWatch(fresh_server.url) as watch:
        sent, answer = flood(port_of(fresh_server), head)
        time.sleep(0.3)
    after, peak = rss_kib(fresh_server), rss_kib(fresh_server, "VmHWM")
    print(f"flood cut after {sent / MiB:.1f} MiB sent; VmRSS {before} -> {after} KiB, peak {peak}")
    # the client's own socket buffers hold a few MiB before it sees the reset
    assert sent < 16 * MiB
    assert answer == b"" or answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 414", b"HTTP/1.1 413"))
    assert after - before < 8 * 1024, "RSS grew by more than 8 MiB"
    assert peak - before < 16 * 1024, "peak RSS grew by more than 16 MiB"
    assert watch.answers > 0
    assert not watch.failures
    assert watch.slowest < 1.0
