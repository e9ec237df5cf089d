"""The prediction log and the feedback beside it, as Parquet files on storage.

Layout under an InferenceService's root (``<storage>/<namespace>/<inferenceservice>``)::

    predictions/<YYYY-MM-DD>/<first ms>-<last ms>-<pod>-<seq>.parquet
    feedback/<YYYY-MM-DD>/<ms>-<pod>-<token>.parquet

Every file is written once under a name no other writer uses (the pod's name, a
sequence number or a random token), so replicas never contend and a reader needs no
lock: it lists the days of a window and reads the files whose times overlap it.

A prediction file has one record per predicted row: ``id`` (the request id), ``row``
(its index in the request), ``time`` (when the server answered), ``version``, ``input``
(the row, FP32) and ``prediction`` (the first output: a label or a value). A feedback
file has one record per request answered: ``id``, ``truth`` (the JSON list of true
values, one per row of the request) and ``time`` (when it arrived).
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mlplane_runtime.storage import list_objects, read_bytes, write_object

PREDICTIONS = "predictions"
FEEDBACK = "feedback"

Truth = list[Any]  # one JSON scalar (a number or a string) per row of the request


@dataclass
class LoggedRows:
    """Rows a server answered, as the monitor received them: per request its id, row
    count and time; per row its input and first output."""

    rows: npt.NDArray[np.float32]  # (n, features)
    predictions: list[Any] | None  # one per row
    ids: list[str]
    counts: list[int]
    times: list[float]  # epoch seconds, per request
    version: str


@dataclass
class Feedback:
    ids: list[str] = field(default_factory=list)
    truths: list[Truth] = field(default_factory=list)


def _day(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d")


def _days(start: float, end: float) -> Iterator[str]:
    day = datetime.fromtimestamp(start, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.timestamp() <= end:
        yield day.strftime("%Y-%m-%d")
        day += timedelta(days=1)


def predictions_table(batches: list[LoggedRows]) -> pa.Table:
    """One record per row of `batches` (all from one server, so one version)."""
    ids: list[str] = []
    rows: list[int] = []
    times: list[int] = []
    for batch in batches:
        for request_id, count, when in zip(batch.ids, batch.counts, batch.times, strict=True):
            ids.extend([request_id] * count)
            rows.extend(range(count))
            times.extend([int(when * 1000)] * count)
    inputs = np.concatenate([b.rows for b in batches]).astype(np.float32, copy=False)
    width = inputs.shape[1] if inputs.ndim == 2 else 0
    predictions: list[Any] = []
    for batch in batches:
        predictions.extend(batch.predictions or [None] * len(batch.rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "row": pa.array(rows, pa.int32()),
            "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
            "version": pa.array([b.version for b in batches for _ in range(len(b.rows))]),
            "input": pa.FixedSizeListArray.from_arrays(pa.array(inputs.ravel()), width),
            "prediction": pa.array(predictions),
        }
    )


def _parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_predictions(root: str, batches: list[LoggedRows], pod: str, sequence: int) -> str:
    """Write `batches` as one file; returns its URI."""
    times = [t for b in batches for t in b.times]
    first, last = int(min(times) * 1000), int(max(times) * 1000)
    name = f"{first:013d}-{last:013d}-{pod}-{sequence:06d}.parquet"
    uri = f"{root.rstrip('/')}/{PREDICTIONS}/{_day(min(times))}/{name}"
    write_object(uri, _parquet(predictions_table(batches)))
    return uri


def write_feedback(root: str, feedback: Feedback, pod: str, now: float) -> str:
    """Write one request's feedback as its own file; returns its URI."""
    name = f"{int(now * 1000):013d}-{pod}-{secrets.token_hex(6)}.parquet"
    uri = f"{root.rstrip('/')}/{FEEDBACK}/{_day(now)}/{name}"
    table = pa.table(
        {
            "id": pa.array(feedback.ids, pa.string()),
            "truth": pa.array([json.dumps(t) for t in feedback.truths], pa.string()),
            "time": pa.array([int(now * 1000)] * len(feedback.ids), pa.timestamp("ms", tz="UTC")),
        }
    )
    write_object(uri, _parquet(table))
    return uri


def _times_of(uri: str) -> tuple[int, int] | None:
    """(first, last) ms from a file's name, or None for a name this layout never writes."""
    parts = uri.rsplit("/", 1)[-1].split("-")
    if len(parts) < 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])


