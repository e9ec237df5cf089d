"""Hands sampled request rows to the monitor sidecar without ever delaying a request.

`offer()` costs an append to a bounded deque (or a counter increment when it is full);
a background thread drains the deque every `interval` seconds and POSTs one batch to
the monitor's `/samples`. When the monitor is slow or down, rows are dropped and counted,
never queued without bound.
"""

from __future__ import annotations

import collections
import http.client
import logging
import random
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from mlplane_runtime.server import metrics
from mlplane_runtime.server.codec import Array

log = logging.getLogger("mlplane.sampler")


class Sampler:
    def __init__(
        self,
        monitor_url: str,
        *,
        rate: float = 1.0,
        max_pending: int = 8192,
        interval: float = 0.25,
        timeout: float = 2.0,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        parsed = urllib.parse.urlparse(monitor_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"monitor URL must be http://host:port, got {monitor_url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = parsed.path if parsed.path not in ("", "/") else "/samples"
        self.rate = rate
        self.max_pending = max_pending
        self.interval = interval
        self.timeout = timeout
        self._random = random_source
        self._pending: collections.deque[tuple[Array, Array | None]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: http.client.HTTPConnection | None = None
        self._dropped_full = metrics.SAMPLES_DROPPED.labels("queue_full")
        self._dropped_send = metrics.SAMPLES_DROPPED.labels("send_failed")
        self.dropped = 0
        self.sent = 0

    def offer(self, rows: Array, predictions: Array | None) -> None:
        """Queue a sample if the coin says so and there is room; never blocks."""
        if self.rate < 1.0 and self._random() >= self.rate:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += len(rows)
            self._dropped_full.inc(len(rows))
            return
        self._pending.append((rows, predictions))

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
        batch = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch:
            return
        rows = np.concatenate([r.reshape(len(r), -1) for r, _ in batch])
        body = orjson.dumps(
            {"inputs": rows, "predictions": _predictions(batch)},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        if self._post(body):
            self.sent += len(rows)
            metrics.SAMPLES_SENT.inc(len(rows))
        else:
            self.dropped += len(rows)
            self._dropped_send.inc(len(rows))

    def _post(self, body: bytes) -> bool:
        for attempt in range(2):  # one retry on a fresh connection (keep-alive may be stale)
            try:
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(
                        self.host, self.port, timeout=self.timeout
                    )
                self._connection.request(
                    "POST", self.path, body, {"Content-Type": "application/json"}
                )
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


def _predictions(batch: list[tuple[Array, Array | None]]) -> list[Any] | Array | None:
    if any(p is None for _, p in batch):
        return None
    arrays = [
        p.ravel() if p.ndim <= 1 or p.shape[-1] == 1 else p[:, 0] for _, p in batch if p is not None
    ]
    joined = np.concatenate(arrays)
    if joined.dtype.kind in "OUS":
        return [str(v) for v in joined]
    return joined
