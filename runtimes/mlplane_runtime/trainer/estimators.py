"""The estimator allowlist: scikit-learn estimators that skl2onnx converts and the
XGBoost and LightGBM ones that onnxmltools converts (each one verified to convert and to
agree with ONNX Runtime), with optional preprocessing and categorical encoding."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sklearn import ensemble, linear_model, naive_bayes, neighbors, neural_network, svm, tree
from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from mlplane_runtime.errors import UserError
from mlplane_runtime.trainer.spec import CategoricalSpec, EstimatorSpec

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

# Gradient-boosted trees, imported on first use (xgboost and lightgbm take a while to
# import, and most runs need neither): name -> the public module users import it from.
BOOSTERS: dict[str, str] = {
    "LGBMClassifier": "lightgbm",
    "LGBMRegressor": "lightgbm",
    "XGBClassifier": "xgboost",
    "XGBRegressor": "xgboost",
}

ALLOWED: tuple[str, ...] = tuple(sorted([*CLASSIFIERS, *REGRESSORS, *BOOSTERS]))

PREPROCESSORS: dict[str, type[BaseEstimator]] = {
    "MinMaxScaler": MinMaxScaler,
    "StandardScaler": StandardScaler,
}


def estimator_class(name: str) -> type[BaseEstimator]:
    """The allowed class named `name`: a bare name (RandomForestClassifier) or its public
    import path (sklearn.ensemble.RandomForestClassifier)."""
    bare = name.rsplit(".", 1)[-1]
    if bare in BOOSTERS and name in (bare, f"{BOOSTERS[bare]}.{bare}"):
        booster: type[BaseEstimator] = getattr(importlib.import_module(BOOSTERS[bare]), bare)
        return booster
    cls = CLASSIFIERS.get(bare) or REGRESSORS.get(bare)
    if cls is not None and name != bare and name != f"{_public_module(cls)}.{bare}":
        cls = None
    if cls is None:
        raise UserError(
            f"spec.estimator.class {name!r} is not supported; allowed: {', '.join(ALLOWED)}"
        )
    return cls


def _public_module(cls: type[BaseEstimator]) -> str:
    """sklearn.ensemble._forest -> sklearn.ensemble (where users import it from)."""
    parts = cls.__module__.split(".")
    return ".".join(part for part in parts if not part.startswith("_"))


def parameter_names(cls: type[BaseEstimator]) -> list[str]:
    """The constructor parameters of `cls` (XGBoost's take **kwargs: ask get_params)."""
    signature = inspect.signature(cls.__init__)
    named = {p for p in signature.parameters if p not in ("self", "kwargs")}
    return sorted(named | set(cls().get_params(deep=False)))


def check_params(cls: type[BaseEstimator], params: dict[str, Any], where: str) -> None:
    allowed = parameter_names(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UserError(
            f"{where}: {cls.__name__} has no parameter(s) {unknown}; valid: {', '.join(allowed)}"
        )


def build_estimator(
    spec: EstimatorSpec,
    seed: int,
    columns: list[str],
    overrides: dict[str, Any] | None = None,
) -> BaseEstimator:
    """The estimator, params checked, in a Pipeline when preprocessing or categorical
    encoding is asked for. `columns` are the feature columns in order; `overrides` are a
    search trial's parameters, on top of spec.params."""
    cls = estimator_class(spec.class_name)
    check_params(cls, spec.params, "spec.estimator.params")
    params: dict[str, Any] = {**spec.params, **(overrides or {})}
    allowed = parameter_names(cls)
    if "random_state" in allowed and "random_state" not in params:
        params["random_state"] = seed
    if cls is svm.SVC:
        params.setdefault("probability", True)  # so that probabilities and roc_auc exist
    if spec.class_name.rsplit(".", 1)[-1] in ("LGBMClassifier", "LGBMRegressor"):
        params.setdefault("verbose", -1)  # LightGBM logs to stdout, where the result goes
    try:
        estimator = cls(**params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"spec.estimator.params: {cls.__name__} refuses them: {exc}") from exc
    scalers = _scalers(spec.preprocessing)
    if spec.categorical is not None:
        encoder = _column_encoder(spec.categorical, columns, scalers)
        return Pipeline([("columns", encoder), ("estimator", estimator)])
    if not scalers:
        return estimator
    return Pipeline([*scalers, ("estimator", estimator)])


def _scalers(names: tuple[str, ...]) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    for index, name in enumerate(names):
        if name not in PREPROCESSORS:
            raise UserError(
                f"spec.estimator.preprocessing[{index}] {name!r} is not supported; "
                f"allowed: {', '.join(sorted(PREPROCESSORS))}"
            )
        steps.append((f"{index}-{name.lower()}", PREPROCESSORS[name]()))
    return steps


def _column_encoder(
    categorical: CategoricalSpec, columns: list[str], scalers: list[tuple[str, Any]]
) -> ColumnTransformer:
    """Encode the categorical columns; the others pass through (or the scalers)."""
    missing = [name for name in categorical.columns if name not in columns]
    if missing:
        raise UserError(
            f"spec.estimator.categorical.columns {missing} are not feature columns; "
            f"features: {', '.join(columns)}"
        )
    encoded = [i for i, name in enumerate(columns) if name in categorical.columns]
    numeric = [i for i, name in enumerate(columns) if name not in categorical.columns]
    encoder: Any = (
        OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        if categorical.encoder == "OneHotEncoder"
        else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    )
    transformers: list[tuple[str, Any, list[int]]] = [("categorical", encoder, encoded)]
    if numeric:
        transformers.append(("numeric", Pipeline(scalers) if scalers else "passthrough", numeric))
    return ColumnTransformer(transformers, sparse_threshold=0)


def is_classification(spec: EstimatorSpec) -> bool:
    return bool(is_classifier(estimator_class(spec.class_name)()))
