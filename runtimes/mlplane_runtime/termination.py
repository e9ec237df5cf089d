"""The container termination message: a compact JSON result the operator reads."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

DEFAULT_PATH = "/dev/termination-log"
MAX_BYTES = 4096  # Kubernetes truncates termination messages at 4 KiB
# What goes first when a result is too large, as (holder, key): "" is the result itself.
# A search's trial list is in result.json in full; the best trial stays in any case.
SHED = (
    ("", "libraries"),
    ("search", "trialResults"),
    ("estimator", "params"),
    ("", "signature"),
    ("", "metrics"),
)


def termination_log_path() -> str:
    return os.environ.get("MLPLANE_TERMINATION_LOG", DEFAULT_PATH)


def compact(result: dict[str, Any]) -> str:
    """Serialise `result`; shed the bulkiest optional keys until it fits in 4 KiB."""
    text = json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)
    for holder_key, key in SHED:
        if len(text.encode()) <= MAX_BYTES:
            break
        holder = result.get(holder_key, {}) if holder_key else result
        if key in holder:
            holder[key] = {"truncated": True}
            text = json.dumps(result, separators=(",", ":"), sort_keys=True, default=str)
    if len(text.encode()) > MAX_BYTES:
        text = json.dumps({"error": text[:3000], "truncated": True})
    return text


def write_result(result: dict[str, Any]) -> str:
    """Write `result` to the termination log (best effort) and to stdout; return the text."""
    text = compact(result)
    path = termination_log_path()
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        print(f"warning: cannot write termination log {path}: {exc}", file=sys.stderr)
    print(text, flush=True)
    return text


def write_error(message: str, reason: str) -> None:
    """Report a failure on stderr and in the termination log."""
    print(f"error ({reason}): {message}", file=sys.stderr, flush=True)
    write_result({"error": message, "reason": reason})
