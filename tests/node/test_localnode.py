"""The local node agent (hack/localnode) runs pods like a kubelet, against the real cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from kubernetes import client

from tests.kube import REPO, eventually
from tests.node.support import (
    NODE_STATE,
    POD_LOGS,
    container,
    container_status,
    http_server,
    marker,
    pids_with,
    pod,
    read,
    termination_message,
    wait_phase,
    wait_ready,
)

pytestmark = [pytest.mark.cluster, pytest.mark.node]


@pytest.fixture
def core(kube_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)


def test_node_is_registered_ready_with_capacity_and_lease(core: client.CoreV1Api) -> None:
    node = core.read_node("local-node-0")
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True"
    assert {"cpu", "memory", "pods"} <= set(node.status.capacity)
    assert {"type": "InternalIP", "address": "10.88.0.1"} in [
        {"type": a.type, "address": a.address} for a in node.status.addresses
    ]
    assert not node.spec.taints
    lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease(
        "local-node-0", "kube-node-lease"
    )
    assert lease.spec.holder_identity == "local-node-0"


def test_http_pod_is_ready_reachable_and_in_its_endpointslice(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, pod("web", [http_server()], labels={"app": "web"}))
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    ready = wait_ready(core, namespace, "web")
    ip = ready["status"]["podIP"]
    assert ip.startswith("10.88.")
    assert ready["status"]["hostIP"] == "10.88.0.1"
    assert ready["status"]["phase"] == "Running"
    types = {c["type"] for c in ready["status"]["conditions"]}
    assert {"PodScheduled", "Initialized", "ContainersReady", "Ready"} <= types
    assert "PodReadyToStartContainers" in types
    with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
        assert response.status == 200
    discovery = client.DiscoveryV1Api(core.api_client)

    def ready_endpoint() -> list[str] | None:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=web"
        ).items
        addresses = [
            a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses
        ]
        return addresses or None

    assert eventually(ready_endpoint, what="a ready endpoint") == [ip]


def test_sidecar_reaches_the_main_container_on_localhost(
    core: client.CoreV1Api, namespace: str
) -> None:
    script = (
        "import time, urllib.request\n"
        "while True:\n"
        "    try:\n"
        "        print('sidecar got', urllib.request.urlopen('http://localhost:8080/').status,"
        " flush=True)\n"
        "    except OSError as e:\n"
        "        print('sidecar error', e, flush=True)\n"
        "    time.sleep(0.5)\n"
    )
    core.create_namespaced_pod(namespace, pod("duo", [http_server(), container("side", script)]))
    wait_ready(core, namespace, "duo")
    log = POD_LOGS / f"{namespace}_duo_side.log"
    eventually(lambda: log.exists() and "sidecar got 200" in log.read_text(), what="sidecar 200")


def test_job_completes_and_reports_its_termination_message(
    core: client.CoreV1Api, namespace: str
) -> None:
    batch = client.BatchV1Api(core.api_client)
    script = "open('/dev/termination-log', 'w').write('{\"accuracy\": 0.97}')"
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "train"},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {"restartPolicy": "Never",
                                      "containers": [container("train", script)]}},
            },
        },
    )  # fmt: skip

    def complete() -> bool:
        job = batch.read_namespaced_job_status("train", namespace)
        return any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or [])

    eventually(complete, what="job Complete")
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=train").items
    assert len(pods) == 1
    done = read(core, namespace, pods[0].metadata.name)
    assert done["status"]["phase"] == "Succeeded"
    terminated = container_status(done, "train")["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert json.loads(terminated["message"]) == {"accuracy": 0.97}
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "PodCompleted"


def test_failed_container_falls_back_to_its_log(core: client.CoreV1Api, namespace: str) -> None:
    script = "import sys\nfor i in range(100): print('line', i)\nsys.exit(3)"
    body = container("fail", script, terminationMessagePolicy="FallbackToLogsOnError")
    core.create_namespaced_pod(namespace, pod("fail", [body], restartPolicy="Never"))
    failed = wait_phase(core, namespace, "fail", {"Failed"})
    terminated = container_status(failed, "fail")["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    lines = terminated["message"].splitlines()
    assert lines[-1] == "line 99"
    assert len(lines) == 80


def test_init_containers_run_in_order_and_share_an_empty_dir(
    core: client.CoreV1Api, namespace: str
) -> None:
    mount = [{"name": "work", "mountPath": "/work/shared"}]
    first = container("first", "open('/work/shared/x', 'w').write('a')", volumeMounts=mount)
    second = container("second", "open('/work/shared/x', 'a').write('b')", volumeMounts=mount)
    main = container(
        "main",
        "open('/dev/termination-log', 'w').write(open('/work/shared/x').read())",
        volumeMounts=mount,
    )
    core.create_namespaced_pod(
        namespace,
        pod(
            "init",
            [main],
            initContainers=[first, second],
            restartPolicy="Never",
            volumes=[{"name": "work", "emptyDir": {}}],
        ),
    )
    done = wait_phase(core, namespace, "init", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded"
    assert termination_message(done, "main") == "ab"
    for name in ("first", "second"):
        assert container_status(done, name)["state"]["terminated"]["reason"] == "Completed"


def test_a_volume_over_the_checkout_does_not_hide_the_pods_programs(
    core: client.CoreV1Api, namespace: str
) -> None:
    """An emptyDir at the directory holding this checkout (CI clones under /tmp, and pods
    mount scratch space at /tmp) must not hide the .venv the pod's programs run from."""
    parent = str(REPO.parent)
    mount = [{"name": "scratch", "mountPath": parent}]
    main = container(
        "main",
        f"open('{parent}/written', 'w').write('x'); "
        "open('/dev/termination-log', 'w').write(str(len(__import__('os').listdir("
        f"'{parent}'))))",
        volumeMounts=mount,
    )
    core.create_namespaced_pod(
        namespace,
        pod("over", [main], restartPolicy="Never", volumes=[{"name": "scratch", "emptyDir": {}}]),
    )
    done = wait_phase(core, namespace, "over", {"Succeeded", "Failed"})
    assert done["status"]["phase"] == "Succeeded", container_status(done, "main")
    # The volume is what the pod sees there: its own file and the checkout's mount point.
    assert termination_message(done, "main") == "2"
    assert not (REPO.parent / "written").exists()


