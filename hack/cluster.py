#!/usr/bin/env python3
"""Start and stop mlplane's local Kubernetes control plane (dev and test tooling).

    hack/cluster.py up       # start (or reuse) etcd, apiserver, controller-manager, scheduler, node
    hack/cluster.py down     # stop exactly the processes `up` started and remove all state
    hack/cluster.py status   # what runs, by pid

The binaries come from hack/build-binaries.sh (cached under the user's cache directory).
State lives in .cluster/ (git-ignored): pki/, etcd data, kubeconfigs, logs/, pids/.
Ports and addresses are overridable through the MLPLANE_* environment variables below.
Only the standard library and the openssl command line are used, so this runs before
any virtualenv exists.
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
BRIDGE = os.environ.get("MLPLANE_BRIDGE", "mlplane0")
POD_CIDR = os.environ.get("MLPLANE_POD_CIDR", "10.88.0.0/16")
GATEWAY = os.environ.get("MLPLANE_GATEWAY", "10.88.0.1")
SERVICE_CIDR = os.environ.get("MLPLANE_SERVICE_CIDR", "10.96.0.0/16")
SERVICE_IP = os.environ.get("MLPLANE_KUBERNETES_SERVICE_IP", "10.96.0.1")
NODE_NAME = os.environ.get("MLPLANE_NODE_NAME", "local-node-0")
START_NODE = os.environ.get("MLPLANE_START_NODE", "1") != "0"

COMPONENT_NAMES = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "localnode",
]
KUBECONFIG = STATE / "kubeconfig"
NODE_KUBECONFIG = STATE / "node-kubeconfig"
STORAGE_CLASS = """\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
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
            "--enable-hostpath-provisioner=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-bootstrapsigner,-tokencleaner", "--v=1",
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


def node_component() -> Component | None:
    """The local node agent (hack/localnode), when it exists and is wanted."""
    if not START_NODE or not (REPO / "hack" / "localnode" / "__main__.py").exists():
        return None
    python = VENV / "bin" / "python"
    if not python.exists():
        raise ClusterError(f"{python} is missing: run `make dev` first")
    return Component(
        "localnode",
        [
            str(python), "-m", "localnode", f"--kubeconfig={NODE_KUBECONFIG}",
            f"--node-name={NODE_NAME}",
            f"--state-dir={STATE / 'node'}", f"--log-dir={LOGS / 'pods'}", f"--pod-cidr={POD_CIDR}",
            f"--bridge={BRIDGE}", f"--gateway={GATEWAY}", f"--api-host={GATEWAY}",
            f"--api-port={APISERVER_PORT}", f"--venv={VENV}",
        ],
        env={"PYTHONPATH": str(REPO / "hack")},
    )  # fmt: skip


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
    node = node_component()
    if node is not None:
        start(node)
        wait_for(f"node {NODE_NAME} to be Ready", node_ready, 120, node.name)
    log(f"ready in {time.monotonic() - began:.1f}s; export KUBECONFIG={KUBECONFIG}")


def _etcd_healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ETCD_PORT}/health", timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def down() -> None:
    # Reverse order: the node first, so it can finalize and clean up its pods.
    for name in reversed(COMPONENT_NAMES):
        stop(name)
    remove_bridge()
    if STATE.exists():
        shutil.rmtree(STATE)
    log("stopped; state removed")


def restart_node() -> None:
    """Restart the node agent alone (it adopts or cleans the pods it finds)."""
    stop("localnode")
    node = node_component()
    if node is not None:
        start(node)
        wait_for(f"node {NODE_NAME} to be Ready", node_ready, 120, node.name)


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
