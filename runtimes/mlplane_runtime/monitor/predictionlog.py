"""The monitor's prediction log: rows the server answered, buffered in memory (bounded)
and written to storage as Parquet files rolled by size and by age, off the request path
of both containers.

The server hands rows over its loopback channel (POST /predictions, answered at once);
a writer thread rolls a file when `roll_rows` rows are buffered or the oldest is
`roll_seconds` old. Past `max_rows` buffered rows (storage slow or down), new rows are
dropped and counted, never held without bound. `close()` writes what is left: the
monitor calls it on SIGTERM once the server's final batch is in.

Feedback is written at once, one file per request, before it is acknowledged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from mlplane_runtime.errors import RuntimeFailure
from mlplane_runtime.quality.log import Feedback, LoggedRows, write_feedback, write_predictions

log = logging.getLogger("mlplane.monitor.log")


class LogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "mlplane_prediction_log_rows", "Rows written to the prediction log.", registry=registry
        )
        self.dropped = Counter(
            "mlplane_prediction_log_dropped_rows",
            "Rows dropped because the buffer was full (storage too slow or down).",
            registry=registry,
        )
        self.files = Counter(
            "mlplane_prediction_log_files", "Prediction log files written.", registry=registry
        )
        self.failures = Counter(
            "mlplane_prediction_log_write_failures",
            "Writes to storage that failed (retried while the buffer has room).",
            registry=registry,
        )
        self.buffered = Gauge(
            "mlplane_prediction_log_buffered_rows", "Rows waiting to be written.", registry=registry
        )
        self.feedback = Counter(
            "mlplane_feedback", "Feedback entries written (one per request id).", registry=registry
        )


class PredictionLog:
    def __init__(
        self,
        root: str,
        metrics: LogMetrics,
        *,
        roll_rows: int = 10_000,
        roll_seconds: float = 60.0,
        max_rows: int = 100_000,
        pod: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.metrics = metrics
        self.roll_rows = roll_rows
        self.roll_seconds = roll_seconds
        self.max_rows = max_rows
        self.pod = pod or socket.gethostname()
        self.clock = clock
        self._lock = threading.Lock()
        self._batches: list[LoggedRows] = []
        self._buffered = 0
        self._oldest = 0.0  # when the oldest buffered batch arrived
        self._sequence = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, batch: LoggedRows) -> bool:
        """Buffer `batch`; False (and counted) when the buffer is full."""
        count = len(batch.rows)
        with self._lock:
            if self._buffered + count > self.max_rows:
                self.metrics.dropped.inc(count)
                return False
            if not self._batches:
                self._oldest = self.clock()
            self._batches.append(batch)
            self._buffered += count
            self.metrics.buffered.set(self._buffered)
        return True

    def buffered(self) -> int:
        return self._buffered

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlplane-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer and write everything buffered (one last try)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.roll()

    def _run(self) -> None:
        tick = min(1.0, self.roll_seconds / 2)
        while not self._stop.wait(tick):
            with self._lock:
                due = self._buffered >= self.roll_rows or (
                    self._batches and self.clock() - self._oldest >= self.roll_seconds
                )
            if due:
                self.roll()

    def roll(self) -> None:
        """Write the buffered rows as one file; on failure keep them for the next roll."""
        with self._lock:
            batches, self._batches = self._batches, []
            count, self._buffered = self._buffered, 0
            oldest = self._oldest
            self._sequence += 1
            sequence = self._sequence
        batches = [b for b in batches if len(b.rows)]
        if not batches:
            return
        try:
            uri = write_predictions(self.root, batches, self.pod, sequence)
        except (RuntimeFailure, OSError) as exc:
            log.warning("cannot write %d logged rows (kept for the next roll): %s", count, exc)
            self.metrics.failures.inc()
            with self._lock:  # back in front, as room allows
                self._batches = batches + self._batches
                self._buffered += count
                self._oldest = oldest
            return
        finally:
            self.metrics.buffered.set(self._buffered)
        self.metrics.rows.inc(count)
        self.metrics.files.inc()
        log.info("wrote %d logged rows to %s", count, uri)

    def write_feedback(self, feedback: Feedback) -> str:
        """Write one request's feedback now, as its own file (so replicas never contend)."""
        uri = write_feedback(self.root, feedback, self.pod, self.clock())
        self.metrics.feedback.inc(len(feedback.ids))
        return uri
