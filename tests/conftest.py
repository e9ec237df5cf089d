"""Session fixtures: the real local control plane, an admin client, a namespace per test.

Tests that use `kubeconfig`, `kube_api` or `namespace` are marked `cluster` automatically.
They are never skipped: when the cluster cannot start, they fail with the reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.kube import KUBECONFIG, REPO

CLUSTER_FIXTURES = {"kubeconfig", "kube_api", "namespace"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def repo_root() -> str:
    return str(REPO)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Bring the local cluster up (or reuse the running one) and return its admin kubeconfig."""
    for step in (["bash", "hack/build-binaries.sh"], [sys.executable, "hack/cluster.py", "up"]):
        result = subprocess.run(step, cwd=REPO, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(step)} failed:\n{result.stderr[-4000:]}", pytrace=False)
    return str(KUBECONFIG)


@pytest.fixture(scope="session")
def kube_api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture
def namespace(kube_api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (with everything in it) afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")
