"""The CRDs on a real API server (the local control plane): they install, the examples
are accepted, every rule rejects with an error naming the field, ModelVersion is
immutable but for its stage, and what pydantic parses is what the server stores."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mlplane_operator.api.v1alpha1 import (
    Condition,
    ConditionStatus,
    InferenceServiceStatus,
    MetricValue,
    ModelVersionStatus,
    RolloutRecord,
    StageChange,
    TrainingJobStatus,
    TrainingRun,
    utc_now,
)
from tests.api.cases import (
    FULL,
    INVALID,
    KIND_BY_NAME,
    MINIMAL,
    MINIMAL_DEFAULTED_SPEC,
    REPO,
    Invalid,
    Manifest,
    example_directories,
    example_documents,
    full_modelversion,
)
from tests.kube import eventually, kubectl

GROUP, VERSION = "mlplane.io", "v1alpha1"
CRD_NAMES = [kind.kind_info.crd_name for kind in KIND_BY_NAME.values()]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@pytest.fixture(scope="module")
def crds(kubeconfig: str) -> list[str]:
    """Install crds/ with server-side apply and wait until every CRD is Established."""
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=mlplane-api-tests",
        "-f",
        str(REPO / "crds"),
    )
    for name in CRD_NAMES:
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return CRD_NAMES


@pytest.fixture(scope="module")
def shared_namespace(kube_api: client.ApiClient, crds: list[str]) -> Iterator[str]:
    """One namespace for the many dry runs (they store nothing)."""
    name = f"t-api-dry-run-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def _plural(manifest: Manifest) -> str:
    return KIND_BY_NAME[manifest["kind"]].kind_info.plural


def create(
    kube_api: client.ApiClient, namespace: str, manifest: Manifest, *, dry_run: bool = False
) -> dict[str, Any]:
    created = client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        _plural(manifest),
        manifest,
        dry_run="All" if dry_run else None,
        field_validation="Strict",
    )
    return cast(dict[str, Any], created)


def patch(
    kube_api: client.ApiClient,
    namespace: str,
    manifest: Manifest,
    body: Any,
    *,
    content_type: str = MERGE_PATCH,
    status: bool = False,
) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube_api)
    method = (
        api.patch_namespaced_custom_object_status if status else api.patch_namespaced_custom_object
    )
    patched = method(
        GROUP,
        VERSION,
        namespace,
        _plural(manifest),
        manifest["metadata"]["name"],
        body,
        _content_type=content_type,
    )
    return cast(dict[str, Any], patched)


def rejection(caught: pytest.ExceptionInfo[ApiException]) -> str:
    """The API server's error: its message and every cause's field and message."""
    assert caught.value.status in (400, 422), caught.value
    body = json.loads(caught.value.body or "{}")
    causes = body.get("details", {}).get("causes", [])
    return "\n".join([body["message"], *(f"{c.get('field')}: {c.get('message')}" for c in causes)])


def test_crds_install_and_are_established(crds: list[str], kube_api: client.ApiClient) -> None:
    api = client.ApiextensionsV1Api(kube_api)
    for name in crds:
        crd = api.read_custom_resource_definition(name)
        assert crd.status is not None
        conditions = {c.type: c.status for c in crd.status.conditions or []}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize("example", example_directories(), ids=str)
def test_example_is_accepted_by_server_side_dry_run(shared_namespace: str, example: str) -> None:
    documents = [doc for where, doc in example_documents() if where.startswith(f"{example}/")]
    result = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=mlplane-api-tests",
        "-n",
        shared_namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump_all(documents),
    )
    assert result.stdout.count("serverside-applied (server dry run)") == len(documents)


@pytest.mark.parametrize("kind", sorted(FULL))
def test_full_and_minimal_manifests_are_accepted(
    kube_api: client.ApiClient, shared_namespace: str, kind: str
) -> None:
    create(kube_api, shared_namespace, FULL[kind](), dry_run=True)
    create(kube_api, shared_namespace, MINIMAL[kind](), dry_run=True)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected_naming_the_field(
    kube_api: client.ApiClient, shared_namespace: str, case: Invalid
) -> None:
    with pytest.raises(ApiException) as caught:
        create(kube_api, shared_namespace, case.manifest, dry_run=True)
    assert case.field in rejection(caught)


# ModelVersion: immutable but for the stage.


@pytest.fixture
def model_version(kube_api: client.ApiClient, namespace: str, crds: list[str]) -> Manifest:
    manifest = full_modelversion()
    create(kube_api, namespace, manifest)
    return manifest


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("spec.artifact", {"artifact": {"sha256": "f" * 64}}),
        ("spec.artifact", {"artifact": {"uri": "s3://elsewhere/model.onnx"}}),
        ("spec.version", {"version": 13}),
        ("spec.model", {"model": "other"}),
        ("spec.metrics", {"metrics": {"r2": 0.99}}),
        ("spec.signature", {"signature": None}),
        ("spec.lineage", {"lineage": {"run": "housing-8"}}),
        ("spec.baseline", {"baseline": {"sha256": "e" * 64}}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_model_version_spec_change_is_rejected(
    kube_api: client.ApiClient,
    namespace: str,
    model_version: Manifest,
    field: str,
    change: dict[str, Any],
) -> None:
    with pytest.raises(ApiException) as caught:
        patch(kube_api, namespace, model_version, {"spec": change})
    message = rejection(caught)
    assert f"{field} is immutable; register a new ModelVersion instead" in message


def test_model_version_stage_change_is_accepted(
    kube_api: client.ApiClient, namespace: str, model_version: Manifest
) -> None:
    for stage in ("Production", "Archived", "Staging"):
        patched = patch(kube_api, namespace, model_version, {"spec": {"stage": stage}})
        assert patched["spec"]["stage"] == stage
        assert patched["spec"]["artifact"] == model_version["spec"]["artifact"]


def test_model_version_added_optional_field_is_rejected(
    kube_api: client.ApiClient, namespace: str, crds: list[str]
) -> None:
    manifest = MINIMAL["ModelVersion"]()
    create(kube_api, namespace, manifest)
    with pytest.raises(ApiException) as caught:
        patch(kube_api, namespace, manifest, {"spec": {"metrics": {"accuracy": 1.0}}})
    assert "spec.metrics is immutable" in rejection(caught)


# What pydantic parses is what the API server stores.


@pytest.mark.parametrize("kind", sorted(FULL))
@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_pydantic_round_trips_what_the_server_stores(
    kube_api: client.ApiClient, namespace: str, crds: list[str], kind: str, variant: str
) -> None:
    manifest = (FULL if variant == "full" else MINIMAL)[kind]()
    stored = create(kube_api, namespace, manifest)
    model = KIND_BY_NAME[kind]
    assert model.model_validate(manifest).to_json()["spec"] == stored["spec"]
    assert model.from_body(stored).to_json()["spec"] == stored["spec"]
    if variant == "minimal":
        assert stored["spec"] == MINIMAL_DEFAULTED_SPEC[kind]


def test_null_fields_are_pruned_as_unset(
    kube_api: client.ApiClient, namespace: str, crds: list[str]
) -> None:
    manifest = MINIMAL["TrainingJob"]()
    manifest["spec"]["dataset"]["uri"] = None
    manifest["spec"]["schedule"] = None
    manifest["spec"]["output"] = None
    stored = create(kube_api, namespace, manifest)
    assert stored["spec"] == MINIMAL_DEFAULTED_SPEC["TrainingJob"]


def _statuses() -> dict[str, Any]:
    now = utc_now()
    ready = Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Succeeded",
        message="all good",
        last_transition_time=now,
        observed_generation=1,
    )
    reconciling = ready.model_copy(
        update={"type": "Reconciling", "status": ConditionStatus.FALSE, "reason": "Idle"}
    )
    metric = MetricValue(name="r2", value=0.81)
    return {
        "TrainingJob": TrainingJobStatus(
            observed_generation=1,
            phase="Succeeded",
            conditions=[ready, reconciling],
            runs=[
                TrainingRun(
                    name="housing-1",
                    job="housing-1",
                    trigger="Spec",
                    generation=1,
                    start_time=now,
                    completion_time=now,
                    outcome="Succeeded",
                    version=12,
                    metric=metric,
                    message="registered housing-v12",
                )
            ],
            active_run=None,
            last_version=12,
            last_metric=metric,
            last_schedule_time=now,
            next_schedule_time=now,
        ),
        "ModelVersion": ModelVersionStatus(
            observed_generation=1,
            phase="Ready",
            conditions=[ready],
            verified=True,
            verified_time=now,
            headline_metric=metric,
            stage_history=[StageChange(stage="Staging", time=now, reason="Registered")],
            served_by=["housing"],
        ),
        "InferenceService": InferenceServiceStatus(
            observed_generation=1,
            phase="Progressing",
            conditions=[ready],
            url="http://housing.ns.svc.cluster.local",
            serving_version=11,
            canary_version=12,
            canary_weight=20,
            replicas=5,
            ready_replicas=5,
            rollout_phase="Progressing",
            rollout_history=[
                RolloutRecord(
                    version=11,
                    previous_version=10,
                    strategy="Canary",
                    start_time=now,
                    completion_time=now,
                    outcome="Succeeded",
                )
            ],
            last_retrain_time=now,
        ),
    }


@pytest.mark.parametrize("kind", sorted(FULL))
def test_status_written_by_the_operator_round_trips(
    kube_api: client.ApiClient, namespace: str, crds: list[str], kind: str
) -> None:
    manifest = FULL[kind]()
    create(kube_api, namespace, manifest)
    status = _statuses()[kind].to_json()
    stored = patch(kube_api, namespace, manifest, {"status": status}, status=True)
    assert stored["status"] == status
    assert KIND_BY_NAME[kind].from_body(stored).to_json()["status"] == status


# What a person sees.


def test_kubectl_explain_teaches_the_dataset_fields(crds: list[str]) -> None:
    def explained() -> str | None:
        result = kubectl("explain", "trainingjob.spec.dataset", check=False)
        return result.stdout if "exactly one of builtin" in result.stdout else None

    text = eventually(explained, timeout=60, interval=1, what="kubectl explain to know the CRD")
    for expected in (
        "builtin\t<string>",
        "enum: iris, wine, breast_cancer, diabetes",
        "pvc://<claim>/<path>",
        "The column to predict. Required with `uri`.",
        "csv or parquet",
    ):
        assert expected in text, f"{expected!r} missing from:\n{text}"


def test_kubectl_get_shows_columns_category_and_selects_by_model(
    kube_api: client.ApiClient, namespace: str, crds: list[str]
) -> None:
    for kind in sorted(FULL):
        create(kube_api, namespace, FULL[kind]())
    create(kube_api, namespace, MINIMAL["ModelVersion"]())
    listed = kubectl("get", "mlplane", "-n", namespace).stdout
    for name in ("trainingjob.mlplane.io/housing", "modelversion.mlplane.io/housing-v12"):
        assert name in listed
    assert "inferenceservice.mlplane.io/housing" in listed
    header = kubectl("get", "mv", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "VERSION", "STAGE", "VERIFIED", "METRIC", "SCORE", "AGE"]
    header = kubectl("get", "mlisvc", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "SERVING", "CANARY", "WEIGHT", "READY", "URL", "AGE"]
    tj_header = kubectl("get", "tj", "-n", namespace).stdout.splitlines()[0]
    assert tj_header.split()[:4] == ["NAME", "MODEL", "PHASE", "LAST"]
    selected = kubectl(
        "get", "mv", "-n", namespace, "--field-selector", "spec.model=iris", "-o", "name"
    ).stdout.split()
    assert selected == ["modelversion.mlplane.io/iris-v1"]
