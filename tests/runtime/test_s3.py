"""s3:// storage against a real S3 endpoint over HTTP: gofakes3, an S3-compatible server
built by hack/build-binaries.sh (in a cluster it would be MinIO or AWS S3). The trainer
reads a csv from a bucket and publishes its run there; the server loads the artifact
from the bucket, verifies it and serves it; a tampered object is refused."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sklearn.datasets import load_iris

from tests.kube import BIN as CLUSTER_BIN
from tests.runtime.conftest import BIN, free_port, http, start, stop

BUCKET = "models"


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    binary = CLUSTER_BIN / "gofakes3"
    assert binary.exists(), f"{binary} is missing: run hack/build-binaries.sh (make binaries)"
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "gofakes3.log"
    server = start(
        [str(binary), "-backend", "memory", "-initialbucket", BUCKET, "-host", f"127.0.0.1:{port}"],
        log,
        None,
        port,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "mlplane",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "2",
    }
    deadline = time.monotonic() + 30
    while not _listening(port):
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"gofakes3 is not listening:\n{server.output()}")
        time.sleep(0.05)
    yield env
    stop(server)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_credentials(env))


def keys(env: dict[str, str], prefix: str) -> list[str]:
    listed = s3_client(env).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def train(env: dict[str, str], spec: dict[str, Any], run: str, log: Path) -> tuple[int, Any]:
    proc = subprocess.run(
        [str(BIN / "mlplane-train"), "--run", run, "--output", f"s3://{BUCKET}/runs"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **env,
            "MLPLANE_TRAINING_SPEC": json.dumps(spec),
            "MLPLANE_TERMINATION_LOG": str(log),
        },
        timeout=120,
    )
    return proc.returncode, json.loads(log.read_text())


def serve(uri: str, sha256: str, port: int) -> list[str]:
    return [
        *(str(BIN / "mlplane-serve"), "--model-uri", uri, "--model-name", "iris"),
        *("--sha256", sha256, "--host", "127.0.0.1", "--port", str(port), "--grpc-port=0"),
    ]


@pytest.fixture(scope="module")
def published(s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A run trained from a csv in the bucket and published to the bucket."""
    iris = load_iris()
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow([*iris.feature_names, "target"])
    writer.writerows([*row, label] for row, label in zip(iris.data, iris.target, strict=True))
    s3_client(s3_env).put_object(Bucket=BUCKET, Key="data/iris.csv", Body=text.getvalue())
    spec = {
        "model": "iris",
        "dataset": {"uri": f"s3://{BUCKET}/data/iris.csv", "target": "target"},
        "estimator": {"class": "LogisticRegression", "params": {"max_iter": 500}},
    }
    code, result = train(s3_env, spec, "run-1", tmp_path_factory.mktemp("term") / "log")
    assert code == 0, result
    return result


def test_trainer_reads_a_csv_from_s3_and_publishes_the_run_there(
    s3_env: dict[str, str], published: Any
) -> None:
    assert published["artifact"]["uri"] == f"s3://{BUCKET}/runs/iris/run-1/model.onnx"
    assert keys(s3_env, "runs/") == [
        f"runs/iris/run-1/{name}"
        for name in ("manifest.json", "metrics.json", "model.onnx", "profile.json", "result.json")
    ]
    body = s3_client(s3_env).get_object(Bucket=BUCKET, Key="runs/iris/run-1/manifest.json")
    manifest = json.loads(body["Body"].read())
    assert manifest["files"]["model.onnx"]["sha256"] == published["artifact"]["sha256"]
    assert manifest["dataset"]["uri"] == f"s3://{BUCKET}/data/iris.csv"


def test_a_run_published_to_s3_is_never_replaced_and_a_retry_reports_it(
    s3_env: dict[str, str], published: Any, tmp_path: Path
) -> None:
    client = s3_client(s3_env)
    before = client.head_object(Bucket=BUCKET, Key="runs/iris/run-1/model.onnx")["ETag"]
    other = {
        "model": "iris",
        "dataset": {"builtin": "iris"},
        "estimator": {"class": "DecisionTreeClassifier"},
    }
    code, again = train(s3_env, other, "run-1", tmp_path / "log")
    assert code == 0, again
    assert again["artifact"] == published["artifact"]  # what run-1 published, not a new fit
    assert client.head_object(Bucket=BUCKET, Key="runs/iris/run-1/model.onnx")["ETag"] == before


def test_server_loads_verifies_and_serves_an_artifact_from_s3(
    s3_env: dict[str, str], published: Any, tmp_path: Path
) -> None:
    port = free_port()
    server = start(
        serve(published["artifact"]["uri"], published["artifact"]["sha256"], port),
        tmp_path / "server.log",
        "/v2/health/ready",
        port,
        env=s3_env,
    )
    try:
        body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).encode()
        status, answer, _ = http("POST", server.url + "/v1/models/iris:predict", body)
        assert status == 200
        assert json.loads(answer)["predictions"] == [0, 2]
    finally:
        assert stop(server) == 0


def test_server_refuses_a_tampered_artifact_in_s3(
    s3_env: dict[str, str], published: Any, tmp_path: Path
) -> None:
    client = s3_client(s3_env)
    original = client.get_object(Bucket=BUCKET, Key="runs/iris/run-1/model.onnx")["Body"].read()
    client.put_object(Bucket=BUCKET, Key="tampered/model.onnx", Body=original + b"\0")
    port = free_port()
    server = start(
        serve(f"s3://{BUCKET}/tampered/model.onnx", published["artifact"]["sha256"], port),
        tmp_path / "server.log",
        None,
        port,
        env=s3_env,
    )
    assert server.proc.wait(timeout=60) == 4
    assert "sha256" in server.output()


def test_a_missing_object_is_a_user_error_not_a_retry(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    spec = {
        "model": "iris",
        "dataset": {"uri": f"s3://{BUCKET}/data/absent.csv", "target": "target"},
        "estimator": {"class": "DecisionTreeClassifier"},
    }
    code, result = train(s3_env, spec, "run-2", tmp_path / "log")
    assert (code, result["reason"]) == (2, "UserError")
    assert "object not found" in result["error"]
    assert keys(s3_env, "runs/iris/run-2") == []
