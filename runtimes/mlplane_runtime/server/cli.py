"""`mlplane-serve`: serve one ONNX model over KServe V2 (REST and gRPC) and V1 REST.

Every flag has an environment variable: ``MLPLANE_`` and the flag in capitals
(``--max-body-bytes`` reads ``MLPLANE_MAX_BODY_BYTES``), except ``--sha256``, which reads
``MLPLANE_MODEL_SHA256``.

With ``--monitor-url``, rows are sampled for the drift monitor at ``--sample-rate`` (a
ceiling, default 1) and at most about ``--max-samples-per-second`` rows per second
(default 200; 0 lifts the limit), so monitoring costs a busy server almost nothing.
``--sample-rate 0`` sends no drift samples.

With ``--monitor-url`` and ``--log-sample-rate`` (0 to 1), that share of requests is
logged (rows, outputs, request id, time, version) through the monitor, which writes the
prediction log, and ``POST /v2/models/{name}/feedback`` takes ground truth for them.

The server listens at once (live), loads and verifies the artifact, and only then reports
ready. On SIGTERM it reports not ready at once but serves on for ``--drain-seconds``, then
gives the requests in flight ``--grace-seconds``. Exit codes: 0 after a graceful shutdown
(SIGTERM), 2 bad arguments or an artifact that does not load, 3 storage unreachable, 4
sha256 mismatch (never ready).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

from mlplane_runtime.cli_support import (
    ArgumentParser,
    add_limit_arguments,
    env_default,
    limits_from_args,
    run_server_main,
)
from mlplane_runtime.errors import RuntimeFailure, UserError
from mlplane_runtime.httpserver import HttpServer, install_signal_handlers
from mlplane_runtime.server import metrics
from mlplane_runtime.server.batching import Batcher, batchable
from mlplane_runtime.server.dataplane import MAX_ROWS, DataPlane
from mlplane_runtime.server.grpc_server import DEFAULT_PORT as GRPC_PORT
from mlplane_runtime.server.grpc_server import GrpcApp, GrpcServer
from mlplane_runtime.server.model import OnnxModel
from mlplane_runtime.server.rest import OFFLOAD_ROWS, RestApp
from mlplane_runtime.server.sampler import FeedbackForwarder, Sampler

log = logging.getLogger("mlplane.serve")

MAX_BATCH_LATENCY_MS = 1000
# After SIGTERM (both within the pod's terminationGracePeriodSeconds, 30 by default).
DRAIN_SECONDS = 5.0
GRACE_SECONDS = 20.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = ArgumentParser(prog="mlplane-serve", description="Serve an ONNX model (KServe V1/V2).")
    p.add_argument("--model-uri", default=env_default("MLPLANE_MODEL_URI"))
    p.add_argument("--model-name", default=env_default("MLPLANE_MODEL_NAME"))
    p.add_argument("--model-version", default=env_default("MLPLANE_MODEL_VERSION"))
    p.add_argument("--sha256", default=env_default("MLPLANE_MODEL_SHA256"))
    p.add_argument("--host", default=env_default("MLPLANE_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env_default("MLPLANE_PORT", "8080")))
    p.add_argument(
        "--grpc-port",
        type=int,
        default=int(env_default("MLPLANE_GRPC_PORT", str(GRPC_PORT))),
        help=f"the Open Inference Protocol over gRPC (default {GRPC_PORT}; 0 turns it off)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(env_default("MLPLANE_THREADS", "1")),
        help="ONNX Runtime intra-op threads (default 1)",
    )
    add_limit_arguments(p)
    p.add_argument(
        "--max-rows",
        type=int,
        default=int(env_default("MLPLANE_MAX_ROWS", str(MAX_ROWS))),
        help=f"rows per inference request; more: 413 (default {MAX_ROWS})",
    )
    p.add_argument(
        "--offload-rows",
        type=int,
        default=int(env_default("MLPLANE_OFFLOAD_ROWS", str(OFFLOAD_ROWS))),
        help="requests with more rows (or a body over 64 KiB) run on a worker thread, so "
        f"the probes keep answering (default {OFFLOAD_ROWS})",
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=int(env_default("MLPLANE_MAX_BATCH_SIZE", "0")),
        help="adaptive batching: concurrent V2 requests (REST and gRPC) share one ONNX "
        "Runtime run of at most this many rows (default 0: off)",
    )
    p.add_argument(
        "--max-batch-latency-ms",
        type=float,
        default=float(env_default("MLPLANE_MAX_BATCH_LATENCY_MS", "0")),
        help="the longest a batch waits for more rows while the model is free (default 0: "
        "the loop's next turn, so a lone request never waits)",
    )
    p.add_argument(
        "--monitor-url",
        default=env_default("MLPLANE_MONITOR_URL"),
        help="the monitor sidecar's samples address, e.g. http://127.0.0.1:8082",
    )
    p.add_argument(
        "--sample-rate", type=float, default=float(env_default("MLPLANE_SAMPLE_RATE", "1.0"))
    )
    p.add_argument(
        "--max-samples-per-second",
        type=float,
        default=float(env_default("MLPLANE_MAX_SAMPLES_PER_SECOND", "200")),
    )
    log_rate = env_default("MLPLANE_LOG_SAMPLE_RATE")
    p.add_argument(
        "--log-sample-rate",
        type=float,
        default=float(log_rate) if log_rate else None,
        help="with --monitor-url: the share of requests to log for the quality loop (0 to 1)",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=float(env_default("MLPLANE_DRAIN_SECONDS", str(DRAIN_SECONDS))),
        help="after SIGTERM: not ready, but serving on for this long while the endpoints "
        f"update (default {DRAIN_SECONDS:g}; a second signal ends it)",
    )
    p.add_argument(
        "--grace-seconds",
        type=float,
        default=float(env_default("MLPLANE_GRACE_SECONDS", str(GRACE_SECONDS))),
        help="then: time for the requests in flight before connections are cut "
        f"(default {GRACE_SECONDS:g})",
    )
    args: argparse.Namespace = p.parse_args(argv)
    if not args.model_uri or not args.model_name:
        p.error("--model-uri and --model-name are required (or MLPLANE_MODEL_URI/_NAME)")
    if args.threads < 1 or not 0 <= args.sample_rate <= 1:
        p.error("--threads >= 1 and 0 <= --sample-rate <= 1")
    if args.max_rows < 1 or args.offload_rows < 0:
        p.error("--max-rows must be >= 1 and --offload-rows >= 0")
    if not 0 <= args.max_batch_size <= args.max_rows:
        p.error("--max-batch-size must be between 0 (off) and --max-rows")
    if not 0 <= args.max_batch_latency_ms <= MAX_BATCH_LATENCY_MS:
        p.error(f"--max-batch-latency-ms must be between 0 and {MAX_BATCH_LATENCY_MS}")
    if not 0 <= args.grpc_port <= 65535:
        p.error("--grpc-port must be a port number (0 turns gRPC off)")
    if args.drain_seconds < 0 or args.grace_seconds < 0:
        p.error("--drain-seconds and --grace-seconds must be >= 0")
    args.limits = limits_from_args(p, args)
    if args.max_samples_per_second < 0:
        p.error("--max-samples-per-second must be >= 0 (0: no limit)")
    if args.log_sample_rate is not None and (
        not 0 <= args.log_sample_rate <= 1 or not args.monitor_url
    ):
        p.error("--log-sample-rate must be within 0..1 and needs --monitor-url")
    return args


async def serve(args: argparse.Namespace) -> int:
    model = OnnxModel(
        args.model_name, args.model_version, args.model_uri, args.sha256, args.threads
    )
    sampler = prediction_log = feedback = None
    try:  # a ValueError is a bad --monitor-url
        if args.monitor_url and args.sample_rate > 0:
            sampler = Sampler(
                args.monitor_url,
                rate=args.sample_rate,
                max_per_second=args.max_samples_per_second,
            )
        if args.log_sample_rate is not None:
            prediction_log = Sampler(
                args.monitor_url,
                rate=args.log_sample_rate,
                path="/predictions",
                version=args.model_version or "",
            )
            feedback = FeedbackForwarder(args.monitor_url)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    plane = DataPlane(model, sampler, args.max_rows, prediction_log, feedback)
    server = HttpServer(RestApp(plane, offload_rows=args.offload_rows), args.limits)
    port = await server.start(args.host, args.port)
    log.info("listening on %s:%d (live; loading %s)", args.host, port, args.model_uri)
    grpc_server = None
    if args.grpc_port:
        grpc_server = GrpcServer(
            GrpcApp(plane, offload_rows=args.offload_rows), args.limits.max_body_bytes
        )
        await grpc_server.start(args.host, args.grpc_port)
        log.info("gRPC on %s:%d", args.host, args.grpc_port)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        await asyncio.get_running_loop().run_in_executor(None, model.load)
    except RuntimeFailure as exc:
        log.error("not ready: %s", exc)
        await server.shutdown(grace_seconds=0)
        if grpc_server is not None:
            await grpc_server.shutdown(grace_seconds=0)
        raise
    if args.max_batch_size:
        plane.batcher = _batcher(model, args)
    metrics.BATCH_SIZE.set(plane.batcher.max_batch_size if plane.batcher else 0)
    metrics.MODEL_INFO.labels(model.name, model.version, model.sha256[:12]).set(1)
    metrics.MODEL_READY.set(1)
    log.info("ready: model %s version %r sha256 %s", model.name, model.version, model.sha256)
    for channel in (sampler, prediction_log):
        if channel is not None:
            channel.start()
    await stop.wait()
    await drain(server, plane, stop, args.drain_seconds)
    log.info("closing: up to %gs for the requests in flight", args.grace_seconds)
    closing = [server.shutdown(args.grace_seconds)]
    if grpc_server is not None:
        closing.append(grpc_server.shutdown(args.grace_seconds))
    await asyncio.gather(*closing)
    for channel in (sampler, prediction_log):
        if channel is not None:
            channel.stop()  # the prediction log's last batch tells the monitor it is all in
    if plane.batcher is not None:
        plane.batcher.close()
    log.info("stopped")
    return 0


def _batcher(model: OnnxModel, args: argparse.Namespace) -> Batcher | None:
    if not batchable(model):
        log.warning(
            "adaptive batching is off: the model's inputs and outputs do not all have a "
            "dynamic first dimension to stack requests on"
        )
        return None
    log.info(
        "adaptive batching: up to %d rows a run, waiting up to %g ms",
        args.max_batch_size,
        args.max_batch_latency_ms,
    )
    return Batcher(model, args.max_batch_size, args.max_batch_latency_ms / 1000, args.offload_rows)


async def drain(server: HttpServer, plane: DataPlane, stop: asyncio.Event, seconds: float) -> None:
    """Not ready at once, but serving on for `seconds` (each response closing its
    connection): the endpoints controller and every kube-proxy take a while to stop
    routing to this pod, and what they still send must not be lost. A second signal
    ends the drain early."""
    log.info("SIGTERM: not ready; serving %gs more while the endpoints update", seconds)
    plane.draining = True
    metrics.MODEL_READY.set(0)
    server.drain()
    stop.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def main(argv: list[str] | None = None) -> int:
    return run_server_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
