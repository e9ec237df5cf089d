"""Reads of serving pods are bounded: in bytes, in total time (against a pod that
trickles its answer), without redirects, in parallel; a bad answer reads as None."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplane_operator.reconcilers import scrape


class Pod(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._answer(200, b"mlplane_requests_total 1\n")
        elif self.path == "/huge":
            self._answer(200, b"x" * (scrape.MAX_BYTES + 1), declare=False)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/trickle":
            self.send_response(200)
            self.end_headers()
            for _ in range(50):  # one byte every 0.1 s: each read is quick, the whole is not
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)

    def _answer(self, code: int, body: bytes, declare: bool = True) -> None:
        self.send_response(code)
        if declare:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def pod() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pod)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_good_answer_is_read(pod: int) -> None:
    assert scrape.fetch("127.0.0.1", pod, "/metrics") == "mlplane_requests_total 1\n"


def test_an_answer_above_the_size_cap_is_unreadable(pod: int) -> None:
    assert scrape.fetch("127.0.0.1", pod, "/huge") is None


def test_a_redirect_is_not_followed(pod: int) -> None:
    assert scrape.fetch("127.0.0.1", pod, "/redirect") is None


def test_a_trickling_pod_is_cut_off_at_the_total_time_bound(pod: int) -> None:
    started = time.monotonic()
    assert scrape.fetch("127.0.0.1", pod, "/trickle", seconds=0.5) is None
    assert time.monotonic() - started < 1.5


def test_many_slow_pods_cost_about_the_time_of_one(pod: int) -> None:
    started = time.monotonic()
    texts = scrape.fetch_all(
        [("127.0.0.1", pod, "/trickle")] * 8 + [("127.0.0.1", pod, "/metrics")], seconds=0.5
    )
    assert texts[:8] == [None] * 8
    assert texts[8] == "mlplane_requests_total 1\n"
    assert time.monotonic() - started < 2.5
