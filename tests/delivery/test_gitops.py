"""examples/gitops: the Argo CD Applications point at paths that exist, their sync waves
put the chart before the custom resources, and the chart values they set are valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.delivery.helm import CHART, helm
from tests.kube import REPO

GITOPS = REPO / "examples" / "gitops"


def applications() -> dict[str, dict[str, Any]]:
    found = {}
    for path in [GITOPS / "root-application.yaml", *sorted((GITOPS / "apps").glob("*.yaml"))]:
        app = yaml.safe_load(path.read_text())
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert app["kind"] == "Application"
        found[app["metadata"]["name"]] = app
    return found


def wave(app: dict[str, Any]) -> int:
    annotations = app["metadata"].get("annotations", {})
    return int(annotations.get("argocd.argoproj.io/sync-wave", "0"))


def test_applications_point_at_paths_in_this_repository() -> None:
    for name, app in applications().items():
        path = REPO / app["spec"]["source"]["path"]
        assert path.is_dir(), f"{name}: {path} does not exist"


def test_chart_syncs_before_the_custom_resources() -> None:
    apps = applications()
    assert wave(apps["mlplane"]) < wave(apps["mlplane-iris"])
    options = apps["mlplane-iris"]["spec"]["syncPolicy"]["syncOptions"]
    assert "SkipDryRunOnMissingResource=true" in options
    kinds = {
        yaml.safe_load(p.read_text())["kind"]
        for p in (REPO / apps["mlplane-iris"]["spec"]["source"]["path"]).glob("*.yaml")
    }
    assert kinds <= {"TrainingJob", "ModelVersion", "InferenceService"}


def test_chart_values_of_the_application_are_valid(helm_bin: str, tmp_path: Path) -> None:
    app = applications()["mlplane"]
    assert Path(app["spec"]["source"]["path"]) == CHART.relative_to(REPO)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    result = helm("template", "mlplane", str(CHART), "--values", str(values), check=False)
    assert result.returncode == 0, result.stderr
    assert "resource.customizations.health.mlplane.io_InferenceService" in result.stdout


@pytest.mark.parametrize("name", ["mlplane", "mlplane-iris"])
def test_child_applications_are_in_argo_cds_namespace(name: str) -> None:
    assert applications()[name]["metadata"]["namespace"] == "argocd"
