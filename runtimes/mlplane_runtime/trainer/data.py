"""Training data: scikit-learn's bundled sets, or csv/parquet files by URI.

Features are a float32 matrix; with categorical columns, an object matrix whose
categorical columns hold strings and whose other columns hold float32 values (what the
served model receives, so that training and the parity check see the same numbers)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import datasets

from mlplane_runtime.artifacts import sha256_hex
from mlplane_runtime.errors import UserError
from mlplane_runtime.storage import read_bytes
from mlplane_runtime.trainer.spec import DatasetSpec

LOADERS = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "diabetes": datasets.load_diabetes,
    "digits": datasets.load_digits,
}


@dataclass(frozen=True)
class Dataset:
    features: npt.NDArray[Any]
    target: npt.NDArray[Any]
    feature_names: list[str]
    uri: str
    sha256: str  # of the file's bytes; empty for builtin sets
    categorical: tuple[str, ...] = ()  # feature columns that hold strings

    @property
    def numeric_columns(self) -> list[int]:
        return [i for i, name in enumerate(self.feature_names) if name not in self.categorical]


def load_dataset(spec: DatasetSpec, categorical: tuple[str, ...] = ()) -> Dataset:
    if spec.builtin:
        bunch = LOADERS[spec.builtin]()
        names = [str(n) for n in getattr(bunch, "feature_names", [])]
        columns = {name: bunch.data[:, i] for i, name in enumerate(names)}
        features, names = _select(columns, spec.features or tuple(names), "builtin")
        return Dataset(features, np.asarray(bunch.target), names, f"builtin:{spec.builtin}", "")
    raw = read_bytes(spec.uri)
    columns = (
        _read_parquet(raw, spec.uri)
        if spec.format == "parquet"
        else _read_csv_arrow(raw, {spec.target, *categorical}) or _read_csv(raw, spec.uri)
    )
    if spec.target not in columns:
        raise UserError(
            f"spec.dataset.target {spec.target!r} is not a column of {spec.uri}; "
            f"columns: {', '.join(columns)}"
        )
    target_values = columns.pop(spec.target)
    if isinstance(target_values, list):  # csv text
        target_values = [_cell(value) for value in target_values]
    target = _target(target_values)
    wanted = spec.features or tuple(columns)
    absent = [name for name in categorical if name not in wanted]
    if absent:
        raise UserError(
            f"spec.estimator.categorical.columns {absent} are not feature columns of "
            f"{spec.uri}; features: {', '.join(wanted)}"
        )
    features, names = _select(columns, wanted, spec.uri, categorical)
    if features.shape[0] < 10:
        raise UserError(f"{spec.uri}: {features.shape[0]} rows; at least 10 are needed")
    return Dataset(features, target, names, spec.uri, sha256_hex(raw), categorical)


def _select(
    columns: dict[str, Any], wanted: tuple[str, ...], source: str, categorical: tuple[str, ...] = ()
) -> tuple[npt.NDArray[Any], list[str]]:
    missing = [name for name in wanted if name not in columns]
    if missing:
        raise UserError(
            f"spec.dataset.features {missing} not found in {source}; columns: {', '.join(columns)}"
        )
    if not wanted:
        raise UserError(f"{source}: no feature columns")
    numeric = [name for name in wanted if name not in categorical]
    arrays = [_numeric(columns[name], name, source) for name in numeric]
    values = np.column_stack(arrays) if arrays else np.zeros((len(columns[wanted[0]]), 0))
    if not np.isfinite(values).all():
        bad = sorted({numeric[j] for j in np.argwhere(~np.isfinite(values))[:, 1]})
        raise UserError(f"{source}: missing or non-finite values in feature columns {bad}")
    if not categorical:
        return values.astype(np.float32), list(wanted)
    features = np.empty((values.shape[0], len(wanted)), dtype=object)
    for j, name in enumerate(numeric):
        features[:, wanted.index(name)] = values[:, j].astype(np.float32)
    for name in categorical:
        features[:, wanted.index(name)] = _strings(columns[name])
    return features, list(wanted)


def _numeric(values: list[str] | npt.NDArray[Any], name: str, source: str) -> npt.NDArray[Any]:
    """A feature column as float64 (csv text: an empty cell is missing, NaN)."""
    try:
        if isinstance(values, list):
            return np.asarray([float(v) if v != "" else np.nan for v in values])
        return np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{source}: feature column {name!r} is not numeric ({exc}); name it in "
            "spec.estimator.categorical.columns if it holds categories"
        ) from exc


def _strings(values: list[str] | npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A categorical column as strings, exactly as the data has them (missing: "")."""
    return np.asarray(["" if v is None else str(v) for v in values], dtype=object)


