"""The estimator allowlist: scikit-learn estimators that skl2onnx converts (each one
verified to convert and to agree with ONNX Runtime), with optional preprocessing."""

from __future__ import annotations

import inspect
from typing import Any

from sklearn import ensemble, linear_model, naive_bayes, neighbors, neural_network, svm, tree
from sklearn.base import BaseEstimator, is_classifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from mlplane_runtime.errors import UserError
from mlplane_runtime.trainer.spec import EstimatorSpec

CLASSIFIERS: dict[str, type[BaseEstimator]] = {
    "AdaBoostClassifier": ensemble.AdaBoostClassifier,
    "DecisionTreeClassifier": tree.DecisionTreeClassifier,
    "ExtraTreesClassifier": ensemble.ExtraTreesClassifier,
    "GaussianNB": naive_bayes.GaussianNB,
    "GradientBoostingClassifier": ensemble.GradientBoostingClassifier,
    "KNeighborsClassifier": neighbors.KNeighborsClassifier,
    "LogisticRegression": linear_model.LogisticRegression,
    "MLPClassifier": neural_network.MLPClassifier,
    "RandomForestClassifier": ensemble.RandomForestClassifier,
    "SVC": svm.SVC,
}

REGRESSORS: dict[str, type[BaseEstimator]] = {
    "AdaBoostRegressor": ensemble.AdaBoostRegressor,
    "DecisionTreeRegressor": tree.DecisionTreeRegressor,
    "ElasticNet": linear_model.ElasticNet,
    "ExtraTreesRegressor": ensemble.ExtraTreesRegressor,
    "GradientBoostingRegressor": ensemble.GradientBoostingRegressor,
    "HuberRegressor": linear_model.HuberRegressor,
    "KNeighborsRegressor": neighbors.KNeighborsRegressor,
    "Lasso": linear_model.Lasso,
    "LinearRegression": linear_model.LinearRegression,
    "LinearSVR": svm.LinearSVR,
    "MLPRegressor": neural_network.MLPRegressor,
    "RandomForestRegressor": ensemble.RandomForestRegressor,
    "Ridge": linear_model.Ridge,
    "SVR": svm.SVR,
}

ALLOWED: dict[str, type[BaseEstimator]] = {**CLASSIFIERS, **REGRESSORS}

PREPROCESSORS: dict[str, type[BaseEstimator]] = {
    "MinMaxScaler": MinMaxScaler,
    "StandardScaler": StandardScaler,
}


def estimator_class(name: str) -> type[BaseEstimator]:
    """The allowed class named `name`: a bare name (RandomForestClassifier) or its public
    import path (sklearn.ensemble.RandomForestClassifier)."""
    bare = name.rsplit(".", 1)[-1]
    cls = ALLOWED.get(bare)
    if cls is not None and name != bare and name != f"{_public_module(cls)}.{bare}":
        cls = None
    if cls is None:
        raise UserError(
            f"spec.estimator.class {name!r} is not supported; allowed: {', '.join(sorted(ALLOWED))}"
        )
    return cls


def _public_module(cls: type[BaseEstimator]) -> str:
    """sklearn.ensemble._forest -> sklearn.ensemble (where users import it from)."""
    parts = cls.__module__.split(".")
    return ".".join(part for part in parts if not part.startswith("_"))


def _parameter_names(cls: type[BaseEstimator]) -> list[str]:
    signature = inspect.signature(cls.__init__)
    return sorted(p for p in signature.parameters if p != "self")


def build_estimator(spec: EstimatorSpec, seed: int) -> BaseEstimator:
    """The estimator (in a Pipeline when preprocessing is asked for), params checked."""
    cls = estimator_class(spec.class_name)
    allowed = _parameter_names(cls)
    unknown = sorted(set(spec.params) - set(allowed))
    if unknown:
        raise UserError(
            f"spec.estimator.params: {cls.__name__} has no parameter(s) {unknown}; "
            f"valid: {', '.join(allowed)}"
        )
    params: dict[str, Any] = dict(spec.params)
    if "random_state" in allowed and "random_state" not in params:
        params["random_state"] = seed
    if cls is svm.SVC:
        params.setdefault("probability", True)  # so that probabilities and roc_auc exist
    estimator = cls(**params)
    if not spec.preprocessing:
        return estimator
    steps: list[tuple[str, Any]] = []
    for index, name in enumerate(spec.preprocessing):
        if name not in PREPROCESSORS:
            raise UserError(
                f"spec.estimator.preprocessing[{index}] {name!r} is not supported; "
                f"allowed: {', '.join(sorted(PREPROCESSORS))}"
            )
        steps.append((f"{index}-{name.lower()}", PREPROCESSORS[name]()))
    steps.append(("estimator", estimator))
    return Pipeline(steps)


def is_classification(spec: EstimatorSpec) -> bool:
    return bool(is_classifier(estimator_class(spec.class_name)()))
