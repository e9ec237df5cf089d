"""Benchmark mlplane-serve against raw ONNX Runtime, MLServer and KServe on one machine.

    make bench-serve        (or: .venv/bin/python hack/bench-serve/bench.py)
    make bench-serve BENCH_ARGS=--matrix-only     (only the protocol/batching matrix)

One model (iris, LogisticRegression behind a StandardScaler) trained once; 1-row V2 REST
requests over keep-alive HTTP from `wrk` (installed from Debian when missing), bounded
load to 127.0.0.1 only. MLServer 1.7.1 and KServe get their own virtualenvs under the
cache dir (~/.cache/mlplane/bench-serve). Prints a table and the ratios.

The matrix: the small model and a heavy one (an MLP, 64 -> 1024 -> 1024 -> 10), 1-row V2
requests over REST (`wrk`) and gRPC (`ghz`, built from the Go module proxy when
missing; `raw_input_contents`, as tritonclient sends), at c=1 and c=64, for mlplane with
batching off and on, MLServer with batching off and on (its adaptive batching), and
KServe. mlplane's two configurations run side by side and are measured in alternation
(ABBA), `--repeats` times (medians), since a shared machine drifts between runs.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
from sklearn.model_selection import train_test_split

from mlplane_runtime.trainer.data import load_dataset
from mlplane_runtime.trainer.estimators import build_estimator
from mlplane_runtime.trainer.spec import parse_spec
from mlplane_runtime.trainer.train import RunIdentity, train

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlplane/bench-serve"
BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
LUA = CACHE / "post.lua"  # wrk's script: POST the body below
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]})
SPEC = {
    "model": "iris",
    "dataset": {"builtin": "iris"},
    "estimator": {
        "class": "LogisticRegression",
        "params": {"max_iter": 500},
        "preprocessing": ["StandardScaler"],
    },
}
KSERVE_MODEL = """
import sys

import joblib
from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferResponse


class Iris(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.model = joblib.load(path)
        self.ready = True

    def predict(self, payload, headers=None):
        result = self.model.predict(payload.inputs[0].as_numpy())
        output = InferOutput(name="predict", shape=list(result.shape), datatype="INT64")
        output.set_data_from_numpy(result, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output],
                             response_id=payload.id or "bench")


if __name__ == "__main__":
    server = ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), workers=1,
                         enable_grpc=False)
    server.start([Iris(sys.argv[4] if len(sys.argv) > 4 else "iris", sys.argv[1])])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return "wrk"


