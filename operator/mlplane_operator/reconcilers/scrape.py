"""Bounded HTTP reads of serving pods (the server's /metrics, the monitor's /drift).

A pod runs whatever image its InferenceService names, so what it answers is untrusted:
each read is capped in bytes and in total time (not only per socket read, which a pod
trickling one byte a second would defeat), follows no redirect and uses no proxy, and
the pods are read in parallel so that many pods cost the time of one. A pod that does
not answer within the bounds counts as unreadable (None), never as a good reading.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait

log = logging.getLogger(__name__)
MAX_BYTES = 1 << 20  # /metrics of mlplane-serve is a few KiB
SECONDS = 2.0  # per pod, for the whole request
MAX_PARALLEL = 16
CHUNK = 64 << 10


def fetch(
    ip: str, port: int, path: str, max_bytes: int = MAX_BYTES, seconds: float = SECONDS
) -> str | None:
    """GET http://ip:port/path; the body if it is a 200 within the bounds, else None."""
    deadline = time.monotonic() + seconds
    connection = http.client.HTTPConnection(ip, port, timeout=seconds)
    try:
        connection.request("GET", path, headers={"Accept": "text/plain, application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return None
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            return None
        body = bytearray()
        while chunk := response.read1(CHUNK):
            body += chunk
            if len(body) > max_bytes or time.monotonic() > deadline:
                return None
        return body.decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as error:
        log.info("could not read %s from %s:%d: %s", path, ip, port, error)
        return None
    finally:
        connection.close()


def fetch_all(
    targets: Iterable[tuple[str, int, str]], seconds: float = SECONDS
) -> list[str | None]:
    """fetch() every (ip, port, path) in parallel; in the order given. The whole call
    takes at most about `seconds` (plus one socket timeout) whatever the pods do."""
    targets = list(targets)
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        futures = [
            pool.submit(fetch, ip, port, path, MAX_BYTES, seconds) for ip, port, path in targets
        ]
        done, _ = wait(futures, timeout=seconds * (1 + len(targets) // MAX_PARALLEL) + 1)
        return [future.result() if future in done else None for future in futures]
