"""What the operator tests do again and again: apply, wait for status, send requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client

from tests.kube import eventually, kubectl

Manifest = dict[str, Any]
GROUP, VERSION = "mlplane.io", "v1alpha1"


def apply(namespace: str, *manifests: Manifest) -> None:
    for manifest in manifests:
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def training_job(name: str, model: str, **spec: Any) -> Manifest:
    body: Manifest = {
        "model": model,
        "dataset": {"builtin": "iris"},
        "estimator": {"class": "LogisticRegression", "params": {"max_iter": 300}},
        "validation": {"metrics": ["accuracy"]},
    }
    body.update(spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": body,
    }


def inference_service(name: str, model: str, **spec: Any) -> Manifest:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }


def succeeded(tj: Manifest) -> bool:
    """A TrainingJob whose last run succeeded (Scheduled: and waits for its next tick)."""
    return (tj.get("status") or {}).get("phase") in ("Succeeded", "Scheduled")


def failed(tj: Manifest) -> bool:
    return (tj.get("status") or {}).get("phase") == "Failed"


def read(api: client.ApiClient, namespace: str, plural: str, name: str) -> Manifest | None:
    try:
        found: Manifest = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def wait_for(
    api: client.ApiClient,
    namespace: str,
    plural: str,
    name: str,
    check: Callable[[Manifest], bool],
    what: str,
    timeout: float = 180,
) -> Manifest:
    def probe() -> Manifest | None:
        found = read(api, namespace, plural, name)
        return found if found is not None and check(found) else None

    try:
        return eventually(probe, timeout=timeout, interval=0.5, what=what)
    except AssertionError as error:
        last = read(api, namespace, plural, name)
        raise AssertionError(
            f"{error}\nlast {plural}/{name}: {json.dumps(last, indent=1)[-3000:]}"
        ) from None


def condition(obj: Manifest, type_: str) -> Manifest:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found["type"] == type_:
            return dict(found)
    return {}


def model_versions(api: client.ApiClient, namespace: str, model: str) -> list[Manifest]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelversions"
    )["items"]
    return sorted(
        (mv for mv in items if mv["spec"]["model"] == model), key=lambda mv: mv["spec"]["version"]
    )


def serving_pods(
    api: client.ApiClient, namespace: str, isvc: str, version: int | None = None
) -> list[Any]:
    selector = f"mlplane.io/inferenceservice={isvc}"
    if version is not None:
        selector += f",mlplane.io/version={version}"
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p
        for p in pods
        if p.status.pod_ip
        and not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def infer(pod_ip: str, model: str, rows: list[list[float]]) -> tuple[int, Manifest]:
    """A KServe V2 request straight to a serving pod; (status code, JSON body)."""
    request = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [len(rows), len(rows[0])],
                "data": [value for row in rows for value in row],
            }
        ]
    }
    http = urllib.request.Request(
        f"http://{pod_ip}:8080/v2/models/{model}/infer",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(http, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_serving(
    api: client.ApiClient, namespace: str, isvc: str, version: int = 1, timeout: float = 180
) -> Manifest:
    """Wait until an InferenceService serves `version` and is Ready."""
    return wait_for(
        api,
        namespace,
        "inferenceservices",
        isvc,
        lambda i: (
            (i.get("status") or {}).get("servingVersion") == version
            and condition(i, "Ready").get("status") == "True"
        ),
        f"v{version} to be served",
        timeout,
    )
