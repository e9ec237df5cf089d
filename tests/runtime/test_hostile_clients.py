"""Hostile clients against a real `mlplane-serve` process over real HTTP: each gets a 4xx
or a closed connection, never a 5xx, a stall or unbounded memory, and the probes keep
answering meanwhile."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tests.runtime.conftest import (
    Process,
    TrainedModel,
    free_port,
    http,
    serve_args,
    start,
    stop,
    train_model,
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
    """GET a probe in a loop on fresh connections; records the slowest answer."""

    def __init__(self, url: str, path: str = "/v2/health/live") -> None:
        self.url = url + path
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


TIMEOUT = 1.0  # every timeout of the strict server, in seconds
CAP = 40


@pytest.fixture
def strict_server(iris_model: TrainedModel, tmp_path: Path) -> Iterator[Process]:
    """A server with every timeout at one second and room for 40 connections."""
    port = free_port()
    flags = [f"--{name}-timeout={TIMEOUT}" for name in ("header", "body", "idle", "send")]
    process = start(
        serve_args(iris_model, port, *flags, f"--max-connections={CAP}"),
        tmp_path / "server.log",
        "/v2/health/ready",
        port,
    )
    yield process
    stop(process)


def connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if send:
        sock.sendall(send)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Everything the server sends until it closes; (closed, data)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return False, data
    except ConnectionResetError:
        pass
    return True, data


LORIS = {
    "connected, silent": b"",
    "half a request line": b"POST /v2/models/iris/in",
    "head without its end": b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n",
    "head, no body": (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
    ),
    "part of a body": (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"
    ),
    "idle keep-alive": b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
}


def test_slow_loris_connections_are_cut_after_the_timeouts(strict_server: Process) -> None:
    port = port_of(strict_server)
    held = [(kind, connect(port, send)) for kind, send in LORIS.items() for _ in range(5)]
    opened = time.monotonic()
    try:
        with LivenessWatch(strict_server.url) as watch:
            outcomes = {kind: read_until_closed(sock, 4 * TIMEOUT) for kind, sock in held}
            took = time.monotonic() - opened
        assert all(closed for closed, _ in outcomes.values()), outcomes
        assert took < 3 * TIMEOUT  # the timeouts and a tick or two
        for kind in ("half a request line", "head without its end"):
            assert b"408 Request Timeout" in outcomes[kind][1]
            assert b"header timeout" in outcomes[kind][1]
        for kind in ("head, no body", "part of a body"):
            assert b"408 Request Timeout" in outcomes[kind][1]
            assert b"body timeout" in outcomes[kind][1]
        assert outcomes["connected, silent"][1] == b""
        assert outcomes["idle keep-alive"][1].startswith(b"HTTP/1.1 200")  # then closed
        assert watch.answers > 0
        assert not watch.failures
        assert watch.slowest < 1.0
    finally:
        for _, sock in held:
            sock.close()


def is_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_connection_cap_holds_and_the_longest_waiting_make_room(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    """At the cap, a new connection takes the place of the one that waited longest for
    its client: a flood of idle or slow connections never holds more than the cap, and
    never locks the probes out."""
    port = free_port()
    process = start(
        serve_args(iris_model, port, f"--max-connections={CAP}"),
        tmp_path / "log",
        "/v2/health/ready",
        port,
    )
    held = []
    try:
        for _ in range(CAP):
            held.append(connect(port, b"POST /v2/models/iris/infer HTTP/1.1\r\n"))
        time.sleep(0.2)
        more = [connect(port) for _ in range(10)]
        time.sleep(0.3)
        assert [is_open(sock) for sock in held] == [False] * 10 + [True] * (CAP - 10)
        assert all(is_open(sock) for sock in more)
        with LivenessWatch(process.url) as watch:
            flood = [connect(port) for _ in range(3 * CAP)]  # the flood churns itself
            time.sleep(0.5)
        assert watch.answers > 0
        assert not watch.failures
        assert sum(is_open(sock) for sock in held + more + flood) <= CAP
        held += more + flood
    finally:
        for sock in held:
            sock.close()
        stop(process)


def test_a_client_that_never_reads_its_responses_is_cut(strict_server: Process) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port_of(strict_server)))
    requests = 2000
    try:
        pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * requests
        sock.settimeout(5)
        with contextlib.suppress(OSError):  # the server may stop reading, then cut us
            sock.sendall(pipelined)
        time.sleep(4 * TIMEOUT)  # never reading: the server's buffers fill, then it waits
        closed, data = read_until_closed(sock, 5.0)
        assert closed
        assert data.count(b"HTTP/1.1 200") < requests  # cut before it could answer all
    finally:
        sock.close()
    assert http("GET", strict_server.url + "/v2/health/live")[0] == 200


@pytest.fixture(scope="module")
def heavy_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A model whose large batches take a while: 300 trees, 30 features (1 to 2 s for
    10,000 rows of its training data here)."""
    return train_model(
        tmp_path_factory.mktemp("models"),
        "cancer",
        {"builtin": "breast_cancer"},
        {"class": "RandomForestClassifier", "params": {"n_estimators": 300}},
    )


