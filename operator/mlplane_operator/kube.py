"""The one module that talks to the Kubernetes API server.

Everything else in the operator is pure: builders return manifests (dicts), policies
return decisions. Writes of children use server-side apply with the operator's field
manager, so each reconciler owns exactly the fields it sets and nothing else (an HPA's
replica count, a user's extra label and kubectl's edits of other fields are left alone).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlplane_operator import metrics
from mlplane_operator.cache import (
    Store,
    subset_equal,
    watched,
    without_job_template,
    without_pod_spec,
)

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
    _count(method, path, query)
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


def _count(method: str, path: str, query: list[tuple[str, str]] | None) -> None:
    """Count a request by verb (GET of a collection is list, or watch) and resource."""
    segments = path.strip("/").split("/")
    if "namespaces" in segments and len(segments) > segments.index("namespaces") + 2:
        index = segments.index("namespaces") + 2
    else:
        index = 3 if segments[0] == "apis" else 2
    resource = "/".join(segments[index : index + 1] + segments[index + 2 : index + 3])
    verb = method.lower()
    if method == "GET" and len(segments) == index + 1:
        verb = "watch" if ("watch", "true") in (query or []) else "list"
    metrics.API_REQUESTS.labels(verb=verb, resource=resource or path).inc()


def get(kind: str, namespace: str, name: str) -> Manifest | None:
    """GET from the API server (never the cache): for reads that a decision must not
    take from a possibly older copy."""
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
    """LIST from the API server (never the cache)."""
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
    _wrote(applied)
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
    _wrote(created)
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
    _wrote(replaced)
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
    _wrote(patched)
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
            _forget(kind, namespace, name)
            return False
        raise
    _forget(kind, namespace, name)
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
    """A core/v1 Event on `regarding`, shown by `kubectl describe`. Never raises and never
    waits: like client-go's recorder, a background thread posts it, so a reconcile does
    not spend a round trip on it, and one that cannot be written fails nothing."""
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
    _events.record(event)


class EventRecorder:
    """Posts Events from a bounded queue on a thread of its own. When the queue is full
    (the API server is far behind), an Event is dropped, counted and logged: Events are
    best-effort in Kubernetes, and the status says the same."""

    def __init__(self, post: Callable[[Manifest], None], capacity: int = 1000) -> None:
        self._post = post
        self._queue: queue.Queue[Manifest] = queue.Queue(capacity)
        self._started = threading.Lock()
        self._thread: threading.Thread | None = None

    def record(self, event: Manifest) -> None:
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="events", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            metrics.EVENTS_DROPPED.inc()
            log.warning("event queue full; dropped %s on %s", event["reason"],
                        event["involvedObject"]["name"])  # fmt: skip

    def flush(self, timeout: float) -> bool:
        """Wait until every recorded Event was posted (at shutdown); whether they were."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._post(event)
            except Exception as error:  # a refused Event must not end the recorder
                metrics.EVENTS_DROPPED.inc()
                log.warning("could not post event %s on %s: %s", event["reason"],
                            event["involvedObject"]["name"], error)  # fmt: skip
            finally:
                self._queue.task_done()


def _post_event(event: Manifest) -> None:
    _call("POST", f"/api/v1/namespaces/{event['metadata']['namespace']}/events", body=event)


_events = EventRecorder(_post_event)


def flush_events(timeout: float = 10) -> bool:
    return _events.flush(timeout)


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


# --- watch-fed caches ------------------------------------------------------------------
#
# One Informer per kind (per namespace when the operator watches a fixed list of them,
# cluster-wide filtered by the patterns otherwise): list once, then watch from that
# resourceVersion with bookmarks, relist on 410 Gone. Reads of children go to the
# caches (cached_list, cached_get); writes go to the API server and, with the object it
# returns, into the cache (write-through), so a pass sees its own writes at once.

