"""Conversion to ONNX and the parity check against scikit-learn.

The ONNX model has one input ``input`` (FP32, ``[-1, n_features]``). Classifiers output
``label`` (``[-1]``) and ``probabilities`` (FP32, ``[-1, n_classes]``) as plain tensors
(no ZipMap). Regressors output ``predictions`` (FP32, ``[-1, 1]``); skl2onnx names it
``variable``, which we rename because it says nothing to a caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator

from mlplane_runtime.artifacts import new_session
from mlplane_runtime.errors import UserError

INPUT_NAME = "input"
REGRESSION_OUTPUT = "predictions"
PARITY_RTOL = 1e-3


def _final_estimator(model: BaseEstimator) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def to_onnx(model: BaseEstimator, n_features: int, classification: bool) -> bytes:
    """Serialised ONNX model for a fitted estimator or pipeline."""
    options = {id(_final_estimator(model)): {"zipmap": False}} if classification else None
    try:
        proto = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options=options,
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
    features: npt.NDArray[np.float32],
    classification: bool,
) -> dict[str, float]:
    """Run ONNX Runtime and scikit-learn on the same rows; fail on any disagreement.

    Classifiers must give identical labels; regressors must agree within a relative
    tolerance (float32 versus float64 arithmetic). Returns the measured agreement.
    """
    session = new_session(onnx_bytes)
    outputs = session.run(None, {INPUT_NAME: features})
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
