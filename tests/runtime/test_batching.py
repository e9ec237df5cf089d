"""Adaptive batching: concurrent requests share ONNX Runtime runs, yet each caller gets
exactly its own rows back and its own errors, over REST and gRPC."""

from __future__ import annotations

import asyncio
import http.client as http_client
import json
import math
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from mlplane_runtime.server import metrics
from mlplane_runtime.server.batching import Batcher, batchable
from mlplane_runtime.server.model import OnnxModel
from tests.runtime.conftest import (
    Process,
    TrainedModel,
    free_port,
    http,
    serve_args,
    start,
    stop,
)
from tests.runtime.test_server import reference

BATCH = 32


def loaded(model: TrainedModel) -> OnnxModel:
    onnx = OnnxModel("iris", "1", f"file://{model.model_path}", model.sha256)
    onnx.load()
    return onnx


def random_rows(seed: int, count: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], (count, 4)).astype(np.float32)


def batch_runs(up_to: int) -> tuple[float, float, float]:
    """(runs, rows, runs of at most `up_to` rows) of the batchers in this process."""
    value = metrics.REGISTRY.get_sample_value
    return (
        value("mlplane_batch_rows_count") or 0.0,
        value("mlplane_batch_rows_sum") or 0.0,
        value("mlplane_batch_rows_bucket", {"le": f"{up_to:.1f}"}) or 0.0,
    )


@pytest.mark.parametrize("most", [BATCH, 8])
def test_concurrent_requests_share_runs_and_each_gets_its_own_rows(
    iris_model: TrainedModel, most: int
) -> None:
    model = loaded(iris_model)
    batcher = Batcher(model, max_batch_size=most, max_latency=0, inline_rows=64)
    requests = [random_rows(seed, 1 + seed % 3) for seed in range(40)]
    total = sum(len(rows) for rows in requests)  # 79

    async def all_at_once() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(
            *(batcher.predict({"input": rows}, len(rows)) for rows in requests)
        )

    runs_before, rows_before, small_before = batch_runs(most)
    answers = asyncio.run(all_at_once())
    runs, rows, small = batch_runs(most)
    batcher.close()
    assert rows - rows_before == total
    # Batches fill in order: each holds more than `most` less a request (3 rows at most).
    assert runs - runs_before <= math.ceil(total / (most - 2))
    assert small - small_before == runs - runs_before  # none over `most` rows
    for rows_in, answer in zip(requests, answers, strict=True):
        labels, probabilities = reference(iris_model, rows_in)
        np.testing.assert_array_equal(answer["label"], labels)
        np.testing.assert_allclose(answer["probabilities"], probabilities, rtol=1e-6)


def test_a_request_that_is_alone_skips_the_queue_and_company_does_not(
    iris_model: TrainedModel,
) -> None:
    """At low concurrency batching must cost nothing: a request with no other in its turn
    of the loop, nothing queued and the model free runs as unbatched; a second one in the
    same turn, or any while requests wait, queues to share a run."""
    batcher = Batcher(loaded(iris_model), max_batch_size=BATCH, max_latency=0, inline_rows=64)

    async def turns() -> list[bool]:
        first, second = batcher.alone(), batcher.alone()
        await asyncio.sleep(0)
        next_turn = batcher.alone()
        await asyncio.sleep(0)
        queued = asyncio.ensure_future(batcher.predict({"input": random_rows(0, 1)}, 1))
        await asyncio.sleep(0)  # the request is queued, its run not yet dispatched
        while_queued = batcher.alone()
        await queued
        await asyncio.sleep(0)
        return [first, second, next_turn, while_queued, batcher.alone()]

    assert asyncio.run(turns()) == [True, False, True, False, True]
    batcher.close()


def test_a_failing_run_fails_only_the_request_at_fault(iris_model: TrainedModel) -> None:
    class RejectsInfinity(OnnxModel):
        """The real model, refusing rows with an infinite value as some models do."""

        def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
            if np.isinf(inputs["input"]).any():
                raise ValueError("infinite feature")
            return super().predict(inputs)

    model = RejectsInfinity("iris", "1", f"file://{iris_model.model_path}", iris_model.sha256)
    model.load()
    batcher = Batcher(model, max_batch_size=BATCH, max_latency=0, inline_rows=64)
    good = [random_rows(seed, 2) for seed in range(5)]
    bad = np.array([[np.inf, 1, 1, 1]], np.float32)

    async def mixed() -> list[Any]:
        calls = [batcher.predict({"input": rows}, len(rows)) for rows in (*good[:2], bad)]
        calls += [batcher.predict({"input": rows}, len(rows)) for rows in good[2:]]
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(mixed())
    batcher.close()
    assert isinstance(answers[2], ValueError)
    for rows_in, answer in zip(good, answers[:2] + answers[3:], strict=True):
        np.testing.assert_array_equal(answer["label"], reference(iris_model, rows_in)[0])


