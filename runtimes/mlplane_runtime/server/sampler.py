"""Hands sampled request rows to the monitor sidecar without ever delaying a request.

`offer()` flips a coin at the sampling rate, then costs one append to a bounded deque
(thread-safe without a lock), or a counter increment when it is full: the request path
runs no numpy and takes no lock, since at saturation even a microsecond per request
shows. A background thread drains the deque every `interval` seconds, joins the batch
with one `np.concatenate` and POSTs it to the monitor's `/samples`: a JSON header, then
the rows as raw FP32 bytes (the binary convention of the Open Inference Protocol,
`Inference-Header-Content-Length`).
When the monitor is slow or down, rows are dropped and counted, never queued without
bound.

The same channel carries the prediction log (`path="/predictions"`, `version` set): then
the header also holds each request's id, row count and time and the served version, and
the last flush on shutdown is marked `"final"`, so the monitor knows it has every row
before it writes its last file and exits.

The rate is a ceiling: with `max_per_second`, the thread lowers the rate each interval
so that about that many rows per second reach the monitor however busy the server is (a
rate-limiting sampler, as tracers use). Drift needs a representative window, not every
row; a busy server keeps its throughput and the window spans seconds, not milliseconds.
`make bench-serve` measures what sampling costs.
"""

from __future__ import annotations

import collections
import http.client
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlplane_runtime.httpserver import RequestError
from mlplane_runtime.server import metrics
from mlplane_runtime.server.codec import Array

log = logging.getLogger("mlplane.sampler")
MIN_RATE = 1e-4
# One POST holds at most this many requests and rows: the monitor holds a header's JSON
# to 1 MiB (ids of up to 256 characters, one prediction per row).
POST_MAX_REQUESTS = 1024
POST_MAX_ROWS = 16384

Pending = tuple[Array, Array | None, str, float]  # rows, outputs, request id, time


