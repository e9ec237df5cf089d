"""The local control plane is a real Kubernetes: controllers, GC, RBAC, CRDs, versions."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube import eventually, image, kubectl

PINNED_VERSION = os.environ.get("KUBE_VERSION", "v1.37.2")


def test_kubectl_and_server_report_the_pinned_version(kubeconfig: str) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"] == PINNED_VERSION
    assert versions["serverVersion"]["gitVersion"] == PINNED_VERSION


def test_deployment_gets_a_replicaset_from_the_controller_manager(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image=image("RUNTIME"))]
                    ),
                ),
            ),
        ),
    )
    replica_sets = eventually(
        lambda: apps.list_namespaced_replica_set(namespace).items, what="a ReplicaSet"
    )
    assert replica_sets[0].metadata.owner_references[0].name == "web"
    assert replica_sets[0].spec.replicas == 2
    core = client.CoreV1Api(kube_api)
    pods = eventually(
        lambda: [p for p in [core.list_namespaced_pod(namespace).items] if len(p) == 2],
        what="the ReplicaSet's two pods",
    )[0]
    assert {p.metadata.owner_references[0].kind for p in pods} == {"ReplicaSet"}


def test_deleting_an_owner_garbage_collects_its_dependents(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference])
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(dependent_gone, what="the garbage collector to delete the dependent")


def test_rbac_denies_an_unprivileged_service_account(
    kube_api: client.ApiClient, kubeconfig: str, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    configuration = client.Configuration()
    configuration.host = kube_api.configuration.host
    configuration.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = client.CoreV1Api(client.ApiClient(configuration))
    with pytest.raises(ApiException) as denied:
        as_nobody.list_namespaced_secret(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body

    # The same identity gains exactly what a Role grants it.
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="read-configmaps"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="nobody-reads-configmaps"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-configmaps"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)
            ],
        ),
    )

    def configmaps_listed() -> list[client.V1ConfigMap] | None:
        # The RBAC authorizer learns of new bindings through an informer, so a
        # 403 right after the create is expected; only a lasting one is a bug.
        try:
            return as_nobody.list_namespaced_config_map(namespace).items or None
        except ApiException as denied:
            if denied.status != 403:
                raise
            return None

    assert eventually(configmaps_listed, what="the grant to reach the RBAC authorizer")
    with pytest.raises(ApiException):
        as_nobody.list_namespaced_secret(namespace)


def test_a_crd_with_a_status_subresource_round_trips(
    kube_api: client.ApiClient, namespace: str
) -> None:
    group, plural = "widgets.cp-test.mlplane.io", "widgets"
    extensions = client.ApiextensionsV1Api(kube_api)
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}},
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
        },
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": group},
        "spec": {
            "group": "cp-test.mlplane.io",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
            ],
        },
    }
    kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(crd))

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(group).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, what="the CRD to be Established")
    custom = client.CustomObjectsApi(kube_api)
    args = ("cp-test.mlplane.io", "v1", namespace, plural)
    body = {"apiVersion": "cp-test.mlplane.io/v1", "kind": "Widget", "metadata": {"name": "w"}}
    created = eventually(
        lambda: _create_or_none(
            custom, args, {**body, "spec": {"size": 3}, "status": {"phase": "Lost"}}
        ),
        what="the new kind to be served",
    )
    assert "status" not in created  # status is ignored on the main resource
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(
            *args, {**body, "metadata": {"name": "bad"}, "spec": {"size": 0}}
        )
    assert invalid.value.status == 422
    assert "spec.size" in invalid.value.body

    custom.patch_namespaced_custom_object_status(*args, "w", {"status": {"phase": "Ready"}})
    stored = custom.get_namespaced_custom_object(*args, "w")
    assert stored["status"] == {"phase": "Ready"}
    assert stored["spec"] == {"size": 3}
    assert stored["metadata"]["generation"] == 1  # a status write does not bump the generation


def _create_or_none(
    custom: client.CustomObjectsApi, args: tuple[str, ...], body: dict
) -> dict | None:
    try:
        return custom.create_namespaced_custom_object(*args, body)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_new_namespaces_get_a_default_service_account_and_finalize_on_delete(
    kube_api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube_api)
    name = f"t-ns-lifecycle-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    eventually(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        what="the default ServiceAccount",
    )
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
    )
    core.delete_namespace(name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(
        namespace_gone, timeout=90, what="the namespace controller to finalize the namespace"
    )