def _ms_of(uri: str) -> int | None:
    head = uri.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def prediction_files(root: str, start: float, end: float) -> list[str]:
    """The prediction files with rows in [start, end] (epoch seconds)."""
    found = []
    for day in _days(start - 86400, end):  # a file is filed under its first row's day
        for uri in list_objects(f"{root.rstrip('/')}/{PREDICTIONS}/{day}"):
            times = _times_of(uri)
            if not uri.endswith(".parquet") or times is None:
                continue
            if times[1] >= start * 1000 and times[0] <= end * 1000:
                found.append(uri)
    return found


def feedback_files(root: str, start: float, end: float) -> list[str]:
    """The feedback files that arrived in [start, end]."""
    found = []
    for day in _days(start, end):
        for uri in list_objects(f"{root.rstrip('/')}/{FEEDBACK}/{day}"):
            ms = _ms_of(uri)
            if uri.endswith(".parquet") and ms is not None and start * 1000 <= ms <= end * 1000:
                found.append(uri)
    return found


def read_predictions(root: str, start: float, end: float) -> pa.Table:
    """The logged rows answered in [start, end]: id, row, version, prediction."""
    columns = ["id", "row", "time", "version", "prediction"]
    tables = []
    for uri in prediction_files(root, start, end):
        table = pq.read_table(io.BytesIO(read_bytes(uri)), columns=columns)
        table = table.set_column(4, "prediction", table["prediction"].cast(pa.string()))
        tables.append(table)
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    joined = pa.concat_tables(tables)
    moments = joined["time"].cast(pa.int64()).to_numpy()
    keep = (moments >= int(start * 1000)) & (moments <= int(end * 1000))
    return joined.filter(pa.array(keep))


@dataclass
class LabeledRows:
    """Logged input rows that feedback labeled: the training data production adds."""

    inputs: npt.NDArray[np.float32]  # (n, width)
    truths: list[Any]  # the true value of each row
    unusable: int = 0  # rows with feedback but no true value for them, or another width


def read_labeled_rows(root: str, start: float, end: float, width: int) -> LabeledRows:
    """The rows logged in [start, end] whose request got feedback in [start, end], each
    with its true value; rows of another width than `width` (another model's inputs)
    are counted as unusable. A row logged twice counts once."""
    feedback = read_feedback(root, start, end)
    chunks: list[npt.NDArray[np.float32]] = []
    truths: list[Any] = []
    unusable = 0
    seen: set[tuple[str, int]] = set()
    for uri in prediction_files(root, start, end) if feedback else []:
        table = pq.read_table(io.BytesIO(read_bytes(uri)), columns=["id", "row", "time", "input"])
        moments = table["time"].cast(pa.int64()).to_numpy()
        inside = (moments >= int(start * 1000)) & (moments <= int(end * 1000))
        keep: list[int] = []
        for index, (request_id, row) in enumerate(
            zip(table["id"].to_pylist(), table["row"].to_pylist(), strict=True)
        ):
            truth = feedback.get(request_id)
            if truth is None or not inside[index] or (request_id, row) in seen:
                continue
            seen.add((request_id, row))
            if 0 <= row < len(truth):
                keep.append(index)
                truths.append(truth[row])
            else:
                unusable += 1
        if not keep:
            continue
        size = table.schema.field("input").type.list_size
        if size != width:
            unusable += len(keep)
            del truths[len(truths) - len(keep) :]
            continue
        flat = table["input"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        chunks.append(flat.reshape(-1, size)[keep].astype(np.float32, copy=False))
    inputs = np.concatenate(chunks) if chunks else np.empty((0, width), np.float32)
    return LabeledRows(inputs, truths, unusable)


def read_feedback(root: str, start: float, end: float) -> dict[str, Truth]:
    """Request id -> truth, for the feedback that arrived in [start, end]; when one id
    was answered twice, the later answer wins."""
    by_id: dict[str, tuple[int, Truth]] = {}
    for uri in feedback_files(root, start, end):
        table = pq.read_table(io.BytesIO(read_bytes(uri)))
        moments = table["time"].cast(pa.int64()).to_pylist()
        for request_id, truth, moment in zip(
            table["id"].to_pylist(), table["truth"].to_pylist(), moments, strict=True
        ):
            if request_id not in by_id or by_id[request_id][0] <= moment:
                by_id[request_id] = (moment, orjson.loads(truth))
    return {request_id: truth for request_id, (_, truth) in by_id.items()}