# The children the reconcilers read on every pass, and the label that selects ours.
CACHED: dict[str, str | None] = {
    "TrainingJob": None,
    "ModelVersion": None,
    "InferenceService": None,
    "Job": "mlplane.io/component",
    "Pod": "mlplane.io/component",
    "Deployment": "mlplane.io/inferenceservice",
    "Service": "mlplane.io/inferenceservice",
    "EndpointSlice": "mlplane.io/inferenceservice",  # the Service's labels, mirrored
    "HorizontalPodAutoscaler": "mlplane.io/inferenceservice",
}
# What of an object the caches keep (at 5,000 runs, pod specs and Job templates were
# most of the operator's memory). Deployments and Services stay whole: apply_if_changed
# compares them with what the operator would apply.
TRIM: dict[str, Callable[[Manifest], Manifest]] = {
    "Pod": without_pod_spec,
    "Job": without_job_template,
}
WATCH_SECONDS = 300  # the API server ends a watch after this; it is started again
LIST_PAGE = 500
Listener = Callable[[str, str, Manifest], None]  # (kind, event type, object)


class Informer(threading.Thread):
    """Keeps the Store of one kind (in one namespace, or all) in step with the server."""

    def __init__(
        self,
        kind: str,
        namespace: str | None,
        patterns: list[str],
        listener: Listener | None = None,
    ) -> None:
        super().__init__(name=f"informer-{kind}-{namespace or 'all'}", daemon=True)
        self.kind, self.namespace, self.listener = kind, namespace, listener
        self.store = Store(patterns, TRIM.get(kind))
        self.synced = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self.store.resource_version is None:
                    self._relist()
                self._watch()
                failures = 0
            except Gone:
                self.store.resource_version = None  # too old: list again
            except Exception as error:  # a dropped connection, a restarted server
                failures += 1
                delay = min(30.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
                log.warning("watch of %s failed (%s); again in %.1f s", self.kind, error, delay)
                self.stopping.wait(delay)

    def stop(self) -> None:
        self.stopping.set()

    def _collection(self) -> str:
        resource = RESOURCES[self.kind]
        if self.namespace is not None:
            return resource.path(self.namespace)
        prefix = "/api" if "/" not in resource.api_version else "/apis"
        return f"{prefix}/{resource.api_version}/{resource.plural}"

    def _selector(self) -> list[tuple[str, str]]:
        label = CACHED.get(self.kind)
        return [("labelSelector", label)] if label else []

    def _relist(self) -> None:
        items: list[Manifest] = []
        token: str | None = None
        while True:
            query = [*self._selector(), ("limit", str(LIST_PAGE))]
            if token:
                query.append(("continue", token))
            page: Manifest = _call("GET", self._collection(), query=query)
            resource = RESOURCES[self.kind]
            for item in page.get("items", []):
                # A list's items carry neither kind nor apiVersion; the reconcilers
                # expect both, as on an object read alone.
                item.setdefault("kind", self.kind)
                item.setdefault("apiVersion", resource.api_version)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        version = (page.get("metadata") or {}).get("resourceVersion")
        gone = self.store.replace(items, version)
        self.synced.set()
        if self.listener is not None:
            for obj in gone:
                self.listener(self.kind, "DELETED", obj)
            for obj in items:
                self.listener(self.kind, "LISTED", obj)

    def _watch(self) -> None:
        query = [
            *self._selector(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", str(self.store.resource_version)),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        for event in _stream(self._collection(), query, WATCH_SECONDS + 30):
            if self.stopping.is_set():
                return
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(obj.get("message", "resourceVersion too old"))
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if kind == "BOOKMARK":
                self.store.resource_version = version
                continue
            if kind == "DELETED":
                self.store.remove(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            else:
                self.store.upsert(obj)
            self.store.resource_version = version
            if self.listener is not None:
                self.listener(self.kind, str(kind), obj)


class Gone(RuntimeError):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _stream(path: str, query: list[tuple[str, str]], read_timeout: float) -> Iterator[Manifest]:
    """The events of one watch request, decoded, until the server ends it."""
    _count("GET", path, query)
    api = api_client()
    _, url, headers, _, _ = api.param_serialize(
        "GET",
        path,
        query_params=query,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.rest_client.pool_manager.request(
        "GET",
        url,
        headers=headers,
        preload_content=False,
        timeout=urllib3.Timeout(connect=10, read=read_timeout),
    )
    try:
        if response.status == 410:
            raise Gone("resourceVersion too old")
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)
        pending = b""
        for chunk in response.stream(64 << 10):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield json.loads(line)
    finally:
        response.release_conn()


_informers: dict[str, list[Informer]] = {}


def start_informers(patterns: list[str], listener: Listener | None = None) -> None:
    """Start the caches of CACHED: per namespace for a fixed list of namespaces (what a
    namespaced Role allows), cluster-wide filtered by `patterns` otherwise."""
    fixed = bool(patterns) and not any(set(p) & set("*?[") for p in patterns)
    for kind in CACHED:
        scopes: list[str | None] = list(patterns) if fixed else [None]
        informers = [Informer(kind, scope, patterns, listener) for scope in scopes]
        _informers[kind] = informers
        for informer in informers:
            informer.start()


def wait_for_caches(timeout: float) -> bool:
    """Whether every cache has listed once within `timeout` seconds."""
    deadline = datetime.now(UTC).timestamp() + timeout
    for informers in _informers.values():
        for informer in informers:
            if not informer.synced.wait(max(0.0, deadline - datetime.now(UTC).timestamp())):
                return False
    return True


def stop_informers() -> None:
    for informers in _informers.values():
        for informer in informers:
            informer.stop()
    _informers.clear()


def _store(kind: str, namespace: str) -> Store | None:
    """The synced cache that holds `kind` in `namespace`, if any."""
    for informer in _informers.get(kind, ()):
        if informer.synced.is_set() and informer.namespace in (None, namespace):
            return informer.store
    return None


def cached_list(kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[Manifest]:
    """Like list_, from the cache when it has synced (from the API server before)."""
    store = _store(kind, namespace)
    if store is None:
        return list_(kind, namespace, labels)
    return store.select(namespace, labels)


def cached_get(kind: str, namespace: str, name: str) -> Manifest | None:
    """Like get, from the cache when it has synced (from the API server before)."""
    store = _store(kind, namespace)
    if store is None:
        return get(kind, namespace, name)
    return store.get(namespace, name)


def cached_all(kind: str) -> list[Manifest]:
    """Every object of a kind in the watched namespaces: from the caches, or from the
    API server while one of them has not listed yet."""
    informers = _informers.get(kind, [])
    if informers and all(informer.synced.is_set() for informer in informers):
        return [obj for informer in informers for obj in informer.store.all()]
    found: list[Manifest] = []
    for informer in informers:
        objects = list_all(kind) if informer.namespace is None else list_(kind, informer.namespace)
        found += [
            o for o in objects if watched(o["metadata"]["namespace"], informer.store.patterns)
        ]
    return found


def cached_keys(kind: str) -> list[tuple[str, str]]:
    """(namespace, name) of every object of a kind in the watched namespaces, without
    decoding the cached objects (the safety-net resync needs only the keys)."""
    informers = _informers.get(kind, [])
    if informers and all(informer.synced.is_set() for informer in informers):
        return [key for informer in informers for key in informer.store.stored_keys()]
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in cached_all(kind)]


def caches_running() -> bool:
    return bool(_informers)


def apply_if_changed(manifest: Manifest) -> Manifest:
    """apply(), unless the cached object already has every field of `manifest` with the
    same value: the apply would change nothing, and the pass skips the request."""
    metadata = manifest["metadata"]
    store = _store(manifest["kind"], metadata["namespace"])
    live = store.get(metadata["namespace"], metadata["name"]) if store else None
    wanted = {key: value for key, value in manifest.items() if key != "status"}
    if (
        live is not None
        and not live["metadata"].get("deletionTimestamp")
        and subset_equal(wanted, live)
    ):
        return live
    return apply(manifest)


def _wrote(obj: Manifest | None) -> None:
    if not obj or "metadata" not in obj or obj.get("kind") not in _informers:
        return
    store = _store(obj["kind"], obj["metadata"].get("namespace", ""))
    if store is not None:
        store.upsert(obj)


def _forget(kind: str, namespace: str, name: str) -> None:
    store = _store(kind, namespace)
    if store is not None:
        store.remove(namespace, name)