def load(url: str, connections: int, seconds: int, script: Path = LUA) -> dict[str, float]:
    """Requests/s and latency percentiles from wrk (one thread, keep-alive)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx responses:\n{out}")

    def latency(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99")}


def measure(name: str, url: str, seconds: int, results: dict[str, Any], repeats: int = 3) -> None:
    """c=1 once; saturation (c=16) `repeats` times, keeping the median run by req/s (the
    machine is shared, so single runs are noisy)."""
    load(url, 16, 2)  # warm up
    results[f"{name} c=1"] = load(url, 1, seconds)
    runs = sorted((load(url, 16, seconds) for _ in range(repeats)), key=lambda r: r["rps"])
    results[f"{name} c=16"] = runs[len(runs) // 2]
    for connections in (1, 16):
        print(f"  {name} c={connections}: {results[f'{name} c={connections}']}", flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sidecar_cost(
    plain: tuple[subprocess.Popen[bytes], str],
    sampled: tuple[subprocess.Popen[bytes], str],
    monitor: subprocess.Popen[bytes],
    seconds: int,
    repeats: int = 5,
) -> dict[str, Any]:
    """The sidecar's cost as CPU time per request, with and without it, measured *at the
    same time*: both servers share one pinned core, each loaded by its own wrk on the
    other core. A shared machine's speed drifts by more than 3 % between two sequential
    runs; two servers measured side by side see the same drift, and CPU time per request
    is what bounds a saturated server's throughput. Cost = (sampled server + monitor CPU
    per request) / (plain server CPU per request) - 1; the median of `repeats`."""
    costs = []
    processes = (plain[0], sampled[0], monitor)
    for _ in range(repeats):
        before = [cpu_seconds(p.pid) for p in processes]
        runs = [
            subprocess.Popen(
                ["taskset", "-c", "1", "wrk", "-t1", "-c8", f"-d{seconds}s", "-s", str(LUA), url],
                stdout=subprocess.PIPE,
                text=True,
            )
            for url in (plain[1], sampled[1])
        ]
        served = [_requests(run.communicate()[0]) for run in runs]
        used = [cpu_seconds(p.pid) - b for p, b in zip(processes, before, strict=True)]
        plain_us = used[0] / served[0] * 1e6
        sampled_us = (used[1] + used[2]) / served[1] * 1e6
        costs.append(sampled_us / plain_us - 1)
        print(
            f"  CPU per request: plain {plain_us:.1f} us, with sidecar {sampled_us:.1f} us "
            f"(monitor {used[2] / served[1] * 1e6:.1f}): {costs[-1] * 100:+.1f}%",
            flush=True,
        )
    costs.sort()
    return {"median_cost": costs[len(costs) // 2], "costs": costs}


def _requests(wrk_output: str) -> int:
    match = re.search(r"(\d+) requests in", wrk_output)
    if match is None:
        raise RuntimeError(f"no request count in wrk's output:\n{wrk_output}")
    return int(match.group(1))


def run_process(args: list[str], ready: str, name: str) -> subprocess.Popen[bytes]:
    log = (CACHE / f"{name}.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=CACHE)
    wait_ready(ready, proc)
    return proc


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def venv(name: str, packages: list[str]) -> Path:
    """A virtualenv under the cache with `packages`, created once."""
    path = CACHE / name
    stamp = path / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(path / "bin/pip"), "install", "-q", *packages], check=True, timeout=1200
        )
        stamp.touch()
    return path


def raw_onnxruntime(model_path: Path, seconds: float) -> dict[str, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_path.read_bytes(), options)
    row = np.array([ROW], np.float32)
    for _ in range(1000):
        session.run(None, {"input": row})
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            session.run(None, {"input": row})
        calls += 1000
    return {
        "rps": calls / (time.perf_counter() - started),
        "p50_ms": float("nan"),
        "p99_ms": float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--matrix-seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4, help="of mlplane's matrix cells")
    parser.add_argument("--matrix-only", action="store_true")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--skip-kserve", action="store_true")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    ensure_wrk()
    LUA.write_text(wrk_script(BODY))
    result = train(parse_spec(SPEC), RunIdentity("iris", "bench", str(CACHE / "models")))
    run_dir = CACHE / "models/iris/bench"
    fit_for_python_servers(SPEC, CACHE / "model.joblib")
    if args.matrix_only:
        return run_matrix(args)

    results: dict[str, Any] = {}
    print("raw ONNX Runtime (in process, 1 row)", flush=True)
    results["onnxruntime in-process"] = raw_onnxruntime(run_dir / "model.onnx", 3)

    port, monitor_port, samples_port = free_port(), free_port(), free_port()
    serve = [
        str(BIN / "mlplane-serve"),
        "--model-uri",
        str(run_dir),
        "--model-name",
        "iris",
        "--sha256",
        result["artifact"]["sha256"],
        "--host",
        "127.0.0.1",
        "--drain-seconds=0",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
    ready = f"http://127.0.0.1:{port}/v2/health/ready"
    print("mlplane-serve", flush=True)
    server = run_process(serve, ready, "mlplane")
    measure("mlplane", url, args.seconds, results)
    stop(server)
    # The HTTP stack, measured: the same application behind uvicorn (uvloop + httptools).
    print("the same app behind uvicorn (ASGI)", flush=True)
    asgi_port = free_port()
    asgi = run_process(
        [
            str(BIN / "python"),
            str(HERE / "asgi_variant.py"),
            str(run_dir),
            result["artifact"]["sha256"],
            str(asgi_port),
        ],
        f"http://127.0.0.1:{asgi_port}/v2/health/ready",
        "uvicorn",
    )
    measure(
        "uvicorn same app",
        f"http://127.0.0.1:{asgi_port}/v2/models/iris/infer",
        args.seconds,
        results,
    )
    stop(asgi)
    print("mlplane-serve + monitor sidecar (default sampling: <= 200 rows/s)", flush=True)
    monitor = run_process(
        [
            "taskset",
            "-c",
            "1",
            str(BIN / "mlplane-monitor"),
            "--baseline-uri",
            str(run_dir / "profile.json"),
            "--host",
            "127.0.0.1",
            "--port",
            str(monitor_port),
            "--samples-port",
            str(samples_port),
        ],
        f"http://127.0.0.1:{monitor_port}/healthz",
        "monitor",
    )
    to_monitor = ["--monitor-url", f"http://127.0.0.1:{samples_port}"]
    server = run_process([*serve, *to_monitor], ready, "mlplane-monitored")
    measure("mlplane+monitor", url, args.seconds, results)
    stop(server)

    def on_core_0(extra: list[str], name: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        command = ["taskset", "-c", "0", *serve[:-1], str(port), *extra]
        base = f"http://127.0.0.1:{port}/v2"
        return run_process(command, f"{base}/health/ready", name), f"{base}/models/iris/infer"

    plain = on_core_0([], "plain")
    for label, extra in (
        ("sidecar cost (default sampling)", to_monitor),
        ("sidecar cost (every row)", [*to_monitor, "--max-samples-per-second", "0"]),
    ):
        print(f"{label}: both servers on core 0 at once, wrk and monitor on core 1", flush=True)
        sampled = on_core_0(extra, "mlplane-sampled")
        results[label] = sidecar_cost(plain, sampled, monitor, args.seconds)
        stop(sampled[0])
    stop(monitor, plain[0])

    if not args.skip_mlserver:
        print("MLServer 1.7.1 (mlserver-sklearn)", flush=True)
        try:
            env = venv(
                "mlserver-venv", ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
            )
            mport = free_port()
            (CACHE / "mlserver").mkdir(exist_ok=True)
            shutil.copy(CACHE / "model.joblib", CACHE / "mlserver/model.joblib")
            (CACHE / "mlserver/model-settings.json").write_text(
                json.dumps(
                    {
                        "name": "iris",
                        "implementation": "mlserver_sklearn.SKLearnModel",
                        "parameters": {"uri": "./model.joblib"},
                    }
                )
            )
            (CACHE / "mlserver/settings.json").write_text(
                json.dumps(
                    {
                        "host": "127.0.0.1",
                        "http_port": mport,
                        "grpc_port": free_port(),
                        "metrics_port": free_port(),
                    }
                )
            )
            proc = run_process(
                [str(env / "bin/mlserver"), "start", str(CACHE / "mlserver")],
                f"http://127.0.0.1:{mport}/v2/models/iris/ready",
                "mlserver",
            )
            measure(
                "MLServer", f"http://127.0.0.1:{mport}/v2/models/iris/infer", args.seconds, results
            )
            stop(proc)
        except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
            print(f"  MLServer skipped: {exc}", flush=True)
    if not args.skip_kserve:
        print("KServe ModelServer", flush=True)
        try:
            env = venv("kserve-venv", ["kserve", "scikit-learn==1.9.1", "joblib"])
            kport = free_port()
            (CACHE / "kserve_model.py").write_text(KSERVE_MODEL)
            proc = run_process(
                [
                    str(env / "bin/python"),
                    str(CACHE / "kserve_model.py"),
                    str(CACHE / "model.joblib"),
                    str(kport),
                    str(free_port()),
                ],
                f"http://127.0.0.1:{kport}/v2/models/iris/ready",
                "kserve",
            )
            measure(
                "KServe", f"http://127.0.0.1:{kport}/v2/models/iris/infer", args.seconds, results
            )
            stop(proc)
        except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
            print(f"  KServe skipped: {exc}", flush=True)

    report(results)
    (CACHE / "results.json").write_text(json.dumps(results, indent=2))
    return run_matrix(args)


def fit_for_python_servers(spec_document: dict[str, Any], path: Path) -> None:
    """The same estimator for the Python servers, fitted on the same split (same seed)."""
    spec = parse_spec(spec_document)
    data = load_dataset(spec.dataset)
    x_train, _, y_train, _ = train_test_split(
        data.features, data.target, test_size=0.2, random_state=0, stratify=data.target
    )
    estimator = build_estimator(spec.estimator, 0, data.feature_names)
    estimator.fit(x_train, y_train)
    joblib.dump(estimator, path)


def wrk_script(body: str) -> str:
    return (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )


def report(results: dict[str, Any]) -> None:
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'server':<28} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in results.items():
        if "rps" not in row:
            continue
        print(f"{name:<28} {row['rps']:>10.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    ours = results.get("mlplane c=16")
    for other in ("uvicorn same app c=16", "MLServer c=16", "KServe c=16"):
        if ours and other in results:
            theirs = results[other]
            print(
                f"mlplane / {other.split()[0]} at c=16: {ours['rps'] / theirs['rps']:.1f}x req/s,"
                f" p99 {ours['p99_ms'] / theirs['p99_ms']:.2f}x"
            )
    for label in ("sidecar cost (default sampling)", "sidecar cost (every row)"):
        if label in results:
            cost = results[label]
            print(
                f"{label} at saturation: {cost['median_cost'] * 100:+.1f}% CPU per request "
                f"(median of {len(cost['costs'])}; target <= 3%)"
            )


# The protocol and batching matrix

HEAVY_SPEC = {
    "model": "digits",
    "dataset": {"builtin": "digits"},
    "estimator": {
        "class": "MLPClassifier",
        # Wide enough that one row's run (weights read once per run) outweighs a request's
        # HTTP or gRPC handling; a few epochs, since only its cost is measured.
        "params": {"hidden_layer_sizes": [1024, 1024], "max_iter": 10},
    },
}
GHZ = "github.com/bojand/ghz/cmd/ghz@v0.120.0"
PROTO = HERE.parent.parent / "runtimes/mlplane_runtime/server/oip/grpc_predict_v2.proto"
CONCURRENCY = (1, 64)
BATCHING = ["--max-batch-size=64"]  # the API's default; --max-batch-latency-ms 0
MLSERVER_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.001}


@dataclass(frozen=True)
class Workload:
    """One model and its 1-row request in both protocols' encodings."""

    name: str
    run_dir: Path
    sha256: str
    joblib: Path
    lua: Path  # wrk's script: the V2 JSON body
    grpc_data: Path  # ghz's call data: a ModelInferRequest as JSON, raw_input_contents

    @classmethod
    def make(cls, spec: dict[str, Any], row: list[float]) -> Workload:
        """Train the model (once per spec: a run id publishes once) and write its bodies."""
        name = spec["model"]
        run = "bench-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
        result = train(parse_spec(spec), RunIdentity(name, run, str(CACHE / "models")))
        tensor = {"name": "input", "shape": [1, len(row)], "datatype": "FP32"}
        lua = CACHE / f"{name}.lua"
        lua.write_text(wrk_script(json.dumps({"inputs": [{**tensor, "data": row}]})))
        raw = base64.b64encode(np.array([row], np.float32).tobytes()).decode()
        data = CACHE / f"{name}.grpc.json"
        data.write_text(
            json.dumps({"model_name": name, "inputs": [tensor], "raw_input_contents": [raw]})
        )
        joblib_path = CACHE / f"{name}-{run}.joblib"
        if not joblib_path.exists():
            fit_for_python_servers(spec, joblib_path)
        sha256 = result["artifact"]["sha256"]
        return cls(name, CACHE / f"models/{name}/{run}", sha256, joblib_path, lua, data)


