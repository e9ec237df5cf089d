"""Pod start latency on the local node: create -> Ready for a trivial HTTP pod.

    .venv/bin/python hack/localnode/bench_start.py [--runs 10] [--kubeconfig .cluster/kubeconfig]

Creates a namespace, then one pod at a time (`python -m http.server` from the venv, with
an httpGet readiness probe every second, and once more without any probe), measures the
time from the create call to the Ready condition seen through a watch, deletes the pod,
and prints the median, min and max per variant.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from kubernetes import client, config, watch


def _pod(name: str, probe: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web",
        "image": "mlplane/runtime:dev",
        "command": ["python", "-m", "http.server", "8080"],
    }
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1},
    }


def _ready(pod: Any) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def measure(core: Any, namespace: str, name: str, probe: bool) -> float:
    began = time.monotonic()
    created = core.create_namespaced_pod(namespace, _pod(name, probe))
    stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
    try:
        for event in stream.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=created.metadata.resource_version,
            timeout_seconds=120,
        ):
            if _ready(event["object"]):
                return time.monotonic() - began
    finally:
        stream.stop()
    raise TimeoutError(f"pod {name} not Ready within 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", default=".cluster/kubeconfig")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    core: Any = client.CoreV1Api(api)
    namespace = f"bench-start-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        for probe in (True, False):
            samples = []
            for index in range(args.runs):
                name = f"web-{index}-{'probe' if probe else 'noprobe'}"
                samples.append(measure(core, namespace, name, probe))
                core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            label = "readiness httpGet every 1s" if probe else "no readiness probe"
            print(
                f"create -> Ready ({label}), {args.runs} pods: "
                f"median {statistics.median(samples):.3f}s, "
                f"min {min(samples):.3f}s, max {max(samples):.3f}s"
            )
    finally:
        core.delete_namespace(namespace)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
