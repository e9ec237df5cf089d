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
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from mlplane_runtime.server import metrics
from mlplane_runtime.server.codec import Array

log = logging.getLogger("mlplane.sampler")
MIN_RATE = 1e-4


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
    ) -> None:
        parsed = urllib.parse.urlparse(monitor_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"monitor URL must be http://host:port, got {monitor_url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = parsed.path if parsed.path not in ("", "/") else "/samples"
        self.rate = rate  # the ceiling
        self.max_per_second = max_per_second  # 0: no limit
        self.effective_rate = rate  # what offer() samples at; flush() adapts it
        metrics.SAMPLE_RATE.set(rate)
        self._last_flush = time.monotonic()
        self.max_pending = max_pending  # requests, each at most one body's worth of rows
        self.interval = interval
        self.timeout = timeout
        self._random = random_source
        self._pending: collections.deque[tuple[Array, Array | None]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: http.client.HTTPConnection | None = None
        self._dropped_full = metrics.SAMPLES_DROPPED.labels("queue_full")
        self._dropped_send = metrics.SAMPLES_DROPPED.labels("send_failed")
        self._dropped_unfit = metrics.SAMPLES_DROPPED.labels("unfit")
        self.dropped = 0
        self.sent = 0

    def offer(self, rows: Array, predictions: Array | None) -> None:
        """Queue a sample if the coin says so and there is room; never blocks."""
        if self.effective_rate < 1.0 and self._random() >= self.effective_rate:
            return
        if len(self._pending) < self.max_pending:
            self._pending.append((rows, predictions))
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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + self.interval + 1)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        """Send everything queued so far as one batch."""
        pending = self._pending
        batch = [pending.popleft() for _ in range(len(pending))]  # others may append meanwhile
        self._adapt_rate(sum(len(rows) for rows, _ in batch))
        if not batch:
            return
        inputs, outputs = zip(*batch, strict=True)
        try:  # one model and validated inputs, so every request has the same row shape
            rows = np.concatenate(inputs)
            rows = rows.reshape(len(rows), -1)
            predictions = _first_column(outputs)
        except ValueError as exc:
            count = sum(len(r) for r in inputs)
            log.warning("cannot join %d sampled rows: %s", count, exc)
            self._drop(self._dropped_unfit, count)
            return
        body, header_length = encode_samples(rows, predictions)
        if self._post(body, header_length):
            self.sent += len(rows)
            metrics.SAMPLES_SENT.inc(len(rows))
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


def encode_samples(rows: Array, predictions: Array | None) -> tuple[bytes, int]:
    """The `/samples` body: a JSON header ({"shape": [rows, features], "predictions"})
    and then the rows as little-endian FP32 (the monitor's window is FP32); returns the
    body and the header's length."""
    header: dict[str, Any] = {"shape": list(rows.shape)}
    if predictions is not None:
        header["predictions"] = (
            [str(v) for v in predictions] if predictions.dtype.kind in "OUS" else predictions
        )
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return text + rows.astype("<f4", copy=False).tobytes(), len(text)


def _first_column(outputs: tuple[Array | None, ...]) -> Array | None:
    """The first output per row: the label, or the value of a 1-column regressor."""
    present = [p for p in outputs if p is not None]
    if len(present) < len(outputs):
        return None
    joined: Array = np.concatenate(present)
    return joined if joined.ndim == 1 else joined.reshape(len(joined), -1)[:, 0]
