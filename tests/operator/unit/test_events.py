"""The Event recorder: a reconcile never waits for an Event, none is lost while the API
server keeps up, and what cannot be posted is counted, not raised."""

from __future__ import annotations

import threading
from typing import Any

from mlplane_operator import metrics
from mlplane_operator.kube import EventRecorder


def event(reason: str) -> dict[str, Any]:
    return {"reason": reason, "involvedObject": {"name": "iris"}}


def dropped() -> float:
    return metrics.REGISTRY.get_sample_value("mlplane_operator_events_dropped_total") or 0.0


def test_events_are_posted_in_order_off_the_callers_thread() -> None:
    posted: list[tuple[str, str]] = []
    recorder = EventRecorder(
        lambda e: posted.append((e["reason"], threading.current_thread().name))
    )
    for reason in ("RunStarted", "RunSucceeded", "Registered"):
        recorder.record(event(reason))
    assert recorder.flush(timeout=5)
    assert [reason for reason, _ in posted] == ["RunStarted", "RunSucceeded", "Registered"]
    assert {thread for _, thread in posted} == {"events"}


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_reconcile() -> None:
    release = threading.Event()
    recorder = EventRecorder(lambda e: release.wait(5), capacity=2)
    before = dropped()
    for number in range(6):  # one being posted, two queued, the rest dropped
        recorder.record(event(f"E{number}"))
    assert 3 <= dropped() - before <= 4
    release.set()
    assert recorder.flush(timeout=5)


def test_an_event_the_api_server_refuses_is_counted_and_the_next_still_posted() -> None:
    posted: list[str] = []

    def post(e: dict[str, Any]) -> None:
        if e["reason"] == "Refused":
            raise RuntimeError("422")
        posted.append(e["reason"])

    recorder = EventRecorder(post)
    before = dropped()
    recorder.record(event("Refused"))
    recorder.record(event("Next"))
    assert recorder.flush(timeout=5)
    assert posted == ["Next"]
    assert dropped() - before == 1
