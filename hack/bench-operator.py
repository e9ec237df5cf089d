"""Benchmark the operator at scale against the running local control plane.

Prints figures and ratios; it is not a test and asserts nothing. It assumes the
cluster is up (`hack/cluster.py up`; with MLPLANE_START_NODE=0 the pods stay Pending,
which is what this wants: it measures the operator, not the trainers) and starts its own
operator process against it, watching only the namespace it creates, like the tests.

  1. a bare client creates N Jobs (the yardstick), in a namespace of its own, then N
     TrainingJobs there (no operator watches it): the floor of the ratio in step 3;
  2. the operator's requests per second with nothing to do. The operator runs as a
     ServiceAccount of its own that a FlowSchema of its own classifies, so the API
     server's apiserver_flowcontrol_dispatched_requests_total{flow_schema=...} counts
     its requests alone (watches count once, when they start);
  3. N TrainingJobs are created: time until every one has its Job, ÷ the bare client;
  4. M InferenceServices pinned to a verified ModelVersion: time until each has its
     Deployment;
  5. a quiet minute: API requests per second of the operator at rest, and its RSS;
  6. spec changes: the time from a patch to the child's update (TrainingJob → a new
     Job; InferenceService replicas → the Deployment's replicas), p50 / p99.

Every wait is bounded (--timeout); the operator is stopped and the namespaces deleted
at the end, also when a step fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parent.parent
CLUSTER = Path(os.environ.get("MLPLANE_CLUSTER_DIR", REPO / ".cluster"))
KUBECONFIG = CLUSTER / "kubeconfig"
GROUP, VERSION = "mlplane.io", "v1alpha1"
IMAGE = "registry.invalid/mlplane/runtime:bench"  # never pulled: no node runs the pods
FLOW_SCHEMA = "mlplane-bench-operator"
PARALLEL = 8  # the bare client and the creation of TrainingJobs use the same width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainingjobs", "-n", type=int, default=1000)
    parser.add_argument("--inferenceservices", "-m", type=int, default=300)
    parser.add_argument("--changes", type=int, default=40, help="spec changes per kind")
    parser.add_argument("--quiet", type=float, default=60, help="seconds of the quiet minute")
    parser.add_argument("--timeout", type=float, default=600, help="bound of each wait (s)")
    args = parser.parse_args()

    api = config.new_client_from_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]
    suffix = uuid.uuid4().hex[:5]
    bare_ns, bench_ns = f"bench-bare-{suffix}", f"bench-op-{suffix}"
    subprocess.run(
        [_kubectl(), f"--kubeconfig={KUBECONFIG}", "apply", "--server-side",
         "--force-conflicts", "-f", str(REPO / "crds")],
        check=True, capture_output=True,
    )  # fmt: skip
    figures: dict[str, str] = {}
    with _namespaces(api, bare_ns, bench_ns):
        figures["bare client: N Jobs created"] = f"{_bare_jobs(api, bare_ns, args):.1f} s"
        bare = float(figures["bare client: N Jobs created"].split()[0])
        # The floor of the ratio: the operator cannot make a Job before its TrainingJob
        # exists, and a custom resource (schema and CEL rules) costs the API server more.
        floor = _bare_trainingjobs(api, bare_ns, args)
        figures["bare client: N TrainingJobs created (no operator)"] = f"{floor:.1f} s"
        figures["  floor of the ratio"] = f"{floor / bare:.2f}"
        with _operator(api, bench_ns) as (operator, metrics_port):
            idle = _request_rate(api, 20)
            figures["operator, no objects"] = f"{idle:.2f} req/s"
            before = _operator_requests(metrics_port)
            took = _trainingjobs_to_jobs(api, bench_ns, args)
            figures["N TrainingJobs -> N Jobs"] = f"{took:.1f} s"
            figures["ratio to the bare client (goal <= 1.5)"] = f"{took / bare:.2f}"
            figures["  ratio to creating the TrainingJobs alone"] = f"{took / floor:.2f}"
            figures["  operator requests per TrainingJob meanwhile"] = _per_object(
                before, _operator_requests(metrics_port), args.trainingjobs
            )
            before = _operator_requests(metrics_port)
            took = _inferenceservices_to_deployments(api, bench_ns, args)
            figures["M InferenceServices -> M Deployments"] = f"{took:.1f} s"
            figures["  operator requests per InferenceService meanwhile"] = _per_object(
                before, _operator_requests(metrics_port), args.inferenceservices
            )
            before = _operator_requests(metrics_port)
            settled = _settle(api, args.timeout)
            figures["until the operator settled (<= 1 req/s over 5 s)"] = f"{settled:.1f} s"
            figures["  operator requests per object meanwhile"] = _per_object(
                before, _operator_requests(metrics_port), args.trainingjobs + args.inferenceservices
            )
            before = _operator_requests(metrics_port)
            rate = _request_rate(api, args.quiet)
            figures["operator at rest (goal <= 1)"] = f"{rate:.2f} req/s"
            figures["  by verb and resource"] = _per_object(
                before, _operator_requests(metrics_port), 1
            )
            figures["operator RSS"] = f"{_rss_mb(operator.pid):.0f} MB"
            figures["operator CPU at rest"] = f"{_cpu_percent(operator.pid, 10):.1f} %"
            tj = _trainingjob_changes(api, bench_ns, args)
            figures["TrainingJob spec -> new Job p50 / p99 (goal <= 2)"] = tj
            isvc = _inferenceservice_changes(api, bench_ns, args)
            figures["InferenceService replicas -> Deployment p50 / p99 (goal <= 2)"] = isvc
            figures["operator RSS after"] = f"{_rss_mb(operator.pid):.0f} MB"
    print(f"\nmlplane operator benchmark: N={args.trainingjobs} TrainingJobs, "
          f"M={args.inferenceservices} InferenceServices")  # fmt: skip
    for name, value in figures.items():
        print(f"  {name:64} {value}")


# --- steps ---------------------------------------------------------------------------


def _bare_trainingjobs(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> float:
    """N TrainingJobs created where no operator watches (what step 3 cannot beat)."""
    start = time.monotonic()
    _create_trainingjobs(api, namespace, "bare-tj", args.trainingjobs)
    return time.monotonic() - start


def _create_trainingjobs(api: client.ApiClient, namespace: str, prefix: str, count: int) -> None:
    custom = client.CustomObjectsApi(api)
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(
            pool.map(
                lambda i: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "trainingjobs", _trainingjob(f"{prefix}-{i}")
                ),
                range(count),
            )
        )


def _bare_jobs(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> float:
    batch: Any = client.BatchV1Api(api)

    def create(i: int) -> None:
        batch.create_namespaced_job(namespace, _job(f"bare-{i}"))

    start = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(create, range(args.trainingjobs)))
    return time.monotonic() - start


def _trainingjobs_to_jobs(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> float:
    seen = _JobWatch(api, namespace, "mlplane.io/component=trainer")
    start = time.monotonic()
    _create_trainingjobs(api, namespace, "tj", args.trainingjobs)
    seen.wait(lambda names: len(names) >= args.trainingjobs, args.timeout, "N Jobs")
    took = time.monotonic() - start
    seen.stop()
    return took


def _inferenceservices_to_deployments(
    api: client.ApiClient, namespace: str, args: argparse.Namespace
) -> float:
    custom = client.CustomObjectsApi(api)
    apps = client.AppsV1Api(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions", _model_version()
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "modelversions", "bench-v1",
        {"status": {"verified": True, "message": "verified by the benchmark"}},
    )  # fmt: skip
    start = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(
            pool.map(
                lambda i: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "inferenceservices", _inference_service(f"is-{i}")
                ),
                range(args.inferenceservices),
            )
        )
    _until(
        lambda: (
            len(
                apps.list_namespaced_deployment(
                    namespace, label_selector="mlplane.io/inferenceservice"
                ).items
            )
            >= args.inferenceservices
        ),
        args.timeout,
        "M Deployments",
    )
    return time.monotonic() - start


def _trainingjob_changes(api: client.ApiClient, namespace: str, args: argparse.Namespace) -> str:
    """Patch a TrainingJob's estimator params; its pending run is superseded by a new
    Job (run 2). The time from the patch to that Job's creation."""
    custom = client.CustomObjectsApi(api)
    seen = _JobWatch(api, namespace, "mlplane.io/component=trainer")
    latencies = []
    for i in range(min(args.changes, args.trainingjobs)):
        name = f"tj-{i}"
        start = time.monotonic()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", name,
            {"spec": {"estimator": {"params": {"max_iter": 200 + i}}}},
        )  # fmt: skip
        job = f"{name}-2"
        arrived = seen.wait(partial(_has, job), 60, job)
        latencies.append(arrived - start)
    seen.stop()
    return _percentiles(latencies)


