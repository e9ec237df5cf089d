"""The agent's API access, as plain JSON dicts (the node's own credentials)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]


def _raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Obj:
    response = call(*args, _preload_content=False, **kwargs)
    data: Obj = json.loads(response.data)
    return data


def not_found(error: Exception) -> bool:
    return isinstance(error, ApiException) and error.status == 404


class Kube:
    def __init__(self, kubeconfig: str) -> None:
        self.api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)

    # --- pods -----------------------------------------------------------------------

    def list_pods(self, node: str) -> Obj:
        return _raw(self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}")

    def watch_pods(self, node: str, resource_version: str, timeout: int) -> Iterator[Obj]:
        response: Any = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={node}",
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(10, timeout + 30),
        )
        try:
            for line in response:
                if line.strip():
                    event: Obj = json.loads(line)
                    yield event
        finally:
            response.release_conn()

    def get_pod(self, namespace: str, name: str) -> Obj:
        return _raw(self.core.read_namespaced_pod, name, namespace)

    def patch_pod_status(self, namespace: str, name: str, patch: Obj) -> Obj:
        return _raw(
            self.core.patch_namespaced_pod_status,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )

    def finalize_pod(self, namespace: str, name: str, uid: str) -> None:
        """Remove the pod object once everything local is gone (as the kubelet does)."""
        self.core.delete_namespaced_pod(
            name,
            namespace,
            body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
            ),
        )

    # --- what pods reference ----------------------------------------------------------

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            cm = _raw(self.core.read_namespaced_config_map, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
        for key, value in (cm.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value)
        return data

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            secret = _raw(self.core.read_namespaced_secret, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def pvc(self, namespace: str, name: str) -> Obj | None:
        try:
            return _raw(self.core.read_namespaced_persistent_volume_claim, name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, call: Callable[..., Any], *args: Any) -> Obj:
        """Create from a plain dict body (the typed client wants models)."""
        return _raw(call, *args)

    def pv(self, name: str) -> Obj:
        return _raw(self.core.read_persistent_volume, name)

    def token(
        self, pod: Obj, service_account: str, audiences: list[str], expiration: int
    ) -> tuple[str, float]:
        """A TokenRequest bound to the pod; returns the token and its expiry (epoch s)."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        result = _raw(
            self.core.create_namespaced_service_account_token,
            service_account,
            meta["namespace"],
            body,
        )
        expires = datetime.fromisoformat(
            result["status"]["expirationTimestamp"].replace("Z", "+00:00")
        )
        return str(result["status"]["token"]), expires.timestamp()
