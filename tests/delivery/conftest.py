"""Fixtures of the delivery tests: the pinned helm binary and lua5.1."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.kube import BIN, REPO


@pytest.fixture(scope="session")
def helm_bin() -> str:
    """The pinned helm, built (or reused) by hack/build-binaries.sh; fails when it cannot be."""
    helm = BIN / "helm"
    if not helm.exists():
        result = subprocess.run(
            ["bash", "hack/build-binaries.sh"], cwd=REPO, capture_output=True, text=True
        )
        if result.returncode != 0 or not helm.exists():
            pytest.fail(f"cannot build helm:\n{result.stderr[-4000:]}", pytrace=False)
    return str(helm)


@pytest.fixture(scope="session")
def lua() -> str:
    """Argo CD's Lua dialect is 5.1; hack/install-system-deps.sh installs lua5.1."""
    path = shutil.which("lua5.1")
    if path is None:
        pytest.fail("lua5.1 is missing: run hack/install-system-deps.sh", pytrace=False)
    return path