def test_failing_liveness_probe_restarts_the_container(
    core: client.CoreV1Api, namespace: str
) -> None:
    live = http_server(
        livenessProbe={"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 2}
    )
    core.create_namespaced_pod(namespace, pod("live", [live]))

    def restarted() -> dict[str, object] | None:
        status = container_status(read(core, namespace, "live"), "web")
        return status if status["restartCount"] >= 1 else None

    status = eventually(restarted, timeout=60, what="a restart")
    assert status["lastState"]["terminated"]["exitCode"] in (137, 143)

    def crash_loop() -> bool:
        waiting = container_status(read(core, namespace, "live"), "web")["state"].get("waiting")
        return bool(waiting and waiting["reason"] == "CrashLoopBackOff")

    eventually(crash_loop, timeout=60, what="CrashLoopBackOff")


def test_unknown_image_is_refused(core: client.CoreV1Api, namespace: str) -> None:
    body = {"name": "nginx", "image": "docker.io/library/nginx:1.27"}
    core.create_namespaced_pod(namespace, pod("nginx", [body]))

    def waiting() -> dict[str, str] | None:
        current = read(core, namespace, "nginx")
        statuses = current["status"].get("containerStatuses") or []
        state = statuses[0]["state"].get("waiting") if statuses else None
        return state if state and state["reason"] in ("ErrImagePull", "ImagePullBackOff") else None

    state = eventually(waiting, what="ErrImagePull")
    assert "only this repository's images" in state["message"]
    assert read(core, namespace, "nginx")["status"]["phase"] == "Pending"


def test_pvc_written_by_one_pod_is_read_by_the_next(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        },
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mount = [{"name": "data", "mountPath": "/mnt/pvc/data"}]
    writer = container("w", "open('/mnt/pvc/data/model', 'w').write('v1')", volumeMounts=mount)
    core.create_namespaced_pod(
        namespace, pod("writer", [writer], restartPolicy="Never", volumes=volumes)
    )
    assert (
        wait_phase(core, namespace, "writer", {"Succeeded", "Failed"})["status"]["phase"]
        == "Succeeded"
    )
    reader = container(
        "r",
        "open('/dev/termination-log', 'w').write(open('/mnt/pvc/data/model').read())",
        volumeMounts=[{**mount[0], "readOnly": True}],
    )
    core.create_namespaced_pod(
        namespace, pod("reader", [reader], restartPolicy="Never", volumes=volumes)
    )
    done = wait_phase(core, namespace, "reader", {"Succeeded", "Failed"})
    assert termination_message(done, "r") == "v1"


def test_deleting_a_pod_leaves_nothing_behind(core: client.CoreV1Api, namespace: str) -> None:
    token = marker()
    stubborn = (
        f"# {token}\nimport signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True: time.sleep(1)\n"
    )
    body = pod(
        "gone",
        [container("main", stubborn)],
        terminationGracePeriodSeconds=2,
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    body["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    core.create_namespaced_pod(namespace, body)
    running = wait_phase(core, namespace, "gone", {"Running"})
    uid = running["metadata"]["uid"]
    netns = f"mlp-{uid.replace('-', '')[:8]}"
    eventually(lambda: pids_with(token), what="the container process")
    assert os.path.exists(f"/run/netns/{netns}")
    began = time.monotonic()
    core.delete_namespaced_pod("gone", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("gone", namespace)
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(gone, timeout=30, what="the pod object gone")
    assert time.monotonic() - began < 10, "SIGKILL after the 2 s grace period"
    assert pids_with(token) == []
    assert not os.path.exists(f"/run/netns/{netns}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"vmlp{uid.replace('-', '')[:8]}" not in links
    assert not (NODE_STATE / "pods" / uid).exists()


def test_in_cluster_client_uses_the_service_account_token(
    core: client.CoreV1Api, namespace: str
) -> None:
    rbac = client.RbacAuthorizationV1Api(core.api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "lister"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "get"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "lister"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": namespace}],
        },
    )  # fmt: skip
    script = (
        "import json\n"
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n"
        "core = client.CoreV1Api()\n"
        "names = [p.metadata.name for p in core.list_namespaced_pod(ns).items]\n"
        "try:\n"
        "    core.list_namespaced_secret(ns)\n"
        "    secrets = 'allowed'\n"
        "except client.ApiException as e:\n"
        "    secrets = e.status\n"
        "open('/dev/termination-log', 'w').write(json.dumps({'pods': names, 'secrets': secrets}))\n"
    )
    core.create_namespaced_pod(
        namespace,
        pod("incluster", [container("c", script)], restartPolicy="Never",
            serviceAccountName="lister"),
    )  # fmt: skip
    done = wait_phase(core, namespace, "incluster", {"Succeeded", "Failed"})
    message = termination_message(done, "c")
    assert done["status"]["phase"] == "Succeeded", message
    assert json.loads(message) == {"pods": ["incluster"], "secrets": 403}


def test_env_and_volumes_from_configmap_secret_and_downward_api(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "file.txt": "hello"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}
    )
    script = (
        "import json, os\n"
        "keys = ['MODE', 'PASSWORD', 'POD_NAME', 'POD_IP', 'NODE', 'GREETING', 'CFG_mode',"
        " 'MEM', 'KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT']\n"
        "out = {k: os.environ.get(k) for k in keys}\n"
        "out['file'] = open('/etc/cfg/file.txt').read()\n"
        "out['sub'] = open('/etc/only/password').read()\n"
        "out['labels'] = open('/etc/podinfo/labels').read()\n"
        "out['argv'] = os.environ['ARG']\n"
        "try:\n"
        "    open('/etc/cfg/new', 'w')\n"
        "    out['ro'] = False\n"
        "except OSError:\n"
        "    out['ro'] = True\n"
        "open('/dev/termination-log', 'w').write(json.dumps(out))\n"
    )
    body = container(
        "c",
        script,
        env=[
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                               "divisor": "1Mi"}}},
            {"name": "GREETING", "value": "hi $(POD_NAME) $$(POD_NAME) $(UNDEFINED)"},
            {"name": "ARG", "value": "$(MODE)"},
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        resources={"limits": {"memory": "64Mi"}},
        volumeMounts=[
            {"name": "cfg", "mountPath": "/etc/cfg"},
            {"name": "sec", "mountPath": "/etc/only/password", "subPath": "password"},
            {"name": "info", "mountPath": "/etc/podinfo"},
        ],
    )  # fmt: skip
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "sec", "secret": {"secretName": "sec"}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
    ]  # fmt: skip
    core.create_namespaced_pod(
        namespace,
        pod("env", [body], restartPolicy="Never", volumes=volumes, labels={"team": "ml"}),
    )
    done = wait_phase(core, namespace, "env", {"Succeeded", "Failed"})
    message = termination_message(done, "c")
    assert done["status"]["phase"] == "Succeeded", message
    seen = json.loads(message)
    assert seen == {
        "MODE": "fast",
        "PASSWORD": "s3cret",
        "POD_NAME": "env",
        "POD_IP": done["status"]["podIP"],
        "NODE": "local-node-0",
        "GREETING": "hi env $(POD_NAME) $(UNDEFINED)",
        "CFG_mode": "fast",
        "MEM": "64",
        "KUBERNETES_SERVICE_HOST": "10.88.0.1",
        "KUBERNETES_SERVICE_PORT": os.environ.get("MLPLANE_APISERVER_PORT", "36443"),
        "file": "hello",
        "sub": "s3cret",
        "labels": 'team="ml"',
        "argv": "fast",
        "ro": True,
    }


