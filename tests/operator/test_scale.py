"""The operator from its watch-fed caches, on the control plane alone (pods stay Pending).

These need no node: the Jobs the operator creates are what they check. The safety-net
resync is set to an hour, so whatever happens within a test is driven by events.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from tests.kube import eventually
from tests.operator.conftest import GROUP, VERSION, OperatorProcess, custom
from tests.operator.helpers import training_job

COUNT = 150
NO_NODE_SETTINGS = {
    "MLPLANE_WATCH_NAMESPACES": "scale-*",  # a pattern: the cluster-wide caches, filtered
    "MLPLANE_RUNTIME_IMAGE": "registry.invalid/mlplane/runtime:test",  # never pulled
    "MLPLANE_RESYNC_SECONDS": "3600",
    "MLPLANE_STORAGE_PVC_CREATE": "false",
}


@pytest.fixture
def scale_operator(kubeconfig: str, crds_installed: None) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, "operator-scale-tests.log", **NO_NODE_SETTINGS)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def scale_namespace(kube_api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    name = f"scale-{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def _create_training_jobs(kube_api: client.ApiClient, namespace: str, count: int) -> None:
    api = custom(kube_api)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: api.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "trainingjobs", training_job(f"tj-{i}", f"m-{i}")
                ),
                range(count),
            )
        )


def _jobs(kube_api: client.ApiClient, namespace: str) -> list[Any]:
    found = client.BatchV1Api(kube_api).list_namespaced_job(
        namespace, label_selector="mlplane.io/component=trainer"
    )
    return list(found.items)


def test_many_training_jobs_get_exactly_one_job_each_and_a_spec_change_is_prompt(
    kube_api: client.ApiClient, scale_operator: OperatorProcess, scale_namespace: str
) -> None:
    ns = scale_namespace
    _create_training_jobs(kube_api, ns, COUNT)
    jobs = eventually(
        lambda: (found := _jobs(kube_api, ns)) and len(found) >= COUNT and found,
        timeout=120,
        interval=1,
        what=f"{COUNT} Jobs",
    )
    assert sorted(job.metadata.name for job in jobs) == sorted(f"tj-{i}-1" for i in range(COUNT))

    def running(name: str) -> bool:
        body = custom(kube_api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "trainingjobs", name
        )
        return (body.get("status") or {}).get("activeRun") == f"{name}-1"

    eventually(
        lambda: all(running(f"tj-{i}") for i in range(0, COUNT, 10)),
        timeout=60,
        what="the runs recorded in the status",
    )

    # A new spec supersedes the pending run at once, not at the (hour-long) resync.
    custom(kube_api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "trainingjobs", "tj-7",
        {"spec": {"estimator": {"params": {"max_iter": 301}}}},
    )  # fmt: skip
    eventually(
        lambda: (
            {job.metadata.name for job in _jobs(kube_api, ns) if "tj-7-" in job.metadata.name}
            == {"tj-7-2"}
        ),
        timeout=10,
        what="tj-7's pending run superseded by run 2",
    )
    assert len(_jobs(kube_api, ns)) == COUNT


def test_a_killed_operator_restarts_from_its_caches_without_duplicate_jobs(
    kube_api: client.ApiClient, kubeconfig: str, crds_installed: None, scale_namespace: str
) -> None:
    """SIGKILL while the Jobs are being created: the next process lists everything,
    finds the Jobs that exist and creates only the missing ones."""
    ns = scale_namespace
    first = OperatorProcess(kubeconfig, "operator-scale-tests.log", **NO_NODE_SETTINGS)
    first.start()
    try:
        _create_training_jobs(kube_api, ns, COUNT)
        eventually(lambda: len(_jobs(kube_api, ns)) >= COUNT // 4, timeout=60, what="some Jobs")
    finally:
        first.kill()
    second = OperatorProcess(kubeconfig, "operator-scale-tests.log", **NO_NODE_SETTINGS)
    second.start()
    try:
        eventually(
            lambda: len(_jobs(kube_api, ns)) >= COUNT, timeout=120, interval=1, what="every Job"
        )
        names = sorted(job.metadata.name for job in _jobs(kube_api, ns))
        assert names == sorted(f"tj-{i}-1" for i in range(COUNT))
    finally:
        second.stop()
