"""Pod networking: one network namespace per pod, a veth pair to the bridge, an IP each.

The namespace is `/run/netns/mlp-<uid8>`, the host end of the veth `vmlp<uid8>` (kernel
names are at most 15 characters), the pod end `eth0` with an address from the pod CIDR
and a default route through the gateway (the bridge's address, where the API server
listens). Allocations are the pod state files' `ip` fields (see PodState), so they
survive an agent restart; `IPAM` only keeps the set in memory.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading

from localnode.logs import Log

log = Log("localnode.network")


class NetworkError(RuntimeError):
    pass


def netns_name(uid: str) -> str:
    return f"mlp-{uid.replace('-', '')[:8]}"


def netns_path(uid: str) -> str:
    return f"/run/netns/{netns_name(uid)}"


def host_veth(uid: str) -> str:
    return f"vmlp{uid.replace('-', '')[:8]}"


class IPAM:
    """Addresses from the pod CIDR, skipping network, gateway and broadcast addresses."""

    def __init__(self, cidr: ipaddress.IPv4Network, gateway: str) -> None:
        self._cidr = cidr
        self._reserved = {cidr.network_address, cidr.broadcast_address}
        self._reserved.add(ipaddress.IPv4Address(gateway))
        self._used: dict[ipaddress.IPv4Address, str] = {}
        self._lock = threading.Lock()
        self._next = int(cidr.network_address) + 2

    def reserve(self, ip: str, owner: str) -> bool:
        """Claim a specific address (a pod keeping its IP across an agent restart)."""
        address = ipaddress.IPv4Address(ip)
        with self._lock:
            if address not in self._cidr or address in self._reserved:
                return False
            if self._used.get(address, owner) != owner:
                return False
            self._used[address] = owner
            return True

    def allocate(self, owner: str) -> str:
        with self._lock:
            size = self._cidr.num_addresses
            base = int(self._cidr.network_address)
            for _ in range(size):
                candidate = ipaddress.IPv4Address(self._next)
                self._next = base + ((self._next - base + 1) % size)
                if candidate not in self._reserved and candidate not in self._used:
                    self._used[candidate] = owner
                    return str(candidate)
        raise NetworkError(f"no free address in {self._cidr}")

    def release(self, ip: str, owner: str) -> None:
        with self._lock:
            address = ipaddress.IPv4Address(ip)
            if self._used.get(address) == owner:
                del self._used[address]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def setup(uid: str, ip: str, prefix: int, gateway: str, bridge: str) -> str:
    """Create (or re-create) the pod's namespace and veth; return the netns path."""
    teardown(uid)
    name, veth = netns_name(uid), host_veth(uid)
    _ip("netns", "add", name)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", veth, "master", bridge)
        _ip("link", "set", veth, "up")
        batch = (
            "link set lo up\n"
            f"addr add {ip}/{prefix} dev eth0\n"
            "link set eth0 up\n"
            f"route add default via {gateway} dev eth0\n"
        )
        result = subprocess.run(
            ["ip", "-n", name, "-batch", "-"], input=batch, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise NetworkError(f"configuring {name}: {result.stderr.strip()}")
    except NetworkError:
        teardown(uid)
        raise
    log.info("pod network ready", uid=uid, netns=name, ip=ip, veth=veth)
    return netns_path(uid)


def teardown(uid: str) -> None:
    name, veth = netns_name(uid), host_veth(uid)
    if os.path.exists(f"/run/netns/{name}"):
        _ip("netns", "del", name, check=False)
    if _ip("link", "show", veth, check=False).returncode == 0:
        _ip("link", "del", veth, check=False)


def leftover_namespaces() -> list[str]:
    """Names of our network namespaces that exist on the host."""
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith("mlp-")]
    except FileNotFoundError:
        return []


def delete_namespace(name: str) -> None:
    _ip("netns", "del", name, check=False)
    veth = "vmlp" + name.removeprefix("mlp-")
    if _ip("link", "show", veth, check=False).returncode == 0:
        _ip("link", "del", veth, check=False)
