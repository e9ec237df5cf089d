#!/usr/bin/env python3
"""Start and stop mlplane's local Kubernetes cluster (dev and test tooling).

    hack/cluster.py up       # start (or reuse) the control plane and a real node
    hack/cluster.py down     # stop exactly the processes `up` started and remove all state
    hack/cluster.py status   # what runs, by pid

The control plane is etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
The node is what a kubeadm node runs: containerd (runc, CNI bridge), kubelet and
kube-proxy, plus a registry the node pulls from (images built by hack/build-images.sh),
a local-volume provisioner for the default StorageClass, and the add-ons CoreDNS and
metrics-server as pods (hack/addons/). The binaries come from hack/build-binaries.sh
(cached under the user's cache directory). State lives in .cluster/ (git-ignored): pki/,
etcd data, containerd and kubelet state, kubeconfigs, logs/, pids/. Ports and addresses
are overridable through the MLPLANE_* environment variables below. Only the standard
library and the openssl command line are used, so this runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("MLPLANE_CLUSTER_DIR", REPO / ".cluster"))
# Where hack/build-images.sh records the image digests. A second checkout can share the
# running cluster with its own images: MLPLANE_CLUSTER_DIR=<first>/.cluster and its own
# MLPLANE_IMAGES_ENV.
IMAGES_ENV = Path(os.environ.get("MLPLANE_IMAGES_ENV", STATE / "images.env"))
PKI = STATE / "pki"
PIDS = STATE / "pids"
LOGS = STATE / "logs"
CACHE = Path(
    os.environ.get(
        "MLPLANE_CACHE_DIR",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlplane",
    )
)
BIN = Path(os.environ.get("MLPLANE_BIN_DIR", CACHE / "bin"))
VENV = Path(os.environ.get("MLPLANE_VENV", REPO / ".venv"))

ETCD_PORT = int(os.environ.get("MLPLANE_ETCD_PORT", "32379"))
ETCD_PEER_PORT = int(os.environ.get("MLPLANE_ETCD_PEER_PORT", "32380"))
APISERVER_PORT = int(os.environ.get("MLPLANE_APISERVER_PORT", "36443"))
CONTROLLER_MANAGER_PORT = int(os.environ.get("MLPLANE_CONTROLLER_MANAGER_PORT", "30257"))
SCHEDULER_PORT = int(os.environ.get("MLPLANE_SCHEDULER_PORT", "30259"))
REGISTRY_PORT = int(os.environ.get("MLPLANE_REGISTRY_PORT", "5000"))
KUBELET_PORT = int(os.environ.get("MLPLANE_KUBELET_PORT", "10250"))
BRIDGE = os.environ.get("MLPLANE_BRIDGE", "mlplane0")
POD_CIDR = os.environ.get("MLPLANE_POD_CIDR", "10.88.0.0/16")
GATEWAY = os.environ.get("MLPLANE_GATEWAY", "10.88.0.1")
SERVICE_CIDR = os.environ.get("MLPLANE_SERVICE_CIDR", "10.96.0.0/16")
SERVICE_IP = os.environ.get("MLPLANE_KUBERNETES_SERVICE_IP", "10.96.0.1")
CLUSTER_DNS_IP = os.environ.get("MLPLANE_CLUSTER_DNS_IP", "10.96.0.10")
NODE_NAME = os.environ.get("MLPLANE_NODE_NAME", "local-node-0")
# MLPLANE_START_NODE=0: the control plane alone (no node, no images), e.g. for an
# operator benchmark whose pods are meant to stay Pending.
START_NODE = os.environ.get("MLPLANE_START_NODE", "1") != "0"
# Sockets and network namespaces want short paths on a local filesystem.
RUN = Path(os.environ.get("MLPLANE_RUN_DIR", "/run/mlplane"))
CONTAINERD_SOCKET = RUN / "containerd" / "containerd.sock"
REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
CNI_BIN_DIR = Path(os.environ.get("MLPLANE_CNI_BIN_DIR", "/usr/lib/cni"))

COMPONENT_NAMES = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "registry",
    "containerd",
    "kubelet",
    "kube-proxy",
    "local-provisioner",
]
KUBECONFIG = STATE / "kubeconfig"
NODE_KUBECONFIG = STATE / "node-kubeconfig"
PROVISIONER = "mlplane.io/local-volume"
STORAGE_CLASS = f"""\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: {PROVISIONER}
reclaimPolicy: Delete
volumeBindingMode: Immediate
"""


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


# --- certificates ---------------------------------------------------------------------


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def issue_cert(name: str, subject: str, *, server_sans: list[str] | None = None) -> None:
    """A key and a certificate signed by the local CA; server certs get SANs."""
    key, csr, crt = PKI / f"{name}.key", PKI / f"{name}.csr", PKI / f"{name}.crt"
    if crt.exists():
        return
    openssl("genrsa", "-out", str(key), "2048")
    openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    ext = PKI / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
    if server_sans is not None:
        lines.append("extendedKeyUsage=serverAuth,clientAuth")
        lines.append("subjectAltName=" + ",".join(server_sans))
    else:
        lines.append("extendedKeyUsage=clientAuth")
    ext.write_text("\n".join(lines) + "\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(PKI / "ca.crt"), "-CAkey", str(PKI / "ca.key"),
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    csr.unlink()
    ext.unlink()


def ensure_pki() -> None:
    PKI.mkdir(parents=True, exist_ok=True)
    os.chmod(PKI, 0o700)
    if not (PKI / "ca.crt").exists():
        openssl("genrsa", "-out", str(PKI / "ca.key"), "2048")
        openssl(
            "req", "-x509", "-new", "-nodes", "-key", str(PKI / "ca.key"), "-sha256",
            "-days", "3650", "-subj", "/CN=mlplane-local-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out", str(PKI / "ca.crt"),
        )  # fmt: skip
    sans = [
        "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1", f"IP:{GATEWAY}", f"IP:{SERVICE_IP}",
    ]  # fmt: skip
    issue_cert("apiserver", "/CN=kube-apiserver", server_sans=sans)
    issue_cert("admin", "/O=system:masters/CN=mlplane-admin")
    issue_cert("controller-manager", "/CN=system:kube-controller-manager")
    issue_cert("scheduler", "/CN=system:kube-scheduler")
    issue_cert(f"node-{NODE_NAME}", f"/O=system:nodes/CN=system:node:{NODE_NAME}")
    # The kubelet's serving certificate, signed by the cluster CA, so that the API server
    # verifies it for `kubectl logs`/`exec` and metrics-server for resource metrics.
    issue_cert(
        "kubelet-serving",
        f"/O=system:nodes/CN=system:node:{NODE_NAME}",
        server_sans=[f"DNS:{NODE_NAME}", f"IP:{GATEWAY}", "IP:127.0.0.1"],
    )
    issue_cert("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    issue_cert("front-proxy-client", "/CN=front-proxy-client")
    issue_cert("kube-proxy", "/CN=system:kube-proxy")
    if not (PKI / "sa.key").exists():
        openssl("genrsa", "-out", str(PKI / "sa.key"), "2048")
        openssl("rsa", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub"))


def write_kubeconfig(path: Path, user: str, cert: str, server: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "mlplane-local",
                        "cluster": {"server": server, "certificate-authority": str(PKI / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(PKI / f"{cert}.crt"),
                            "client-key": str(PKI / f"{cert}.key"),
                        },
                    }
                ],
                "contexts": [
                    {"name": "mlplane-local", "context": {"cluster": "mlplane-local", "user": user}}
                ],
                "current-context": "mlplane-local",
            },
            indent=2,
        )
    )
    os.chmod(path, 0o600)


def ensure_kubeconfigs() -> None:
    local = f"https://127.0.0.1:{APISERVER_PORT}"
    write_kubeconfig(KUBECONFIG, "mlplane-admin", "admin", local)
    write_kubeconfig(
        STATE / "controller-manager.kubeconfig", "controller-manager", "controller-manager", local
    )
    write_kubeconfig(STATE / "scheduler.kubeconfig", "scheduler", "scheduler", local)
    write_kubeconfig(NODE_KUBECONFIG, f"system:node:{NODE_NAME}", f"node-{NODE_NAME}", local)
    write_kubeconfig(STATE / "kube-proxy.kubeconfig", "kube-proxy", "kube-proxy", local)


# --- network --------------------------------------------------------------------------


def ensure_bridge() -> None:
    """The pods' network: a bridge whose address the API server advertises to pods."""
    prefix = POD_CIDR.split("/")[1]
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    addresses = subprocess.run(
        ["ip", "-o", "addr", "show", BRIDGE], capture_output=True, text=True
    ).stdout
    if f" {GATEWAY}/" not in addresses:
        subprocess.run(["ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)


def remove_bridge() -> None:
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "del", BRIDGE], check=False)


