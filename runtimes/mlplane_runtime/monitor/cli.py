"""`mlplane-monitor`: the drift sidecar.

    mlplane-monitor --baseline-uri URI [--baseline-sha256 HEX] [--host 0.0.0.0]
                    [--port 8081] [--samples-port 8082] [--method psi|ks] [--threshold T]
                    [--min-samples 100] [--window 1000] [limits as mlplane-serve's]

`GET /drift`, `/metrics` and `/healthz` on `--host`:`--port` (the pod's address; the
Service may expose it); `POST /samples` only on 127.0.0.1:`--samples-port`, where the
pod's own server sends them: nothing outside the pod can fake drift.

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
from mlplane_runtime.monitor.app import MonitorApp
from mlplane_runtime.monitor.drift import METHODS, DriftDetector
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
    add_limit_arguments(p)
    args: argparse.Namespace = p.parse_args(argv)
    if not args.baseline_uri:
        p.error("--baseline-uri (or MLPLANE_BASELINE_URI) is required")
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
    detector = DriftDetector(
        load_profile(args.baseline_uri, args.baseline_sha256),
        method=args.method,
        threshold=args.threshold,
        min_samples=args.min_samples,
        window=args.window,
    )
    samples = HttpServer(
        MonitorApp(detector),
        dataclasses.replace(args.limits, max_connections=SAMPLES_MAX_CONNECTIONS),
    )
    samples_port = await samples.start(SAMPLES_HOST, args.samples_port)
    public = HttpServer(
        MonitorApp(detector, samples_from=f"{SAMPLES_HOST}:{samples_port}"),
        dataclasses.replace(args.limits, max_body_bytes=PUBLIC_MAX_BODY_BYTES),
    )
    port = await public.start(args.host, args.port)
    log.info(
        "monitoring %d features with %s (threshold %s): /drift and /metrics on %s:%d, "
        "samples on %s:%d",
        detector.n_features,
        detector.method,
        detector.threshold,
        args.host,
        port,
        SAMPLES_HOST,
        samples_port,
    )
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await stop.wait()
    await asyncio.gather(public.shutdown(grace_seconds=5), samples.shutdown(grace_seconds=5))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_server_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
