"""Helpers for the chart tests: run the pinned helm, render the chart, pick documents.

Kept apart from the tests so that an end-to-end test (helm install, then examples/iris)
can reuse them: `helm("install", RELEASE, str(CHART), "--namespace", ns, ...)`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.kube import BIN, KUBECONFIG, REPO, image

CHART = REPO / "charts" / "mlplane"
RELEASE = "mlplane"

Manifest = dict[str, Any]


def helm(
    *args: str, check: bool = True, kubeconfig: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; stdout and stderr are captured. Offline unless `kubeconfig`."""
    command = [str(BIN / "helm"), *args]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(command, text=True, capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def built_images() -> dict[str, str]:
    """Chart values that run the images built from this checkout (hack/build-images.sh),
    by digest from the local cluster's registry."""
    values = {}
    for prefix, name in (("image", "OPERATOR"), ("runtime.image", "RUNTIME")):
        repository, digest = image(name).split("@")
        values[f"{prefix}.repository"] = repository
        values[f"{prefix}.digest"] = digest
    return values


def set_args(values: dict[str, str] | None) -> list[str]:
    """`--set k=v` pairs; values are Helm's --set syntax (lists as {a,b})."""
    return [arg for key, value in (values or {}).items() for arg in ("--set", f"{key}={value}")]


def template(
    values: dict[str, str] | None = None,
    *,
    namespace: str = "mlplane-system",
    include_crds: bool = False,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, *set_args(values)]
    if include_crds:
        args.append("--include-crds")
    return helm(*args, check=check)


def render(
    values: dict[str, str] | None = None,
    *,
    namespace: str = "mlplane-system",
    include_crds: bool = False,
) -> list[Manifest]:
    """The chart's manifests for these values (hooks included, as `helm template` does)."""
    text = template(values, namespace=namespace, include_crds=include_crds).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(manifests: Iterable[Manifest], *kinds: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in kinds]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def rules(manifests: Iterable[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """(Role or ClusterRole, rule) for every RBAC rule rendered."""
    for role in of_kind(manifests, "Role", "ClusterRole"):
        for rule in role.get("rules", []):
            yield role, rule


def dump(manifests: Iterable[Manifest]) -> str:
    return yaml.safe_dump_all(list(manifests), sort_keys=False)


def install(
    namespace: str,
    values: dict[str, str] | None = None,
    *,
    release: str = RELEASE,
    wait: bool = True,
    timeout: str = "5m",
) -> subprocess.CompletedProcess[str]:
    """`helm upgrade --install` into the local cluster (for end-to-end tests)."""
    args = ["upgrade", "--install", release, str(CHART), "--namespace", namespace]
    args += set_args(values)
    if wait:
        args += ["--wait", "--timeout", timeout]
    return helm(*args, kubeconfig=KUBECONFIG, timeout=600)


def uninstall(namespace: str, *, release: str = RELEASE) -> None:
    helm(
        "uninstall", release, "--namespace", namespace, "--ignore-not-found", kubeconfig=KUBECONFIG
    )
