"""What every pod the operator creates shares: pvc:// claims and the default storage PVC."""

from __future__ import annotations

from mlplane_operator.builders.workloads import build_storage_claim, claims_of
from tests.operator.unit.objects import NAMESPACE, settings


def test_claims_are_read_from_pvc_uris_in_order_without_duplicates() -> None:
    uris = [
        "pvc://datasets/iris.csv",
        None,
        "s3://models/iris",
        "pvc://models",
        "pvc://datasets/wine.csv",
        "https://example.com/data.csv",
    ]
    assert claims_of(*uris) == ["datasets", "models"]


def test_default_storage_claim_uses_the_configured_size_and_class() -> None:
    claim = build_storage_claim(
        "mlplane-artifacts", NAMESPACE, settings(storage_pvc_size="5Gi", storage_class="fast")
    )
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == "mlplane-artifacts"
    assert claim["metadata"]["namespace"] == NAMESPACE
    assert claim["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
    assert claim["spec"]["storageClassName"] == "fast"


def test_default_storage_claim_can_be_read_write_many_for_multi_node_clusters() -> None:
    claim = build_storage_claim(
        "mlplane-artifacts", NAMESPACE, settings(storage_pvc_access_mode="ReadWriteMany")
    )
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_default_storage_claim_uses_the_default_class_when_none_is_configured() -> None:
    claim = build_storage_claim("mlplane-artifacts", NAMESPACE, settings())
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
