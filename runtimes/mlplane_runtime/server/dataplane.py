"""The data plane both protocols share: model lookup, input checks, predict, sampling.

Every inference answer carries a request id, the client's or one made here, so that
ground truth sent later (`feedback`) can be joined with the logged prediction.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any, Protocol

import numpy as np

import mlplane_runtime
from mlplane_runtime.httpserver import RequestError
from mlplane_runtime.server import metrics
from mlplane_runtime.server.batching import Batcher
from mlplane_runtime.server.codec import Array, InferenceRequest, RequestedOutput
from mlplane_runtime.server.model import OnnxModel, TensorSpec


class SampleSink(Protocol):
    def offer(
        self, rows: Array, predictions: Array | None, request_id: str, when: float
    ) -> None: ...


class FeedbackSink(Protocol):
    def send(self, entries: list[dict[str, Any]]) -> None:
        """Store the entries durably or raise RequestError (503)."""


MAX_ROWS = 10_000  # per request (the --max-rows default): bounds the work of one request
MAX_ID_LENGTH = 256  # a request id is logged with every row: bounded
MAX_FEEDBACK = 10_000  # entries in one feedback request
MAX_LABEL_LENGTH = 256  # a string truth value


class RequestIds:
    """Ids for requests that bring none: a random prefix per process and a counter, so
    they are unique across replicas and restarts and cost no uuid4 per request."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)  # next() is atomic under the GIL

    def new(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"


def check_request_id(value: Any, field: str = "id") -> str | None:
    """The client's request id: a non-empty string of at most MAX_ID_LENGTH characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise RequestError(
            f"{field!r} must be a non-empty string of at most {MAX_ID_LENGTH} characters"
        )
    return value


class DataPlane:
    def __init__(
        self,
        model: OnnxModel,
        sampler: SampleSink | None = None,
        max_rows: int = MAX_ROWS,
        prediction_log: SampleSink | None = None,
        feedback_sink: FeedbackSink | None = None,
        batcher: Batcher | None = None,
    ) -> None:
        """`sampler`: rows for drift detection; `prediction_log`: requests (rows, outputs,
        id, time) to log for the quality loop (both only enqueue on the request path);
        `feedback_sink`: where ground truth for logged requests goes; `batcher`: shares
        one run among concurrent requests (None: every request runs alone)."""
        self.model = model
        self.sampler = sampler
        self.prediction_log = prediction_log
        self.feedback_sink = feedback_sink
        self.max_rows = max_rows
        self.batcher = batcher
        self.draining = False
        self.ids = RequestIds()

    # health and metadata
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.model.ready and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "mlplane",
            "version": mlplane_runtime.__version__,
            "extensions": ["binary_tensor_data"],
        }

    def get_model(self, name: str, version: str | None = None) -> OnnxModel:
        model = self.model
        if name != model.name:
            raise RequestError(f"model {name!r} not found; this server serves {model.name!r}", 404)
        if version is not None and model.version and version != model.version:
            raise RequestError(
                f"version {version!r} of model {name!r} not found; served: {model.version!r}", 404
            )
        return model

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = self.ready_model(name, version).metadata()
        return metadata

    def ready_model(self, name: str, version: str | None = None) -> OnnxModel:
        """The model a request names, once it is loaded: 404 for another name or version,
        503 while loading. Resolved before the body is parsed, as KServe and MLServer do:
        an unknown model is a 404 whatever the body."""
        model = self.get_model(name, version)
        if not model.ready:
            raise RequestError(f"model {name!r} is not ready yet", 503)
        return model

    # inference
    def check_rows(self, rows: int) -> None:
        """413 when a request has more than `max_rows` rows."""
        if rows > self.max_rows:
            raise RequestError(
                f"the request has {rows} rows; at most {self.max_rows} are allowed per "
                "request (--max-rows): split the batch",
                413,
            )

    def infer(
        self, model: OnnxModel, request: InferenceRequest
    ) -> tuple[dict[str, Any], list[tuple[str, str, Array, bool]]]:
        """V2 inference on a model from `ready_model`: the response header fields and the
        (name, datatype, array, binary) outputs to encode."""
        wanted, request_id = self._check(model, request)
        results = self._predict(model, request.inputs, request_id)
        return self._respond(model, request_id, wanted, results)

    def batches(self, request: InferenceRequest) -> bool:
        """Whether this request goes through `infer_batched`, to share a run: batching is
        on, the request fits a batch, and it is not alone (the model is busy, requests
        wait, or another arrived in this turn of the loop). Else the front runs it as
        unbatched, inline or offloaded by its size. Call on the event loop."""
        batcher = self.batcher
        return (
            batcher is not None
            and batcher.accepts(request.inputs, request.rows)
            and not batcher.alone()
        )

    async def infer_batched(
        self, model: OnnxModel, request: InferenceRequest
    ) -> tuple[dict[str, Any], list[tuple[str, str, Array, bool]]]:
        """`infer`, in a run shared with the concurrent requests (`batches` is true).
        The request is checked alone first, so a bad one never joins a batch."""
        assert self.batcher is not None
        wanted, request_id = self._check(model, request)
        results = await self.batcher.predict(request.inputs, request.rows)
        self._record(model, request.inputs, results, request_id)
        return self._respond(model, request_id, wanted, results)

    def _check(
        self, model: OnnxModel, request: InferenceRequest
    ) -> tuple[list[RequestedOutput], str]:
        """The outputs to answer and the request id, once the request fits the model;
        else a RequestError."""
        if request.rows > self.max_rows:
            self.check_rows(request.rows)
        for spec in model.inputs:
            if spec.name not in request.inputs:
                raise RequestError(
                    f"missing input {spec.name!r}; the model expects "
                    f"{[s.metadata() for s in model.inputs]}"
                )
            _check_tensor(spec, request.datatypes[spec.name], request.inputs[spec.name])
        if len(request.inputs) != len(model.inputs):
            known = {spec.name for spec in model.inputs}
            unknown = sorted(set(request.inputs) - known)
            raise RequestError(f"unknown input(s) {unknown}; model inputs: {sorted(known)}")
        names = {spec.name for spec in model.outputs}
        wanted = request.outputs
        if wanted is None:
            wanted = [RequestedOutput(spec.name, request.binary_outputs) for spec in model.outputs]
        for item in wanted:
            if item.name not in names:
                raise RequestError(f"unknown output {item.name!r}; model outputs: {sorted(names)}")
        return wanted, check_request_id(request.id) or self.ids.new()

    @staticmethod
    def _respond(
        model: OnnxModel,
        request_id: str,
        wanted: list[RequestedOutput],
        results: dict[str, Array],
    ) -> tuple[dict[str, Any], list[tuple[str, str, Array, bool]]]:
        by_name = {spec.name: spec for spec in model.outputs}
        outputs = [
            (item.name, by_name[item.name].datatype, results[item.name], item.binary)
            for item in wanted
        ]
        header: dict[str, Any] = {
            "id": request_id,
            "model_name": model.name,
            "model_version": model.version,
        }
        return header, outputs

    def predict_v1(
        self, model: OnnxModel, instances: Array, request_id: str | None = None
    ) -> dict[str, Any]:
        """V1 predict on a model from `ready_model`: the response document, one prediction
        per instance (the label, or the regression value) and the request id."""
        spec = model.inputs[0]
        if len(model.inputs) != 1:
            raise RequestError("the V1 protocol needs a model with a single input; use V2")
        self.check_rows(len(instances))
        _check_tensor(spec, spec.datatype, instances.astype(np.float32, copy=False))
        request_id = check_request_id(request_id) or self.ids.new()
        results = self._predict(model, {spec.name: instances}, request_id)
        first = results[model.outputs[0].name]
        predictions = (
            first.ravel().tolist()
            if first.dtype.kind not in "OUS"
            else [str(v) for v in first.ravel()]
        )
        return {"predictions": predictions, "id": request_id}

    # feedback
    def feedback(self, name: str, document: Any) -> dict[str, Any]:
        """Ground truth for logged requests: `{"id": ..., "truth": [...]}` or
        `{"feedback": [{"id": ..., "truth": [...]}, ...]}`, one true value per row of the
        request. Stored by the sink before it is acknowledged; blocks (run it off the
        event loop)."""
        self.get_model(name)
        if self.feedback_sink is None:
            raise RequestError(
                "this server does not log predictions, so it takes no feedback: set "
                "spec.monitoring.logging on the InferenceService (--log-sample-rate)",
                404,
            )
        entries = parse_feedback(document, self.max_rows)
        self.feedback_sink.send(entries)
        return {"accepted": len(entries)}

    def _predict(
        self, model: OnnxModel, inputs: dict[str, Array], request_id: str
    ) -> dict[str, Array]:
        results: dict[str, Array] = model.predict(inputs)
        self._record(model, inputs, results, request_id)
        return results

    def _record(
        self, model: OnnxModel, inputs: dict[str, Array], results: dict[str, Array], request_id: str
    ) -> None:
        """Count the rows and offer them to the drift sampler and the prediction log."""
        first_input = next(iter(inputs.values()))
        metrics.ROWS.inc(first_input.shape[0] if first_input.ndim else 1)
        if len(inputs) == 1 and (self.sampler is not None or self.prediction_log is not None):
            first_output, now = results[model.outputs[0].name], time.time()
            if self.sampler is not None:
                self.sampler.offer(first_input, first_output, request_id, now)
            if self.prediction_log is not None:
                self.prediction_log.offer(first_input, first_output, request_id, now)


def parse_feedback(document: Any, max_rows: int) -> list[dict[str, Any]]:
    """The entries of a feedback body, each checked; a mistake names its field."""
    if not isinstance(document, dict):
        raise RequestError('feedback must be a JSON object: {"id", "truth"} or {"feedback": [...]}')
    if "feedback" in document:
        if set(document) != {"feedback"}:
            raise RequestError(
                f"unknown field(s) {sorted(set(document) - {'feedback'})} beside 'feedback'"
            )
        raw = document["feedback"]
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_FEEDBACK:
            raise RequestError(f"'feedback' must be a list of 1 to {MAX_FEEDBACK} entries")
        return [_feedback_entry(entry, f"feedback[{i}]", max_rows) for i, entry in enumerate(raw)]
    return [_feedback_entry(document, "", max_rows)]


def _feedback_entry(entry: Any, where: str, max_rows: int) -> dict[str, Any]:
    prefix = f"{where}." if where else ""
    if not isinstance(entry, dict):
        raise RequestError(f"{where or 'feedback'} must be an object with 'id' and 'truth'")
    unknown = sorted(set(entry) - {"id", "truth"})
    if unknown:
        raise RequestError(f"{where or 'feedback'}: unknown field(s) {unknown}; allowed: id, truth")
    if "id" not in entry:
        raise RequestError(f"'{prefix}id' is required: the id of the answered request")
    request_id = check_request_id(entry["id"], f"{prefix}id")
    truth = entry.get("truth")
    if not isinstance(truth, list) or not 0 < len(truth) <= max_rows:
        raise RequestError(
            f"'{prefix}truth' must be a list of 1 to {max_rows} values, one per row of the request"
        )
    for index, value in enumerate(truth):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        text = isinstance(value, str) and 0 < len(value) <= MAX_LABEL_LENGTH
        if not (number or text):
            raise RequestError(
                f"'{prefix}truth[{index}]' must be a number or a string of 1 to "
                f"{MAX_LABEL_LENGTH} characters (a label or a value)"
            )
    return {"id": request_id, "truth": truth}


def _check_tensor(spec: TensorSpec, datatype: str, array: Array) -> None:
    if array.size == 0:
        raise RequestError(f"input {spec.name!r}: no data (shape {list(array.shape)})")
    if datatype != spec.datatype:
        raise RequestError(
            f"input {spec.name!r}: datatype {datatype} does not match the model's {spec.datatype}"
        )
    if array.ndim != len(spec.shape) or any(
        want not in (-1, have) for want, have in zip(spec.shape, array.shape, strict=True)
    ):
        raise RequestError(
            f"input {spec.name!r}: shape {list(array.shape)} does not match the model's "
            f"{list(spec.shape)} (-1 is any size)"
        )