def _inferenceservice_changes(
    api: client.ApiClient, namespace: str, args: argparse.Namespace
) -> str:
    custom = client.CustomObjectsApi(api)
    apps = client.AppsV1Api(api)
    latencies = []
    for i in range(min(args.changes, args.inferenceservices)):
        name = f"is-{i}"
        start = time.monotonic()
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "inferenceservices", name, {"spec": {"replicas": 2}}
        )
        _until(
            partial(_scaled, apps, namespace, name),
            60,
            f"{name}'s Deployment at 2 replicas",
            interval=0.05,
        )
        latencies.append(time.monotonic() - start)
    return _percentiles(latencies)


def _has(name: str, names: dict[str, float]) -> bool:
    return name in names


def _scaled(apps: Any, namespace: str, name: str) -> bool:
    selector = f"mlplane.io/inferenceservice={name}"
    found = apps.list_namespaced_deployment(namespace, label_selector=selector).items
    return any(d.spec.replicas == 2 for d in found)


# --- manifests -----------------------------------------------------------------------


def _job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"bench": "bare"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"bench": "bare"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": IMAGE, "args": ["train"]}],
                },
            },
        },
    }


def _trainingjob(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": name,
            "dataset": {"builtin": "iris"},
            "estimator": {"class": "LogisticRegression", "params": {"max_iter": 100}},
        },
    }


