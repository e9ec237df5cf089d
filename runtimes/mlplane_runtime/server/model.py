"""The model runtime: one ONNX model, `load()` then `predict()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mlplane_runtime.artifacts import LoadedArtifact, load_artifact

OIP_TO_NUMPY: dict[str, Any] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT64": np.uint64,
    "UINT32": np.uint32,
    "UINT16": np.uint16,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class OnnxModel:
    """An ONNX model served under a name and version."""

    def __init__(self, name: str, version: str, uri: str, sha256: str = "", threads: int = 1):
        self.name = name
        self.version = version
        self.uri = uri
        self.expected_sha256 = sha256
        self.threads = threads
        self.ready = False
        self.sha256 = ""
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self._artifact: LoadedArtifact | None = None
        self._output_names: list[str] = []

    def load(self) -> None:
        """Read the artifact, verify its sha256 when one was given, create the session."""
        artifact = load_artifact(self.uri, self.expected_sha256, self.threads)
        self._artifact = artifact
        self.sha256 = artifact.sha256
        self.inputs = [_spec(t) for t in artifact.signature["inputs"]]
        self.outputs = [_spec(t) for t in artifact.signature["outputs"]]
        self._output_names = [t.name for t in self.outputs]
        self.ready = True

    def predict(self, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run the model on validated inputs; returns every output by name."""
        assert self._artifact is not None, "predict() before load()"
        results = self._artifact.session.run(self._output_names, inputs)
        return dict(zip(self._output_names, results, strict=True))

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": "onnxruntime_onnx",
            "inputs": [t.metadata() for t in self.inputs],
            "outputs": [t.metadata() for t in self.outputs],
        }


def _spec(tensor: dict[str, Any]) -> TensorSpec:
    return TensorSpec(tensor["name"], tensor["datatype"], tuple(tensor["shape"]))