def test_models_without_a_batch_dimension_are_not_batchable(iris_model: TrainedModel) -> None:
    model = loaded(iris_model)
    assert batchable(model)
    model.inputs = [type(model.inputs[0])("input", "FP32", (1, 4))]
    assert not batchable(model)


@pytest.fixture(scope="module")
def batching_server(
    iris_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, str]]:
    port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("logs") / "batching.log"
    args = serve_args(
        iris_model,
        port,
        f"--grpc-port={grpc_port}",
        f"--max-batch-size={BATCH}",
        "--max-batch-latency-ms=2",
    )
    process = start(args, log, "/v2/health/ready", port)
    yield process, f"127.0.0.1:{grpc_port}"
    stop(process)


def rest_infer(connection: http_client.HTTPConnection, rows: np.ndarray) -> tuple[int, Any]:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape)}
    body = json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]})
    connection.request("POST", "/v2/models/iris/infer", body)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def grpc_infer(stub: Any, rows: np.ndarray) -> np.ndarray:
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    response = stub.ModelInfer(request)
    return np.frombuffer(response.raw_output_contents[0], np.int64)


def server_counts(process: Process) -> dict[str, float]:
    """The server's row and batch counters, by sample name."""
    text = http("GET", process.url + "/metrics")[1].decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(("mlplane_batch_", "mlplane_predicted_rows_total"))
    }


def test_callers_over_rest_and_grpc_at_once_each_get_their_own_answers(
    batching_server: tuple[Process, str], iris_model: TrainedModel
) -> None:
    process, target = batching_server
    host_port = process.url.removeprefix("http://")
    failures: list[str] = []
    sent_rows = [0]
    lock = threading.Lock()

    def caller(index: int) -> None:
        use_grpc = index % 2 == 1
        connection = http_client.HTTPConnection(host_port, timeout=30)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
        for request in range(25):
            rows = random_rows(index * 1000 + request, 1 + request % 4)
            expected = reference(iris_model, rows)[0]
            if use_grpc:
                labels = grpc_infer(stub, rows)
            else:
                status, answer = rest_infer(connection, rows)
                labels = np.array(answer["outputs"][0]["data"]) if status == 200 else None
            if labels is None or not np.array_equal(labels, expected):
                with lock:
                    failures.append(f"caller {index} request {request}: {labels} != {expected}")
            with lock:
                sent_rows[0] += len(rows)
        connection.close()

    before = server_counts(process)
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server_counts(process)
    assert failures == []
    assert (
        after["mlplane_predicted_rows_total"] - before["mlplane_predicted_rows_total"]
        == (sent_rows[0])
    )
    assert after["mlplane_batch_max_rows"] == BATCH
    runs = after["mlplane_batch_requests_count"] - before["mlplane_batch_requests_count"]
    shared = after["mlplane_batch_requests_sum"] - before["mlplane_batch_requests_sum"]
    assert shared > runs  # some runs served several callers (the rest ran alone)


def test_a_bad_request_among_batched_ones_gets_its_own_error(
    batching_server: tuple[Process, str], iris_model: TrainedModel
) -> None:
    _, target = batching_server
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
    outcomes: dict[int, Any] = {}

    def caller(index: int) -> None:
        rows = random_rows(index, 2)
        if index % 4 == 0:
            rows = rows[:, :3].copy()  # the wrong shape
        try:
            outcomes[index] = (rows, grpc_infer(stub, rows))
        except grpc.RpcError as exc:
            outcomes[index] = (rows, exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, (rows, outcome) in outcomes.items():
        if index % 4 == 0:
            assert isinstance(outcome, grpc.RpcError)
            assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "shape [2, 3] does not match" in outcome.details()
        else:
            np.testing.assert_array_equal(outcome, reference(iris_model, rows)[0])


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-batch-size=20000"], "--max-batch-size"),
        (["--max-batch-size=-1"], "--max-batch-size"),
        (["--max-batch-size=8", "--max-batch-latency-ms=5000"], "--max-batch-latency-ms"),
    ],
)
def test_bad_batching_flags_exit_2_naming_the_flag(
    iris_model: TrainedModel, flags: list[str], named: str
) -> None:
    result = subprocess.run(
        serve_args(iris_model, free_port(), *flags), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert named in result.stderr