@dataclass
class Endpoint:
    """A server under test: its V2 REST infer URL and its gRPC target (or None)."""

    rest: str
    grpc: str | None
    proc: subprocess.Popen[bytes]


def ensure_ghz() -> str:
    found = shutil.which("ghz") or str(Path.home() / "go/bin/ghz")
    if not Path(found).exists():
        subprocess.run(["go", "install", GHZ], check=True, timeout=1200)
    return found


def grpc_load(
    ghz: str, target: str, data: Path, concurrency: int, seconds: int
) -> dict[str, float]:
    """Requests/s and latency percentiles from ghz (every answer must be OK)."""
    out = subprocess.run(
        [
            ghz, "--insecure", "--proto", str(PROTO),
            "--call", "inference.GRPCInferenceService/ModelInfer",
            "-D", str(data), "-c", str(concurrency), f"--connections={min(concurrency, 8)}",
            "-z", f"{seconds}s", "--duration-stop=wait", "-O", "json", target,
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    report = json.loads(out)
    codes = report.get("statusCodeDistribution", {})
    if set(codes) != {"OK"}:
        raise RuntimeError(f"non-OK gRPC answers: {codes} {report.get('errorDistribution')}")
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    return {"rps": report["rps"], "p50_ms": latency[50], "p99_ms": latency[99]}


def cell(
    ghz: str, endpoint: Endpoint, workload: Workload, protocol: str, concurrency: int, seconds: int
) -> dict[str, float]:
    if protocol == "REST":
        return load(endpoint.rest, concurrency, seconds, workload.lua)
    assert endpoint.grpc is not None
    return grpc_load(ghz, endpoint.grpc, workload.grpc_data, concurrency, seconds)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs."""
    return {key: float(np.median([run[key] for run in runs])) for key in runs[0]}


def start_mlplane(workload: Workload, extra: list[str], name: str) -> Endpoint:
    port, grpc_port = free_port(), free_port()
    command = [
        str(BIN / "mlplane-serve"), "--model-uri", str(workload.run_dir),
        "--model-name", workload.name, "--sha256", workload.sha256, "--host", "127.0.0.1",
        "--drain-seconds=0", "--port", str(port), f"--grpc-port={grpc_port}", *extra,
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}/v2"
    proc = run_process(command, f"{base}/health/ready", name)
    return Endpoint(f"{base}/models/{workload.name}/infer", f"127.0.0.1:{grpc_port}", proc)


def start_mlserver(workload: Workload, batching: bool) -> Endpoint:
    env = venv("mlserver-venv", ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"])
    port, grpc_port = free_port(), free_port()
    folder = CACHE / f"mlserver-{workload.name}"
    folder.mkdir(exist_ok=True)
    shutil.copy(workload.joblib, folder / "model.joblib")
    model_settings = {
        "name": workload.name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
        **(MLSERVER_BATCHING if batching else {}),
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings))
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": grpc_port,
                "metrics_port": free_port(),
            }
        )
    )
    base = f"http://127.0.0.1:{port}/v2/models/{workload.name}"
    proc = run_process(
        [str(env / "bin/mlserver"), "start", str(folder)], f"{base}/ready", "mlserver"
    )
    return Endpoint(f"{base}/infer", f"127.0.0.1:{grpc_port}", proc)


def start_kserve(workload: Workload) -> Endpoint:
    env = venv("kserve-venv", ["kserve", "scikit-learn==1.9.1", "joblib"])
    port, grpc_port = free_port(), free_port()
    script = CACHE / "kserve_model.py"
    script.write_text(KSERVE_MODEL.replace("enable_grpc=False", "enable_grpc=True"))
    base = f"http://127.0.0.1:{port}/v2/models/{workload.name}"
    proc = run_process(
        [
            str(env / "bin/python"), str(script), str(workload.joblib), str(port),
            str(grpc_port), workload.name,
        ],
        f"{base}/ready",
        "kserve",
    )  # fmt: skip
    return Endpoint(f"{base}/infer", f"127.0.0.1:{grpc_port}", proc)


def measure_side_by_side(
    ghz: str, workload: Workload, seconds: int, repeats: int, results: dict[str, Any]
) -> None:
    """mlplane with batching off and on, both running, measured in alternation."""
    servers = {
        "mlplane": start_mlplane(workload, [], "mlplane-off"),
        "mlplane+batching": start_mlplane(workload, BATCHING, "mlplane-on"),
    }
    try:
        for protocol in ("REST", "gRPC"):
            for server in servers.values():
                cell(ghz, server, workload, protocol, 64, 1)  # warm up
            for concurrency in CONCURRENCY:
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
                for repeat in range(repeats):
                    order = list(servers) if repeat % 2 == 0 else list(reversed(servers))
                    for name in order:  # alternating which goes first: no order bias
                        runs[name].append(
                            cell(ghz, servers[name], workload, protocol, concurrency, seconds)
                        )
                for name, measured in runs.items():
                    key = f"{workload.name} {protocol} c={concurrency} {name}"
                    results[key] = median_of(measured)
                    print(f"  {key}: {results[key]}", flush=True)
    finally:
        stop(*(server.proc for server in servers.values()))


def measure_other(
    ghz: str,
    workload: Workload,
    name: str,
    starter: Callable[[], Endpoint],
    seconds: int,
    results: dict[str, Any],
) -> None:
    try:
        server = starter()
    except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
        print(f"  {name} skipped: {exc}", flush=True)
        return
    try:
        for protocol in ("REST", "gRPC"):
            try:
                cell(ghz, server, workload, protocol, 64, 1)  # warm up
                for concurrency in CONCURRENCY:
                    key = f"{workload.name} {protocol} c={concurrency} {name}"
                    results[key] = cell(ghz, server, workload, protocol, concurrency, seconds)
                    print(f"  {key}: {results[key]}", flush=True)
            except (subprocess.SubprocessError, RuntimeError) as exc:
                print(f"  {name} {protocol} skipped: {exc}", flush=True)
    finally:
        stop(server.proc)


def run_matrix(args: argparse.Namespace) -> int:
    ghz = ensure_ghz()
    digits_row = [float(v) for v in load_dataset(parse_spec(HEAVY_SPEC).dataset).features[0]]
    workloads = [Workload.make(SPEC, ROW), Workload.make(HEAVY_SPEC, digits_row)]
    results: dict[str, Any] = {}
    for workload in workloads:
        print(f"matrix: {workload.name}", flush=True)
        measure_side_by_side(ghz, workload, args.matrix_seconds, args.repeats, results)
        others: list[tuple[str, Callable[[], Endpoint]]] = []
        if not args.skip_mlserver:
            others += [
                ("MLServer", functools.partial(start_mlserver, workload, False)),
                ("MLServer+batching", functools.partial(start_mlserver, workload, True)),
            ]
        if not args.skip_kserve:
            others.append(("KServe", functools.partial(start_kserve, workload)))
        for name, starter in others:
            measure_other(ghz, workload, name, starter, args.matrix_seconds, results)
    report_matrix(results, [w.name for w in workloads])
    (CACHE / "matrix.json").write_text(json.dumps(results, indent=2))
    return 0


SERVERS = ("mlplane", "mlplane+batching", "MLServer", "MLServer+batching", "KServe")


def report_matrix(results: dict[str, Any], models: list[str]) -> None:
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("req/s (p99 ms), 1-row V2 requests")
    print(f"{'model protocol c':<20}" + "".join(f"{name:>21}" for name in SERVERS))
    for model in models:
        for protocol in ("REST", "gRPC"):
            for concurrency in CONCURRENCY:
                row = f"{model} {protocol} c={concurrency}"
                cells = []
                for name in SERVERS:
                    found = results.get(f"{row} {name}")
                    cells.append(
                        f"{found['rps']:>11.0f} ({found['p99_ms']:>6.2f})" if found else "-"
                    )
                print(f"{row:<20}" + "".join(f"{text:>21}" for text in cells))
    print()
    for model in models:
        for protocol in ("REST", "gRPC"):
            off = results.get(f"{model} {protocol} c=64 mlplane")
            on = results.get(f"{model} {protocol} c=64 mlplane+batching")
            slow_off = results.get(f"{model} {protocol} c=1 mlplane")
            slow_on = results.get(f"{model} {protocol} c=1 mlplane+batching")
            if off and on and slow_off and slow_on:
                print(
                    f"{model} {protocol}: batching at c=64 {on['rps'] / off['rps']:.2f}x req/s "
                    f"(goal on the heavy model >= 2x); p99 at c=1 "
                    f"{(slow_on['p99_ms'] / slow_off['p99_ms'] - 1) * 100:+.1f}% (goal <= +10%)"
                )
    for key in sorted({k.rsplit(" ", 1)[0] for k in results}):
        theirs = [results[f"{key} {n}"]["rps"] for n in SERVERS[2:4] if f"{key} {n}" in results]
        ours = [results[f"{key} {n}"]["rps"] for n in SERVERS[:2] if f"{key} {n}" in results]
        if theirs and ours:
            print(
                f"{key}: mlplane (batching off, on) / MLServer's best: "
                + ", ".join(f"{rps / max(theirs):.1f}x" for rps in ours)
            )


if __name__ == "__main__":
    sys.exit(main())