def _model_version() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelVersion",
        "metadata": {"name": "bench-v1"},
        "spec": {
            "model": "bench",
            "version": 1,
            "artifact": {
                "uri": "pvc://mlplane-artifacts/bench/v1/model.onnx",
                "sha256": "0" * 64,
                "sizeBytes": 1000,
                "format": "onnx",
            },
            "signature": {
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
            },
            "stage": "Staging",
        },
    }


def _inference_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"model": "bench", "version": 1, "replicas": 1},
    }


# --- measuring -----------------------------------------------------------------------


class _JobWatch:
    """The names of Jobs created in a namespace, with when each was first seen."""

    def __init__(self, api: client.ApiClient, namespace: str, selector: str) -> None:
        self.seen: dict[str, float] = {}
        self.changed = threading.Condition()
        self.watch: Any = watch.Watch()  # type: ignore[no-untyped-call]
        batch: Any = client.BatchV1Api(api)
        listed = batch.list_namespaced_job(namespace, label_selector=selector)
        now = time.monotonic()
        self.seen = {job.metadata.name: now for job in listed.items}
        self.thread = threading.Thread(
            target=self._run,
            args=(batch, namespace, selector, listed.metadata.resource_version),
            daemon=True,
        )
        self.thread.start()

    def _run(self, batch: Any, namespace: str, selector: str, rv: str) -> None:
        try:
            for event in self.watch.stream(
                batch.list_namespaced_job, namespace, label_selector=selector,
                resource_version=rv, timeout_seconds=3600,
            ):  # fmt: skip
                with self.changed:
                    self.seen.setdefault(event["object"].metadata.name, time.monotonic())
                    self.changed.notify_all()
        except Exception:  # stopped, or the namespace went away
            return

    def wait(self, done: Callable[[dict[str, float]], bool], timeout: float, what: str) -> float:
        """Until `done(seen)`; returns when the last name it needed arrived (monotonic)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not done(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.changed.wait(min(left, 1))
            return max(self.seen.values())

    def stop(self) -> None:
        self.watch.stop()


def _request_rate(api: client.ApiClient, seconds: float) -> float:
    """API requests per second the operator made over `seconds`."""
    before = _requests_total(api)
    time.sleep(seconds)
    return (_requests_total(api) - before) / seconds


def _requests_total(api: client.ApiClient) -> float:
    total = 0.0
    for line in _get_metrics(api).splitlines():
        if line.startswith("apiserver_flowcontrol_dispatched_requests_total{") and (
            f'flow_schema="{FLOW_SCHEMA}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _settle(api: client.ApiClient, timeout: float) -> float:
    """Seconds until the operator makes at most 1 request per second over 5 s."""
    start = time.monotonic()
    while _request_rate(api, 5) > 1 and time.monotonic() - start < timeout:
        pass
    return time.monotonic() - start


def _operator_requests(port: int) -> dict[str, float]:
    """The operator's own count of its requests (Kopf's not included), by verb/resource."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlplane_operator_api_requests_total{"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            name = f"{labels['verb'].strip(chr(34))} {labels['resource'].strip(chr(34))}"
            counts[name] = float(line.rsplit(" ", 1)[1])
    return counts


