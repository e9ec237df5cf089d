"""Conversion to ONNX and the parity check against scikit-learn.

The ONNX model has one input ``input`` (FP32, ``[-1, n_features]``), or, when the data
has categorical columns, one input per column named after it (FP32 ``[-1, 1]``, BYTES
``[-1, 1]`` for a categorical column), so that a client sends rows as the data has them.
XGBoost and LightGBM estimators convert with onnxmltools' converters, registered with
skl2onnx so that they convert inside a pipeline too. Classifiers output
``label`` (``[-1]``) and ``probabilities`` (FP32, ``[-1, n_classes]``) as plain tensors
(no ZipMap). Regressors output ``predictions`` (FP32, ``[-1, 1]``); skl2onnx names it
``variable``, which we rename because it says nothing to a caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from skl2onnx import convert_sklearn, get_latest_tested_opset_version
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import BaseEstimator, is_classifier

from mlplane_runtime.artifacts import new_session
from mlplane_runtime.errors import UserError

INPUT_NAME = "input"
REGRESSION_OUTPUT = "predictions"
PARITY_RTOL = 1e-3
BOOSTER_ML_OPSET = 3  # the ai.onnx.ml opset skl2onnx writes for onnxmltools' trees
_REGISTERED: set[type[Any]] = set()  # booster classes whose converter skl2onnx knows

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class InputLayout:
    """How rows reach the model: one FP32 tensor `input` holding every feature column,
    or (with categorical columns) one named `[-1, 1]` input per column."""

    columns: tuple[str, ...]
    categorical: tuple[str, ...] = ()

    def initial_types(self) -> list[tuple[str, Any]]:
        if not self.categorical:
            return [(INPUT_NAME, FloatTensorType([None, len(self.columns)]))]
        return [
            (
                name,
                StringTensorType([None, 1])
                if name in self.categorical
                else FloatTensorType([None, 1]),
            )
            for name in self.columns
        ]

    def feeds(self, rows: Array) -> dict[str, Array]:
        """ONNX Runtime inputs for rows of the training data (float32, or object arrays
        whose categorical columns hold strings)."""
        if not self.categorical:
            return {INPUT_NAME: rows}
        return {
            name: rows[:, i : i + 1].astype(str if name in self.categorical else np.float32)
            for i, name in enumerate(self.columns)
        }


def _final_estimator(model: BaseEstimator) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _is_booster(estimator: Any) -> bool:
    return type(estimator).__module__.split(".")[0] in ("xgboost", "lightgbm")


def _register_booster(cls: type[Any]) -> None:
    """Teach skl2onnx an XGBoost or LightGBM estimator class (onnxmltools' converter),
    so that it converts alone and as the last step of a pipeline. Imported here: only a
    run that trains one pays for the imports, and only for its own library."""
    if cls in _REGISTERED:
        return
    from skl2onnx import update_registered_converter  # noqa: PLC0415
    from skl2onnx.common.shape_calculator import (  # noqa: PLC0415
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    if cls.__module__.startswith("xgboost"):
        from onnxmltools.convert.xgboost.operator_converters import XGBoost  # noqa: PLC0415

        converter, alias = XGBoost.convert_xgboost, f"XGBoost{cls.__name__}"
        regressor_options = None
    else:
        from onnxmltools.convert.lightgbm.operator_converters import LightGbm  # noqa: PLC0415

        converter, alias = LightGbm.convert_lightgbm, f"LightGbm{cls.__name__}"
        regressor_options = {"split": None}
    if is_classifier(cls()):
        options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
        update_registered_converter(cls, alias, calculate_linear_classifier_output_shapes,
                                    converter, options=options)  # fmt: skip
    else:
        update_registered_converter(cls, alias, calculate_linear_regressor_output_shapes,
                                    converter, options=regressor_options)  # fmt: skip
    _REGISTERED.add(cls)


def to_onnx(model: BaseEstimator, layout: InputLayout, classification: bool) -> bytes:
    """Serialised ONNX model for a fitted estimator or pipeline."""
    final = _final_estimator(model)
    options = {id(final): {"zipmap": False}} if classification else None
    target_opset: int | dict[str, int] | None = None
    if _is_booster(final):
        _register_booster(type(final))
        target_opset = {"": get_latest_tested_opset_version(), "ai.onnx.ml": BOOSTER_ML_OPSET}
    try:
        proto = convert_sklearn(
            model,
            initial_types=layout.initial_types(),
            options=options,
            target_opset=target_opset,
        )
    except Exception as exc:  # skl2onnx raises many kinds for unsupported settings
        raise UserError(f"the fitted estimator cannot be converted to ONNX: {exc}") from exc
    if not classification:
        _rename_output(proto, proto.graph.output[0].name, REGRESSION_OUTPUT)
    proto.doc_string = "trained by mlplane-train"
    return bytes(proto.SerializeToString())


def _rename_output(proto: onnx.ModelProto, old: str, new: str) -> None:
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    for output in proto.graph.output:
        if output.name == old:
            output.name = new


def check_parity(
    onnx_bytes: bytes,
    model: BaseEstimator,
    features: Array,
    layout: InputLayout,
    classification: bool,
) -> dict[str, float]:
    """Run ONNX Runtime and scikit-learn on the same rows; fail on any disagreement.

    Classifiers must give identical labels; regressors must agree within a relative
    tolerance (float32 versus float64 arithmetic). Returns the measured agreement.
    """
    session = new_session(onnx_bytes)
    outputs = session.run(None, layout.feeds(features))
    expected = model.predict(features)
    if classification:
        labels = np.asarray(outputs[0])
        mismatched = int(np.sum(labels.astype(str) != np.asarray(expected).astype(str)))
        if mismatched:
            raise UserError(
                f"parity check failed: ONNX Runtime and scikit-learn disagree on "
                f"{mismatched} of {len(expected)} hold-out labels"
            )
        return {"rows": float(len(expected)), "labelMismatches": 0.0}
    predictions = np.asarray(outputs[0], dtype=np.float64).ravel()
    reference = np.asarray(expected, dtype=np.float64).ravel()
    scale = max(float(np.max(np.abs(reference))), 1e-6)
    worst = float(np.max(np.abs(predictions - reference)))
    if not np.allclose(predictions, reference, rtol=PARITY_RTOL, atol=PARITY_RTOL * scale):
        raise UserError(
            f"parity check failed: ONNX Runtime and scikit-learn differ by up to {worst:.6g} "
            f"(tolerance {PARITY_RTOL} relative)"
        )
    return {"rows": float(len(reference)), "maxAbsError": round(worst, 9)}