def test_missing_configmap_is_a_create_container_config_error(
    core: client.CoreV1Api, namespace: str
) -> None:
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]
    core.create_namespaced_pod(namespace, pod("cfgerr", [container("c", "pass", env=env)]))

    def waiting() -> dict[str, str] | None:
        statuses = read(core, namespace, "cfgerr")["status"].get("containerStatuses") or []
        state = statuses[0]["state"].get("waiting") if statuses else None
        return state if state and state["reason"] == "CreateContainerConfigError" else None

    assert "absent" in eventually(waiting, what="CreateContainerConfigError")["message"]


def _agent_pid() -> int:
    record = json.loads((REPO / ".cluster" / "pids" / "localnode.json").read_text())
    return int(record["pid"])


def test_restarted_agent_does_not_duplicate_pods(core: client.CoreV1Api, namespace: str) -> None:
    token = marker()
    body = http_server(command=["python", "-m", "http.server", "8080", "--directory", "/tmp"])
    body["args"] = []
    body["env"] = [{"name": "MARK", "value": token}]
    body["command"] = ["python", "-c", f"# {token}\nimport runpy, sys\n"
                       "sys.argv = ['http.server', '8080']\n"
                       "runpy.run_module('http.server', run_name='__main__')"]  # fmt: skip
    core.create_namespaced_pod(namespace, pod("survivor", [body]))
    before = wait_ready(core, namespace, "survivor")
    assert len(pids_with(token)) == 1
    os.kill(_agent_pid(), signal.SIGKILL)  # a crash: the pod's process outlives the agent
    time.sleep(0.5)
    up = subprocess.run(
        [sys.executable, "hack/cluster.py", "up"], cwd=REPO, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr

    def restarted() -> dict[str, object] | None:
        current = read(core, namespace, "survivor")
        status = container_status(current, "web")
        ready = status["ready"] and status["restartCount"] == 1
        return current if ready else None

    after = eventually(restarted, timeout=60, what="the pod running again under the new agent")
    assert len(pids_with(token)) == 1
    assert after["status"]["podIP"] == before["status"]["podIP"]
    with urllib.request.urlopen(f"http://{after['status']['podIP']}:8080/", timeout=5) as r:
        assert r.status == 200


def test_non_root_user_with_startup_and_exec_probes(core: client.CoreV1Api, namespace: str) -> None:
    script = "id -u > /scratch/uid; id -G > /scratch/groups; exec python -m http.server 8080"
    web = {
        "name": "web",
        "image": "mlplane/runtime:dev",
        "command": ["sh", "-c", script],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
        "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", 'test "$(id -u)" = 1000 && test -f /scratch/uid']},
            "periodSeconds": 1,
        },
    }
    core.create_namespaced_pod(
        namespace,
        pod(
            "nonroot",
            [web],
            securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
            volumes=[{"name": "scratch", "emptyDir": {}}],
        ),
    )
    ready = wait_ready(core, namespace, "nonroot")
    status = container_status(ready, "web")
    assert status["started"] is True
    assert status["restartCount"] == 0
    scratch = NODE_STATE / "pods" / ready["metadata"]["uid"] / "volumes" / "empty-dir" / "scratch"
    assert (scratch / "uid").read_text().strip() == "1000"
    assert set((scratch / "groups").read_text().split()) == {"1000", "2000"}


def test_force_deleted_pod_is_killed_without_waiting_for_its_grace_period(
    core: client.CoreV1Api, namespace: str
) -> None:
    token = marker()
    stubborn = (
        f"# {token}\nimport signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "while True: time.sleep(1)\n"
    )
    core.create_namespaced_pod(
        namespace, pod("forced", [container("main", stubborn)], terminationGracePeriodSeconds=60)
    )
    wait_phase(core, namespace, "forced", {"Running"})
    eventually(lambda: pids_with(token), what="the container process")
    core.delete_namespaced_pod("forced", namespace, grace_period_seconds=0)
    eventually(lambda: not pids_with(token), timeout=10, what="the process killed")
