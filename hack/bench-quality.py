"""What the quality loop costs: CPU per request with the prediction log at sample rate 0,
0.1 and 1, measured side by side, and the evaluation time for 100,000 logged rows.

    .venv/bin/python hack/bench-quality.py [--seconds 8] [--repeats 3]

The three servers share one pinned core (0) and run at the same time, each loaded by its
own `wrk` on the other core, each with its own monitor (also on core 1) writing the log
to a temporary directory: a shared machine's speed drifts more between two sequential
runs than logging costs, and servers measured side by side see the same drift. CPU per
request counts the server and its monitor. Then 100,000 rows (10 files) and their
feedback (100 files of 1,000 answers) are written and `evaluate` is timed on them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from mlplane_runtime.quality.evaluate import evaluate
from mlplane_runtime.quality.log import Feedback, LoggedRows, write_feedback, write_predictions
from mlplane_runtime.trainer.spec import parse_spec
from mlplane_runtime.trainer.train import RunIdentity, train

BIN = Path(sys.executable).parent
RATES = ("0", "0.1", "1")
BODY = json.dumps(
    {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
)
SPEC = {
    "model": "iris",
    "dataset": {"builtin": "iris"},
    "estimator": {"class": "LogisticRegression", "params": {"max_iter": 300}},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(args: list[str], ready: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_ready(ready, proc)
    return proc


def pair(
    model_dir: Path, work: Path, rate: str
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    """A server logging at `rate` (pinned to core 0) and its monitor (core 1)."""
    monitor_port, samples_port, port = free_port(), free_port(), free_port()
    monitor = start(
        [
            "taskset", "-c", "1", str(BIN / "mlplane-monitor"), f"--log-uri={work / rate}",
            "--host=127.0.0.1", f"--port={monitor_port}", f"--samples-port={samples_port}",
        ],
        f"http://127.0.0.1:{monitor_port}/healthz",
        work / f"monitor-{rate}.log",
    )  # fmt: skip
    server = start(
        [
            "taskset", "-c", "0", str(BIN / "mlplane-serve"), f"--model-uri={model_dir}",
            "--model-name=iris", "--model-version=1", "--host=127.0.0.1", f"--port={port}",
            f"--monitor-url=http://127.0.0.1:{samples_port}", "--sample-rate=0",
            f"--log-sample-rate={rate}",
        ],
        f"http://127.0.0.1:{port}/v2/health/ready",
        work / f"server-{rate}.log",
    )  # fmt: skip
    return server, monitor, f"http://127.0.0.1:{port}/v2/models/iris/infer"


def request_path_cost(model_dir: Path, work: Path, seconds: int, repeats: int) -> None:
    lua = work / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(BODY)}\n"
    )
    pairs = {rate: pair(model_dir, work, rate) for rate in RATES}
    try:
        per_rate: dict[str, list[float]] = {rate: [] for rate in RATES}
        for _ in range(repeats):
            before = {r: (cpu_seconds(s.pid), cpu_seconds(m.pid)) for r, (s, m, _) in pairs.items()}
            runs = {
                rate: subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        "1",
                        "wrk",
                        "-t1",
                        "-c8",
                        f"-d{seconds}s",
                        "-s",
                        str(lua),
                        url,
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for rate, (_, _, url) in pairs.items()
            }
            for rate, run in runs.items():
                output = run.communicate()[0]
                match = re.search(r"(\d+) requests in", output)
                if match is None:
                    raise RuntimeError(f"no request count in wrk's output:\n{output}")
                server, monitor, _ = pairs[rate]
                used = (cpu_seconds(server.pid) - before[rate][0]) + (
                    cpu_seconds(monitor.pid) - before[rate][1]
                )
                per_rate[rate].append(used / int(match.group(1)) * 1e6)
            line = ", ".join(f"rate {r}: {per_rate[r][-1]:.1f} us" for r in RATES)
            print(f"  CPU per request (server + monitor): {line}", flush=True)
    finally:
        for server, monitor, _ in pairs.values():
            for proc in (server, monitor):
                proc.terminate()
                proc.wait(timeout=60)
    baseline = float(np.median(per_rate["0"]))
    print("\nprediction log | CPU per request, median | vs rate 0")
    for rate in RATES:
        median = float(np.median(per_rate[rate]))
        print(f"sampleRate {rate:>4} | {median:7.1f} us | {median / baseline - 1:+.1%}")


def evaluation_time(work: Path, rows: int = 100_000) -> None:
    root, now = str(work / "eval"), time.time()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, rows)
    ids = [f"r{i}" for i in range(rows)]
    for start in range(0, rows, 10_000):
        part = slice(start, start + 10_000)
        batch = LoggedRows(
            rng.random((10_000, 4), dtype=np.float32), labels[part].tolist(), ids[part],
            [1] * 10_000, [now - 60] * 10_000, "1",
        )  # fmt: skip
        write_predictions(root, [batch], "bench", start // 10_000)
    truth = np.where(rng.random(rows) < 0.6, (labels + 1) % 3, labels)
    for start in range(0, rows, 1_000):
        answers = [[int(v)] for v in truth[start : start + 1_000]]
        write_feedback(root, Feedback(ids[start : start + 1_000], answers), "bench", now - 30)
    began = time.perf_counter()
    result = evaluate(root, "accuracy", now - 3600, now)
    took = time.perf_counter() - began
    (version,) = result["versions"]
    print(
        f"\nevaluation of {rows:,} logged rows ({version['labeled']:,} labeled, 10 prediction "
        f"files, 100 feedback files): {took:.2f} s, accuracy {version['value']:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlplane-bench-quality-") as tmp:
        work = Path(tmp)
        train(parse_spec(SPEC), RunIdentity("iris", "bench", str(work / "models")))
        print("three servers on core 0 at once (logging at 0, 0.1, 1); wrk and monitors on core 1")
        request_path_cost(work / "models/iris/bench", work, args.seconds, args.repeats)
        evaluation_time(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
