"""`mlplane-monitor`: the drift and prediction-log sidecar.

    mlplane-monitor [--baseline-uri URI [--baseline-sha256 HEX]] [--log-uri ROOT]
                    [--host 0.0.0.0] [--port 8081] [--samples-port 8082]
                    [--method psi|ks] [--threshold T] [--min-samples 100] [--window 1000]
                    [--log-roll-rows 10000] [--log-roll-seconds 60] [--log-max-rows 100000]
                    [--final-wait-seconds 25] [limits as mlplane-serve's]

`GET /drift`, `/metrics` and `/healthz` on `--host`:`--port` (the pod's address; the
Service may expose it); `POST /samples`, `/predictions` and `/feedback` only on
127.0.0.1:`--samples-port`, where the pod's own server sends them: nothing outside the
pod can fake drift or labels. At least one of `--baseline-uri` (drift detection) and
`--log-uri` (the prediction log, Parquet under ROOT, and feedback beside it) is needed.

On SIGTERM with a prediction log, the monitor keeps taking rows until the server's
final batch arrived (or `--final-wait-seconds` passed), then writes what it holds and
exits: no logged row is lost to a rollout.

Flags default to env vars ``MLPLANE_BASELINE_URI``, ``MLPLANE_BASELINE_SHA256``,
``MLPLANE_MONITOR_PORT``, ``MLPLANE_MONITOR_SAMPLES_PORT``, ``MLPLANE_DRIFT_METHOD``,
``MLPLANE_DRIFT_THRESHOLD``, ``MLPLANE_DRIFT_MIN_SAMPLES``, ``MLPLANE_DRIFT_WINDOW``,
and the limits' ``MLPLANE_MAX_BODY_BYTES`` etc. Default thresholds: PSI 0.2, KS 0.2. Exit
codes as the server's: 2 bad arguments or baseline, 3 storage unreachable, 4 baseline
sha256 mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from typing import Any

from mlplane_runtime.artifacts import check_sha256
from mlplane_runtime.cli_support import (
    ArgumentParser,
    add_limit_arguments,
    env_default,
    limits_from_args,
    run_server_main,
)
from mlplane_runtime.errors import UserError
from mlplane_runtime.httpserver import HttpServer, install_signal_handlers
from mlplane_runtime.monitor.app import LOG_METRICS, MonitorApp
from mlplane_runtime.monitor.drift import METHODS, DriftDetector
from mlplane_runtime.monitor.predictionlog import PredictionLog
from mlplane_runtime.storage import read_bytes

log = logging.getLogger("mlplane.monitor")

SAMPLES_HOST = "127.0.0.1"  # samples only from inside the pod
SAMPLES_PORT = 8082
SAMPLES_MAX_CONNECTIONS = 8  # the server's sampler holds one
PUBLIC_MAX_BODY_BYTES = 1024  # the pod's address serves GETs only


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser(prog="mlplane-monitor", description="Drift monitor sidecar.")
    p.add_argument("--baseline-uri", default=env_default("MLPLANE_BASELINE_URI"))
    p.add_argument("--baseline-sha256", default=env_default("MLPLANE_BASELINE_SHA256"))
    p.add_argument("--host", default=env_default("MLPLANE_MONITOR_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env_default("MLPLANE_MONITOR_PORT", "8081")))
    p.add_argument(
        "--samples-port",
        type=int,
        default=int(env_default("MLPLANE_MONITOR_SAMPLES_PORT", str(SAMPLES_PORT))),
        help=f"POST /samples is accepted on {SAMPLES_HOST} at this port only "
        f"(default {SAMPLES_PORT})",
    )
    p.add_argument("--method", choices=METHODS, default=env_default("MLPLANE_DRIFT_METHOD", "psi"))
    threshold = env_default("MLPLANE_DRIFT_THRESHOLD")
    p.add_argument("--threshold", type=float, default=float(threshold) if threshold else None)
    p.add_argument(
        "--min-samples", type=int, default=int(env_default("MLPLANE_DRIFT_MIN_SAMPLES", "100"))
    )
    p.add_argument("--window", type=int, default=int(env_default("MLPLANE_DRIFT_WINDOW", "1000")))
    p.add_argument("--log-uri", default=env_default("MLPLANE_LOG_URI"))
    p.add_argument(
        "--log-roll-rows", type=int, default=int(env_default("MLPLANE_LOG_ROLL_ROWS", "10000"))
    )
    p.add_argument(
        "--log-roll-seconds",
        type=float,
        default=float(env_default("MLPLANE_LOG_ROLL_SECONDS", "60")),
    )
    p.add_argument(
        "--log-max-rows", type=int, default=int(env_default("MLPLANE_LOG_MAX_ROWS", "100000"))
    )
    p.add_argument(
        "--final-wait-seconds",
        type=float,
        default=float(env_default("MLPLANE_FINAL_WAIT_SECONDS", "25")),
        help="after SIGTERM: how long to wait for the server's last logged rows (default 25)",
    )
    add_limit_arguments(p)
    args: argparse.Namespace = p.parse_args(argv)
    if not args.baseline_uri and not args.log_uri:
        p.error("--baseline-uri (drift) or --log-uri (prediction log) is required")
    if args.log_roll_rows < 1 or args.log_roll_seconds <= 0 or args.final_wait_seconds < 0:
        p.error("--log-roll-rows >= 1, --log-roll-seconds > 0, --final-wait-seconds >= 0")
    if args.log_max_rows < args.log_roll_rows:
        p.error("--log-max-rows must be >= --log-roll-rows")
    args.limits = limits_from_args(p, args)
    if args.samples_port == args.port:
        p.error("--samples-port must differ from --port")
    return args


def load_profile(uri: str, sha256: str) -> dict[str, Any]:
    data = read_bytes(uri)
    check_sha256(data, sha256, uri)
    try:
        profile = json.loads(data)
    except ValueError as exc:
        raise UserError(f"{uri}: the baseline profile is not JSON: {exc}") from exc
    if not isinstance(profile, dict):
        raise UserError(f"{uri}: the baseline profile must be a JSON object")
    return profile


async def run(args: argparse.Namespace) -> int:
    detector = None
    if args.baseline_uri:
        detector = DriftDetector(
            load_profile(args.baseline_uri, args.baseline_sha256),
            method=args.method,
            threshold=args.threshold,
            min_samples=args.min_samples,
            window=args.window,
        )
    prediction_log = None
    if args.log_uri:
        prediction_log = PredictionLog(
            args.log_uri,
            LOG_METRICS,
            roll_rows=args.log_roll_rows,
            roll_seconds=args.log_roll_seconds,
            max_rows=args.log_max_rows,
        )
        prediction_log.start()
    inside = MonitorApp(detector, prediction_log=prediction_log)
    samples = HttpServer(
        inside, dataclasses.replace(args.limits, max_connections=SAMPLES_MAX_CONNECTIONS)
    )
    samples_port = await samples.start(SAMPLES_HOST, args.samples_port)
    public = HttpServer(
        MonitorApp(detector, samples_from=f"{SAMPLES_HOST}:{samples_port}"),
        dataclasses.replace(args.limits, max_body_bytes=PUBLIC_MAX_BODY_BYTES),
    )
    port = await public.start(args.host, args.port)
    if detector is not None:
        log.info(
            "monitoring %d features with %s (threshold %s)",
            detector.n_features,
            detector.method,
            detector.threshold,
        )
    if prediction_log is not None:
        log.info("logging predictions and feedback under %s", args.log_uri)
    log.info("/drift and /metrics on %s:%d", args.host, port)
    log.info("samples, predictions and feedback on %s:%d", SAMPLES_HOST, samples_port)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()
    if prediction_log is not None:
        await _await_final_batch(inside, stop, args.final_wait_seconds)
    await asyncio.gather(public.shutdown(grace_seconds=5), samples.shutdown(grace_seconds=5))
    if prediction_log is not None:
        await asyncio.get_running_loop().run_in_executor(None, prediction_log.close)
        log.info("prediction log closed")
    return 0


async def _await_final_batch(app: MonitorApp, stop: asyncio.Event, seconds: float) -> None:
    """After SIGTERM: keep taking rows until the server sent its last batch (it drains
    and flushes after the same signal), `seconds` pass, or a second signal comes."""
    log.info("SIGTERM: waiting up to %gs for the server's last logged rows", seconds)
    stop.clear()
    deadline = asyncio.get_running_loop().time() + seconds
    while not app.final_received and not stop.is_set():
        if asyncio.get_running_loop().time() >= deadline:
            log.warning("the server's final batch did not arrive within %gs", seconds)
            return
        await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    return run_server_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
