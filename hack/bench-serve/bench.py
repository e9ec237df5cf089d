"""Benchmark mlplane-serve against raw ONNX Runtime, MLServer and KServe on one machine.

    make bench-serve        (or: .venv/bin/python hack/bench-serve/bench.py)

One model (iris, LogisticRegression behind a StandardScaler) trained once; 1-row V2 REST
requests over keep-alive HTTP from `wrk` (installed from Debian when missing), bounded
load to 127.0.0.1 only. MLServer 1.7.1 and KServe get their own virtualenvs under the
cache dir (~/.cache/mlplane/bench-serve). Prints a table and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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
    server.start([Iris("iris", sys.argv[1])])
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


def load(url: str, connections: int, seconds: int) -> dict[str, float]:
    """Requests/s and latency percentiles from wrk (one thread, keep-alive)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url],
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
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--skip-kserve", action="store_true")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    ensure_wrk()
    LUA.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(BODY)}\n"
    )
    result = train(parse_spec(SPEC), RunIdentity("iris", "bench", str(CACHE / "models")))
    run_dir = CACHE / "models/iris/bench"
    # The same estimator for the Python servers, fitted on the same split (same seed).
    spec = parse_spec(SPEC)
    data = load_dataset(spec.dataset)
    x_train, _, y_train, _ = train_test_split(
        data.features, data.target, test_size=0.2, random_state=0, stratify=data.target
    )
    estimator = build_estimator(spec.estimator, 0, data.feature_names)
    estimator.fit(x_train, y_train)
    joblib.dump(estimator, CACHE / "model.joblib")

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
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