class Sampler:
    def __init__(
        self,
        monitor_url: str,
        *,
        rate: float = 1.0,
        max_per_second: float = 0.0,
        max_pending: int = 8192,
        interval: float = 1.0,
        timeout: float = 2.0,
        random_source: Callable[[], float] = random.random,
        path: str = "/samples",
        version: str | None = None,
    ) -> None:
        """`version` set: a prediction log (ids, times and the version in each header);
        None: drift samples."""
        parsed = urllib.parse.urlparse(monitor_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"monitor URL must be http://host:port, got {monitor_url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = parsed.path if parsed.path not in ("", "/") else path
        self.version = version
        self.rate = rate  # the ceiling
        self.max_per_second = max_per_second  # 0: no limit
        self.effective_rate = rate  # what offer() samples at; flush() adapts it
        if version is None:
            metrics.SAMPLE_RATE.set(rate)
        self._last_flush = time.monotonic()
        self.max_pending = max_pending  # requests, each at most one body's worth of rows
        self.interval = interval
        self.timeout = timeout
        self._random = random_source
        self._pending: collections.deque[Pending] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: http.client.HTTPConnection | None = None
        dropped = metrics.SAMPLES_DROPPED if version is None else metrics.LOGGED_DROPPED
        self._sent = metrics.SAMPLES_SENT if version is None else metrics.LOGGED_SENT
        self._dropped_full = dropped.labels("queue_full")
        self._dropped_send = dropped.labels("send_failed")
        self._dropped_unfit = dropped.labels("unfit")
        self.dropped = 0
        self.sent = 0

    def offer(self, rows: Array, predictions: Array | None, request_id: str, when: float) -> None:
        """Queue a sample if the coin says so and there is room; never blocks."""
        if self.effective_rate < 1.0 and self._random() >= self.effective_rate:
            return
        if len(self._pending) < self.max_pending:
            self._pending.append((rows, predictions, request_id, when))
        else:
            self._drop(self._dropped_full, len(rows))

    def _drop(self, counter: Any, count: int) -> None:
        self.dropped += count
        counter.inc(count)

    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlplane-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and send what is queued (a prediction log: marked final)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + self.interval + 1)
        self.flush(final=self.version is not None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Send everything queued so far, in POSTs of at most POST_MAX_REQUESTS requests
        and POST_MAX_ROWS rows; `final` marks the last one (sent even when empty)."""
        pending = self._pending
        batch = [pending.popleft() for _ in range(len(pending))]  # others may append meanwhile
        self._adapt_rate(sum(len(entry[0]) for entry in batch))
        chunks = list(_chunks(batch))
        if final and not chunks:
            self._post(*encode_samples(np.zeros((0, 0), np.float32), None, final=True))
        for index, chunk in enumerate(chunks):
            self._send(chunk, final and index == len(chunks) - 1)

    def _send(self, chunk: list[Pending], final: bool) -> None:
        inputs, outputs, ids, times = zip(*chunk, strict=True)
        try:  # one model and validated inputs, so every request has the same row shape
            rows = np.concatenate(inputs)
            rows = rows.reshape(len(rows), -1)
            predictions = _first_column(outputs)
        except ValueError as exc:
            count = sum(len(r) for r in inputs)
            log.warning("cannot join %d sampled rows: %s", count, exc)
            self._drop(self._dropped_unfit, count)
            return
        if self.version is None:
            body, header_length = encode_samples(rows, predictions)
        else:
            requests = Requests(list(ids), [len(r) for r in inputs], list(times), self.version)
            body, header_length = encode_samples(rows, predictions, requests, final)
        if self._post(body, header_length):
            self.sent += len(rows)
            self._sent.inc(len(rows))
        else:
            self._drop(self._dropped_send, len(rows))

    def _adapt_rate(self, sampled: int) -> None:
        """Set the rate that would have sampled `max_per_second` rows in the last interval."""
        now = time.monotonic()
        elapsed, self._last_flush = now - self._last_flush, now
        if self.max_per_second <= 0 or elapsed <= 0:
            return
        if sampled == 0:
            rate = self.rate
        else:
            offered = sampled / self.effective_rate  # rows the server predicted
            rate = min(self.rate, max(MIN_RATE, self.max_per_second * elapsed / offered))
        self.effective_rate = rate
        metrics.SAMPLE_RATE.set(rate)

    def _post(self, body: bytes, header_length: int) -> bool:
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        }
        for attempt in range(2):  # one retry on a fresh connection (keep-alive may be stale)
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(
                        self.host, self.port, timeout=self.timeout
                    )
                self._connection.request("POST", self.path, body, headers)
                response = self._connection.getresponse()
                response.read()
                if response.status >= 400:
                    log.warning("monitor refused samples: HTTP %d", response.status)
                return response.status < 400
            except (OSError, http.client.HTTPException) as exc:
                if self._connection is not None:
                    self._connection.close()
                self._connection = None
                if attempt:
                    log.warning("cannot send samples to the monitor: %s", exc)
        return False


@dataclass(frozen=True, slots=True)
class Requests:
    """What a prediction log adds to a batch of rows: per request its id, row count and
    time (epoch seconds), and the version that answered them all."""

    ids: list[str]
    counts: list[int]
    times: list[float]
    version: str


def encode_samples(
    rows: Array, predictions: Array | None, requests: Requests | None = None, final: bool = False
) -> tuple[bytes, int]:
    """The `/samples` (and `/predictions`) body: a JSON header ({"shape": [rows,
    features], "predictions"}, with `requests` also "ids", "counts", "times", "version",
    and "final") and then the rows as little-endian FP32 (the monitor's window is FP32);
    returns the body and the header's length."""
    header: dict[str, Any] = {"shape": list(rows.shape)}
    if predictions is not None:
        header["predictions"] = (
            [str(v) for v in predictions] if predictions.dtype.kind in "OUS" else predictions
        )
    if requests is not None:
        header.update(
            ids=requests.ids, counts=requests.counts, times=requests.times, version=requests.version
        )
    if final:
        header["final"] = True
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return text + rows.astype("<f4", copy=False).tobytes(), len(text)


def _chunks(batch: list[Pending]) -> Iterator[list[Pending]]:
    chunk: list[Pending] = []
    rows = 0
    for entry in batch:
        if chunk and (len(chunk) >= POST_MAX_REQUESTS or rows + len(entry[0]) > POST_MAX_ROWS):
            yield chunk
            chunk, rows = [], 0
        chunk.append(entry)
        rows += len(entry[0])
    if chunk:
        yield chunk


def _first_column(outputs: tuple[Array | None, ...]) -> Array | None:
    """The first output per row: the label, or the value of a 1-column regressor."""
    present = [p for p in outputs if p is not None]
    if len(present) < len(outputs):
        return None
    joined: Array = np.concatenate(present)
    return joined if joined.ndim == 1 else joined.reshape(len(joined), -1)[:, 0]


class FeedbackForwarder:
    """Hands feedback to the monitor sidecar, which stores it beside the prediction log
    before it answers; called off the event loop (it waits for the monitor)."""

    def __init__(self, monitor_url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlparse(monitor_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"monitor URL must be http://host:port, got {monitor_url!r}")
        self.host, self.port, self.timeout = parsed.hostname, parsed.port or 80, timeout
        self._lock = threading.Lock()

    def send(self, entries: list[dict[str, Any]]) -> None:
        body = orjson.dumps({"feedback": entries})
        with self._lock:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                connection.request("POST", "/feedback", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise RequestError(f"cannot store the feedback now (monitor: {exc})", 503) from exc
            finally:
                connection.close()
        if response.status >= 400:
            detail = answer.decode("utf-8", "replace")[:300]
            if response.status == 413:  # retrying cannot help: the client must send less
                raise RequestError(f"the feedback is too large to store (monitor: {detail})", 413)
            raise RequestError(f"cannot store the feedback now (monitor: {detail})", 503)
