"""Fixtures for the runtime tests: tiny models trained at test time, real server processes."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlplane_runtime.trainer.spec import parse_spec
from mlplane_runtime.trainer.train import RunIdentity, train

BIN = Path(sys.executable).parent


@dataclass
class TrainedModel:
    result: dict[str, Any]
    run_dir: Path

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.onnx"

    @property
    def sha256(self) -> str:
        return str(self.result["artifact"]["sha256"])


def train_model(
    out: Path, model: str, dataset: dict[str, Any], estimator: dict[str, Any], **validation: Any
) -> TrainedModel:
    spec = parse_spec(
        {"model": model, "dataset": dataset, "estimator": estimator, "validation": validation}
    )
    result = train(spec, RunIdentity(model, "run-1", str(out)))
    return TrainedModel(result, out / model / "run-1")


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    return train_model(
        tmp_path_factory.mktemp("models"),
        "iris",
        {"builtin": "iris"},
        {
            "class": "LogisticRegression",
            "params": {"max_iter": 500},
            "preprocessing": ["StandardScaler"],
        },
    )


@pytest.fixture(scope="session")
def diabetes_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    return train_model(
        tmp_path_factory.mktemp("models"), "diabetes", {"builtin": "diabetes"}, {"class": "Ridge"}
    )


COLORS, SIZES = ("red", "green", "blue"), ("S", "M", "L", "XL")


def write_categorical_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    """A tabular set as platform teams have them: numeric and string columns, a 0/1
    target that depends on both (so the encoder matters)."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "color", "income", "size", "churned"])
        for _ in range(rows):
            age, income = int(rng.integers(18, 80)), round(float(rng.normal(50, 15)), 2)
            color, size = str(rng.choice(COLORS)), str(rng.choice(SIZES))
            churned = int((color == "red") != (income > 55) or (size == "XL" and age > 60))
            writer.writerow([age, color, income, size, churned])
    return path


def categorical_feeds(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """ONNX Runtime inputs for rows as the csv has them: one [n, 1] input per column."""
    return {
        "age": np.array([[float(r["age"])] for r in rows], np.float32),
        "color": np.array([[r["color"]] for r in rows], object),
        "income": np.array([[float(r["income"])] for r in rows], np.float32),
        "size": np.array([[r["size"]] for r in rows], object),
    }


@pytest.fixture(scope="session")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    data = write_categorical_csv(tmp_path_factory.mktemp("data") / "churn.csv")
    return train_model(
        tmp_path_factory.mktemp("models"),
        "churn",
        {"uri": str(data), "target": "churned"},
        {
            "class": "XGBClassifier",
            "params": {"n_estimators": 20, "max_depth": 3},
            "categorical": {"columns": ["color", "size"]},
        },
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def get_json(url: str) -> tuple[int, Any]:
    status, body, _ = http("GET", url)
    return status, json.loads(body)


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def start(
    args: list[str], log: Path, ready_path: str | None, port: int, env: dict[str, str] | None = None
) -> Process:
    handle = log.open("wb")
    proc = subprocess.Popen(
        args, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    process = Process(proc, f"http://127.0.0.1:{port}", log)
    if ready_path is None:
        return process
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited {proc.returncode}:\n{process.output()}")
        try:
            if http("GET", process.url + ready_path)[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{args[0]} never became ready:\n{process.output()}")


def stop(process: Process) -> int:
    if process.proc.poll() is None:
        process.proc.terminate()
    return process.proc.wait(timeout=30)


def serve_args(model: TrainedModel, port: int, *extra: str) -> list[str]:
    return [
        str(BIN / "mlplane-serve"),
        "--model-uri",
        str(model.run_dir),
        "--model-name",
        model.result["model"],
        "--model-version",
        "v1",
        "--sha256",
        model.sha256,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--drain-seconds=0",  # tests that drain ask for it in `extra`
        "--grpc-port=0",  # off: servers run side by side; tests of gRPC give a port
        *extra,
    ]


@pytest.fixture(scope="session")
def server(iris_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "server.log"
    process = start(
        serve_args(iris_model, port, "--max-body-bytes", "65536"), log, "/v2/health/ready", port
    )
    yield process
    stop(process)


@pytest.fixture(scope="session")
def regression_server(
    diabetes_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "regression.log"
    process = start(serve_args(diabetes_model, port), log, "/v2/health/ready", port)
    yield process
    stop(process)
