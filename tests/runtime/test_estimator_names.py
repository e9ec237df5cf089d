"""The trainer accepts an estimator by bare name or by its public import path, as the
TrainingJob API documents, and nothing else."""

from __future__ import annotations

import pytest

from mlplane_runtime.errors import UserError
from mlplane_runtime.trainer.estimators import estimator_class


@pytest.mark.parametrize(
    "name",
    [
        "RandomForestClassifier",
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.linear_model.LogisticRegression",
    ],
)
def test_bare_and_dotted_names_resolve_to_the_same_class(name: str) -> None:
    assert estimator_class(name).__name__ == name.rsplit(".", 1)[-1]


@pytest.mark.parametrize(
    "name", ["sklearn.tree.RandomForestClassifier", "os.system", "SVC2", "builtins.eval"]
)
def test_other_names_are_refused_with_the_allowlist(name: str) -> None:
    with pytest.raises(UserError, match=r"allowed: .*RandomForestClassifier"):
        estimator_class(name)
