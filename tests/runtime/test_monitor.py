"""Drift detection and sampling: in-distribution windows are not flagged, shifted ones
are; the server hands samples to the monitor without ever blocking a request."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris

from mlplane_runtime.httpserver import HEADER_LENGTH, Request
from mlplane_runtime.monitor.app import MonitorApp
from mlplane_runtime.monitor.drift import DriftDetector
from mlplane_runtime.server import metrics
from mlplane_runtime.server.sampler import Sampler, encode_samples
from tests.runtime.conftest import (
    BIN,
    Process,
    TrainedModel,
    free_port,
    get_json,
    http,
    serve_args,
    start,
    stop,
)


@pytest.fixture(scope="module")
def profile(iris_model: TrainedModel) -> dict[str, Any]:
    return dict(json.loads((iris_model.run_dir / "profile.json").read_text()))


def window_from_training(seed: int, size: int = 500) -> np.ndarray:
    data: np.ndarray = load_iris().data
    return data[np.random.default_rng(seed).integers(0, len(data), size)]


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_window_from_the_training_distribution_is_not_flagged(
    profile: dict[str, Any], method: str
) -> None:
    for seed in range(3):
        detector = DriftDetector(profile, method=method, min_samples=100, window=500)
        detector.add(window_from_training(seed), None)
        summary = detector.summary()
        assert summary["samples"] == 500
        assert not summary["detected"], summary


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_shifted_window_is_flagged_on_the_shifted_feature(
    profile: dict[str, Any], method: str
) -> None:
    detector = DriftDetector(profile, method=method, min_samples=100, window=500)
    rows = window_from_training(7)
    rows[:, 2] += 2.0  # petal length shifts by 2 cm
    detector.add(rows, None)
    summary = detector.summary()
    assert summary["detected"]
    assert summary["drifted"] == ["petal length (cm)"]


def test_no_verdict_before_min_samples_and_window_slides(profile: dict[str, Any]) -> None:
    detector = DriftDetector(profile, min_samples=100, window=200)
    shifted = window_from_training(1, 99)
    shifted[:, 0] += 5
    detector.add(shifted, None)
    assert not detector.summary()["detected"]
    assert "waiting" in detector.summary()["reason"]
    detector.add(shifted[:10], None)
    assert detector.summary()["detected"]
    detector.add(window_from_training(2, 200), None)  # pushes the shifted rows out
    assert not detector.summary()["detected"]
    with pytest.raises(ValueError, match="4 features"):
        detector.add(np.zeros((1, 3)), None)


@dataclass
class Monitor:
    process: Process
    samples_url: str  # the loopback listener, where the pod's own server sends samples

    @property
    def url(self) -> str:  # the pod's address: /drift, /metrics, /healthz
        return self.process.url


def start_monitor(model: TrainedModel, tmp_path: Path, *extra: str) -> Monitor:
    port, samples_port = free_port(), free_port()
    process = start(
        [
            str(BIN / "mlplane-monitor"),
            "--baseline-uri",
            str(model.run_dir / "profile.json"),
            "--baseline-sha256",
            model.result["baseline"]["sha256"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--samples-port",
            str(samples_port),
            *extra,
        ],
        tmp_path / "monitor.log",
        "/healthz",
        port,
    )
    return Monitor(process, f"http://127.0.0.1:{samples_port}/samples")


def test_monitor_process_reports_drift_on_http(iris_model: TrainedModel, tmp_path: Path) -> None:
    monitor = start_monitor(iris_model, tmp_path, "--min-samples", "50", "--window", "300")
    try:
        rows = window_from_training(3, 300)
        body = json.dumps({"inputs": rows.tolist(), "predictions": [0] * 300}).encode()
        assert http("POST", monitor.samples_url, body)[0] == 200
        assert get_json(monitor.url + "/drift")[1]["detected"] is False
        rows[:, 3] += 3
        body = json.dumps({"inputs": rows.tolist()}).encode()
        assert http("POST", monitor.samples_url, body)[0] == 200
        status, drift = get_json(monitor.url + "/drift")
        assert (status, drift["detected"], drift["method"]) == (200, True, "psi")
        assert drift["features"]["petal width (cm)"] > 0.2
        metrics = http("GET", monitor.url + "/metrics")[1].decode()
        assert "mlplane_drift_detected 1.0" in metrics
        assert 'mlplane_feature_drift{feature="petal width (cm)"}' in metrics
        assert http("POST", monitor.samples_url, b'{"inputs": [[1, 2]]}')[0] == 400
    finally:
        assert stop(monitor.process) == 0


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP (IPv4) addresses a process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
            host, port = fields[1].split(":")
            addresses.add((socket.inet_ntoa(bytes.fromhex(host)[::-1]), int(port, 16)))
    return addresses


def test_samples_from_outside_the_pod_are_refused_and_the_servers_arrive(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    """Fake drift would trigger retraining: /samples is only on the loopback listener,
    where the pod's own server sends them; the pod's address (the Service's) refuses."""
    monitor = start_monitor(iris_model, tmp_path, "--min-samples", "20")
    server_port = free_port()
    server = start(
        serve_args(
            iris_model, server_port, "--monitor-url", monitor.samples_url.removesuffix("/samples")
        ),
        tmp_path / "server.log",
        "/v2/health/ready",
        server_port,
    )
    try:
        shifted = window_from_training(5, 200) + 5
        fake = json.dumps({"inputs": shifted.tolist(), "predictions": [0] * 200}).encode()
        status, raw, _ = http("POST", monitor.url + "/samples", fake[:900])
        assert status == 403
        assert monitor.samples_url.split("/")[2] in json.loads(raw)["error"]
        assert http("POST", monitor.url + "/samples", fake)[0] == 413  # refused at the head
        body, header_length = encode_samples(shifted, None)
        binary = {HEADER_LENGTH: str(header_length)}
        assert http("POST", monitor.url + "/samples", body, binary)[0] in (403, 413)
        assert get_json(monitor.url + "/drift")[1]["received"] == 0
        port = int(monitor.samples_url.split(":")[2].split("/")[0])
        assert ("127.0.0.1", port) in listening_addresses(monitor.process.proc.pid)
        assert ("0.0.0.0", port) not in listening_addresses(monitor.process.proc.pid)

        rows = window_from_training(5, 30).astype(np.float32)
        body = json.dumps({"instances": rows.tolist()}).encode()
        assert http("POST", server.url + "/v1/models/iris:predict", body)[0] == 200
        deadline = time.monotonic() + 10
        drift: dict[str, Any] = {}
        while time.monotonic() < deadline:
            drift = get_json(monitor.url + "/drift")[1]
            if drift["samples"] >= 30:
                break
            time.sleep(0.1)
        assert (drift["samples"], drift["received"]) == (30, 30)  # the server's, none faked
        assert sum(drift["prediction"]["proportions"].values()) == pytest.approx(1)
    finally:
        stop(server)
        stop(monitor.process)


def test_monitor_memory_stays_bounded_under_long_labels(
    iris_model: TrainedModel, tmp_path: Path
) -> None:
    """200 MB of samples whose predictions are long, ever-new strings: the window keeps
    known labels only, so the monitor's memory does not follow the input."""
    monitor = start_monitor(iris_model, tmp_path)
    pid = monitor.process.proc.pid
    try:
        rows = window_from_training(6, 10).astype(np.float32)
        body, header_length = encode_samples(rows, np.array(["x"] * 10, dtype=object))
        assert (
            http("POST", monitor.samples_url, body, {HEADER_LENGTH: str(header_length)})[0] == 200
        )
        before = rss_kib(pid)
        for batch in range(200):
            labels = np.array([f"{batch}-{i}-" + "y" * 100_000 for i in range(10)], dtype=object)
            body, header_length = encode_samples(rows, labels)
            headers = {HEADER_LENGTH: str(header_length)}
            assert http("POST", monitor.samples_url, body, headers)[0] == 200
        after = rss_kib(pid)
        print(f"monitor VmRSS {before} -> {after} KiB after 200 MB of long labels")
        assert get_json(monitor.url + "/drift")[1]["received"] == 2010
        assert after - before < 30 * 1024, f"VmRSS {before} -> {after} KiB"
        too_long = np.array(["z" * 2_000_000], dtype=object)
        body, header_length = encode_samples(rows[:1], too_long)
        status, raw, _ = http(
            "POST", monitor.samples_url, body, {HEADER_LENGTH: str(header_length)}
        )
        assert status == 413
        assert "at most 1048576" in json.loads(raw)["error"]
    finally:
        stop(monitor.process)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_sampling_never_blocks_when_the_queue_is_full() -> None:
    sampler = Sampler("http://127.0.0.1:9", max_pending=2)  # never started: nothing drains
    rows = np.zeros((3, 4), np.float32)
    started = time.perf_counter()
    for _ in range(5):
        sampler.offer(rows, np.zeros(3), "r", 0.0)
    assert time.perf_counter() - started < 0.05
    assert sampler.pending() == 2  # two requests of three rows fit
    assert sampler.dropped == 9  # the other three are dropped and counted


def test_sampling_never_blocks_when_the_monitor_hangs() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    port = listener.getsockname()[1]
    sampler = Sampler(f"http://127.0.0.1:{port}", max_pending=4, interval=0.01, timeout=1.0)
    sampler.start()
    rows = np.zeros((1, 4), np.float32)
    worst = 0.0
    for _ in range(2000):
        started = time.perf_counter()
        sampler.offer(rows, None, "r", 0.0)
        worst = max(worst, time.perf_counter() - started)
    assert worst < 0.05
    assert sampler.dropped > 0
    sampler.stop()
    listener.close()


def test_sample_rate_zero_sends_nothing() -> None:
    sampler = Sampler("http://127.0.0.1:9", rate=0.0)
    sampler.offer(np.zeros((1, 4)), None, "r", 0.0)
    assert sampler.pending() == 0


def monitor_app(profile: dict[str, Any]) -> MonitorApp:
    return MonitorApp(DriftDetector(profile, min_samples=10, window=100))


def post_samples(app: MonitorApp, body: bytes, header_length: int | None) -> tuple[int, Any]:
    headers = {} if header_length is None else {HEADER_LENGTH: str(header_length)}
    response = app(Request("POST", "/samples", "", headers, body))
    return response.status, json.loads(response.body)


def test_binary_samples_round_trip_into_the_window(profile: dict[str, Any]) -> None:
    app = monitor_app(profile)
    rows = window_from_training(4, 150)  # FP64 in, FP32 on the wire; the window keeps 100
    labels = np.array(["setosa", "versicolor"] * 75, dtype=object)
    body, header_length = encode_samples(rows, labels)
    assert post_samples(app, body, header_length) == (200, {"accepted": 150})
    summary = app.detector.summary()
    assert (summary["samples"], summary["received"]) == (100, 150)
    assert app.detector._rows[:100].tolist() == rows[50:].astype(np.float32).tolist()


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b'{"shape": [1, 4]}' + b"\0" * 16, "x", "is not a length"),
        (b'{"shape": [1, 4]}', 999, "is not a length within the body"),
        (b'{"shape": [1, 4]}' + b"\0" * 15, 17, "15 bytes of rows do not match shape [1, 4]"),
        (b'{"shape": [4]}' + b"\0" * 16, 14, '"shape": [rows, features]'),
        (b'{"shape": [1, true]}' + b"\0" * 4, 20, '"shape": [rows, features]'),
        (b'{"shape": [1, 3]}' + b"\0" * 12, 17, "4 features"),
        (b'{"shape": [2, 4], "predictions": [1]}' + b"\0" * 32, 37, "one entry per row"),
        (b"[1, 2]" + b"\0" * 16, 6, '"shape": [rows, features]'),
        (b"{not json" + b"\0" * 16, 9, "not valid JSON"),
    ],
)
def test_malformed_binary_samples_are_refused_with_the_reason(
    profile: dict[str, Any], body: bytes, header_length: Any, message: str
) -> None:
    app = monitor_app(profile)
    headers = {HEADER_LENGTH: str(header_length)}
    response = app(Request("POST", "/samples", "", headers, body))
    assert response.status == 400
    assert message in json.loads(response.body)["error"]
    assert app.detector.summary()["received"] == 0


