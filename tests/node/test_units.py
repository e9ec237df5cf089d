"""Pure parts of the local node agent: images, env expansion, quantities, pod phase."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from localnode import images, status
from localnode.envvars import command_line, expand, quantity, resource_value
from localnode.network import IPAM
from localnode.volumes import write_atomic


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("mlplane/runtime:dev", "mlplane/runtime"),
        ("ghcr.io/acme/mlplane/runtime:1.2.3", "mlplane/runtime"),
        ("localhost:5000/mlplane/operator@sha256:abcd", "mlplane/operator"),
        ("mlplane/operator", "mlplane/operator"),
    ],
)
def test_this_repositorys_images_resolve(image: str, expected: str) -> None:
    assert images.resolve(image).repository == expected


@pytest.mark.parametrize("image", ["nginx:1.27", "mlplane/runtime-extra:1", "evil-mlplane/runtime"])
def test_other_images_are_refused(image: str) -> None:
    with pytest.raises(images.ImageRefused, match="only this repository's images"):
        images.resolve(image)


def test_default_entrypoints_match_the_dockerfiles() -> None:
    operator = images.resolve("mlplane/operator:dev")
    runtime = images.resolve("mlplane/runtime:dev")
    assert command_line({}, operator.entrypoint, operator.cmd, {}) == [
        "python", "-m", "mlplane_operator",
    ]  # fmt: skip
    assert command_line({}, runtime.entrypoint, runtime.cmd, {}) == ["mlplane-serve"]
    assert command_line({"args": ["mlplane-train", "--x"]}, [], runtime.cmd, {}) == [
        "mlplane-train", "--x",
    ]  # fmt: skip


def test_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$(MISSING) $A", env) == "$(MISSING) $A"
    container = {"command": ["echo", "$(A)"], "args": ["$(B)"]}
    assert command_line(container, ["ignored"], ["ignored"], env) == ["echo", "1", "two"]


def test_quantities_and_resource_fields() -> None:
    assert quantity("500m") * 1000 == 500
    assert quantity("1Gi") == 1024**3
    assert quantity("2k") == 2000
    container = {"resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}}}
    assert resource_value("limits.cpu", container, None, {}) == "2"
    assert resource_value("limits.memory", container, "1Mi", {}) == "64"
    assert resource_value("limits.memory", {}, None, {"memory": "1Ki"}) == "1024"


def _c(state: dict[str, object], last: dict[str, object] | None = None) -> status.ContainerStatus:
    return status.ContainerStatus(name="c", image="i", state=state, last_state=last or {})


@pytest.mark.parametrize(
    ("policy", "containers", "phase"),
    [
        ("Always", [_c({"running": {}})], "Running"),
        ("Always", [_c({"waiting": {"reason": "ErrImagePull"}})], "Pending"),
        ("Never", [_c({"terminated": {"exitCode": 0}})], "Succeeded"),
        ("Never", [_c({"terminated": {"exitCode": 1}})], "Failed"),
        ("OnFailure", [_c({"terminated": {"exitCode": 1}})], "Running"),
        ("Always", [_c({"waiting": {}}, {"terminated": {"exitCode": 1}})], "Running"),
    ],
)
def test_pod_phase(policy: str, containers: list[status.ContainerStatus], phase: str) -> None:
    assert status.pod_phase(policy, [], False, True, containers) == phase


def test_ipam_skips_reserved_and_keeps_owners() -> None:
    ipam = IPAM(ipaddress.IPv4Network("10.9.0.0/29"), "10.9.0.1")
    first = ipam.allocate("a")
    assert first == "10.9.0.2"
    assert not ipam.reserve(first, "b")
    assert ipam.reserve(first, "a")
    ipam.release(first, "b")  # not the owner: no effect
    assert not ipam.reserve(first, "b")
    addresses = {ipam.allocate(str(n)) for n in range(4)}
    assert "10.9.0.7" not in addresses
    assert "10.9.0.1" not in addresses


def test_atomic_writer_swaps_payloads(tmp_path: Path) -> None:
    write_atomic(tmp_path, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)}, None)
    assert (tmp_path / "a").read_bytes() == b"1"
    assert (tmp_path / "dir" / "b").read_bytes() == b"2"
    write_atomic(tmp_path, {"a": (b"3", 0o644)}, None)
    assert (tmp_path / "a").read_bytes() == b"3"
    assert not (tmp_path / "dir").exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("..2")]) == 1
