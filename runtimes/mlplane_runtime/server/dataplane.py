"""The data plane both protocols share: model lookup, input checks, predict, sampling."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

import mlplane_runtime
from mlplane_runtime.httpserver import RequestError
from mlplane_runtime.server import metrics
from mlplane_runtime.server.batching import Batcher
from mlplane_runtime.server.codec import Array, InferenceRequest, RequestedOutput
from mlplane_runtime.server.model import OnnxModel, TensorSpec


class SampleSink(Protocol):
    def offer(self, rows: Array, predictions: Array | None) -> None: ...


MAX_ROWS = 10_000  # per request (the --max-rows default): bounds the work of one request


class DataPlane:
    def __init__(
        self,
        model: OnnxModel,
        sampler: SampleSink | None = None,
        max_rows: int = MAX_ROWS,
        batcher: Batcher | None = None,
    ) -> None:
        self.model = model
        self.sampler = sampler
        self.max_rows = max_rows
        self.batcher = batcher  # None: every request runs alone
        self.draining = False

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
        wanted = self._check(model, request)
        return self._respond(model, request, wanted, self._predict(model, request.inputs))

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
        wanted = self._check(model, request)
        results = await self.batcher.predict(request.inputs, request.rows)
        self._record(model, request.inputs, results)
        return self._respond(model, request, wanted, results)

    def _check(self, model: OnnxModel, request: InferenceRequest) -> list[RequestedOutput]:
        """The outputs to answer, once the request fits the model; else a RequestError."""
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
        return wanted

    @staticmethod
    def _respond(
        model: OnnxModel,
        request: InferenceRequest,
        wanted: list[RequestedOutput],
        results: dict[str, Array],
    ) -> tuple[dict[str, Any], list[tuple[str, str, Array, bool]]]:
        by_name = {spec.name: spec for spec in model.outputs}
        outputs = [
            (item.name, by_name[item.name].datatype, results[item.name], item.binary)
            for item in wanted
        ]
        header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if request.id is not None:
            header["id"] = request.id
        return header, outputs

    def predict_v1(self, model: OnnxModel, instances: Array) -> list[Any]:
        """V1 predict on a model from `ready_model`: one prediction per instance (the
        label, or the regression value)."""
        spec = model.inputs[0]
        if len(model.inputs) != 1:
            raise RequestError("the V1 protocol needs a model with a single input; use V2")
        self.check_rows(len(instances))
        _check_tensor(spec, spec.datatype, instances.astype(np.float32, copy=False))
        results = self._predict(model, {spec.name: instances})
        first = results[model.outputs[0].name]
        return (
            first.ravel().tolist()
            if first.dtype.kind not in "OUS"
            else [str(v) for v in first.ravel()]
        )

    def _predict(self, model: OnnxModel, inputs: dict[str, Array]) -> dict[str, Array]:
        results: dict[str, Array] = model.predict(inputs)
        self._record(model, inputs, results)
        return results

    def _record(
        self, model: OnnxModel, inputs: dict[str, Array], results: dict[str, Array]
    ) -> None:
        """Count the rows and offer them to the monitor's sampler."""
        first_input = next(iter(inputs.values()))
        metrics.ROWS.inc(first_input.shape[0] if first_input.ndim else 1)
        if self.sampler is not None and len(inputs) == 1:
            self.sampler.offer(first_input, results[model.outputs[0].name])


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
