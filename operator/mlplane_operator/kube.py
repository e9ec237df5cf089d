"""The one module that talks to the Kubernetes API server.

Everything else in the operator is pure: builders return manifests (dicts), policies
return decisions. Writes of children use server-side apply with the operator's field
manager, so each reconciler owns exactly the fields it sets and nothing else (an HPA's
replica count, a user's extra label and kubectl's edits of other fields are left alone).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "mlplane-operator"
GROUP, VERSION = "mlplane.io", "v1alpha1"

Manifest = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    api_version: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        prefix = "/api" if "/" not in self.api_version else "/apis"
        path = f"{prefix}/{self.api_version}/namespaces/{namespace}/{self.plural}"
        return f"{path}/{name}" if name else path


RESOURCES: dict[str, Resource] = {
    "Job": Resource("batch/v1", "jobs"),
    "Deployment": Resource("apps/v1", "deployments"),
    "Service": Resource("v1", "services"),
    "ConfigMap": Resource("v1", "configmaps"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "Pod": Resource("v1", "pods"),
    "HorizontalPodAutoscaler": Resource("autoscaling/v2", "horizontalpodautoscalers"),
    "EndpointSlice": Resource("discovery.k8s.io/v1", "endpointslices"),
    "ServiceMonitor": Resource("monitoring.coreos.com/v1", "servicemonitors"),
    "TrainingJob": Resource(f"{GROUP}/{VERSION}", "trainingjobs"),
    "ModelVersion": Resource(f"{GROUP}/{VERSION}", "modelversions"),
    "InferenceService": Resource(f"{GROUP}/{VERSION}", "inferenceservices"),
}


def load_config() -> None:
    """In-cluster credentials when running in a pod, the local kubeconfig otherwise."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


@cache
def api_client() -> client.ApiClient:
    return client.ApiClient()


def _call(
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> Any:
    """One request through the client's auth and TLS settings; JSON in, JSON out."""
    api = api_client()
    _, url, headers, _, _ = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Accept": "application/json", "Content-Type": content_type},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body)
    data = response.read()  # type: ignore[no-untyped-call]
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return json.loads(data) if data else None


def get(kind: str, namespace: str, name: str) -> Manifest | None:
    try:
        found: Manifest = _call("GET", RESOURCES[kind].path(namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def get_path(path: str) -> Manifest | None:
    """GET any API path; None when it does not exist."""
    try:
        found: Manifest = _call("GET", path)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def list_all(kind: str) -> list[Manifest]:
    """Every object of a kind in all namespaces."""
    resource = RESOURCES[kind]
    prefix = "/api" if "/" not in resource.api_version else "/apis"
    result: Manifest = _call("GET", f"{prefix}/{resource.api_version}/{resource.plural}")
    items: list[Manifest] = result.get("items", [])
    return items


def list_(kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[Manifest]:
    query = []
    if labels:
        query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
    result: Manifest = _call("GET", RESOURCES[kind].path(namespace), query=query)
    items: list[Manifest] = result.get("items", [])
    return items


class Rejected(RuntimeError):
    """The API server refused the object itself (400, 422): sending it again cannot
    help. The message is the API server's, which names the field."""


def apply(manifest: Manifest) -> Manifest:
    """Server-side apply, owning exactly the fields in `manifest`; raises Rejected when
    the API server refuses the object."""
    resource = RESOURCES[manifest["kind"]]
    metadata = manifest["metadata"]
    try:
        applied: Manifest = _call(
            "PATCH",
            resource.path(metadata["namespace"], metadata["name"]),
            body=manifest,
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )
    except ApiException as error:
        if error.status in (400, 422):
            raise Rejected(error_message(error)) from error
        raise
    return applied


def hand_replicas_to_hpa(namespace: str, name: str, replicas: int) -> None:
    """Give a Deployment's `spec.replicas` to the HorizontalPodAutoscaler without a
    reset: a second field manager co-owns the current count, so that the operator's next
    apply, which leaves the field out, does not drop it to the default of 1 (the
    handover Kubernetes documents for server-side apply and HPAs)."""
    _call(
        "PATCH",
        RESOURCES["Deployment"].path(namespace, name),
        body={
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas},
        },
        content_type="application/apply-patch+yaml",
        query=[("fieldManager", f"{FIELD_MANAGER}-hpa-handover"), ("force", "true")],
    )


def create(manifest: Manifest) -> Manifest | None:
    """Create; None when an object of that name already exists (the caller decides);
    raises Rejected when the API server refuses the object."""
    resource = RESOURCES[manifest["kind"]]
    try:
        created: Manifest = _call(
            "POST",
            resource.path(manifest["metadata"]["namespace"]),
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER)],
        )
    except ApiException as error:
        if error.status == 409:
            return None
        if error.status in (400, 422):
            raise Rejected(error_message(error)) from error
        raise
    return created


class Conflict(RuntimeError):
    """A write whose resourceVersion precondition failed: someone wrote first. Read the
    object again and decide again."""


def replace(manifest: Manifest) -> Manifest:
    """PUT the whole object; with metadata.resourceVersion set, only over that version
    (raises Conflict otherwise)."""
    metadata = manifest["metadata"]
    try:
        replaced: Manifest = _call(
            "PUT",
            RESOURCES[manifest["kind"]].path(metadata["namespace"], metadata["name"]),
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER)],
        )
    except ApiException as error:
        if error.status == 409:
            raise Conflict(error_message(error)) from error
        raise
    return replaced