def binary_request(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": "label"}],
        }
    ).encode()
    return header + rows.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def test_rows_past_the_limit_get_a_413_naming_it(iris_model: TrainedModel, tmp_path: Path) -> None:
    port = free_port()
    process = start(
        serve_args(iris_model, port, "--max-rows=50"), tmp_path / "log", "/v2/health/ready", port
    )
    try:
        rows = np.ones((51, 4), np.float32)
        body, headers = binary_request(rows)
        status, raw, _ = http("POST", process.url + "/v2/models/iris/infer", body, headers)
        assert status == 413
        assert "51 rows; at most 50" in json.loads(raw)["error"]
        assert "--max-rows" in json.loads(raw)["error"]
        v1 = json.dumps({"instances": rows.tolist()}).encode()
        status, raw, _ = http("POST", process.url + "/v1/models/iris:predict", v1)
        assert (status, "--max-rows" in json.loads(raw)["error"]) == (413, True)
        body, headers = binary_request(rows[:50])
        assert http("POST", process.url + "/v2/models/iris/infer", body, headers)[0] == 200
    finally:
        stop(process)


def test_large_batches_on_a_heavy_model_leave_the_probes_answering(
    heavy_model: TrainedModel, tmp_path: Path
) -> None:
    port = free_port()
    process = start(serve_args(heavy_model, port), tmp_path / "log", "/v2/health/ready", port)
    data = load_breast_cancer().data
    rows = data[np.random.default_rng(0).integers(0, len(data), 10_000)].astype(np.float32)
    body, headers = binary_request(rows)
    statuses: list[int] = []
    took: list[float] = []

    def client() -> None:
        for _ in range(2):
            started = time.monotonic()
            statuses.append(http("POST", process.url + "/v2/models/cancer/infer", body, headers)[0])
            took.append(round(time.monotonic() - started, 2))

    try:
        with LivenessWatch(process.url, "/v2/health/ready") as watch:
            clients = [threading.Thread(target=client) for _ in range(3)]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(timeout=120)
        print(f"batches of 10,000 rows took {took} s; the slowest probe {watch.slowest:.3f} s")
        assert statuses == [200] * 6
        assert watch.answers > 0
        assert not watch.failures
        # inline, a probe would wait for the batches ahead of it: a batch or more
        assert watch.slowest < min(0.5, min(took) / 2)
    finally:
        stop(process)


def test_body_bytes_held_at_once_are_bounded_over_all_connections(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    """Each connection may send a whole body slowly, within the body timeout: the bytes
    held at once over all connections are bounded (--max-buffered-bytes), while bodies no
    larger than a head are always admitted, so small requests keep working."""
    port = free_port()
    process = start(
        serve_args(iris_model, port, "--max-body-bytes=262144", "--max-buffered-bytes=524288"),
        tmp_path / "log",
        "/v2/health/ready",
        port,
    )
    document = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    padded = document + b" " * (200_000 - len(document))
    head = b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    holders = [connect(port, head % len(padded) + padded[:100]) for _ in range(2)]
    try:
        time.sleep(0.2)
        third = connect(port, head % len(padded))
        closed, answer = read_until_closed(third, 5)
        third.close()
        assert closed
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"holding 400000 bytes of other request bodies" in answer
        assert b"limit of 524288" in answer
        small = http("POST", process.url + "/v1/models/iris:predict", document)
        assert small[0] == 200
        chunked = connect(
            port,
            b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
        )
        with contextlib.suppress(OSError):  # cut once it grows past the budget
            for _ in range(12):
                chunked.sendall(b"4000\r\n" + b" " * 0x4000 + b"\r\n")
        closed, answer = read_until_closed(chunked, 5)
        chunked.close()
        assert answer.startswith(b"HTTP/1.1 503")
        for sock in holders:
            sock.close()
        time.sleep(0.2)
        for _ in range(6):  # 1.2 MB in turn: what each held is given back (offloaded, too)
            assert http("POST", process.url + "/v1/models/iris:predict", padded)[0] == 200
    finally:
        for sock in holders:
            sock.close()
        stop(process)


def test_an_ordinary_client_reads_the_413_of_a_body_it_sends_whole(
    fresh_server: Process,
) -> None:
    """urllib, like most clients, sends its whole body before reading: the server reads
    and throws away the rest of the body after answering, so the client gets the 413
    JSON instead of a reset connection."""
    status, raw, _ = http("POST", fresh_server.url + "/v2/models/iris/infer", b" " * (9 * MiB))
    assert status == 413
    assert "exceeds the limit of 8388608 bytes" in json.loads(raw)["error"]
    assert http("GET", fresh_server.url + "/v2/health/live")[0] == 200