def _per_object(before: dict[str, float], after: dict[str, float], count: int) -> str:
    deltas = {name: after[name] - before.get(name, 0) for name in after}
    shown = sorted((d, n) for n, d in deltas.items() if d > 0)[::-1]
    total = sum(d for d, _ in shown)
    return f"{total / count:.2f}: " + ", ".join(f"{n} {d / count:.2f}" for d, n in shown[:8])


def _get_metrics(api: client.ApiClient) -> str:
    host = api.configuration.host
    pool = api.rest_client.pool_manager
    response = pool.request("GET", f"{host}/metrics", preload_content=True, timeout=30)
    return str(response.data.decode())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_percent(pid: int, seconds: float) -> float:
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = ticks()
    time.sleep(seconds)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds * 100


def _percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "n/a"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} / {p99:.2f} s (n={len(ordered)})"


def _until(probe: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- processes and namespaces --------------------------------------------------------


@contextmanager
def _namespaces(api: client.ApiClient, *names: str) -> Iterator[None]:
    core: Any = client.CoreV1Api(api)
    for name in names:
        core.create_namespace({"metadata": {"name": name}})
    try:
        yield
    finally:
        for name in names:
            core.delete_namespace(name, propagation_policy="Background")


@contextmanager
def _operator(
    api: client.ApiClient, namespace: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    health, metrics_port = _free_port(), _free_port()
    kubeconfig = _operator_identity(api, namespace)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MLPLANE_WATCH_NAMESPACES": namespace,
        "MLPLANE_RUNTIME_IMAGE": IMAGE,
        "MLPLANE_METRICS_PORT": str(metrics_port),
        "MLPLANE_HEALTH_PORT": str(health),
        "MLPLANE_LOG_LEVEL": "WARNING",
    }
    (CLUSTER / "logs").mkdir(parents=True, exist_ok=True)
    with open(CLUSTER / "logs" / "operator-bench.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlplane_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _until(lambda: _healthy(health, process), 60, "the operator to become healthy")
        yield process, metrics_port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        kubeconfig.unlink(missing_ok=True)
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.delete_cluster_role_binding(FLOW_SCHEMA)
        client.FlowcontrolApiserverV1Api(api).delete_flow_schema(FLOW_SCHEMA)


def _operator_identity(api: client.ApiClient, namespace: str) -> Path:
    """A ServiceAccount (cluster-admin for the run) and a FlowSchema that classifies its
    requests alone; returns a kubeconfig with its token."""
    core: Any = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "operator"}})
    rbac: Any = client.RbacAuthorizationV1Api(api)
    flowcontrol: Any = client.FlowcontrolApiserverV1Api(api)
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": FLOW_SCHEMA},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        }
    )
    subject = {
        "kind": "ServiceAccount",
        "serviceAccount": {"name": "operator", "namespace": namespace},
    }
    flowcontrol.create_flow_schema(
        {
            "metadata": {"name": FLOW_SCHEMA},
            "spec": {
                "priorityLevelConfiguration": {"name": "workload-low"},
                "matchingPrecedence": 1000,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": [subject],
                        "resourceRules": [
                            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                             "clusterScope": True, "namespaces": ["*"]}
                        ],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        }
    )  # fmt: skip
    token = core.create_namespaced_service_account_token(
        "operator", namespace, {"spec": {"expirationSeconds": 7200}}
    ).status.token
    path = CLUSTER / "bench-operator.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{api.configuration.host}', "
        f"certificate-authority: '{CLUSTER / 'pki' / 'ca.crt'}'}}}}]\n"
        f"users: [{{name: u, user: {{token: '{token}'}}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    path.chmod(0o600)
    return path


def _healthy(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError("the operator exited; see .cluster/logs/operator-bench.log")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kubectl() -> str:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlplane"
    return str(Path(os.environ.get("MLPLANE_BIN_DIR", cache / "bin")) / "kubectl")


if __name__ == "__main__":
    main()