def _target(values: list[Any] | npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Numeric targets become numbers (integers when all whole); others stay strings."""
    array = np.asarray(values)
    if array.dtype.kind in "iufb":
        numeric = array.astype(np.float64)
    else:
        try:
            numeric = np.asarray([float(v) for v in array])
        except ValueError:
            return array.astype(str)
    if np.all(np.isfinite(numeric)) and np.all(numeric == np.round(numeric)):
        return numeric.astype(np.int64)
    return numeric


def _read_csv_arrow(raw: bytes, text_columns: set[str]) -> dict[str, Any] | None:
    """The csv read by pyarrow (tens of times faster than the csv module), with the same
    result as `_read_csv`: `text_columns` (the target, the categorical ones) as stripped
    text, the others as float64 (an empty cell: NaN). None when pyarrow is not installed
    or the file is anything but clean numbers there: `_read_csv` then reads it, and says
    what is wrong with it."""
    try:
        import pyarrow as pa  # noqa: PLC0415 - optional dependency (the parquet extra)
        import pyarrow.compute as pc  # noqa: PLC0415
        import pyarrow.csv as pacsv  # noqa: PLC0415
    except ImportError:  # pragma: no cover - depends on the image
        return None
    try:
        first_line = raw.split(b"\n", 1)[0].decode("utf-8-sig")
        header = next(csv.reader([first_line]))
        names = [name.strip() for name in header]
        if len(set(names)) != len(names):
            return None
        types = {raw_name: pa.string() for raw_name, name in zip(header, names, strict=True)
                 if name in text_columns}  # fmt: skip
        table = pacsv.read_csv(
            io.BytesIO(raw), convert_options=pacsv.ConvertOptions(column_types=types)
        )
    except (UnicodeDecodeError, StopIteration, csv.Error, pa.ArrowException):
        return None
    columns: dict[str, Any] = {}
    for name, column in zip(names, table.columns, strict=True):
        if name in text_columns:
            columns[name] = pc.utf8_trim_whitespace(column).to_pylist()
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns[name] = pc.cast(column, pa.float64()).to_numpy()
        elif pa.types.is_null(column.type):  # every cell empty
            columns[name] = np.full(len(column), np.nan)
        else:
            return None
    return columns


def _read_csv(raw: bytes, uri: str) -> dict[str, list[str]]:
    try:
        reader = csv.reader(io.StringIO(raw.decode("utf-8-sig")))
        header = next(reader)
        rows = [row for row in reader if row]
    except (UnicodeDecodeError, StopIteration, csv.Error) as exc:
        raise UserError(f"{uri}: not a readable csv file: {exc}") from exc
    columns: dict[str, list[str]] = {name.strip(): [] for name in header}
    names = list(columns)
    for line, row in enumerate(rows, start=2):
        if len(row) != len(names):
            raise UserError(f"{uri}: line {line} has {len(row)} fields, header has {len(names)}")
        for name, value in zip(names, row, strict=True):
            columns[name].append(value.strip())
    return columns


def _cell(value: str) -> Any:
    text = value.strip()
    if text == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return text


def _read_parquet(raw: bytes, uri: str) -> dict[str, Any]:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency (the parquet extra)
    except ImportError as exc:  # pragma: no cover - depends on the image
        raise UserError("parquet needs pyarrow (install mlplane-runtime[parquet])") from exc
    try:
        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises ArrowInvalid and others
        raise UserError(f"{uri}: not a readable parquet file: {exc}") from exc
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
