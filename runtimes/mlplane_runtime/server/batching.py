"""Adaptive batching: concurrent requests for the model coalesced into one ONNX Runtime
run, whose outputs are split back by rows.

A batch goes to the model (on one worker thread, so the event loop keeps gathering the
next one) when it holds `max_batch_size` rows, or when the model is free and its first
request has waited `max_latency` seconds; 0 dispatches it on the loop's next turn, so a
lone request never waits while requests that arrived together still share a run. While
a batch runs, requests queue, and the next batch takes them as soon as the run ends:
under load, batches grow by themselves. A request that is alone (`alone`: the model is
free, nothing waits, no other request came in this turn of the loop) does not queue at
all: the front runs it as it would unbatched, so at low concurrency batching costs
nothing; a batch of one request of at most `inline_rows` rows runs on the loop too. A
request with more rows than a batch holds never comes here (the data plane runs it
alone).

Errors stay per request: the data plane checks each request before it queues, and if a
combined run fails, each of its requests runs alone, so only the one at fault gets the
error.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from dataclasses import dataclass, field

import numpy as np

from mlplane_runtime.server import metrics
from mlplane_runtime.server.codec import Array
from mlplane_runtime.server.model import OnnxModel

log = logging.getLogger(__name__)

Outputs = dict[str, Array]


@dataclass(slots=True)
class _Queued:
    inputs: dict[str, Array]
    rows: int
    future: asyncio.Future[Outputs]
    queued_at: float


@dataclass(slots=True)
class _Batch:
    requests: list[_Queued] = field(default_factory=list)
    rows: int = 0


def batchable(model: OnnxModel) -> bool:
    """Whether rows of the model's requests can be stacked: every input and output has a
    dynamic first dimension (the batch)."""
    tensors = [*model.inputs, *model.outputs]
    return bool(tensors) and all(spec.shape[:1] == (-1,) for spec in tensors)


class Batcher:
    def __init__(
        self,
        model: OnnxModel,
        max_batch_size: int,
        max_latency: float,
        inline_rows: int,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.inline_rows = inline_rows
        self._queue: collections.deque[_Queued] = collections.deque()
        self._queued_rows = 0
        self._running = False
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._turn_taken = False  # a request was let through alone in this turn of the loop
        self._runner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlplane-batch")

    def accepts(self, inputs: dict[str, Array], rows: int) -> bool:
        """Whether a checked request can join a batch: at most a batch of rows, and the
        same rows in every input."""
        return rows <= self.max_batch_size and all(
            array.ndim >= 1 and array.shape[0] == rows for array in inputs.values()
        )

    def alone(self) -> bool:
        """Whether a request arriving now may run at once without queueing: the model is
        free, nothing waits, and no other request arrived in this turn of the loop (one
        that does queues, and the next arrivals join it). Call on the event loop."""
        if self._running or self._queue or self._turn_taken:
            return False
        self._turn_taken = True
        asyncio.get_running_loop().call_soon(self._next_turn)
        return True

    def _next_turn(self) -> None:
        self._turn_taken = False

    async def predict(self, inputs: dict[str, Array], rows: int) -> Outputs:
        """The model's outputs for this request's rows, from a run it may share."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        self._queue.append(_Queued(inputs, rows, future, loop.time()))
        self._queued_rows += rows
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running or not self._queue:
            return  # the run in progress dispatches the queue when it ends
        if self._queued_rows >= self.max_batch_size:
            self._dispatch(loop)
        elif self._timer is None:
            wait = self._queue[0].queued_at + self.max_latency - loop.time()
            if wait > 0:
                self._timer = loop.call_later(wait, self._dispatch, loop)
            else:
                self._timer = loop.call_soon(self._dispatch, loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running or not self._queue:
            return
        batch = _Batch()
        while self._queue and batch.rows + self._queue[0].rows <= self.max_batch_size:
            queued = self._queue.popleft()
            batch.requests.append(queued)
            batch.rows += queued.rows
        self._queued_rows -= batch.rows
        if len(batch.requests) == 1 and batch.rows <= self.inline_rows:
            self._settle(batch, self._run(batch))
            self._schedule(loop)
            return
        self._running = True
        done = loop.run_in_executor(self._runner, self._run, batch)
        done.add_done_callback(lambda finished: self._finished(loop, batch, finished))

    def _finished(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: _Batch,
        finished: asyncio.Future[list[Outputs | BaseException]],
    ) -> None:
        self._running = False
        error = finished.exception() if not finished.cancelled() else None
        if finished.cancelled() or error is not None:
            failure = error or RuntimeError("the batch was cancelled")
            self._settle(batch, [failure] * len(batch.requests))
        else:
            self._settle(batch, finished.result())
        if self._queue:  # they waited for this run: no more waiting
            self._dispatch(loop)

    @staticmethod
    def _settle(batch: _Batch, outcomes: list[Outputs | BaseException]) -> None:
        for queued, outcome in zip(batch.requests, outcomes, strict=True):
            if queued.future.done():  # its caller went away
                continue
            if isinstance(outcome, BaseException):
                queued.future.set_exception(outcome)
            else:
                queued.future.set_result(outcome)

    def _run(self, batch: _Batch) -> list[Outputs | BaseException]:
        """On the runner thread: one run for the batch, split by rows; a failed run, or
        outputs that are not one row per input row, and each request runs alone."""
        metrics.BATCH_ROWS.observe(batch.rows)
        metrics.BATCH_REQUESTS.observe(len(batch.requests))
        requests = batch.requests
        if len(requests) == 1:
            return [self._alone(requests[0])]
        names = list(requests[0].inputs)
        try:
            merged = {name: np.concatenate([q.inputs[name] for q in requests]) for name in names}
            results = self.model.predict(merged)
        except Exception:
            log.warning("a batch of %d requests failed; running each alone", len(requests))
            return [self._alone(queued) for queued in requests]
        if any(array.shape[:1] != (batch.rows,) for array in results.values()):
            return [self._alone(queued) for queued in requests]
        split: list[Outputs | BaseException] = []
        start = 0
        for queued in requests:
            end = start + queued.rows
            split.append({name: array[start:end] for name, array in results.items()})
            start = end
        return split

    def _alone(self, queued: _Queued) -> Outputs | BaseException:
        try:
            return self.model.predict(queued.inputs)
        except Exception as exc:
            return exc

    def close(self) -> None:
        self._runner.shutdown(wait=False, cancel_futures=True)