# Pods talk to each other, to Services and to the host, never past it: this network
# reaches nothing outside the machine, and traffic sent there would leave it.
ISOLATION_RULE = ["FORWARD", "-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "REJECT"]


def ensure_forwarding() -> None:
    """What kube-proxy and the bridge plugin need of the host: routing, and bridged
    traffic through iptables (so a pod reaches a Service whose endpoint shares its bridge).
    ClusterIPs route to the bridge, so that one without a Service goes nowhere."""
    for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        path = Path("/proc/sys") / key
        if path.exists() and path.read_text().strip() != "1":
            path.write_text("1\n")
    subprocess.run(["ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE], check=True)
    if subprocess.run(["iptables", "-C", *ISOLATION_RULE], capture_output=True).returncode:
        subprocess.run(["iptables", "-I", *ISOLATION_RULE], check=True)


def remove_node_network() -> None:
    """Undo what the node left in the host's iptables: kube-proxy's and the kubelet's
    chains (KUBE-*) and the CNI plugins' (CNI-*)."""
    if (BIN / "kube-proxy").exists():
        subprocess.run([str(BIN / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
    for table in ("nat", "filter", "mangle"):
        rules = subprocess.run(
            ["iptables-save", "-t", table], capture_output=True, text=True, check=False
        ).stdout
        if "CNI-" not in rules and "KUBE-" not in rules:
            continue
        kept = [line for line in rules.splitlines() if "CNI-" not in line and "KUBE-" not in line]
        subprocess.run(["iptables-restore", "-T", table], input="\n".join(kept) + "\n",
                       text=True, capture_output=True, check=False)  # fmt: skip


def unmount_below(root: Path) -> None:
    """Unmount everything mounted below `root` (pod volumes, overlay snapshots, netns),
    deepest first, so that removing the state never reaches through a bind mount."""
    prefix = str(root.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


# --- node configuration ---------------------------------------------------------------


def write_node_config() -> None:
    """containerd, CNI, kubelet, kube-proxy and registry configuration under STATE."""
    config = STATE / "config"
    (config / "cni").mkdir(parents=True, exist_ok=True)
    (config / "cni" / "10-mlplane.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "mlplane",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(STATE / "cni-ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=2,
        )
    )
    # The registry speaks plain HTTP on loopback; containerd must be told so. Every other
    # registry resolves to a closed port: this network reaches none, and an image from
    # elsewhere fails at once (ErrImagePull) instead of sending traffic off the machine.
    for name, server in ((REGISTRY, f"http://{REGISTRY}"), ("_default", "http://127.0.0.1:9")):
        hosts = config / "certs.d" / name
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f'server = "{server}"\n\n[host."{server}"]\n  capabilities = ["pull", "resolve"]\n'
        )
    # The runtime's base spec has no rlimits: runc would try to raise RLIMIT_NOFILE above
    # this host's hard limit and fail every container.
    (config / "base-spec.json").write_text(json.dumps(base_runtime_spec(), indent=2))
    (config / "containerd.toml").write_text(CONTAINERD_CONFIG.format(
        root=STATE / "containerd", state=RUN / "containerd-state", socket=CONTAINERD_SOCKET,
        runc=RUNC, cni_bin=CNI_BIN_DIR, cni_conf=config / "cni", certs=config / "certs.d",
        base_spec=config / "base-spec.json", pause=sandbox_image(),
    ))  # fmt: skip
    (config / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:1\n")
    (config / "kubelet.json").write_text(json.dumps(kubelet_config(config), indent=2))
    (config / "kube-proxy.json").write_text(json.dumps(KUBE_PROXY_CONFIG, indent=2))


def write_registry_config() -> None:
    """The registry keeps its blobs in the cache: images outlive `down`, like binaries."""
    (STATE / "config").mkdir(parents=True, exist_ok=True)
    (STATE / "config" / "registry.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {CACHE / 'registry'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n"
    )


CONTAINERD_CONFIG = """\
version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{certs}"

[plugins."io.containerd.cri.v1.runtime"]
  # Pods' network namespaces under the state directory, which `down` unmounts.
  netns_mounts_under_state_dir = true
  # This host refuses to lower a process's oom_score_adj (the kubelet asks -998 for
  # sandboxes): keep every container's at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = "{base_spec}"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
"""


def base_runtime_spec() -> dict[str, object]:
    """containerd's default OCI spec for Linux, without process rlimits."""
    result = subprocess.run(
        [binary("ctr"), "oci", "spec"], capture_output=True, text=True, check=True
    )
    spec: dict[str, object] = json.loads(result.stdout)
    process = spec.get("process")
    if isinstance(process, dict):
        process.pop("rlimits", None)
    return spec


def sandbox_image() -> str:
    return images().get("IMAGE_PAUSE", f"{REGISTRY}/mlplane/pause:missing")


def images() -> dict[str, str]:
    """The image references hack/build-images.sh recorded (NAME=registry/repo@digest)."""
    path = IMAGES_ENV
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if "=" in line]
    return {key: value for key, _, value in (line.partition("=") for line in lines)}


def kubelet_config(config: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(PKI / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "address": GATEWAY,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "tlsCertFile": str(PKI / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(PKI / "kubelet-serving.key"),
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        # This host's cgroups are v1 (hybrid) and it has no systemd as pid 1.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(config / "resolv.conf"),
        "podLogsDir": str(LOGS / "pods"),
        "maxPods": 250,
        "serializeImagePulls": False,
        # A shared dev machine: evict only when it is really out of room, and never
        # collect the images the tests just pulled.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "shutdownGracePeriod": "0s",
    }  # fmt: skip


KUBE_PROXY_CONFIG = {
    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
    "kind": "KubeProxyConfiguration",
    "clientConnection": {"kubeconfig": str(STATE / "kube-proxy.kubeconfig")},
    "mode": "iptables",
    "clusterCIDR": POD_CIDR,
    "hostnameOverride": NODE_NAME,
    "bindAddress": GATEWAY,
    "healthzBindAddress": "127.0.0.1:10256",
    "metricsBindAddress": "127.0.0.1:10249",
    # Leave the host's conntrack table size alone (a sysctl outside this sandbox's reach).
    "conntrack": {"maxPerCore": 0},
}


# --- processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None


def _pidfile(name: str) -> Path:
    return PIDS / f"{name}.json"


def _process_start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks (guards against pid reuse); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, waiting to be reaped
        return None
    return fields[19]


def running_pid(name: str) -> int | None:
    """The pid recorded for a component, if that very process (same start time) still runs."""
    try:
        record = json.loads(_pidfile(name).read_text())
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    if _process_start_ticks(pid) != record["start"]:
        return None
    return pid


def start(component: Component) -> None:
    if running_pid(component.name):
        return
    PIDS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log(f"starting {component.name}")
    with open(LOGS / f"{component.name}.log", "ab") as out:
        process = subprocess.Popen(
            component.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, **(component.env or {})},
            start_new_session=True,
        )
    start_ticks = _process_start_ticks(process.pid)
    _pidfile(component.name).write_text(json.dumps({"pid": process.pid, "start": start_ticks}))


def stop(name: str, grace: float = 30.0) -> None:
    pid = running_pid(name)
    if pid is not None:
        log(f"stopping {name} (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and running_pid(name) == pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if running_pid(name) == pid:
            log(f"{name} ignored SIGTERM for {grace:.0f}s; killing it")
            os.kill(pid, signal.SIGKILL)
    _pidfile(name).unlink(missing_ok=True)


def binary(name: str) -> str:
    path = BIN / name
    if not os.access(path, os.X_OK):
        raise ClusterError(f"{path} is missing: run hack/build-binaries.sh (make binaries) first")
    return str(path)


def components() -> list[Component]:
    pki = str(PKI)
    etcd = Component(
        "etcd",
        [
            binary("etcd"), "--name=mlplane", f"--data-dir={STATE / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
            f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
            f"--listen-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PEER_PORT}",
            f"--initial-cluster=mlplane=http://127.0.0.1:{ETCD_PEER_PORT}",
            "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn",
        ],
    )  # fmt: skip
    apiserver = Component(
        "kube-apiserver",
        [
            binary("kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
            "--bind-address=0.0.0.0", f"--secure-port={APISERVER_PORT}",
            f"--advertise-address={GATEWAY}",
            f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            # The kubelet: verified serving certificate, for logs, exec and port-forward.
            f"--kubelet-certificate-authority={pki}/ca.crt",
            f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, for metrics-server's metrics.k8s.io.
            f"--requestheader-client-ca-file={pki}/ca.crt",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
            f"--proxy-client-key-file={pki}/front-proxy-client.key",
            "--enable-aggregator-routing=true",
        ],
    )  # fmt: skip
    controller_manager = Component(
        "kube-controller-manager",
        [
            binary("kube-controller-manager"),
            f"--kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'controller-manager.kubeconfig'}",
            f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.crt",
            f"--cluster-signing-cert-file={pki}/ca.crt", f"--cluster-signing-key-file={pki}/ca.key",
            "--use-service-account-credentials=true", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={CONTROLLER_MANAGER_PORT}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-bootstrapsigner,-tokencleaner", "--v=1",
            # Scale down within a test's patience (the default waits five minutes).
            "--horizontal-pod-autoscaler-downscale-stabilization=30s",
            "--horizontal-pod-autoscaler-sync-period=5s",
        ],
    )  # fmt: skip
    scheduler = Component(
        "kube-scheduler",
        [
            binary("kube-scheduler"),
            f"--kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={STATE / 'scheduler.kubeconfig'}",
            "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={SCHEDULER_PORT}", "--v=1",
        ],
    )  # fmt: skip
    return [etcd, apiserver, controller_manager, scheduler]


def node_components() -> list[Component]:
    """The registry the node pulls from, containerd, kubelet, kube-proxy, the provisioner."""
    config = STATE / "config"
    registry = Component("registry", [binary("registry"), "serve", str(config / "registry.yml")])
    containerd = Component(
        "containerd",
        [binary("containerd"), f"--config={config / 'containerd.toml'}", "--log-level=warn"],
        # containerd finds its shim on PATH.
        env={"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"},
    )
    kubelet = Component(
        "kubelet",
        [
            binary("kubelet"), f"--config={config / 'kubelet.json'}",
            f"--kubeconfig={NODE_KUBECONFIG}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}", f"--root-dir={STATE / 'kubelet'}",
            f"--cert-dir={STATE / 'kubelet-pki'}", "--v=1",
        ],
    )  # fmt: skip
    kube_proxy = Component(
        "kube-proxy", [binary("kube-proxy"), f"--config={config / 'kube-proxy.json'}", "--v=1"]
    )
    provisioner = Component(
        "local-provisioner",
        [
            sys.executable, str(REPO / "hack" / "local-provisioner.py"),
            f"--kubeconfig-dir={STATE}", f"--volumes-dir={STATE / 'volumes'}",
            f"--node-name={NODE_NAME}", f"--provisioner={PROVISIONER}",
            f"--api-port={APISERVER_PORT}",
        ],
    )  # fmt: skip
    return [registry, containerd, kubelet, kube_proxy, provisioner]


# --- readiness ------------------------------------------------------------------------


def _admin_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    context.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return context


def api_get(path: str) -> tuple[int, bytes]:
    url = f"https://127.0.0.1:{APISERVER_PORT}{path}"
    try:
        with urllib.request.urlopen(url, context=_admin_context(), timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_for(what: str, check: object, timeout: float, component: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        if component and running_pid(component) is None:
            raise ClusterError(
                f"{component} exited while waiting for {what}; see {LOGS / component}.log"
            )
        time.sleep(0.25)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {LOGS}")


def node_ready() -> bool:
    status, body = api_get(f"/api/v1/nodes/{NODE_NAME}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def kubectl(*args: str, stdin: str | None = None) -> None:
    subprocess.run(
        [binary("kubectl"), f"--kubeconfig={KUBECONFIG}", *args],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
    )


# --- commands -------------------------------------------------------------------------


def up() -> None:
    began = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    ensure_pki()
    ensure_kubeconfigs()
    ensure_bridge()
    ensure_forwarding()
    etcd, apiserver, controller_manager, scheduler = components()
    start(etcd)
    wait_for("etcd", _etcd_healthy, 60, "etcd")
    start(apiserver)
    wait_for("kube-apiserver /readyz", lambda: api_get("/readyz")[0] == 200, 120, "kube-apiserver")
    start(controller_manager)
    start(scheduler)
    wait_for(
        "the default ServiceAccount",
        lambda: api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        120,
        "kube-controller-manager",
    )
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=STORAGE_CLASS)
    if START_NODE:
        start_node()
        build_images("mlplane")
    log(f"ready in {time.monotonic() - began:.1f}s; export KUBECONFIG={KUBECONFIG}")


def start_node() -> None:
    registry, containerd, kubelet, kube_proxy, provisioner = node_components()
    write_registry_config()
    start(registry)
    wait_for(f"the registry on {REGISTRY}", _registry_up, 60, "registry")
    build_images("node")
    if running_pid("containerd") is None:
        # Whatever a containerd that is gone left in RUN (sockets, netns) is stale.
        unmount_below(RUN)
        shutil.rmtree(RUN, ignore_errors=True)
        write_node_config()
    RUN.mkdir(parents=True, exist_ok=True)
    start(containerd)
    wait_for("containerd", CONTAINERD_SOCKET.exists, 60, "containerd")
    start(kubelet)
    wait_for(f"node {NODE_NAME} to be Ready", node_ready, 120, "kubelet")
    start(kube_proxy)
    start(provisioner)
    apply_addons()


def build_images(which: str) -> None:
    """hack/build-images.sh: build what changed and push it to the node's registry."""
    env = {**os.environ, "MLPLANE_CLUSTER_DIR": str(STATE), "MLPLANE_REGISTRY": REGISTRY}
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "build-images.sh"), which], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"hack/build-images.sh {which} failed:\n{result.stdout[-4000:]}")


def apply_addons() -> None:
    """CoreDNS and metrics-server, as pods from the images in the node's registry."""
    values = {
        **images(),
        "CLUSTER_DNS_IP": CLUSTER_DNS_IP,
        "KUBELET_PORT": str(KUBELET_PORT),
    }
    for path in sorted((REPO / "hack" / "addons").glob("*.yaml")):
        manifest = path.read_text()
        for key, value in values.items():
            manifest = manifest.replace(f"${{{key}}}", value)
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=manifest)
    wait_for("CoreDNS to be available", lambda: _deployment_available("coredns"), 120)
    wait_for("metrics-server to be available", lambda: _deployment_available("metrics-server"), 120)


def _deployment_available(name: str) -> bool:
    status, body = api_get(f"/apis/apps/v1/namespaces/kube-system/deployments/{name}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)


def _registry_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _etcd_healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ETCD_PORT}/health", timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def kill_containers() -> None:
    """Stop every container the node runs, and their shims: nothing outlives the cluster."""
    if running_pid("containerd") is not None:
        ctr = [binary("ctr"), f"--address={CONTAINERD_SOCKET}", "--namespace=k8s.io"]
        tasks = subprocess.run(
            [*ctr, "tasks", "list", "--quiet"], capture_output=True, text=True, check=False
        ).stdout.split()
        for task in tasks:
            subprocess.run([*ctr, "tasks", "kill", "--signal=SIGKILL", task],
                           capture_output=True, check=False)  # fmt: skip
    socket = str(CONTAINERD_SOCKET).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and socket in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def down() -> None:
    # A control plane alone (MLPLANE_START_NODE=0, beside another cluster's node) never
    # wrote a node config: the host's kube-proxy and CNI rules are that node's, not ours.
    had_node = (STATE / "config" / "containerd.toml").exists()
    kill_containers()
    # Reverse order: the node first, then the control plane.
    for name in reversed(COMPONENT_NAMES):
        stop(name)
    if had_node:
        kill_containers()
        remove_node_network()
    while not subprocess.run(["iptables", "-D", *ISOLATION_RULE], capture_output=True).returncode:
        pass  # this cluster's own, for its pod CIDR (ensure_forwarding added it)
    unmount_below(STATE)
    unmount_below(RUN)
    remove_bridge()
    for path in (STATE, RUN):
        if path.exists():
            shutil.rmtree(path)
    log("stopped; state removed")


def restart_node() -> None:
    """Restart the kubelet alone: its containers keep running and it adopts them."""
    stop("kubelet")
    start(node_components()[2])
    wait_for(f"node {NODE_NAME} to be Ready", node_ready, 120, "kubelet")


def status() -> None:
    for name in COMPONENT_NAMES:
        pid = running_pid(name)
        print(f"{name:26} {'running, pid ' + str(pid) if pid else 'stopped'}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "restart-node"])
    command = parser.parse_args().command
    try:
        {"up": up, "down": down, "status": status, "restart-node": restart_node}[command]()
    except (ClusterError, subprocess.CalledProcessError) as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
