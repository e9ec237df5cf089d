"""The pydantic models without a cluster: parsing, defaults, round trips, and the Python
twins of the CEL rules rejecting the same manifests the API server rejects."""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import ValidationError

from mlplane_operator.api.v1alpha1 import (
    Condition,
    ConditionStatus,
    InferenceService,
    InferenceServiceSpec,
    ModelVersion,
    Stage,
    TrainingJob,
    TrainingJobStatus,
    TrainingRun,
    utc_now,
    version_name,
)
from tests.api.cases import (
    EXAMPLES,
    FULL,
    INVALID,
    KIND_BY_NAME,
    MINIMAL,
    MINIMAL_DEFAULTED_SPEC,
    Invalid,
    example_directories,
    example_documents,
)


@pytest.mark.parametrize("kind", sorted(FULL))
def test_full_object_round_trips_unchanged(kind: str) -> None:
    manifest = FULL[kind]()
    parsed = KIND_BY_NAME[kind].model_validate(manifest)
    assert parsed.to_json()["spec"] == manifest["spec"]


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_pydantic_applies_the_same_defaults_as_the_schema(kind: str) -> None:
    parsed = KIND_BY_NAME[kind].model_validate(MINIMAL[kind]())
    assert parsed.to_json()["spec"] == MINIMAL_DEFAULTED_SPEC[kind]


@pytest.mark.parametrize(("where", "manifest"), example_documents(), ids=lambda v: str(v)[:40])
def test_every_example_parses(where: str, manifest: dict[str, Any]) -> None:
    kind = KIND_BY_NAME[manifest["kind"]]
    assert kind.model_validate(manifest).name == manifest["metadata"]["name"]


def test_every_example_directory_has_a_readme_and_manifests() -> None:
    directories = example_directories()
    assert set(directories) >= {"iris", "registry", "canary", "drift-retrain", "schedule"}
    for directory in directories:
        assert (EXAMPLES / directory / "README.md").is_file(), directory


def _normalize(path: str) -> str:
    """spec.env[0].valueFrom, ('spec', 'env', 0, 'valueFrom') -> spec.env.valueFrom"""
    path = re.sub(r"\[([A-Za-z_]\w*)\]", r".\1", path)  # a map key: parameters[max_depth]
    return re.sub(r"\[\d*\]|\.\d+(?=\.|$)", "", path)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_pydantic_rejects_what_the_api_server_rejects(case: Invalid) -> None:
    kind = KIND_BY_NAME[case.manifest["kind"]]
    with pytest.raises(ValidationError) as caught:
        kind.model_validate(case.manifest)
    expected = _normalize(case.field)
    named = []
    for error in caught.value.errors():
        location = _normalize(".".join(str(part) for part in error["loc"]))
        named.append((location, error["msg"]))
        is_field_or_parent = (
            expected == location
            or location.startswith(expected + ".")  # a member of a union-typed field
            or (
                expected.startswith(location + ".")
                and expected.count(".") - location.count(".") == 1
            )
        )
        if is_field_or_parent or expected in _normalize(error["msg"]):
            return
    pytest.fail(f"no error names {case.field}: {named}")


def test_invalid_cases_cover_at_least_25_rules() -> None:
    assert len(INVALID) >= 25
    assert len({case.id for case in INVALID}) == len(INVALID)


def test_model_version_name_rule_accepts_operator_names() -> None:
    manifest = FULL["ModelVersion"]()
    manifest["metadata"]["name"] = version_name("housing", 12)
    assert ModelVersion.model_validate(manifest).spec.version == 12


def test_objects_built_in_python_validate_and_serialize_camel_case() -> None:
    spec = InferenceServiceSpec(model="iris", replicas=2)
    assert spec.to_json() == {
        "model": "iris",
        "replicas": 2,
        "rollout": {
            "strategy": "RollingUpdate",
            "autoRollback": True,
            "progressDeadlineSeconds": 600,
        },
    }
    with pytest.raises(ValidationError, match=r"spec\.replicas and spec\.autoscaling"):
        InferenceServiceSpec.model_validate(
            {"model": "iris", "replicas": 2, "autoscaling": {"maxReplicas": 3}}
        )


def test_effective_defaults_of_inference_service() -> None:
    follows_production = InferenceService.model_validate(MINIMAL["InferenceService"]())
    assert follows_production.spec.effective_stage is Stage.PRODUCTION
    assert follows_production.spec.effective_replicas == 1
    pinned = InferenceServiceSpec(model="iris", version=3)
    assert pinned.effective_stage is None


def test_from_body_accepts_mapping_views() -> None:
    body = MappingProxyType(
        {**MINIMAL["TrainingJob"](), "spec": MappingProxyType(MINIMAL["TrainingJob"]()["spec"])}
    )
    assert TrainingJob.from_body(body).spec.dataset.builtin == "iris"


def test_status_builds_a_patch_and_tolerates_unknown_fields() -> None:
    now = utc_now()
    status = TrainingJobStatus(
        observed_generation=2,
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.TRUE,
                reason="Succeeded",
                message="version 3 registered",
                last_transition_time=now,
                observed_generation=2,
            )
        ],
        runs=[TrainingRun(name="iris-3", outcome="Succeeded", version=3)],
        last_version=3,
    )
    patch = status.to_json()
    assert patch["observedGeneration"] == 2
    assert patch["conditions"][0]["lastTransitionTime"] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert patch["runs"] == [{"name": "iris-3", "outcome": "Succeeded", "version": 3}]
    reread = TrainingJobStatus.model_validate({**patch, "addedByANewerOperator": 1})
    assert reread == status
    assert reread.condition("Ready") is not None
    assert reread.condition("Stalled") is None


def test_duplicate_condition_types_are_rejected() -> None:
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Ok",
        "message": "",
        "lastTransitionTime": "2024-01-01T00:00:00Z",
    }
    with pytest.raises(ValidationError, match="duplicate condition type"):
        TrainingJobStatus.model_validate({"conditions": [condition, condition]})


def test_null_means_unset() -> None:
    manifest = MINIMAL["TrainingJob"]()
    manifest["spec"]["dataset"]["uri"] = None
    manifest["spec"]["schedule"] = None
    parsed = TrainingJob.model_validate(manifest)
    assert parsed.to_json()["spec"] == MINIMAL_DEFAULTED_SPEC["TrainingJob"]
