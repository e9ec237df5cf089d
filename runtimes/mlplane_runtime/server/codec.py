"""Open Inference Protocol (V2) and KServe V1 bodies <-> numpy, with the binary tensor
data extension that `tritonclient.http` uses by default.

Everything that can be wrong in a body raises RequestError (a 4xx with a message).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from mlplane_runtime.httpserver import RequestError, parse_json
from mlplane_runtime.server.model import OIP_TO_NUMPY

MAX_RANK = 8
MAX_ELEMENTS = 1 << 24  # per tensor; the body limit usually binds first
DATATYPES = (*OIP_TO_NUMPY, "BYTES")  # BYTES: strings, as a model's categorical inputs

Array = npt.NDArray[Any]

_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferenceRequest:
    id: str | None
    inputs: dict[str, Array]
    datatypes: dict[str, str]
    outputs: list[RequestedOutput] | None
    binary_outputs: bool  # the request-wide default (binary_data_output)
    rows: int  # the largest first dimension of the inputs (1 for a scalar)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{where} must be a JSON object")
    return value


def parse_shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANK:
        raise RequestError(f"{where}.shape must be a list of at most {MAX_RANK} integers")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise RequestError(f"{where}.shape must hold non-negative integers, got {value}")
    elements = math.prod(value)
    if elements > MAX_ELEMENTS:
        raise RequestError(f"{where}.shape {value} has more than {MAX_ELEMENTS} elements")
    # With no elements, a dimension can still be more than numpy can shape ([0, 2**40,
    # 2**40]); with some, none is larger than their number.
    if elements == 0 and max(value, default=0) > MAX_ELEMENTS:
        raise RequestError(
            f"{where}.shape {value} has a dimension above {MAX_ELEMENTS} (the most elements "
            "a tensor may have)"
        )
    return tuple(value)


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> Array:
    dtype = OIP_TO_NUMPY[datatype]
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RequestError(f"{where}.data is not a rectangular array of numbers: {exc}") from exc
    if array.dtype.kind not in _ACCEPTED_KINDS[np.dtype(dtype).kind]:
        raise RequestError(f"{where}.data does not hold {datatype} values")
    if array.size != math.prod(shape):
        raise RequestError(
            f"{where}.data has {array.size} elements but shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    return array.astype(dtype, copy=False).reshape(shape)


def from_binary(
    chunk: memoryview | bytes, datatype: str, shape: tuple[int, ...], where: str
) -> Array:
    """A tensor from its raw bytes (the binary extension, or gRPC's raw_input_contents)."""
    if datatype == "BYTES":
        return _strings_from_binary(memoryview(chunk), shape, where)
    dtype = np.dtype(OIP_TO_NUMPY[datatype])
    expected = math.prod(shape) * dtype.itemsize
    if len(chunk) != expected:
        raise RequestError(
            f"{where}: binary data has {len(chunk)} bytes, shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _strings_from_json(data: Any, shape: tuple[int, ...], where: str) -> Array:
    """BYTES as JSON: a flat or nested list of strings."""
    if not isinstance(data, list):
        raise RequestError(f"{where}.data must be a list of strings (BYTES)")
    try:
        array = np.asarray(data, dtype=object)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"{where}.data is not a rectangular array of strings: {exc}") from exc
    if not all(type(value) is str for value in array.ravel()):
        raise RequestError(f"{where}.data does not hold BYTES values (JSON strings)")
    if array.size != math.prod(shape):
        raise RequestError(
            f"{where}.data has {array.size} elements but shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    return array.reshape(shape)


def _strings_from_binary(chunk: memoryview, shape: tuple[int, ...], where: str) -> Array:
    """BYTES in the binary extension: each element a 4-byte little-endian length, then
    that many bytes (UTF-8 here: the model's string inputs are text)."""
    count, offset = math.prod(shape), 0
    items: list[str] = []
    for _ in range(count):
        if offset + 4 > len(chunk):
            raise RequestError(f"{where}: binary BYTES data ends before element {len(items)}")
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise RequestError(f"{where}: binary BYTES element {len(items)} runs past its data")
        try:
            items.append(str(chunk[offset : offset + length], "utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(f"{where}: BYTES element {len(items)} is not UTF-8: {exc}") from exc
        offset += length
    if offset != len(chunk):
        raise RequestError(
            f"{where}: binary BYTES data has {len(chunk) - offset} bytes past its {count} elements"
        )
    return np.asarray(items, dtype=object).reshape(shape)


def decode_v2(body: bytes, json_length: int | None) -> InferenceRequest:
    """Parse a V2 inference request (JSON, or JSON then binary tensors)."""
    view = memoryview(body)
    if json_length is not None:
        if json_length > len(body):
            raise RequestError(
                f"Inference-Header-Content-Length {json_length} exceeds the body size {len(body)}"
            )
        document, binary, offset = parse_json(view[:json_length]), view, json_length
    else:
        document, binary, offset = parse_json(view), view, len(body)
    document = _object(document, "the request")
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    rows = 0
    for index, raw in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        tensor = _object(raw, where)
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.name must be a non-empty string")
        where = f"input {name!r}"
        if name in inputs:
            raise RequestError(f"{where} is given twice")
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in DATATYPES:
            raise RequestError(
                f"{where}: datatype {datatype!r} is not supported; allowed: {', '.join(DATATYPES)}"
            )
        shape = parse_shape(tensor.get("shape"), where)
        rows = max(rows, shape[0] if shape else 1)
        parameters = _object(tensor.get("parameters") or {}, f"{where}.parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise RequestError(f"{where}: binary_data_size must be a non-negative integer")
            if offset + size > len(body):
                raise RequestError(f"{where}: binary_data_size {size} runs past the body")
            inputs[name] = from_binary(binary[offset : offset + size], datatype, shape, where)
            offset += size
        elif "data" in tensor:
            inputs[name] = (
                _strings_from_json(tensor["data"], shape, where)
                if datatype == "BYTES"
                else _from_json(tensor["data"], datatype, shape, where)
            )
        else:
            raise RequestError(f"{where} has no 'data'")
        datatypes[name] = datatype
    if offset != len(body):
        raise RequestError(f"{len(body) - offset} bytes of binary data belong to no input")
    request_parameters = _object(document.get("parameters") or {}, "parameters")
    binary_default = request_parameters.get("binary_data_output") is True
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    return InferenceRequest(
        id=request_id,
        inputs=inputs,
        datatypes=datatypes,
        outputs=_outputs(document.get("outputs"), binary_default),
        binary_outputs=binary_default,
        rows=rows,
    )


def _outputs(raw: Any, binary_default: bool) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise RequestError("'outputs' must be a list of {name} objects")
    requested = []
    for index, item in enumerate(raw):
        output = _object(item, f"outputs[{index}]")
        name = output.get("name")
        if not isinstance(name, str):
            raise RequestError(f"outputs[{index}].name must be a string")
        parameters = _object(output.get("parameters") or {}, f"outputs[{index}].parameters")
        binary = parameters.get("binary_data", binary_default) is True
        requested.append(RequestedOutput(name, binary))
    return requested


def bytes_tensor(array: Array) -> bytes:
    items = [str(v).encode() if not isinstance(v, bytes) else v for v in array.ravel()]
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def encode_v2(
    header: dict[str, Any], outputs: list[tuple[str, str, Array, bool]]
) -> tuple[bytes, int | None]:
    """The V2 response body, and the JSON length when binary tensors follow it."""
    entries = []
    chunks: list[bytes] = []
    for name, datatype, array, binary in outputs:
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            chunk = bytes_tensor(array) if datatype == "BYTES" else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        elif array.dtype.kind in "OUS":
            entry["data"] = [str(v) for v in array.ravel()]
        else:
            entry["data"] = array.ravel()
        entries.append(entry)
    header["outputs"] = entries
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return text, None
    return b"".join([text, *chunks]), len(text)


@dataclass(slots=True)
class V1Request:
    instances: Array  # 2-D float32
    id: Any  # the client's "id", checked by the data plane


def decode_v1(body: bytes) -> V1Request:
    """KServe V1: {"instances": [[...], ...], "id": optional} with the instances as a 2-D
    float32 array."""
    document = _object(parse_json(body), "the request")
    instances = document.get("instances")
    if not isinstance(instances, list) or not instances:
        raise RequestError("'instances' must be a non-empty list of rows")
    if len(instances) > MAX_ELEMENTS:
        raise RequestError(f"too many instances (limit {MAX_ELEMENTS})")
    try:
        array = np.asarray(instances)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RequestError(f"'instances' is not a rectangular array of numbers: {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise RequestError("'instances' must hold numbers")
    if array.ndim != 2:
        raise RequestError(f"'instances' must be a list of rows (2-D), got {array.ndim}-D")
    return V1Request(array.astype(np.float32, copy=False), document.get("id"))


def to_list(array: Array) -> list[Any]:
    if array.dtype.kind in "OUS":
        return [str(v) for v in array.ravel()]
    result: list[Any] = array.tolist()
    return result