def test_sampling_rate_falls_to_the_per_second_limit_under_load_and_recovers() -> None:
    sampler = Sampler("http://127.0.0.1:9", max_per_second=100, max_pending=100_000)
    row = np.zeros((1, 4), np.float32)
    sampler._last_flush -= 1.0  # as if one interval of a second had passed
    for _ in range(1000):  # 1,000 rows/s offered at rate 1
        sampler.offer(row, None, "r", 0.0)
    sampler.flush()  # nothing listens on port 9: the batch is dropped as send_failed
    assert sampler.effective_rate == pytest.approx(0.1, rel=0.05)
    assert metrics.REGISTRY.get_sample_value("mlplane_sample_rate") == sampler.effective_rate
    assert sampler.dropped == 1000
    for _ in range(10_000):
        sampler.offer(row, None, "r", 0.0)
    kept = sampler.pending()
    assert 800 < kept < 1200  # about 100 rows/s of 10,000 offered at rate 0.1
    sampler._last_flush -= 1.0
    sampler.flush()
    sampler._last_flush -= 1.0
    sampler.flush()  # an idle interval: back to the ceiling
    assert sampler.effective_rate == 1.0
    assert metrics.REGISTRY.get_sample_value("mlplane_sample_rate") == 1.0  # on /metrics


def test_sampler_never_raises_on_rows_of_another_shape() -> None:
    sampler = Sampler("http://127.0.0.1:9")
    sampler.offer(np.zeros((1, 4), np.float32), np.zeros(1), "r", 0.0)
    sampler.offer(np.zeros((1, 3), np.float32), np.zeros(1), "r", 0.0)
    sampler.flush()
    assert sampler.dropped == 2  # counted as unfit, and the sampler keeps going


sample_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.just("1e400"),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.sampled_from(["inputs", "predictions", "shape", "x"]), children)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(
    document=sample_values,
    binary_rows=st.none() | st.binary(max_size=64),
)
def test_random_samples_never_raise_or_get_a_5xx(
    profile: dict[str, Any], document: Any, binary_rows: bytes | None
) -> None:
    app = monitor_app(profile)
    text = json.dumps(document, allow_nan=True).encode()
    if binary_rows is None:
        status, answer = post_samples(app, text, None)
    else:
        status, answer = post_samples(app, text + binary_rows, len(text))
    assert status in (200, 400, 413), answer
    if status != 200:
        assert answer["error"].startswith("bad samples: ")
