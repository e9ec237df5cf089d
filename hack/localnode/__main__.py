"""`python -m localnode --kubeconfig ... --node-name ...`: run the local node agent."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from localnode import logs
from localnode.agent import Agent
from localnode.config import Config


def parse(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(prog="localnode", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="local-node-0")
    parser.add_argument("--state-dir", type=Path, default=Path(".cluster/node"))
    parser.add_argument("--log-dir", type=Path, default=Path(".cluster/logs/pods"))
    parser.add_argument("--pod-cidr", default="10.88.0.0/16")
    parser.add_argument("--bridge", default="mlplane0")
    parser.add_argument("--gateway", default="10.88.0.1")
    parser.add_argument("--api-host", default="10.88.0.1")
    parser.add_argument("--api-port", type=int, default=36443)
    parser.add_argument("--venv", type=Path, default=Path(".venv"))
    parser.add_argument("--max-pods", type=int, default=110)
    parser.add_argument("--backoff-initial", type=float, default=10.0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logs.setup(args.log_level)
    return Config(
        kubeconfig=args.kubeconfig,
        node_name=args.node_name,
        state_dir=args.state_dir.resolve(),
        log_dir=args.log_dir.resolve(),
        pod_cidr=ipaddress.IPv4Network(args.pod_cidr),
        bridge=args.bridge,
        gateway=args.gateway,
        api_host=args.api_host,
        api_port=args.api_port,
        venv=args.venv.resolve(),
        max_pods=args.max_pods,
        backoff_initial=args.backoff_initial,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse(argv)
    stop = threading.Event()

    def on_signal(number: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent = Agent(config)
    agent.start()
    while not stop.wait(1.0):
        pass
    agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