def patch_merge(
    kind: str, namespace: str, name: str, patch: Manifest, status: bool = False
) -> Manifest:
    """A JSON merge patch; one that sets metadata.resourceVersion applies only over that
    version (raises Conflict otherwise)."""
    path = RESOURCES[kind].path(namespace, name) + ("/status" if status else "")
    try:
        patched: Manifest = _call(
            "PATCH",
            path,
            body=patch,
            content_type="application/merge-patch+json",
            query=[("fieldManager", FIELD_MANAGER)],
        )
    except ApiException as error:
        if error.status == 409:
            raise Conflict(error_message(error)) from error
        raise
    return patched


def delete(kind: str, namespace: str, name: str, propagation: str = "Background") -> bool:
    try:
        _call(
            "DELETE",
            RESOURCES[kind].path(namespace, name),
            body={"propagationPolicy": propagation},
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def crd_exists(name: str) -> bool:
    try:
        _call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    except ApiException as error:
        if error.status in (403, 404):
            return False
        raise
    return True


def error_message(error: ApiException) -> str:
    """The API server's own message of a failed call, for conditions and logs."""
    try:
        return str(json.loads(error.body or "").get("message", error.reason))
    except (TypeError, ValueError):
        return str(error.reason)


def post_event(regarding: Manifest, event_type: str, reason: str, message: str) -> None:
    """A core/v1 Event on `regarding`, shown by `kubectl describe`. Never raises: an
    event that cannot be written must not fail a reconcile."""
    metadata = regarding["metadata"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": regarding["apiVersion"],
            "kind": regarding["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": _now(),
        "lastTimestamp": _now(),
        "count": 1,
    }
    try:
        _call("POST", f"/api/v1/namespaces/{metadata['namespace']}/events", body=event)
    except ApiException as error:
        log.warning("could not post event %s on %s: %s", reason, metadata["name"], error.reason)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TransientError(RuntimeError):
    """Something that should succeed on a later attempt (Kopf retries the handler)."""


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def write_status_if_changed(body: Manifest, status: Manifest) -> bool:
    """Merge-patch the status subresource when `status` differs from what is stored
    (None values remove fields), only over the resourceVersion `status` was computed
    from: a write by another replica (or an older pass) in between raises Conflict
    instead of being overwritten. Returns whether it wrote."""
    stored = _without_nulls(dict(body.get("status") or {}))
    wanted = _without_nulls(status)
    if all(stored.get(key) == value for key, value in wanted.items()) and all(
        key in wanted or key not in status for key in stored
    ):
        return False
    metadata = body["metadata"]
    patch = {"metadata": {"resourceVersion": metadata["resourceVersion"]}, "status": status}
    patch_merge(body["kind"], metadata["namespace"], metadata["name"], patch, status=True)
    return True
