"""Model artifacts: sha256, the ONNX signature in Open Inference Protocol terms, and
verification (exists, sha256 matches, loads in ONNX Runtime, matches a declared
signature). The trainer's ``verify`` mode and the server share these functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from mlplane_runtime.errors import IntegrityError, UserError
from mlplane_runtime.storage import read_bytes

MODEL_FILE = "model.onnx"

# ONNX Runtime type strings -> Open Inference Protocol datatypes.
ORT_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint64)": "UINT64",
    "tensor(uint32)": "UINT32",
    "tensor(uint16)": "UINT16",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}

Signature = dict[str, list[dict[str, Any]]]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_uri(uri: str) -> str:
    """Accept either the model file's URI or the run directory that holds `model.onnx`."""
    return uri if uri.endswith(".onnx") else f"{uri.rstrip('/')}/{MODEL_FILE}"


def _tensor(arg: Any) -> dict[str, Any]:
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape]
    return {"name": arg.name, "datatype": ORT_TO_OIP.get(arg.type, arg.type), "shape": shape}


def session_signature(session: ort.InferenceSession) -> Signature:
    """Inputs and outputs as Open Inference Protocol tensor metadata."""
    return {
        "inputs": [_tensor(arg) for arg in session.get_inputs()],
        "outputs": [_tensor(arg) for arg in session.get_outputs()],
    }


def new_session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session; `threads` intra-op threads (1 suits small pods)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises several private exception types
        raise UserError(f"the artifact does not load in ONNX Runtime: {exc}") from exc


def check_sha256(data: bytes, expected: str, uri: str) -> str:
    """Return the actual sha256; raise IntegrityError when it differs from `expected`."""
    actual = sha256_hex(data)
    if expected and actual != expected.strip().lower():
        raise IntegrityError(f"{uri}: sha256 mismatch: expected {expected}, found {actual}")
    return actual


def signature_mismatches(actual: Signature, declared: Signature) -> list[str]:
    """What differs between the model's signature and a declared one (empty when equal)."""
    problems: list[str] = []
    for kind in ("inputs", "outputs"):
        have = {t["name"]: t for t in actual.get(kind, [])}
        want = {t["name"]: t for t in declared.get(kind, [])}
        for name in sorted(want.keys() - have.keys()):
            problems.append(f"{kind[:-1]} {name!r} is declared but not in the model")
        for name in sorted(have.keys() - want.keys()):
            problems.append(f"{kind[:-1]} {name!r} is in the model but not declared")
        for name in sorted(have.keys() & want.keys()):
            for field in ("datatype", "shape"):
                if field in want[name] and list_or(want[name][field]) != list_or(have[name][field]):
                    problems.append(
                        f"{kind[:-1]} {name!r}: declared {field} {want[name][field]}, "
                        f"model has {have[name][field]}"
                    )
    return problems


def list_or(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


@dataclass(frozen=True)
class LoadedArtifact:
    uri: str
    data: bytes
    sha256: str
    session: ort.InferenceSession
    signature: Signature


def load_artifact(uri: str, sha256: str = "", threads: int = 1) -> LoadedArtifact:
    """Read the model at `uri`, check its sha256 (when given) and load it in ONNX Runtime."""
    uri = model_uri(uri)
    data = read_bytes(uri)
    actual = check_sha256(data, sha256, uri)
    session = new_session(data, threads)
    return LoadedArtifact(uri, data, actual, session, session_signature(session))


def verify_artifact(uri: str, sha256: str, signature: Signature | None = None) -> dict[str, Any]:
    """The ModelVersion check: exists, sha256 matches, loads, matches the signature."""
    if not sha256:
        raise UserError("verification needs the expected sha256")
    artifact = load_artifact(uri, sha256)
    if signature is not None:
        problems = signature_mismatches(artifact.signature, signature)
        if problems:
            raise UserError(f"{artifact.uri}: signature mismatch: " + "; ".join(problems))
    return {
        "verified": True,
        "uri": artifact.uri,
        "sha256": artifact.sha256,
        "sizeBytes": len(artifact.data),
        "signature": artifact.signature,
    }
